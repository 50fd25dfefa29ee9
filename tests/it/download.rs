//! Verified downloads against a local server.

use finetune::download::{Cache, Checksum, DownloadError, fetch_to, fetch_to_with};
use sha2::{Digest, Sha256};

use crate::http::{Reply, serve};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// No temporary download file (`.<name>.<random>.partial`) is left beside `dest`.
fn assert_no_partial(dest: &std::path::Path) {
    let dir = dest.parent().unwrap();
    let left: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");
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
    assert_no_partial(&dir.path().join("sub/w.pth"));
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
        matches!(err, DownloadError::ChecksumMismatch { url: Some(_), .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&server.url("/w.pth")), "{message}");
    assert!(message.contains("sha256 deadbeef"), "{message}");
    assert!(message.contains(&dest.display().to_string()), "{message}");
    assert!(!dest.exists());
    assert_no_partial(&dir.path().join("w.pth"));
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
    match &err {
        DownloadError::Truncated {
            expected, received, ..
        } => {
            assert_eq!(*expected, 5000);
            assert_eq!(*received, 1000);
        }
        other => panic!("unexpected {other}"),
    }
    assert_no_partial(&dir.path().join("w.pth"));
    assert!(
        err.to_string().contains(&dest.display().to_string()),
        "{err}"
    );
    assert!(!dest.exists());
}

#[test]
fn a_server_error_names_the_url_and_the_manual_path() {
    let server = serve(vec![("/w.pth", Reply::Status(503))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.pth");
    let url = server.url("/w.pth");
    let err = fetch_to(&url, &dest, &Checksum::None).unwrap_err();
    match &err {
        DownloadError::HttpStatus { status, .. } => assert_eq!(*status, 503),
        other => panic!("unexpected {other}"),
    }
    let message = err.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains(&dest.display().to_string()), "{message}");
    assert!(!dest.exists());
    assert_no_partial(&dir.path().join("w.pth"));

    let missing = fetch_to(&server.url("/nope"), &dest, &Checksum::None).unwrap_err();
    assert!(
        matches!(missing, DownloadError::HttpStatus { status: 404, .. }),
        "{missing}"
    );
}

#[test]
fn a_refused_connection_is_a_network_error_naming_url_and_path() {
    // Bind, note the port, close: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/w.pth");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.pth");
    let err = fetch_to_with(&url, &dest, &Checksum::None, false).unwrap_err();
    assert!(matches!(err, DownloadError::Network { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains(&dest.display().to_string()), "{message}");
    assert!(!dest.exists());
}

#[test]
fn offline_never_touches_the_network_but_serves_the_cache() {
    let body = b"weights".repeat(100);
    let server = serve(vec![("/w.pth", Reply::Body(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let checksum = Checksum::Sha256Prefix(sha256_hex(&body)[..8].to_string());
    let offline = Cache::new(dir.path()).offline(true);
    assert!(offline.is_offline());
    let err = offline
        .fetch(&server.url("/w.pth"), "weights", "w.pth", &checksum)
        .unwrap_err();
    let expected_path = dir.path().join("weights").join("w.pth");
    match &err {
        DownloadError::Offline { url, path } => {
            assert_eq!(url, &server.url("/w.pth"));
            assert_eq!(path, &expected_path);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("FINETUNE_OFFLINE"), "{err}");
    assert_eq!(server.hits(), 0);

    // Online once, then offline works from the cache.
    let online = Cache::new(dir.path());
    let path = online
        .fetch(&server.url("/w.pth"), "weights", "w.pth", &checksum)
        .unwrap();
    assert_eq!(path, expected_path);
    let again = offline
        .fetch(&server.url("/w.pth"), "weights", "w.pth", &checksum)
        .unwrap();
    assert_eq!(again, expected_path);
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_corrupted_cached_file_is_an_error_and_is_not_replaced() {
    let body = b"0123456789".repeat(100);
    let server = serve(vec![("/w.pth", Reply::Body(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.pth");
    let checksum = Checksum::Sha256Prefix(sha256_hex(&body)[..8].to_string());
    fetch_to_with(&server.url("/w.pth"), &dest, &checksum, false).unwrap();

    // Same size, different bytes, a different modification time: the stamp no longer applies.
    let mut corrupt = body.clone();
    corrupt[500] ^= 0xff;
    std::fs::write(&dest, &corrupt).unwrap();
    let file = std::fs::File::options().write(true).open(&dest).unwrap();
    file.set_modified(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000),
    )
    .unwrap();
    drop(file);
    let err = fetch_to_with(&server.url("/w.pth"), &dest, &checksum, false).unwrap_err();
    assert!(
        matches!(err, DownloadError::ChecksumMismatch { url: None, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Delete it"), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), corrupt);
    assert_eq!(server.hits(), 1);
}

#[test]
fn md5_checksums_are_verified_too() {
    let server = serve(vec![("/c.tar.gz", Reply::Body(b"cifar".to_vec()))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("c.tar.gz");
    let wrong = Checksum::Md5("00000000000000000000000000000000".into());
    let err = fetch_to_with(&server.url("/c.tar.gz"), &dest, &wrong, false).unwrap_err();
    let DownloadError::ChecksumMismatch {
        actual,
        url: Some(_),
        ..
    } = err
    else {
        panic!("unexpected {err}");
    };
    // md5("cifar"), computed with Python's hashlib.
    assert_eq!(actual, "f5e79fd55db721a19cf28aa3ea5f1573");
    let right = Checksum::Md5("F5E79FD55DB721A19CF28AA3EA5F1573".into());
    fetch_to_with(&server.url("/c.tar.gz"), &dest, &right, false).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"cifar");
}

#[test]
fn concurrent_fetches_of_one_file_download_it_once() {
    let body = vec![42u8; 200_000];
    let server = serve(vec![("/big.bin", Reply::Body(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    let checksum = Checksum::Sha256Prefix(sha256_hex(&body)[..8].to_string());
    let url = server.url("/big.bin");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| fetch_to_with(&url, &dest, &checksum, false)))
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(server.hits(), 1);
}

/// Records the events of one URL (other tests download concurrently to other URLs).
struct Recorder {
    url: String,
    events: std::sync::Mutex<Vec<String>>,
}

impl finetune::download::DownloadProgress for Recorder {
    fn started(&self, url: &str, bytes: Option<u64>) {
        if url == self.url {
            self.events
                .lock()
                .unwrap()
                .push(format!("started {bytes:?}"));
        }
    }
    fn progressed(&self, url: &str, received: u64) {
        if url == self.url {
            self.events.lock().unwrap().push(format!("at {received}"));
        }
    }
    fn finished(&self, url: &str) {
        if url == self.url {
            self.events.lock().unwrap().push("finished".into());
        }
    }
}

#[test]
fn downloads_report_to_the_registered_reporter_and_print_nothing() {
    let body = b"pretend weights".repeat(10_000);
    let server = serve(vec![("/progress.pth", Reply::Body(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let recorder = std::sync::Arc::new(Recorder {
        url: server.url("/progress.pth"),
        events: Default::default(),
    });
    finetune::download::set_progress(Some(recorder.clone()));
    let checksum = Checksum::Sha256Prefix(sha256_hex(&body)[..8].to_string());
    fetch_to(&recorder.url, &dir.path().join("w.pth"), &checksum).unwrap();
    finetune::download::set_progress(None);
    let events = recorder.events.lock().unwrap().clone();
    assert_eq!(
        events.first().unwrap(),
        &format!("started Some({})", body.len())
    );
    assert_eq!(events.last().unwrap(), "finished");
    assert_eq!(events[events.len() - 2], format!("at {}", body.len()));
}
