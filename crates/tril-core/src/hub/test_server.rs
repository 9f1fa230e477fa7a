//! A tiny Hugging Face Hub on loopback for tests (std `TcpListener`, one thread, one
//! request per connection). Shared by `tril-core`'s unit tests and `crates/tril/tests/hub.rs`
//! (included there with `#[path]`).
//!
//! It serves `GET /api/{models|datasets}/{repo}/revision/{rev}` (`sha` + `siblings`),
//! `HEAD`/`GET /{repo}/resolve/{rev}/{file}` and `/datasets/{repo}/resolve/...` with
//! `X-Repo-Commit` and `ETag` (the sha256 for `.safetensors` and `.parquet` files, as LFS),
//! a relative 302 to `/cdn/...` when `redirect` is on, `Range` (206), 404, and 401 when a
//! token is required and the `Authorization` header is missing or wrong. Faults: `drop_once`
//! closes the connection half-way through the body of that file's first GET; `corrupt`
//! serves that file with one byte flipped. Every request is logged.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path as sent.
    pub path: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub auth: Option<String>,
}

/// Files of a repo at one commit.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// 40 hex digits.
    pub sha: String,
    /// File path -> bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// What the server holds and how it misbehaves.
#[derive(Debug, Default)]
pub struct State {
    /// `(kind, repo, revision name)` -> snapshot; `kind` is `models` or `datasets`.
    pub repos: BTreeMap<(String, String, String), Snapshot>,
    /// Requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Resolve requests answer 302 to `/cdn/...`.
    pub redirect: bool,
    /// Files whose first GET is cut half-way.
    pub drop_once: BTreeSet<String>,
    /// Files served with one byte flipped.
    pub corrupt: BTreeSet<String>,
    /// Every request, in order.
    pub log: Vec<Logged>,
}

/// A running server; dropped, it stops.
pub struct HubServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The shared state.
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// sha256 hex of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn is_lfs(file: &str) -> bool {
    file.ends_with(".safetensors") || file.ends_with(".parquet")
}

fn etag(file: &str, bytes: &[u8]) -> String {
    let sha = sha256_hex(bytes);
    if is_lfs(file) {
        sha
    } else {
        sha[..40].to_string()
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl HubServer {
    /// Starts a server on a free loopback port.
    pub fn start(state: State) -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        handle(stream, &s);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        HubServer { url, state, stop, thread: Some(thread) }
    }

    /// Adds `repo` of `kind` (`models`/`datasets`) at `sha`, reachable by `revision` and sha.
    pub fn add(&self, kind: &str, repo: &str, revision: &str, sha: &str, files: BTreeMap<String, Vec<u8>>) {
        let snap = Snapshot { sha: sha.into(), files };
        let mut state = self.state.lock().expect("state");
        state.repos.insert((kind.into(), repo.into(), revision.into()), snap.clone());
        state.repos.insert((kind.into(), repo.into(), sha.into()), snap);
    }

    /// The requests so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().expect("state").log.clone()
    }

    /// Stops accepting connections (later requests are refused).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8], head_only: bool) {
    let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k == "Content-Length") {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let _ = stream.write_all(text.as_bytes());
    if !head_only {
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
}

fn handle(mut stream: TcpStream, state: &Arc<Mutex<State>>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut st = state.lock().expect("state");
    st.log.push(Logged { method: method.clone(), path: path.clone(), range: range.clone(), auth: auth.clone() });
    let head = method == "HEAD";
    let json = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let Some(token) = &st.token {
        if !path.starts_with("/cdn/") && auth.as_deref() != Some(&format!("Bearer {token}")) {
            return respond(&mut stream, "401 Unauthorized", &json, b"{\"error\":\"Invalid credentials\"}", head);
        }
    }
    let not_found =
        |stream: &mut TcpStream| respond(stream, "404 Not Found", &json, b"{\"error\":\"not found\"}", head);
    // Listing.
    for kind in ["models", "datasets"] {
        if let Some(rest) = path.strip_prefix(&format!("/api/{kind}/")) {
            let Some((repo, rev)) = rest.rsplit_once("/revision/") else { return not_found(&mut stream) };
            let Some(snap) = st.repos.get(&(kind.to_string(), repo.to_string(), decode(rev))) else {
                return not_found(&mut stream);
            };
            let siblings: Vec<String> = snap.files.keys().map(|f| format!("{{\"rfilename\":\"{f}\"}}")).collect();
            let body = format!("{{\"id\":\"{repo}\",\"sha\":\"{}\",\"siblings\":[{}]}}", snap.sha, siblings.join(","));
            return respond(&mut stream, "200 OK", &json, body.as_bytes(), head);
        }
    }
    // Resolve (or the CDN it redirects to: /cdn/{kind}/{repo}/resolve/{rev}/{file}).
    let (cdn, rest) = match path.strip_prefix("/cdn") {
        Some(rest) => (true, rest.to_string()),
        None => (false, path.clone()),
    };
    let (kind, rest) = match rest.strip_prefix("/datasets/") {
        Some(r) => ("datasets", r.to_string()),
        None => ("models", rest.trim_start_matches('/').to_string()),
    };
    let Some((repo, tail)) = rest.split_once("/resolve/") else { return not_found(&mut stream) };
    let Some((rev, file)) = tail.split_once('/') else { return not_found(&mut stream) };
    let file = decode(file);
    let Some(snap) = st.repos.get(&(kind.to_string(), repo.to_string(), rev.to_string())) else {
        return not_found(&mut stream);
    };
    let Some(bytes) = snap.files.get(&file) else { return not_found(&mut stream) };
    let mut bytes = bytes.clone();
    let tag = etag(&file, &bytes);
    let mut headers = vec![("X-Repo-Commit".to_string(), snap.sha.clone())];
    if is_lfs(&file) {
        headers.push(("X-Linked-Etag".into(), format!("\"{tag}\"")));
        headers.push(("X-Linked-Size".into(), bytes.len().to_string()));
    }
    headers.push(("ETag".into(), format!("\"{tag}\"")));
    if st.redirect && !cdn {
        let prefix = if kind == "datasets" { "/datasets" } else { "" };
        headers.push(("Location".into(), format!("/cdn{prefix}/{repo}/resolve/{rev}/{}", file)));
        return respond(&mut stream, "302 Found", &headers, b"", head);
    }
    if st.corrupt.contains(&file) {
        if let Some(b) = bytes.last_mut() {
            *b ^= 0xff;
        }
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .unwrap_or(0);
    let total = bytes.len();
    if start > 0 {
        if start >= total {
            headers.push(("Content-Range".into(), format!("bytes */{total}")));
            return respond(&mut stream, "416 Range Not Satisfiable", &headers, b"", head);
        }
        headers.push(("Content-Range".into(), format!("bytes {start}-{}/{total}", total - 1)));
        return respond(&mut stream, "206 Partial Content", &headers, &bytes[start..], head);
    }
    if !head && st.drop_once.remove(&file) {
        headers.push(("Content-Length".into(), total.to_string()));
        respond(&mut stream, "200 OK", &headers, &bytes[..total / 2], false);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    respond(&mut stream, "200 OK", &headers, &bytes, head)
}
