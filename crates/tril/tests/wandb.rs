//! `logging=wandb` through the real CLI against a fake W&B on loopback: what arrives, and
//! that a slow, failing or absent server neither slows nor fails the run.

mod common;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A distinctive fake key: it must appear in no file and no output.
const KEY: &str = "fake-wandb-key-7Qx9ZpL2";

/// How the fake server answers.
#[derive(Debug, Clone, Copy)]
enum Behavior {
    Ok,
    /// Sleep this long before answering (longer than the client timeout).
    Slow(Duration),
    /// Answer HTTP 500 to the next `n` requests, then normally.
    FailFirst(usize),
}

/// What the fake server received.
#[derive(Debug, Default)]
struct Received {
    graphql: Vec<Value>,
    streams: Vec<(String, Value)>,
    uploads: Vec<(String, usize)>,
    auth: Vec<String>,
}

/// A fake W&B: `/graphql` (upsertBucket, createRunFiles), `/files/.../file_stream`,
/// `PUT /upload/...`.
struct FakeWandb {
    url: String,
    behavior: Arc<Mutex<Behavior>>,
    received: Arc<Mutex<Received>>,
}

impl FakeWandb {
    fn start(behavior: Behavior) -> FakeWandb {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let behavior = Arc::new(Mutex::new(behavior));
        let received = Arc::new(Mutex::new(Received::default()));
        let (b, r, u) = (behavior.clone(), received.clone(), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (b, r, u) = (b.clone(), r.clone(), u.clone());
                std::thread::spawn(move || serve(stream, &b, &r, &u));
            }
        });
        FakeWandb { url, behavior, received }
    }

    fn set(&self, behavior: Behavior) {
        *self.behavior.lock().unwrap() = behavior;
    }

    /// The history rows received, by offset (a later chunk at an offset replaces it).
    fn history(&self) -> BTreeMap<usize, Value> {
        let mut rows = BTreeMap::new();
        for (_, body) in &self.received.lock().unwrap().streams {
            let chunk = &body["files"]["wandb-history.jsonl"];
            if let (Some(offset), Some(content)) = (chunk["offset"].as_u64(), chunk["content"].as_array()) {
                for (i, line) in content.iter().enumerate() {
                    rows.insert(offset as usize + i, serde_json::from_str(line.as_str().unwrap()).unwrap());
                }
            }
        }
        rows
    }

    fn upserts(&self) -> Vec<Value> {
        let r = self.received.lock().unwrap();
        r.graphql.iter().filter(|q| q["query"].as_str().unwrap().contains("upsertBucket")).cloned().collect()
    }

    fn finished(&self) -> Vec<Value> {
        let r = self.received.lock().unwrap();
        r.streams.iter().filter(|(_, b)| b["complete"] == true).map(|(_, b)| b.clone()).collect()
    }
}

/// Serves one connection (keep-alive: many requests).
fn serve(stream: TcpStream, behavior: &Mutex<Behavior>, received: &Mutex<Received>, url: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mode = {
            let mut b = behavior.lock().unwrap();
            let now = *b;
            if let Behavior::FailFirst(n) = now {
                *b = if n <= 1 { Behavior::Ok } else { Behavior::FailFirst(n - 1) };
            }
            now
        };
        let (status, answer) = match mode {
            Behavior::Slow(d) => {
                // The client has given up by now: nothing is recorded.
                std::thread::sleep(d);
                (200, json!({}))
            }
            Behavior::FailFirst(_) => (500, json!({"error": "down"})),
            Behavior::Ok => (200, answer(&method, &path, &headers, &body, received, url)),
        };
        let text = answer.to_string();
        let head =
            format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", text.len());
        if stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(text.as_bytes())).is_err() {
            return;
        }
    }
}

/// Records a request and builds its answer.
fn answer(
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    received: &Mutex<Received>,
    url: &str,
) -> Value {
    let mut r = received.lock().unwrap();
    if let Some(auth) = headers.get("authorization") {
        r.auth.push(auth.clone());
    }
    if method == "PUT" {
        r.uploads.push((path.trim_start_matches("/upload/").to_string(), body.len()));
        return json!({});
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if path == "/graphql" {
        r.graphql.push(request.clone());
        let vars = &request["variables"];
        let query = request["query"].as_str().unwrap_or("");
        if query.contains("upsertBucket") {
            let entity = vars["entity"].as_str().unwrap_or("default-entity");
            return json!({"data": {"upsertBucket": {"inserted": true, "bucket": {
                "id": "b1", "name": vars["name"], "displayName": vars["displayName"], "historyLineCount": 0,
                "project": {"id": "p1", "name": vars["project"], "entity": {"id": "e1", "name": entity}}}}}});
        }
        if query.contains("createRunFiles") {
            let files: Vec<Value> = vars["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| json!({"name": n, "uploadUrl": format!("{url}/upload/{}", n.as_str().unwrap())}))
                .collect();
            return json!({"data": {"createRunFiles": {"runID": "b1", "uploadHeaders": ["X-Test: 1"], "files": files}}});
        }
        return json!({"errors": [{"message": "unknown query"}]});
    }
    r.streams.push((path.to_string(), request));
    json!({"exitcode": null, "limits": {}})
}

/// `tril --quiet ARGS` with the W&B environment `env` (every other WANDB_* removed):
/// exit code, stderr, seconds.
fn tril(args: &[&str], env: &[(&str, &str)]) -> (i32, String, f64) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tril"));
    command.arg("--quiet").args(args).env_remove("TRIL_LOG");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WANDB_")) {
        command.env_remove(k);
    }
    command.envs(env.iter().copied());
    let started = Instant::now();
    let out = command.output().expect("run tril");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), stderr, started.elapsed().as_secs_f64())
}

/// A short PPO run with `logging=wandb` into `dir`.
fn ppo(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (i32, String, f64) {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    let run_dir = format!("run_dir={}", dir.display());
    let mut args = vec![
        "run",
        "--config-dir",
        cfgs.to_str().unwrap(),
        "task=synthetic",
        "alg=ppo",
        "logging=wandb",
        "alg.args.n_iters=2",
        &run_dir,
    ];
    args.extend_from_slice(extra);
    tril(&args, env)
}

/// Every file under `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The key is in no file of the run directory and not in the output.
fn assert_key_nowhere(dir: &Path, output: &str) {
    assert!(!output.contains(KEY), "the API key is in the output:\n{output}");
    for file in files_below(dir) {
        let bytes = std::fs::read(&file).unwrap();
        let hit = bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes());
        assert!(!hit, "the API key is in {}", file.display());
    }
}

/// Every (step, key, value) of the run's JSONL files is in a history row at that step.
fn assert_every_metric_arrived(dir: &Path, fake: &FakeWandb) {
    let rows = fake.history();
    let offsets: Vec<usize> = rows.keys().copied().collect();
    assert_eq!(offsets, (0..rows.len()).collect::<Vec<_>>(), "history offsets are contiguous from 0");
    let by_step: BTreeMap<u64, &Value> = rows.values().map(|r| (r["_step"].as_u64().unwrap(), r)).collect();
    assert_eq!(by_step.len(), rows.len(), "one row per step");
    let mut checked = 0;
    for (file, x) in [("rollout_info.jsonl", "iteration"), ("training_info.jsonl", "iteration")] {
        for line in common::lines(&dir.join(file)) {
            let step = line[x].as_u64().unwrap();
            let row = by_step.get(&step).unwrap_or_else(|| panic!("no row at step {step}"));
            for (k, v) in line.as_object().unwrap() {
                assert_eq!(&row[k], v, "{file} step {step} key {k}");
                checked += 1;
            }
        }
    }
    for line in common::lines(&dir.join("val_split_metrics.jsonl")) {
        let step = line["epoch"].as_u64().unwrap();
        let row = by_step.get(&step).unwrap_or_else(|| panic!("no row at eval step {step}"));
        for (k, v) in line["metrics"].as_object().unwrap() {
            assert_eq!(&row[&format!("val/{k}")], v, "val step {step} key {k}");
            checked += 1;
        }
    }
    assert!(checked > 20, "too few metrics checked: {checked}");
    for row in rows.values() {
        assert!(row["_runtime"].as_f64().unwrap() >= 0.0 && row["_timestamp"].as_f64().unwrap() > 1e9, "{row}");
    }
}

fn run_id(dir: &Path) -> String {
    let info: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("wandb/run.json")).unwrap()).unwrap();
    info["run_id"].as_str().unwrap().to_string()
}

#[test]
fn a_run_sends_its_config_metadata_metrics_summary_and_model() {
    let fake = FakeWandb::start(Behavior::Ok);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let env = [("WANDB_API_KEY", KEY), ("WANDB_BASE_URL", fake.url.as_str()), ("WANDB_PROJECT", "proj")];
    let meta =
        ["wandb_run_name=my-run", "wandb_group=grp", "wandb_tags=[a,b]", "wandb_notes=hello", "wandb_log_model=true"];
    let (code, out, _) = ppo(&dir, &meta, &env);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("WARN"), "{out}");

    let id = run_id(&dir);
    let upserts = fake.upserts();
    let vars = &upserts[0]["variables"];
    assert_eq!(vars["name"], id.as_str());
    assert_eq!(vars["project"], "proj", "WANDB_PROJECT overrides project_name");
    assert!(vars["entity"].is_null());
    assert_eq!(vars["displayName"], "my-run");
    assert_eq!(vars["groupName"], "grp");
    assert_eq!(vars["tags"], json!(["a", "b"]));
    assert_eq!(vars["notes"], "hello");
    let config: Value = serde_json::from_str(vars["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["alg"]["value"]["id"], "ppo");
    assert_eq!(config["alg"]["value"]["args"]["n_iters"], 2);
    assert_eq!(config["task"]["value"]["id"], "synthetic");

    assert_every_metric_arrived(&dir, &fake);
    let received = fake.received.lock().unwrap();
    let stream_path = format!("/files/default-entity/proj/{id}/file_stream");
    assert!(received.streams.iter().all(|(p, _)| *p == stream_path), "{:?}", received.streams[0].0);
    let summary =
        received.streams.iter().rev().find_map(|(_, b)| b["files"]["wandb-summary.json"]["content"][0].as_str());
    let summary: Value = serde_json::from_str(summary.expect("a summary")).unwrap();
    assert_eq!(summary["_step"], 2);
    assert!(summary["ppo/loss"].is_number(), "{summary}");
    let uploaded: Vec<&str> = received.uploads.iter().map(|(n, _)| n.as_str()).collect();
    assert!(uploaded.contains(&"checkpoints/iter_2/policy/model.safetensors"), "{uploaded:?}");
    assert!(uploaded.contains(&"checkpoints/iter_2/policy/config.json"), "{uploaded:?}");
    assert!(received.uploads.iter().all(|(_, size)| *size > 0));
    let basic = format!("Basic {}", base64(&format!("api:{KEY}")));
    assert!(received.auth.iter().filter(|a| !a.is_empty()).all(|a| *a == basic));
    assert!(received.auth.len() >= 3);
    drop(received);
    assert_eq!(fake.finished(), vec![json!({"complete": true, "exitcode": 0})]);
    assert_key_nowhere(&dir, &out);

    // --resume continues the same W&B run.
    let (code, out, _) = tril(&["run", "--resume", dir.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{out}");
    let upserts = fake.upserts();
    assert_eq!(upserts.len(), 2);
    assert_eq!(upserts[1]["variables"]["name"], id.as_str());
    assert_key_nowhere(&dir, &out);
}

#[test]
fn a_slow_or_failing_server_neither_slows_nor_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, baseline) = ppo(&tmp.path().join("plain"), &["logging=default"], &[]);
    assert_eq!(code, 0, "{out}");

    // Slower than the client's 1 s timeout throughout: one warning, exit 0, and the run
    // takes at most the bounded end wait longer; `tril wandb-sync` sends it later.
    let slow = FakeWandb::start(Behavior::Slow(Duration::from_secs(3)));
    let dir = tmp.path().join("slow");
    let env = [("WANDB_API_KEY", KEY), ("WANDB_BASE_URL", slow.url.as_str()), ("WANDB_HTTP_TIMEOUT", "1")];
    let (code, out, took) = ppo(&dir, &[], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("W&B: cannot reach").count(), 1, "{out}");
    assert!(out.contains("tril wandb-sync"), "{out}");
    assert!(took < baseline * 2.0 + 15.0, "{took} s vs {baseline} s without W&B");
    slow.set(Behavior::Ok);
    let (code, out, _) = tril(&["wandb-sync", dir.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{out}");
    assert_every_metric_arrived(&dir, &slow);
    assert_eq!(slow.finished(), vec![json!({"complete": true, "exitcode": 0})]);
    assert_key_nowhere(&dir, &out);

    // HTTP 500 to the first requests, then healthy again: one warning, and everything
    // arrives by the end of the run.
    let failing = FakeWandb::start(Behavior::FailFirst(2));
    let dir = tmp.path().join("failing");
    let env = [("WANDB_API_KEY", KEY), ("WANDB_BASE_URL", failing.url.as_str()), ("WANDB_HTTP_TIMEOUT", "1")];
    let (code, out, took) = ppo(&dir, &[], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("W&B: cannot reach").count(), 1, "{out}");
    assert!(out.contains("HTTP 500"), "{out}");
    assert!(took < baseline * 2.0 + 15.0, "{took} s vs {baseline} s without W&B");
    assert_every_metric_arrived(&dir, &failing);
    assert_eq!(failing.finished().len(), 1);
    assert_key_nowhere(&dir, &out);

    // No server at all.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let absent = format!("http://127.0.0.1:{port}");
    let dir = tmp.path().join("absent");
    let env = [("WANDB_API_KEY", KEY), ("WANDB_BASE_URL", absent.as_str()), ("WANDB_HTTP_TIMEOUT", "1")];
    let (code, out, took) = ppo(&dir, &[], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("W&B: cannot reach").count(), 1, "{out}");
    assert!(took < baseline * 2.0 + 15.0, "{took} s vs {baseline} s without W&B");
    assert_key_nowhere(&dir, &out);
}

#[test]
fn offline_mode_writes_the_run_directory_and_wandb_sync_sends_it() {
    let fake = FakeWandb::start(Behavior::Ok);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let (code, out, _) = ppo(&dir, &[], &[("WANDB_MODE", "offline"), ("WANDB_BASE_URL", fake.url.as_str())]);
    assert_eq!(code, 0, "{out}");
    assert!(fake.received.lock().unwrap().graphql.is_empty(), "offline sends nothing");
    for file in ["wandb/run.json", "wandb/spool.jsonl"] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
    let env = [("WANDB_API_KEY", KEY), ("WANDB_BASE_URL", fake.url.as_str())];
    let (code, out, _) = tril(&["wandb-sync", dir.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fake.upserts()[0]["variables"]["name"], run_id(&dir).as_str());
    assert_every_metric_arrived(&dir, &fake);
    assert_eq!(fake.finished().len(), 1);
    // A second sync sends nothing new.
    let before = fake.received.lock().unwrap().streams.len();
    let (code, out, _) = tril(&["wandb-sync", dir.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fake.received.lock().unwrap().streams.len(), before);
    assert_key_nowhere(&dir, &out);
}

#[test]
fn online_without_an_api_key_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let (code, out, _) = ppo(&dir, &[], &[("WANDB_BASE_URL", "http://127.0.0.1:9")]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("WANDB_API_KEY is not set") && out.contains("WANDB_MODE=offline"), "{out}");
    assert!(!dir.exists(), "nothing was started");
    // A config that would carry the key into config.resolved.yaml and W&B is refused.
    let env = [("WANDB_API_KEY", KEY), ("WANDB_BASE_URL", "http://127.0.0.1:9")];
    let (code, out, _) = ppo(&dir, &["wandb_notes=${env:WANDB_API_KEY}"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("holds the value of WANDB_API_KEY") && !out.contains(KEY), "{out}");
    assert!(!dir.exists(), "nothing was written");
    let (code, out, _) = ppo(&dir, &["alg.args.n_iters=1"], &[("WANDB_MODE", "disabled")]);
    assert_eq!(code, 0, "WANDB_MODE=disabled needs no key: {out}");
    assert!(!dir.join("wandb").exists());
}

/// Standard base64 (for the expected basic-auth header).
fn base64(text: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
