//! The one place where a reference implementation's state_dict keys (torchvision's; timm's
//! ResNets use the same names) meet this crate's parameter paths: [`KeyMap`], one per model,
//! and [`ANCHORS`], the keys that identify each family's state_dict in a file.
//!
//! For a ResNet:
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

use crate::model::{is_batch_norm_path, regex_literal, under};

/// Two keys that, present together (under a common prefix), identify a family's state_dict:
/// `(family tag, first key, second key)`. What [`WeightsFile`](super::WeightsFile) looks for to
/// find a state_dict inside a checkpoint and to name the architecture a file holds.
pub const ANCHORS: &[(&str, &str, &str)] = &[
    ("resnet", "conv1.weight", "layer1.0.conv1.weight"),
    (
        "convnext",
        "features.0.0.weight",
        "features.1.0.layer_scale",
    ),
    (
        "efficientnet",
        "features.0.0.weight",
        "features.1.0.block.0.0.weight",
    ),
    (
        "mobilenet_v3",
        "features.0.0.weight",
        "features.1.block.0.0.weight",
    ),
    (
        "vit",
        "conv_proj.weight",
        "encoder.layers.encoder_layer_0.ln_1.weight",
    ),
];

/// Marks the keys of the chosen state_dict while a family's patterns are applied, so that a
/// renamed key is never renamed twice.
pub(crate) const INSIDE: char = '\u{2}';

/// One module (or parameter) of a model and its name in the reference implementation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    /// This crate's path (`stages.0.blocks.1.dwconv`).
    pub ours: String,
    /// The reference state_dict's name for it (`features.1.1.block.0`).
    pub reference: String,
    /// Whether it is a `Linear` layer (whose weight PyTorch stores transposed).
    pub linear: bool,
}

impl KeyPair {
    /// A pair for a module other than `Linear`.
    pub fn new(ours: impl Into<String>, reference: impl Into<String>) -> Self {
        KeyPair {
            ours: ours.into(),
            reference: reference.into(),
            linear: false,
        }
    }

    /// A pair for a `Linear` layer.
    pub fn linear(ours: impl Into<String>, reference: impl Into<String>) -> Self {
        KeyPair {
            linear: true,
            ..Self::new(ours, reference)
        }
    }
}

/// How one model's parameter paths correspond to its reference implementation's state_dict
/// keys ([`VisionModel::key_map`](crate::model::VisionModel::key_map)). Normalisation layers'
/// `gamma` / `beta` are PyTorch's `weight` / `bias`, and a `Linear` weight is stored transposed
/// (`[out, in]`) in PyTorch: burn-store's `PyTorchToBurnAdapter` does both on import.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyMap {
    /// torchvision's ResNet names: the `downsample` renames of [`TORCHVISION_TO_BURN`].
    ResNet,
    /// Module by module: every parameter-holding module (or bare parameter) of the model and
    /// its reference name, as the family's constructor lays them out.
    Modules(Vec<KeyPair>),
}

impl KeyMap {
    /// The regex renames (reference to ours) applied to the keys of the chosen state_dict,
    /// each of which starts with [`INSIDE`] when they run; the last one removes the mark.
    pub(crate) fn patterns(&self) -> Vec<(String, String)> {
        let mut patterns: Vec<(String, String)> = match self {
            KeyMap::ResNet => vec![(format!("^{INSIDE}"), String::new())],
            KeyMap::Modules(_) => Vec::new(),
        };
        match self {
            KeyMap::ResNet => patterns.extend(
                TORCHVISION_TO_BURN
                    .iter()
                    .map(|(from, to)| (from.to_string(), to.to_string())),
            ),
            KeyMap::Modules(pairs) => {
                patterns.extend(pairs.iter().map(|p| {
                    (
                        format!(r"^{INSIDE}{}(\.|$)", regex_literal(&p.reference)),
                        format!("{}${{1}}", p.ours),
                    )
                }));
                patterns.push((format!("^{INSIDE}"), String::new()));
            }
        }
        patterns
    }

    /// The reference name and stored shape of one of this crate's tensor paths
    /// (`stages.0.blocks.1.norm.gamma` -> `features.1.1.block.2.weight`); a path the map does
    /// not cover keeps its name.
    pub fn to_reference(&self, path: &str, shape: Vec<usize>) -> (String, Vec<usize>) {
        let (name, transposed) = self.reference_layout(path);
        let shape = if transposed && shape.len() == 2 {
            vec![shape[1], shape[0]]
        } else {
            shape
        };
        (name, shape)
    }

    /// The reference name of one of this crate's tensor paths, and whether the reference
    /// stores it transposed (a `Linear` weight, `[out, in]` in PyTorch, `[in, out]` here).
    pub(crate) fn reference_layout(&self, path: &str) -> (String, bool) {
        let pairs = match self {
            KeyMap::ResNet => {
                let (name, _) = burn_to_torchvision(path, Vec::new());
                return (name, path == "fc.weight");
            }
            KeyMap::Modules(pairs) => pairs,
        };
        let Some(pair) = pairs.iter().find(|p| under(path, &p.ours)) else {
            return (path.to_string(), false);
        };
        let rest = &path[pair.ours.len()..];
        let rest = match rest {
            ".gamma" => ".weight",
            ".beta" => ".bias",
            other => other,
        };
        (
            format!("{}{rest}", pair.reference),
            pair.linear && rest == ".weight",
        )
    }
}

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

/// torchvision's name for a key of a ResNet (what [`KeyMap::ResNet`] does; other families map
/// through their model's [`KeyMap`]): `layer1.0.downsample.bn.gamma` ->
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

/// This crate's path for a torchvision/timm ResNet key, or `None` for the ignored
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
