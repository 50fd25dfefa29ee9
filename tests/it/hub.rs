//! Weights from the Hugging Face Hub (`hf-hub:OWNER/NAME`) through the `hf-hub` crate,
//! against a local server answering the Hub's `resolve` endpoints: the Hub's cache layout, the
//! SHA-256 check, offline reads, planted links, timm's config, and the families refused.

use burn::tensor::Device;
use finetune::model::{VisionModel, create_model};
use finetune::weights::{HubOptions, HubWeights, Interpolation, load_hub_with, save_safetensors};
use sha2::{Digest, Sha256};

use crate::common::{cpu, snapshot};
use crate::http::{Reply, Server, serve};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// timm's `config.json` for `arch`.
fn timm_config(arch: &str, classes: usize) -> Vec<u8> {
    serde_json::json!({
        "architecture": arch,
        "num_classes": classes,
        "num_features": 256,
        "pretrained_cfg": {
            "tag": "test",
            "input_size": [3, 160, 160],
            "interpolation": "bicubic",
            "crop_pct": 0.95,
            "crop_mode": "center",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "num_classes": classes,
        }
    })
    .to_string()
    .into_bytes()
}

/// The Hub's routes for `repo` holding `config` and `weights`; `linked` overrides the SHA-256
/// the Hub announces for the weights.
fn hub_routes(
    repo: &str,
    config: Vec<u8>,
    weights: Vec<u8>,
    linked: Option<String>,
) -> Vec<(String, Reply)> {
    let sha = linked.unwrap_or_else(|| sha256_hex(&weights));
    vec![
        (
            format!("/{repo}/resolve/main/config.json"),
            Reply::Hub {
                etag: "c0ffee0123456789c0ffee0123456789c0ffee01".into(),
                linked_etag: None,
                body: config,
                commit: COMMIT.into(),
            },
        ),
        (
            format!("/{repo}/resolve/main/model.safetensors"),
            Reply::Hub {
                etag: "aaaa".into(),
                linked_etag: Some(sha),
                body: weights,
                commit: COMMIT.into(),
            },
        ),
    ]
}

/// A local Hub answering `routes`.
fn serve_hub(routes: &[(String, Reply)]) -> Server {
    serve(
        routes
            .iter()
            .map(|(p, r)| (p.as_str(), r.clone()))
            .collect(),
    )
}

fn options(endpoint: &str, cache: &std::path::Path, offline: bool) -> HubOptions {
    HubOptions {
        endpoint: endpoint.to_string(),
        cache_dir: cache.to_path_buf(),
        offline,
    }
}

fn weights_bytes(device: &Device) -> (finetune::model::AnyModel, Vec<u8>) {
    let model = create_model("finetune_mini", 7, device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    save_safetensors(&model, &path, []).unwrap();
    (model, std::fs::read(path).unwrap())
}

#[test]
fn a_hub_repository_loads_into_the_hubs_cache_and_then_offline() {
    let device = cpu();
    let (model, bytes) = weights_bytes(&device);
    let routes = hub_routes(
        "timm/mini.test",
        timm_config("finetune_mini", 7),
        bytes.clone(),
        None,
    );
    let server = serve_hub(&routes);
    let cache = tempfile::tempdir().unwrap();
    let name: HubWeights = "hf-hub:timm/mini.test".parse().unwrap();
    assert_eq!(name.to_string(), "hf-hub:timm/mini.test");
    let loaded = load_hub_with(
        &name,
        &options(&server.base_url, cache.path(), false),
        &device,
    )
    .unwrap();
    assert_eq!(snapshot(&loaded.model), snapshot(&model));
    assert_eq!(loaded.model.num_classes(), 7);
    // timm's evaluation transform: Resize(floor(160 / 0.95)), CenterCrop(160), bicubic.
    let p = loaded.preprocess;
    assert_eq!((p.resize, p.crop), (168, 160));
    assert_eq!(p.interpolation, Interpolation::Bicubic);
    assert_eq!((p.mean, p.std), ([0.5; 3], [0.25; 3]));
    // The Hub's layout: the blob named by its SHA-256, a snapshot entry, the ref.
    let repo = cache.path().join("models--timm--mini.test");
    assert!(repo.join("blobs").join(sha256_hex(&bytes)).is_file());
    assert!(
        repo.join("snapshots")
            .join(COMMIT)
            .join("model.safetensors")
            .exists()
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    // Offline, with the server gone: from the cache.
    drop(server);
    let again = load_hub_with(
        &name,
        &options("http://127.0.0.1:9", cache.path(), true),
        &device,
    )
    .unwrap();
    assert_eq!(snapshot(&again.model), snapshot(&model));
    // A cached blob that was damaged afterwards is an error, kept for the user to look at.
    let blob = repo.join("blobs").join(sha256_hex(&bytes));
    let mut damaged = std::fs::read(&blob).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(&blob, damaged).unwrap();
    let err = load_hub_with(
        &name,
        &options("http://127.0.0.1:9", cache.path(), true),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("SHA-256") && err.contains("delete it"),
        "{err}"
    );
    // Offline and not cached: says how to get it.
    let other: HubWeights = "hf-hub:timm/other@v1".parse().unwrap();
    let err = load_hub_with(
        &other,
        &options("http://127.0.0.1:9", cache.path(), true),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not in the Hub cache") && err.contains("online"),
        "{err}"
    );
}

#[test]
fn a_download_that_fails_its_checksum_is_removed() {
    let device = cpu();
    let (_, bytes) = weights_bytes(&device);
    let wrong = "f".repeat(64);
    let routes = hub_routes(
        "timm/bad.test",
        timm_config("finetune_mini", 7),
        bytes,
        Some(wrong.clone()),
    );
    let server = serve_hub(&routes);
    let cache = tempfile::tempdir().unwrap();
    let name: HubWeights = "hf-hub:timm/bad.test".parse().unwrap();
    let err = load_hub_with(
        &name,
        &options(&server.base_url, cache.path(), false),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("SHA-256") && err.contains("removed"), "{err}");
    let blob = cache
        .path()
        .join("models--timm--bad.test/blobs")
        .join(wrong);
    assert!(!blob.exists());
}

#[test]
fn planted_links_unknown_families_and_bad_names_are_refused() {
    let device = cpu();
    let (_, bytes) = weights_bytes(&device);
    // A symbolic link among the blobs: nothing is fetched through it.
    let routes = hub_routes(
        "timm/link.test",
        timm_config("finetune_mini", 7),
        bytes.clone(),
        None,
    );
    let server = serve_hub(&routes);
    let cache = tempfile::tempdir().unwrap();
    let victim = cache.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let blobs = cache.path().join("models--timm--link.test/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&victim, blobs.join(format!("{}.lock", sha256_hex(&bytes))))
            .unwrap();
        let name: HubWeights = "hf-hub:timm/link.test".parse().unwrap();
        let err = load_hub_with(
            &name,
            &options(&server.base_url, cache.path(), false),
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(server.hits(), 0);
    }
    // timm's ConvNeXt names its parameters timm's way: refused, naming what to use; an
    // architecture the crate does not build is named.
    let refused = |repo: &str, arch: &str| {
        let routes = hub_routes(repo, timm_config(arch, 1000), b"unused".to_vec(), None);
        let server = serve_hub(&routes);
        let name: HubWeights = format!("hf-hub:{repo}").parse().unwrap();
        load_hub_with(
            &name,
            &options(&server.base_url, cache.path(), false),
            &device,
        )
        .unwrap_err()
        .to_string()
    };
    let err = refused("timm/convnext_tiny.test", "convnext_tiny");
    assert!(
        err.contains("ResNets only") && err.contains("--arch convnext_tiny"),
        "{err}"
    );
    let err = refused("timm/beit.test", "beit_base_patch16_224");
    assert!(err.contains("beit_base_patch16_224"), "{err}");
    // A repository the Hub does not have: the error names it.
    let name: HubWeights = "hf-hub:timm/missing".parse().unwrap();
    let err = load_hub_with(
        &name,
        &options(&server.base_url, cache.path(), false),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("hf-hub:timm/missing") && err.contains("config.json"),
        "{err}"
    );
    for bad in [
        "hf-hub:",
        "hf-hub:resnet50",
        "hf-hub:timm/",
        "hf-hub:../x",
        "hf-hub:timm/a b",
        "hf-hub:timm/x@",
        "timm/resnet50",
    ] {
        let err = bad.parse::<HubWeights>().unwrap_err().to_string();
        assert!(err.contains("hf-hub:OWNER/NAME"), "{bad}: {err}");
    }
    assert_eq!(
        "hf-hub:timm/resnet50.a1_in1k@refs/pr/1"
            .parse::<HubWeights>()
            .unwrap()
            .revision,
        "refs/pr/1"
    );
}
