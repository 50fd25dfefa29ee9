//! The one place where torchvision's (and timm's, which uses the same ResNet names) state_dict
//! keys meet this crate's parameter paths.
//!
//! | torchvision / timm              | finetune                          |
//! |---------------------------------|-----------------------------------|
//! | `layerN.B.downsample.0.weight`  | `layerN.B.downsample.conv.weight` |
//! | `layerN.B.downsample.1.*`       | `layerN.B.downsample.bn.*`        |
//! | BatchNorm `weight` / `bias`     | `gamma` / `beta`                  |
//! | `fc.weight` `[out, in]`         | `fc.weight` `[in, out]`           |
//! | `*.num_batches_tracked`         | (ignored)                         |
//!
//! The BatchNorm renames and the `Linear` transposition are done by burn-store's
//! `PyTorchToBurnAdapter`; the `downsample` renames are [`TORCHVISION_TO_BURN`], applied by
//! [`remapper`]. Wrapper prefixes (`module.` from `nn.DataParallel`, Lightning's `model.`,
//! `_orig_mod.`) are found and stripped by the importer, which reports them.

use burn::store::KeyRemapper;

use crate::model::is_batch_norm_path;

/// Regex key remappings from torchvision/timm names to this crate's, applied before burn-store's
/// PyTorch adapter.
pub const TORCHVISION_TO_BURN: [(&str, &str); 2] = [
    (r"\.downsample\.0\.", ".downsample.conv."),
    (r"\.downsample\.1\.", ".downsample.bn."),
];

/// burn-store's key remapper for [`TORCHVISION_TO_BURN`].
pub fn remapper() -> KeyRemapper {
    // The patterns are constants covered by the tests: they always compile.
    KeyRemapper::from_patterns(TORCHVISION_TO_BURN.to_vec()).unwrap_or_default()
}

/// Suffix of the only state_dict key that is ignored on import: PyTorch's BatchNorm step
/// counter, which inference and fine-tuning with a fixed momentum never read.
pub const IGNORED_SUFFIX: &str = "num_batches_tracked";

/// torchvision's name for a key of this crate: `layer1.0.downsample.bn.gamma` ->
/// `layer1.0.downsample.1.weight`. Returns the name and the shape torchvision stores (the
/// `Linear` weight transposed).
pub fn burn_to_torchvision(path: &str, shape: Vec<usize>) -> (String, Vec<usize>) {
    let mut key = path
        .replace(".downsample.conv.", ".downsample.0.")
        .replace(".downsample.bn.", ".downsample.1.");
    if is_batch_norm_path(path) {
        if let Some(stem) = key.strip_suffix(".gamma") {
            key = format!("{stem}.weight");
        } else if let Some(stem) = key.strip_suffix(".beta") {
            key = format!("{stem}.bias");
        }
    }
    let shape = if path == "fc.weight" && shape.len() == 2 {
        vec![shape[1], shape[0]]
    } else {
        shape
    };
    (key, shape)
}

/// This crate's path for a torchvision/timm key, or `None` for the ignored
/// `num_batches_tracked`.
pub fn torchvision_to_burn(key: &str) -> Option<String> {
    if key.ends_with(IGNORED_SUFFIX) {
        return None;
    }
    let key = key.strip_prefix("module.").unwrap_or(key);
    let mut path = key
        .replace(".downsample.0.", ".downsample.conv.")
        .replace(".downsample.1.", ".downsample.bn.");
    if is_batch_norm_path(&path) {
        if let Some(stem) = path.strip_suffix(".weight") {
            path = format!("{stem}.gamma");
        } else if let Some(stem) = path.strip_suffix(".bias") {
            path = format!("{stem}.beta");
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remapper_compiles_every_pattern() {
        assert_eq!(remapper().to_regex_pairs().len(), TORCHVISION_TO_BURN.len());
    }

    #[test]
    fn names_round_trip() {
        for key in [
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var",
            "layer3.1.bn2.weight",
            "fc.bias",
        ] {
            let path = torchvision_to_burn(key).unwrap();
            assert_eq!(burn_to_torchvision(&path, vec![1]).0, key);
        }
        assert_eq!(
            torchvision_to_burn("module.layer1.0.downsample.1.bias").unwrap(),
            "layer1.0.downsample.bn.beta"
        );
        assert_eq!(torchvision_to_burn("bn1.num_batches_tracked"), None);
    }
}
