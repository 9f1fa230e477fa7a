//! Hugging Face Hub downloads through the real CLI against a loopback test hub
//! (`tril-core/src/hub/test_server.rs`): a DPO run whose model (`org/name`) and preference
//! data (`hub:org/name`) are downloaded into the HF cache layout, a dropped transfer
//! resumed with `Range`, the token sent but never written or printed, then the same run
//! from the cache with the hub gone; and the errors for offline mode, 401, 404 and a
//! corrupted file.

mod common;
#[path = "../../tril-core/src/hub/test_server.rs"]
mod hub_server;

use common::*;
use hub_server::{sha256_hex, HubServer, State};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use tril_tasks::table::{write_parquet, ParquetCodec, ParquetColumn};

const TOKEN: &str = "hf_tEsT_sEcReT_9f8e7d";
const MODEL_SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DATA_SHA: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// `tril --quiet run` with only the given HF_* variables set on the child.
fn tril_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tril"));
    command.args(["--quiet", "run", "--config-dir", cfgs.to_str().unwrap()]).args(args).env_remove("TRIL_LOG");
    for k in ["HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME"] {
        command.env_remove(k);
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("run tril");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The tiny GPT-2 fixture's files, as a hub repo holds them.
fn model_files() -> BTreeMap<String, Vec<u8>> {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(fixture("gpt2").join(f)).unwrap()))
        .collect()
}

/// 30 counting pairs as one parquet shard.
fn preference_parquet(dir: &Path) -> Vec<u8> {
    let path = dir.join("train.parquet");
    let (mut prompt, mut chosen, mut rejected) = (vec![], vec![], vec![]);
    for i in 0..30 {
        prompt.push(Some(format!("{} {}", i % 7, i % 7 + 1)));
        chosen.push(Some(format!(" {} {}", i % 7 + 2, i % 7 + 3)));
        rejected.push(Some(format!(" {} {}", i % 7 + 3, i % 7 + 2)));
    }
    let columns = [
        ("prompt", ParquetColumn::Str(prompt)),
        ("chosen", ParquetColumn::Str(chosen)),
        ("rejected", ParquetColumn::Str(rejected)),
    ];
    write_parquet(&path, &columns, ParquetCodec::Snappy).unwrap();
    std::fs::read(&path).unwrap()
}

fn hub(tmp: &Path, state: State) -> HubServer {
    let server = HubServer::start(state);
    server.add("models", "test-org/tiny-gpt2", "main", MODEL_SHA, model_files());
    let data = BTreeMap::from([
        ("README.md".to_string(), b"# prefs".to_vec()),
        ("data/train-00000-of-00001.parquet".to_string(), preference_parquet(tmp)),
    ]);
    server.add("datasets", "test-org/prefs", "main", DATA_SHA, data);
    server
}

fn dpo_args(run_dir_arg: &str, model: &str) -> Vec<String> {
    [
        "task=preference",
        "alg=dpo",
        "alg.args.epochs=1",
        "alg.args.max_length=16",
        "alg.args.max_prompt_length=8",
        "task.args.datasets=[{path: \"hub:test-org/prefs\", split: train}]",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        run_dir_arg.to_string(),
        format!("alg.args.model_name={model}"),
        format!("alg.tokenizer.model_name={model}"),
    ])
    .collect()
}

/// Every file under `dir` (symlinks followed), for the token check.
fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn hub_model_and_dataset_feed_a_run_then_the_cache_serves_without_network() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hf-cache");
    let mut state = State { token: Some(TOKEN.into()), redirect: true, ..State::default() };
    state.drop_once.insert("model.safetensors".into());
    let mut server = hub(tmp.path(), state);
    let url = server.url.clone();
    let env = [("HF_ENDPOINT", url.as_str()), ("HF_HUB_CACHE", cache.to_str().unwrap()), ("HF_TOKEN", TOKEN)];
    let (dir, arg) = run_dir(&tmp, "dpo");
    let args = dpo_args(&arg, "test-org/tiny-gpt2");
    let (code, stderr) = tril_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(!lines(&dir.join("training_info.jsonl")).is_empty());

    // The HF cache layout, as huggingface_hub writes it.
    let repo = cache.join("models--test-org--tiny-gpt2");
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), MODEL_SHA);
    let weights = std::fs::read(fixture("gpt2").join("model.safetensors")).unwrap();
    let snap_weights = repo.join("snapshots").join(MODEL_SHA).join("model.safetensors");
    assert_eq!(std::fs::read(&snap_weights).unwrap(), weights, "resumed and intact");
    assert!(repo.join("blobs").join(sha256_hex(&weights)).is_file());
    let data = cache.join("datasets--test-org--prefs");
    assert_eq!(std::fs::read_to_string(data.join("refs/main")).unwrap(), DATA_SHA);
    assert!(data.join("snapshots").join(DATA_SHA).join("data/train-00000-of-00001.parquet").is_file());

    // The dropped transfer was resumed with Range; the token went to the hub only.
    let log = server.log();
    let gets: Vec<_> =
        log.iter().filter(|r| r.method == "GET" && r.path.starts_with("/cdn/test-org/tiny-gpt2/")).collect();
    let weights_gets: Vec<_> = gets.iter().filter(|r| r.path.ends_with("/model.safetensors")).collect();
    assert_eq!(weights_gets.len(), 2, "{weights_gets:?}");
    assert_eq!(weights_gets[0].range, None);
    assert_eq!(weights_gets[1].range.as_deref(), Some(format!("bytes={}-", weights.len() / 2).as_str()));
    // (The test CDN shares the hub's origin, so it gets the token too; a CDN on another
    // origin does not.)
    let bearer = format!("Bearer {TOKEN}");
    assert!(log.iter().all(|r| r.auth.as_deref() == Some(bearer.as_str())), "{log:?}");

    // The hub is gone: the same run resolves everything from the cache.
    server.stop();
    let (dir2, arg2) = run_dir(&tmp, "dpo-cached");
    let args = dpo_args(&arg2, "test-org/tiny-gpt2");
    let (code, stderr2) = tril_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    assert_eq!(code, 0, "{stderr2}");
    assert_eq!(lines(&dir2.join("training_info.jsonl")).len(), lines(&dir.join("training_info.jsonl")).len());

    // The token is in no file and no output.
    let mut files = Vec::new();
    all_files(tmp.path(), &mut files);
    assert!(files.len() > 10, "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "token in {}", file.display());
    }
    assert!(!stderr.contains(TOKEN) && !stderr2.contains(TOKEN));
}

#[test]
fn hub_errors_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hf-cache");
    let mut state = State { token: Some(TOKEN.into()), ..State::default() };
    state.corrupt.insert("model.safetensors".into());
    let server = hub(tmp.path(), state);
    let cache_env = ("HF_HUB_CACHE", cache.to_str().unwrap());
    let endpoint = ("HF_ENDPOINT", server.url.as_str());
    let run = |name: &str, model: &str, env: &[(&str, &str)]| {
        let (_, arg) = run_dir(&tmp, name);
        let args = dpo_args(&arg, model);
        let (code, stderr) = tril_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), env);
        assert_ne!(code, 0, "{name}: {stderr}");
        assert!(!stderr.contains(TOKEN), "{name}: {stderr}");
        stderr
    };

    // Offline with an empty cache: the offline error, and not one request.
    let err =
        run("offline", "test-org/tiny-gpt2", &[endpoint, cache_env, ("HF_HUB_OFFLINE", "1"), ("HF_TOKEN", TOKEN)]);
    // (The data are resolved before the model.)
    assert!(err.contains("is not in the hub cache") && err.contains("HF_HUB_OFFLINE is set"), "{err}");
    let (_, arg) = run_dir(&tmp, "offline-model");
    let offline_model = ["task=synthetic_preference", "alg=dpo", &arg, "alg.args.model_name=test-org/tiny-gpt2"];
    let (code, err) = tril_env(&offline_model, &[endpoint, cache_env, ("HF_HUB_OFFLINE", "1")]);
    assert_ne!(code, 0);
    assert!(err.contains("test-org/tiny-gpt2") && err.contains("HF_HUB_OFFLINE is set"), "{err}");
    assert!(server.log().is_empty(), "{:?}", server.log());

    // No token, a wrong one: set HF_TOKEN.
    let err = run("no-token", "test-org/tiny-gpt2", &[endpoint, cache_env]);
    assert!(err.contains("HTTP 401") && err.contains("set HF_TOKEN"), "{err}");
    let err = run("bad-token", "test-org/tiny-gpt2", &[endpoint, cache_env, ("HF_TOKEN", "hf_wrong")]);
    assert!(err.contains("set HF_TOKEN") && !err.contains("hf_wrong"), "{err}");

    // A missing repo: named, with its revision.
    let with_token = [endpoint, cache_env, ("HF_TOKEN", TOKEN)];
    let err = run("missing", "test-org/nope@v2", &with_token);
    assert!(err.contains("repository or file not found: test-org/nope at revision v2"), "{err}");

    // A corrupted weights file: rejected by its sha256, the partial file removed.
    let err = run("corrupt", "test-org/tiny-gpt2", &with_token);
    assert!(err.contains("test-org/tiny-gpt2/model.safetensors") && err.contains("checksum"), "{err}");
    let blobs = cache.join("models--test-org--tiny-gpt2/blobs");
    let left: Vec<_> = std::fs::read_dir(&blobs).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".incomplete")), "{left:?}");

    // Down: cannot reach, with the way out.
    let err = run("down", "test-org/other", &[("HF_ENDPOINT", "http://127.0.0.1:9"), cache_env]);
    assert!(err.contains("cannot reach http://127.0.0.1:9") && err.contains("HF_HUB_OFFLINE=1"), "{err}");
}
