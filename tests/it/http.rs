//! A minimal HTTP/1.1 server on 127.0.0.1 for download tests: fixed routes, bounded number of
//! connections, stops when dropped. Never reachable from outside the machine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// What the server answers on a path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// This status code and a short text body.
    Status(u16),
    /// The Hugging Face Hub's `resolve` endpoint: `body` with `ETag` (and `X-Linked-Etag`
    /// when `linked_etag` is set, as for LFS files), `X-Repo-Commit`, and HTTP ranges (206 with
    /// `Content-Range` for a `Range: bytes=A-[B]` request).
    Hub {
        /// The file.
        body: Vec<u8>,
        /// `ETag`.
        etag: String,
        /// `X-Linked-Etag` (the SHA-256 of an LFS file).
        linked_etag: Option<String>,
        /// `X-Repo-Commit`.
        commit: String,
    },
    /// 200 announcing `announced` bytes in Content-Length but sending only `body`, then closing.
    Truncated {
        /// The bytes actually sent.
        body: Vec<u8>,
        /// The announced length (larger than `body`).
        announced: usize,
    },
}

/// A running server. Dropping it stops the accept loop.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// URL of a path on this server (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
    /// Number of requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// At most this many connections are served, then the loop ends by itself.
const MAX_CONNECTIONS: usize = 256;

/// Starts a server answering `routes` (unknown paths get 404).
pub fn serve(routes: Vec<(&str, Reply)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    let routes: HashMap<String, Reply> = routes
        .into_iter()
        .map(|(p, r)| (p.to_string(), r))
        .collect();
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (h, s) = (hits.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(MAX_CONNECTIONS) {
            if s.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let _ = answer(stream, &routes, &h);
        }
    });
    Server {
        base_url: format!("http://{addr}"),
        hits,
        stop,
        addr,
        handle: Some(handle),
    }
}

/// Reads one request and answers it; the request counts as a hit once read, before the reply
/// is written (counting after writing raced the client: it could have the whole body, and the
/// test check the count, before this thread got there).
fn answer(
    mut stream: TcpStream,
    routes: &HashMap<String, Reply>,
    hits: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range: Option<(usize, Option<usize>)> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
            && let Some((a, b)) = value
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
        {
            range = a.parse().ok().map(|a| (a, b.parse().ok()));
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let reply = routes.get(path).cloned().unwrap_or(Reply::Status(404));
    match reply {
        Reply::Body(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        Reply::Status(code) => {
            let body = format!("status {code}");
            write!(
                stream,
                "HTTP/1.1 {code} Test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
        Reply::Hub {
            body,
            etag,
            linked_etag,
            commit,
        } => {
            let total = body.len();
            let (status, part, content_range) = match range {
                Some((a, b)) => {
                    let a = a.min(total);
                    let end = b.map_or(total, |b| (b + 1).min(total)).max(a);
                    (
                        "206 Partial Content",
                        &body[a..end],
                        format!(
                            "Content-Range: bytes {a}-{}/{total}\r\n",
                            end.saturating_sub(1)
                        ),
                    )
                }
                None => ("200 OK", &body[..], String::new()),
            };
            let linked = linked_etag
                .map(|e| format!("X-Linked-Etag: \"{e}\"\r\n"))
                .unwrap_or_default();
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{content_range}ETag: \"{etag}\"\r\n{linked}X-Repo-Commit: {commit}\r\nConnection: close\r\n\r\n",
                part.len()
            )?;
            stream.write_all(part)?;
        }
        Reply::Truncated { body, announced } => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
            )?;
            stream.write_all(&body)?;
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}
