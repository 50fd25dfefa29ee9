//! Verified downloads against a local server.

use finetune::download::{Checksum, DownloadError, fetch_to};
use sha2::{Digest, Sha256};

use crate::http::{Reply, serve};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn downloads_verifies_and_reuses_the_cached_file() {
    let body = b"pretend weights".repeat(1000);
    let server = serve(vec![("/w.pth", Reply::Body(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub/w.pth");
    let checksum = Checksum::Sha256Prefix(sha256_hex(&body)[..8].to_string());
    let path = fetch_to(&server.url("/w.pth"), &dest, &checksum).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert!(!dir.path().join("sub/w.pth.partial").exists());
    // Second call: served from the cache.
    fetch_to(&server.url("/w.pth"), &dest, &checksum).unwrap();
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_checksum_mismatch_leaves_no_file() {
    let server = serve(vec![("/w.pth", Reply::Body(b"corrupt".to_vec()))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.pth");
    let err = fetch_to(
        &server.url("/w.pth"),
        &dest,
        &Checksum::Sha256Prefix("deadbeef".into()),
    )
    .unwrap_err();
    assert!(
        matches!(err, DownloadError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(!dest.exists());
    assert!(!dir.path().join("w.pth.partial").exists());
}

#[test]
fn a_truncated_body_is_reported_and_leaves_no_file() {
    let server = serve(vec![(
        "/w.pth",
        Reply::Truncated {
            body: vec![7u8; 1000],
            announced: 5000,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.pth");
    let err = fetch_to(&server.url("/w.pth"), &dest, &Checksum::None).unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::Truncated { .. } | DownloadError::Network { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&dest.display().to_string()),
        "{err}"
    );
    assert!(!dest.exists());
}
