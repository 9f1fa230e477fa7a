//! Hugging Face Hub downloads into the standard HF cache, shared with Python tools.
//!
//! Layout (as `huggingface_hub`): `<cache>/models--org--name/` (or `datasets--org--name/`)
//! holds `blobs/<etag>` (the bytes; the etag is the sha256 for LFS files),
//! `snapshots/<commit sha>/<file>` (a relative symlink to `../../blobs/<etag>`, or a copy
//! where symlinks fail) and `refs/<revision>` (the commit sha the revision pointed to).
//!
//! - [`HubEnv`]: `HF_HUB_CACHE` / `HF_HOME` / `XDG_CACHE_HOME` / `HOME`, `HF_ENDPOINT`,
//!   `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`) and `HF_HUB_OFFLINE`, read once and passed
//!   explicitly. The token ([`HubToken`]) is only ever sent as `Authorization: Bearer` to
//!   the endpoint's own origin; its `Debug` hides it and it is never logged or written.
//! - [`download_model`]: `config.json`, the safetensors weights (`model.safetensors`, or
//!   `model.safetensors.index.json` and every shard it names) and the tokenizer files the
//!   repo has, at a revision, listed with `GET {endpoint}/api/models/{repo}/revision/{rev}`.
//! - [`dataset_split_files`]: the parquet files of one split of a dataset
//!   ([`select_split_files`] states the rule).
//!
//! Every file is fetched from `{endpoint}/{repo}/resolve/{sha}/{file}`: a `HEAD` (following
//! only relative redirects) gives the etag, then a `GET` (following redirects, also to a
//! CDN, where the token is not sent) streams into `blobs/<etag>.incomplete`. A broken
//! transfer is resumed with `Range: bytes=<have>-` (appended on 206, restarted on 200), up
//! to three attempts in a run, and a later run resumes the same partial file. LFS files
//! are sha256-checked against the etag before the atomic rename into place.
//!
//! ```
//! use tril_core::hub::{select_split_files, HubEnv};
//! let env = HubEnv::from_vars(|k| (k == "HF_TOKEN").then(|| "hf_secret".to_string()));
//! assert!(!format!("{env:?}").contains("hf_secret"));
//! let files = ["data/train-00000-of-00001.parquet".to_string(), "data/test-00000-of-00001.parquet".to_string()];
//! assert_eq!(select_split_files(&files, None, "test").unwrap(), ["data/test-00000-of-00001.parquet"]);
//! ```

use crate::error::{CoreError, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The hub used when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The revision of the hub's automatic parquet conversion of a dataset.
pub const PARQUET_REVISION: &str = "refs/convert/parquet";

/// Tokenizer and generation files fetched with a model when the repo has them.
const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "generation_config.json",
];

/// Attempts per file within one run before a broken transfer is an error.
const ATTEMPTS: usize = 3;

/// A hub access token. `Debug` prints `HubToken(***)`; the value is only read to build the
/// `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct HubToken(String);

impl HubToken {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        HubToken(value.into())
    }
}

impl std::fmt::Debug for HubToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubToken(***)")
    }
}

/// Where the hub cache is, which hub to talk to, with which token, and whether the network
/// may be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEnv {
    /// The hub cache directory (holding `models--*` and `datasets--*` folders).
    pub hub_cache: Option<PathBuf>,
    /// `HF_HUB_OFFLINE` is set to a true value: never touch the network.
    pub offline: bool,
    /// `HF_ENDPOINT` without a trailing slash ([`DEFAULT_ENDPOINT`] when unset).
    pub endpoint: String,
    /// `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`.
    pub token: Option<HubToken>,
}

impl Default for HubEnv {
    fn default() -> Self {
        HubEnv { hub_cache: None, offline: false, endpoint: DEFAULT_ENDPOINT.into(), token: None }
    }
}

impl HubEnv {
    /// Reads `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HOME`, `HF_HUB_OFFLINE`,
    /// `HF_ENDPOINT`, `HF_TOKEN` and `HUGGING_FACE_HUB_TOKEN` from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`HubEnv::from_env`] over any variable lookup (empty values count as unset).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let path = |k: &str| var(k).map(PathBuf::from);
        let hub_cache = path("HF_HUB_CACHE")
            .or_else(|| path("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| path("XDG_CACHE_HOME").map(|x| x.join("huggingface/hub")))
            .or_else(|| path("HOME").map(|h| h.join(".cache/huggingface/hub")));
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        let endpoint =
            var("HF_ENDPOINT").map_or_else(|| DEFAULT_ENDPOINT.to_string(), |e| e.trim_end_matches('/').into());
        let token = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")).map(|t| HubToken(t.trim().to_string()));
        HubEnv { hub_cache, offline, endpoint, token }
    }

    fn cache(&self, target: &str) -> Result<&Path> {
        self.hub_cache.as_deref().ok_or_else(|| CoreError::Hub {
            target: target.into(),
            message: "no hub cache directory to download into: set HF_HUB_CACHE (or HF_HOME or HOME)".into(),
        })
    }
}

/// A model or a dataset repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// `models--org--name`, `{endpoint}/{repo}/resolve/...`.
    Model,
    /// `datasets--org--name`, `{endpoint}/datasets/{repo}/resolve/...`.
    Dataset,
}

impl RepoKind {
    fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// The cache folder of a repo: `<cache>/models--org--name` or `<cache>/datasets--org--name`.
pub fn repo_dir(cache: &Path, kind: RepoKind, repo: &str) -> PathBuf {
    cache.join(format!("{}--{}", kind.plural(), repo.replace('/', "--")))
}

/// The snapshot directory of `revision` (a name under `refs/`, or a commit sha) in a cached
/// repo, if it exists.
pub fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if is_sha(revision) && snapshots.join(revision).is_dir() {
        return Some(snapshots.join(revision));
    }
    if revision.split('/').any(|c| c == ".." || c.is_empty()) {
        return None;
    }
    let sha = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let sha = sha.trim();
    let dir = snapshots.join(sha);
    (is_sha(sha) && dir.is_dir()).then_some(dir)
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// True for a hub repo id: `name` or `org/name` of letters, digits, `-`, `_` and `.`.
pub fn is_repo_id(repo: &str) -> bool {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok_part = |p: &&str| {
        !p.is_empty() && *p != "." && *p != ".." && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    parts.len() <= 2 && parts.iter().all(ok_part)
}

fn check_repo(repo: &str) -> Result<()> {
    if !is_repo_id(repo) {
        return Err(CoreError::Hub {
            target: repo.into(),
            message: "not a hub repo id: expected `name` or `org/name` (letters, digits, `-`, `_`, `.`)".into(),
        });
    }
    Ok(())
}

/// A file name from a listing must stay inside the snapshot.
fn safe_file(file: &str) -> bool {
    !file.is_empty() && !file.starts_with('/') && file.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Percent-encodes a path segment (or a path, keeping `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Downloads what tril needs of model `repo` at `revision` (a branch, tag or commit sha)
/// into the cache and returns its snapshot directory. Files already in the cache are not
/// fetched again; `refs/<revision>` is written once every file is in place.
pub fn download_model(env: &HubEnv, repo: &str, revision: &str) -> Result<PathBuf> {
    check_repo(repo)?;
    let cache = env.cache(repo)?;
    if env.offline {
        return Err(offline_error(repo, revision, cache));
    }
    let client = Client::new(env)?;
    let (sha, listing) = client.repo_info(RepoKind::Model, repo, revision)?;
    let has = |f: &str| listing.iter().any(|l| l == f);
    let get = |file: &str| client.fetch(RepoKind::Model, repo, &sha, file, revision);
    if !has("config.json") {
        return Err(CoreError::Hub {
            target: repo.into(),
            message: format!("revision {revision} has no config.json: not a transformers model repo"),
        });
    }
    get("config.json")?;
    if has("model.safetensors") {
        get("model.safetensors")?;
    } else if has("model.safetensors.index.json") {
        let index = get("model.safetensors.index.json")?;
        for shard in index_shards(&index, repo)? {
            get(&shard)?;
        }
    } else {
        return Err(CoreError::Hub {
            target: repo.into(),
            message: format!(
                "revision {revision} has neither model.safetensors nor model.safetensors.index.json (tril reads safetensors weights only; files: {})",
                preview(&listing)
            ),
        });
    }
    for file in TOKENIZER_FILES.iter().filter(|f| has(f)) {
        get(file)?;
    }
    let dir = repo_dir(cache, RepoKind::Model, repo);
    write_ref(&dir, revision, &sha)?;
    Ok(dir.join("snapshots").join(&sha))
}

/// The shard files a `model.safetensors.index.json` names (its `weight_map` values).
fn index_shards(index: &Path, repo: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|source| CoreError::Io { path: index.into(), source })?;
    let bad = |message: String| CoreError::Hub { target: format!("{repo}/model.safetensors.index.json"), message };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() || !shards.iter().all(|s| safe_file(s)) {
        return Err(bad(format!("`weight_map` names no usable shard files: {}", preview(&shards))));
    }
    Ok(shards)
}

fn preview(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    let shown: Vec<&str> = items.iter().take(10).map(String::as_str).collect();
    let more = items.len().saturating_sub(10);
    if more > 0 {
        format!("{}, ... ({more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn offline_error(target: &str, revision: &str, cache: &Path) -> CoreError {
    CoreError::HubOffline { target: target.into(), revision: revision.into(), cache: cache.display().to_string() }
}

/// Writes `refs/<revision>` = `sha` (atomically), unless the revision is the sha itself.
fn write_ref(repo_dir: &Path, revision: &str, sha: &str) -> Result<()> {
    if revision == sha || !safe_file(revision) {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CoreError::Io { path, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = path.with_file_name(format!(".{}.tmp{}", revision.replace('/', "_"), std::process::id()));
    std::fs::write(&tmp, sha).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Links `snapshots/<sha>/<file>` to its blob (a relative symlink, or a copy).
fn link_snapshot(blob: &Path, snap: &Path, file: &str) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CoreError::Io { path, source }
    };
    if let Some(parent) = snap.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if snap.symlink_metadata().is_ok() {
        std::fs::remove_file(snap).map_err(io(snap))?;
    }
    let blob_name = blob.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let up = "../".repeat(file.split('/').count() + 1);
    #[cfg(unix)]
    if std::os::unix::fs::symlink(format!("{up}blobs/{blob_name}"), snap).is_ok() && snap.is_file() {
        return Ok(());
    }
    let _ = (up, blob_name);
    if snap.symlink_metadata().is_ok() {
        std::fs::remove_file(snap).map_err(io(snap))?;
    }
    std::fs::copy(blob, snap).map(|_| ()).map_err(io(snap))
}

/// What a `HEAD` on a resolve URL said.
#[derive(Debug, Default)]
struct FileMeta {
    etag: Option<String>,
    size: Option<u64>,
}

/// One HTTP client for a download session.
struct Client<'a> {
    env: &'a HubEnv,
    http: reqwest::blocking::Client,
    origin: Option<String>,
}

fn origin(url: &reqwest::Url) -> String {
    format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

/// The messages of an error and its sources (never a header, so never the token).
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Why a transfer stopped: give up, or try again from what was received.
enum Failure {
    Fatal(CoreError),
    Retry(String),
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        Failure::Fatal(e)
    }
}

impl<'a> Client<'a> {
    fn new(env: &'a HubEnv) -> Result<Self> {
        let unreachable = |message: String| CoreError::HubUnreachable { endpoint: env.endpoint.clone(), message };
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tril/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(None)
            .build()
            .map_err(|e| unreachable(chain(&e)))?;
        let origin = reqwest::Url::parse(&env.endpoint).ok().map(|u| origin(&u));
        if origin.is_none() {
            return Err(unreachable("HF_ENDPOINT is not a URL (expected e.g. https://huggingface.co)".into()));
        }
        Ok(Client { env, http, origin })
    }

    /// Sends `method url`, following redirects (only same-origin ones when
    /// `relative_only`), with the token on the endpoint's origin only. Returns the last
    /// response and the etag/size headers, first seen first.
    fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        range: u64,
        relative_only: bool,
    ) -> Result<(reqwest::blocking::Response, FileMeta)> {
        let unreachable = |message: String| CoreError::HubUnreachable { endpoint: self.env.endpoint.clone(), message };
        let mut url = reqwest::Url::parse(url).map_err(|e| unreachable(format!("bad URL {url}: {e}")))?;
        let mut meta = FileMeta::default();
        for _ in 0..10 {
            let mut request = self.http.request(method.clone(), url.clone());
            if range > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={range}-"));
            }
            if let Some(token) = &self.env.token {
                if Some(origin(&url)) == self.origin {
                    request = request.bearer_auth(&token.0);
                }
            }
            let response = request.send().map_err(|e| unreachable(chain(&e)))?;
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            if meta.etag.is_none() {
                meta.etag = header("x-linked-etag").or_else(|| header("etag")).map(|e| clean_etag(&e));
            }
            if meta.size.is_none() {
                meta.size = header("x-linked-size").and_then(|s| s.trim().parse().ok());
            }
            if !response.status().is_redirection() {
                return Ok((response, meta));
            }
            let Some(next) = header("location").and_then(|l| url.join(&l).ok()) else {
                return Ok((response, meta));
            };
            if relative_only && Some(origin(&next)) != self.origin {
                return Ok((response, meta));
            }
            url = next;
        }
        Err(CoreError::Hub { target: url.to_string(), message: "more than 10 redirects".into() })
    }

    /// Maps an error status of a response about `target` to its error.
    fn check(&self, response: &reqwest::blocking::Response, target: &str, revision: &str) -> Result<()> {
        let status = response.status();
        let (target, revision) = (target.to_string(), revision.to_string());
        match status.as_u16() {
            200..=399 => Ok(()),
            404 => Err(CoreError::HubNotFound { target, revision }),
            401 | 403 => Err(CoreError::HubUnauthorized { target, revision, status: status.as_u16() }),
            _ => {
                Err(CoreError::Hub { target, message: format!("the hub answered HTTP {status} (revision {revision})") })
            }
        }
    }

    /// The commit sha of `revision` and the files of the repo there.
    fn repo_info(&self, kind: RepoKind, repo: &str, revision: &str) -> Result<(String, Vec<String>)> {
        let url = format!("{}/api/{}/{repo}/revision/{}", self.env.endpoint, kind.plural(), encode(revision, false));
        let (response, _) = self.send(reqwest::Method::GET, &url, 0, false)?;
        self.check(&response, repo, revision)?;
        let bad = |message: String| CoreError::Hub { target: repo.into(), message };
        let text = response.text().map_err(|e| bad(format!("reading the repo listing: {}", chain(&e))))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("the repo listing is not JSON: {e}")))?;
        let sha = json.get("sha").and_then(|s| s.as_str()).filter(|s| is_sha(s));
        let sha = sha.ok_or_else(|| bad(format!("the listing of revision {revision} has no commit `sha`")))?;
        let files = json
            .get("siblings")
            .and_then(|s| s.as_array())
            .map(|s| s.iter().filter_map(|f| f.get("rfilename")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Ok((sha.to_ascii_lowercase(), files))
    }

    /// The cached snapshot path of `file` at commit `sha`, downloading it if missing.
    fn fetch(&self, kind: RepoKind, repo: &str, sha: &str, file: &str, revision: &str) -> Result<PathBuf> {
        let target = format!("{repo}/{file}");
        if !safe_file(file) {
            return Err(CoreError::Hub { target, message: "unsafe file name in the repo listing".into() });
        }
        let dir = repo_dir(self.env.cache(repo)?, kind, repo);
        let snap = dir.join("snapshots").join(sha).join(file);
        if snap.is_file() {
            return Ok(snap);
        }
        let prefix = if kind == RepoKind::Dataset { "datasets/" } else { "" };
        let url = format!("{}/{prefix}{repo}/resolve/{sha}/{}", self.env.endpoint, encode(file, true));
        let (response, meta) = self.send(reqwest::Method::HEAD, &url, 0, true)?;
        self.check(&response, &target, revision)?;
        let etag = meta
            .etag
            .clone()
            .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
        let etag = etag.ok_or_else(|| CoreError::Hub {
            target: target.clone(),
            message: "the hub sent no usable ETag for this file".into(),
        })?;
        // Not `content_length()`: a HEAD response's body is empty.
        let length =
            response.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        let size = meta.size.or(length.filter(|_| response.status().is_success()));
        let blob = dir.join("blobs").join(&etag);
        if !blob.is_file() {
            self.download_blob(&url, &blob, &etag, size, &target, revision)?;
        }
        link_snapshot(&blob, &snap, file)?;
        Ok(snap)
    }

    fn download_blob(
        &self,
        url: &str,
        blob: &Path,
        etag: &str,
        size: Option<u64>,
        target: &str,
        rev: &str,
    ) -> Result<()> {
        let part = blob.with_file_name(format!("{etag}.incomplete"));
        if let Some(parent) = part.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CoreError::Io { path: parent.into(), source })?;
        }
        let bar = crate::progress::bytes_bar(size, target);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.transfer(url, &part, &bar, target, rev) {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why)) => {
                    tracing::warn!("{target}: transfer broken ({why}); attempt {attempt}/{ATTEMPTS}");
                    last = why;
                }
            }
        }
        bar.finish_and_clear();
        if !last.is_empty() {
            return Err(CoreError::Hub {
                target: target.into(),
                message: format!("download failed after {ATTEMPTS} attempts ({last}); run again to resume"),
            });
        }
        let got_len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            let got = sha256_file(&part)?;
            if !got.eq_ignore_ascii_case(etag) {
                let _ = std::fs::remove_file(&part);
                return Err(CoreError::HubChecksum { target: target.into(), expected: etag.into(), got });
            }
        } else if let Some(size) = size.filter(|s| *s != got_len) {
            let _ = std::fs::remove_file(&part);
            return Err(CoreError::Hub {
                target: target.into(),
                message: format!("received {got_len} bytes, expected {size}; the partial file was removed"),
            });
        }
        std::fs::rename(&part, blob).map_err(|source| CoreError::Io { path: blob.into(), source })?;
        if bar.is_hidden() {
            tracing::info!("downloaded {target} ({got_len} bytes)");
        }
        Ok(())
    }

    /// One GET into `part`, resuming from its current length.
    fn transfer(
        &self,
        url: &str,
        part: &Path,
        bar: &crate::progress::ProgressBar,
        target: &str,
        rev: &str,
    ) -> Result<(), Failure> {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        let (mut response, _) = self.send(reqwest::Method::GET, url, have, false).map_err(|e| match e {
            CoreError::HubUnreachable { message, .. } if have > 0 => Failure::Retry(message),
            e => Failure::Fatal(e),
        })?;
        let io = |source| CoreError::Io { path: part.into(), source };
        let status = response.status().as_u16();
        if status == 416 {
            // The partial file is already complete, or longer than the file: verify or restart.
            return match response.headers().get("content-range").and_then(|v| v.to_str().ok()) {
                Some(r) if r.ends_with(&format!("/{have}")) => Ok(()),
                _ => {
                    std::fs::remove_file(part).map_err(io)?;
                    Err(Failure::Retry("the partial file does not fit the remote file; restarting".into()))
                }
            };
        }
        self.check(&response, target, rev)?;
        let mut out = match status {
            206 => std::fs::OpenOptions::new().append(true).open(part).map_err(io)?,
            200 => std::fs::File::create(part).map_err(io)?,
            _ => {
                return Err(Failure::Fatal(CoreError::Hub {
                    target: target.into(),
                    message: format!("unexpected HTTP {status} for a download"),
                }))
            }
        };
        bar.set_position(if status == 206 { have } else { 0 });
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.flush().map_err(io)?;
                    return Err(Failure::Retry(chain(&e)));
                }
            };
            out.write_all(&buf[..n]).map_err(io)?;
            bar.inc(n as u64);
        }
        out.flush().map_err(io)?;
        // A connection closed early reads as a clean end: compare with Content-Length.
        let got = std::fs::metadata(part).map(|m| m.len()).map_err(io)?;
        let start = if status == 206 { have } else { 0 };
        match response.content_length() {
            Some(len) if got < start + len => Err(Failure::Retry(format!("connection closed after {got} bytes"))),
            _ => Ok(()),
        }
    }
}

fn clean_etag(raw: &str) -> String {
    raw.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| CoreError::Io { path: path.into(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

mod dataset;
pub use dataset::{dataset_split_files, select_split_files, DatasetRequest};

#[cfg(test)]
pub(crate) mod test_server;

#[cfg(test)]
mod tests {
    use super::dataset::list_dir;
    use super::test_server::{sha256_hex, HubServer, State};
    use super::*;
    use std::collections::BTreeMap;

    const SHA: &str = "1111111111111111111111111111111111111111";

    fn env(server: &HubServer, cache: &Path) -> HubEnv {
        HubEnv { hub_cache: Some(cache.into()), endpoint: server.url.clone(), ..HubEnv::default() }
    }

    fn model_files() -> BTreeMap<String, Vec<u8>> {
        let weights: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        BTreeMap::from([
            ("config.json".to_string(), b"{\"model_type\": \"gpt2\"}".to_vec()),
            ("model.safetensors".to_string(), weights),
            ("tokenizer.json".to_string(), b"{}".to_vec()),
            ("pytorch_model.bin".to_string(), b"not fetched".to_vec()),
        ])
    }

    fn server(state: State) -> HubServer {
        let s = HubServer::start(state);
        s.add("models", "org/tiny", "main", SHA, model_files());
        s
    }

    #[test]
    fn env_reads_variables_and_hides_the_token() {
        let vars = BTreeMap::from([
            ("HF_HOME", "/h"),
            ("HF_ENDPOINT", "http://x:1/"),
            ("HUGGING_FACE_HUB_TOKEN", "hf_abc"),
            ("HF_HUB_OFFLINE", "True"),
        ]);
        let env = HubEnv::from_vars(|k| vars.get(k).map(|v| v.to_string()));
        assert_eq!(env.hub_cache, Some(PathBuf::from("/h/hub")));
        assert_eq!(env.endpoint, "http://x:1");
        assert!(env.offline && env.token == Some(HubToken::new("hf_abc")));
        assert!(!format!("{env:?}").contains("hf_abc"));
        let env = HubEnv::from_vars(|_| None);
        assert_eq!((env.endpoint.as_str(), env.hub_cache, env.token), (DEFAULT_ENDPOINT, None, None));
    }

    #[test]
    fn model_download_fills_the_cache_layout_through_a_redirect() {
        let cache = tempfile::tempdir().unwrap();
        let server = server(State { redirect: true, ..State::default() });
        let snap = download_model(&env(&server, cache.path()), "org/tiny", "main").unwrap();
        let repo = cache.path().join("models--org--tiny");
        assert_eq!(snap, repo.join("snapshots").join(SHA));
        assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), SHA);
        let weights = &model_files()["model.safetensors"];
        let blob = repo.join("blobs").join(sha256_hex(weights));
        assert_eq!(&std::fs::read(&blob).unwrap(), weights);
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_link(snap.join("model.safetensors")).unwrap(),
            PathBuf::from(format!("../../blobs/{}", sha256_hex(weights)))
        );
        assert_eq!(&std::fs::read(snap.join("model.safetensors")).unwrap(), weights);
        assert!(snap.join("config.json").is_file() && snap.join("tokenizer.json").is_file());
        assert!(!snap.join("pytorch_model.bin").exists());
        assert!(list_dir(&repo.join("blobs")).iter().all(|f| !f.ends_with(".incomplete")));
        // A second download of the same commit sends no file requests.
        let before = server.log().len();
        download_model(&env(&server, cache.path()), "org/tiny", "main").unwrap();
        assert_eq!(server.log().len(), before + 1, "only the listing: {:?}", &server.log()[before..]);
    }

    #[test]
    fn a_dropped_transfer_resumes_with_range() {
        let cache = tempfile::tempdir().unwrap();
        let mut state = State::default();
        state.drop_once.insert("model.safetensors".into());
        let server = server(state);
        let snap = download_model(&env(&server, cache.path()), "org/tiny", "main").unwrap();
        assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), model_files()["model.safetensors"]);
        let gets: Vec<_> =
            server.log().into_iter().filter(|r| r.method == "GET" && r.path.ends_with("model.safetensors")).collect();
        assert_eq!(gets.len(), 2, "{gets:?}");
        assert_eq!(gets[0].range, None);
        assert_eq!(gets[1].range.as_deref(), Some("bytes=100000-"));
    }

    #[test]
    fn a_corrupted_body_is_rejected_and_removed() {
        let cache = tempfile::tempdir().unwrap();
        let mut state = State::default();
        state.corrupt.insert("model.safetensors".into());
        let server = server(state);
        let err = download_model(&env(&server, cache.path()), "org/tiny", "main").unwrap_err();
        assert!(matches!(err, CoreError::HubChecksum { .. }), "{err}");
        assert!(err.to_string().contains("org/tiny/model.safetensors"), "{err}");
        let blobs = list_dir(&cache.path().join("models--org--tiny/blobs"));
        assert!(blobs.iter().all(|b| b.len() != 64 && !b.ends_with(".incomplete")), "{blobs:?}");
        assert!(!cache.path().join("models--org--tiny/refs/main").exists());
    }

    #[test]
    fn status_errors_name_the_repo_and_what_to_do() {
        let cache = tempfile::tempdir().unwrap();
        let server = server(State { token: Some("hf_right".into()), ..State::default() });
        let mut e = env(&server, cache.path());
        let err = download_model(&e, "org/tiny", "main").unwrap_err().to_string();
        assert!(err.contains("HTTP 401") && err.contains("set HF_TOKEN"), "{err}");
        e.token = Some(HubToken::new("hf_wrong"));
        let err = download_model(&e, "org/tiny", "main").unwrap_err().to_string();
        assert!(err.contains("set HF_TOKEN") && !err.contains("hf_wrong"), "{err}");
        e.token = Some(HubToken::new("hf_right"));
        download_model(&e, "org/tiny", "main").unwrap();
        let err = download_model(&e, "org/missing", "v1").unwrap_err().to_string();
        assert_eq!(
            err,
            "repository or file not found: org/missing at revision v1 (check the id; a private repo needs HF_TOKEN)"
        );
        assert!(server
            .log()
            .iter()
            .all(|r| r.auth.is_none() || r.auth.as_deref().is_some_and(|a| a.starts_with("Bearer "))));
    }

    #[test]
    fn offline_and_unreachable_say_what_to_do() {
        let cache = tempfile::tempdir().unwrap();
        let mut server = server(State::default());
        let mut e = env(&server, cache.path());
        e.offline = true;
        let err = download_model(&e, "org/tiny", "main").unwrap_err().to_string();
        assert!(err.contains("HF_HUB_OFFLINE") && err.contains("org/tiny"), "{err}");
        assert!(server.log().is_empty(), "offline sent requests");
        server.stop();
        e.offline = false;
        let err = download_model(&e, "org/tiny", "main").unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot reach {}", server.url)) && err.contains("HF_HUB_OFFLINE=1"), "{err}");
        let err = download_model(&e, "../etc", "main").unwrap_err().to_string();
        assert!(err.contains("not a hub repo id"), "{err}");
    }
}
