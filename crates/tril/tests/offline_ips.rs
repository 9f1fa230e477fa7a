//! `tril logp` and `alg=offline_ips` through the real CLI, on tiny parquet files written
//! here and the seeded `builtin:tiny-gpt2` (CPU).

mod common;
use burn::tensor::{Int, Tensor, TensorData};
use std::path::{Path, PathBuf};
use std::process::Command;
use tril_algorithms::offline::logp::{load_lm, LogpCache, Record};
use tril_algorithms::offline::offline_ips::synthetic_records;
use tril_core::backend::CpuBackend;
use tril_tasks::table::{write_parquet, ParquetCodec, ParquetColumn};

struct Out {
    code: i32,
    stderr: String,
}

fn tril(args: &[&str]) -> Out {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tril"));
    if args[0] == "run" {
        cmd.args(["run", "--config-dir", cfgs.to_str().unwrap()]).args(&args[1..]);
    } else {
        cmd.args(args);
    }
    let out = cmd.env_remove("TRIL_LOG").env_remove("TRIL_CONFIG_DIR").output().expect("run tril");
    Out { code: out.status.code().unwrap_or(-1), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// The seed's columns; prompts as `[user, assistant-prefix]` lists like its
/// `prompt_pretokenized`.
fn write_data(path: &Path, records: &[Record]) {
    let columns = [
        ("uid", ParquetColumn::Str(records.iter().map(|r| Some(r.uid.clone())).collect())),
        (
            "prompt_pretokenized",
            ParquetColumn::StrList(
                records
                    .iter()
                    .map(|r| {
                        let (user, prefix) = r.prompt.split_at(r.prompt.rfind(' ').unwrap_or(0));
                        vec![user.to_string(), prefix.trim().to_string()]
                    })
                    .collect(),
            ),
        ),
        ("unprocessed_response", ParquetColumn::Str(records.iter().map(|r| Some(r.response.clone())).collect())),
        ("normalized_reward", ParquetColumn::F64(records.iter().map(|r| r.reward).collect())),
    ];
    write_parquet(path, &columns, ParquetCodec::Snappy).unwrap();
}

fn logp(data: &Path, out: &Path) -> Out {
    logp_with(data, out, &[])
}

fn logp_with(data: &Path, out: &Path, extra: &[&str]) -> Out {
    let base = [
        "logp",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "builtin:tiny-gpt2",
        "--seed",
        "42",
        "--max-length",
        "32",
        "--batch-size",
        "5",
        "--out",
        out.to_str().unwrap(),
    ];
    tril(&[&base[..], extra].concat())
}

fn training(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("training_info.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("ips/loss").is_some())
        .collect()
}

fn arg(key: &str, value: impl std::fmt::Display) -> String {
    format!("{key}={value}")
}

/// Log-probs of the response tokens (+ EOS) of one record by a plain unpadded forward and
/// a log-softmax written out here: independent of the batching, padding and gather code
/// `tril logp` uses.
fn independent_logp(lm: &tril_models::causal_lm::CausalLm<CpuBackend>, prompt: &str, response: &str) -> Vec<f32> {
    let tok = tril_algorithms::onpolicy::numbers_tokenizer().unwrap();
    let mut ids = tok.encode(prompt, false).unwrap();
    let p = ids.len();
    ids.extend(tok.encode(response, false).unwrap());
    ids.push(0); // EOS
    let n = ids.len();
    let input = Tensor::<CpuBackend, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [1, n]),
        &Default::default(),
    );
    let logits = lm.forward(input, None).logits.into_data().to_vec::<f32>().unwrap();
    let v = logits.len() / n;
    (p..n)
        .map(|t| {
            let row = &logits[(t - 1) * v..t * v];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row[ids[t] as usize] - max - row.iter().map(|x| (x - max).exp()).sum::<f32>().ln()
        })
        .collect()
}

/// `tril logp` writes every uid, each equal to an unpadded forward within 1e-5; IPS from
/// that cache starts at rho = 1 and KL = 0 (the cache lines up with training's forward,
/// within 1e-4) and raises the mean log-prob of positive samples by at least 0.3 nats per
/// token (measured: -3.03 at the first step -> -1.93 over the last five of 60).
#[test]
fn logp_cache_matches_a_plain_forward_and_ips_trains_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.parquet");
    let records = synthetic_records(40, 7);
    write_data(&data, &records);
    let cache_path = tmp.path().join("d.logp.safetensors");
    let out = logp(&data, &cache_path);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cache = LogpCache::load(&cache_path).unwrap();
    assert_eq!(cache.len(), 40);
    assert_eq!(cache.meta.get("model").map(String::as_str), Some("builtin:tiny-gpt2"));
    let tok = tril_algorithms::onpolicy::numbers_tokenizer().unwrap();
    let (lm, _) = load_lm::<CpuBackend>("builtin:tiny-gpt2", tok.vocab_size(), 42, 32, &Default::default()).unwrap();
    for r in &records {
        let (user, prefix) = r.prompt.split_at(r.prompt.rfind(' ').unwrap_or(0));
        let want = independent_logp(&lm, &format!("{user}\n{}", prefix.trim()), &r.response);
        let got = cache.get(&r.uid).unwrap_or_else(|| panic!("uid {} missing", r.uid));
        assert_eq!(got.len(), want.len(), "{}", r.uid);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{}: {got:?} vs {want:?}", r.uid);
        }
    }

    let run = tmp.path().join("run");
    let out = tril(&[
        "run",
        "task=synthetic",
        "alg=offline_ips",
        &arg("run_dir", run.display()),
        &arg("alg.args.data", data.display()),
        &arg("alg.args.logp_cache", cache_path.display()),
        "alg.args.epochs=20",
        "alg.args.eval_fraction=0.0",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let steps = training(&run);
    assert_eq!(steps.len(), 60, "40 rows / (8 x 2) -> 3 steps per epoch, 20 epochs");
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
    assert!((f(&steps[0], "ips/rho_mean") - 1.0).abs() < 1e-4, "{}", steps[0]);
    assert!(f(&steps[0], "ips/kl").abs() < 1e-4, "{}", steps[0]);
    assert!(steps.iter().all(|s| f(s, "ips/loss").is_finite()));
    let first = f(&steps[0], "stats/pos_logp");
    let last = steps[55..].iter().map(|s| f(s, "stats/pos_logp")).sum::<f64>() / 5.0;
    assert!(last - first >= 0.3, "positive log-prob did not rise enough: {first} -> {last}");
    for file in ["checkpoints/iter_60/policy/model.safetensors", "checkpoints/iter_60/trainer_state.json", "log.txt"] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
}

/// `posonly` trains on rows with reward > 0.75 only: no negative sample is ever logged.
#[test]
fn posonly_keeps_only_high_reward_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = tril(&[
        "run",
        "task=synthetic",
        "alg=offline_ips",
        &arg("run_dir", run.display()),
        "alg.args.data_filter=posonly",
        "alg.args.epochs=1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let steps = training(&run);
    assert!(!steps.is_empty());
    for s in &steps {
        assert!(s.get("stats/neg_count").is_none(), "{s}");
        assert!(s["stats/pos_reward"].as_f64().unwrap() > 0.75, "{s}");
    }
}

fn run_on(tmp: &Path, data: &Path, extra: &[&str]) -> Out {
    let run: PathBuf = tmp.join(format!("run-{}", extra.len()));
    let _ = std::fs::remove_dir_all(&run);
    let mut args = vec![
        "run".to_string(),
        "task=synthetic".into(),
        "alg=offline_ips".into(),
        arg("run_dir", run.display()),
        arg("alg.args.data", data.display()),
        "alg.args.epochs=1".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    tril(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn bad_datasets_and_caches_give_errors_naming_file_column_and_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let records = synthetic_records(5, 1);

    // A missing column names the file, the column and the flag.
    let no_response = dir.join("no_response.parquet");
    write_parquet(
        &no_response,
        &[
            ("uid", ParquetColumn::Str(vec![Some("a".into())])),
            ("prompt_pretokenized", ParquetColumn::Str(vec![Some("1 2".into())])),
        ],
        ParquetCodec::Zstd,
    )
    .unwrap();
    let out = logp(&no_response, &dir.join("x.safetensors"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("no_response.parquet: no column `unprocessed_response`"), "{}", out.stderr);
    assert!(out.stderr.contains("--response-key"), "{}", out.stderr);

    // A reward that is not a number names the row.
    let bad_reward = dir.join("bad_reward.parquet");
    write_parquet(
        &bad_reward,
        &[
            ("uid", ParquetColumn::Str(vec![Some("a".into()), Some("b".into())])),
            ("prompt_pretokenized", ParquetColumn::Str(vec![Some("1 2".into()), Some("3".into())])),
            ("unprocessed_response", ParquetColumn::Str(vec![Some("3 4".into()), Some("5".into())])),
            ("normalized_reward", ParquetColumn::Str(vec![Some("0.5".into()), Some("high".into())])),
        ],
        ParquetCodec::Snappy,
    )
    .unwrap();
    let out = run_on(dir, &bad_reward, &[]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(
            "bad_reward.parquet: row 2: column `normalized_reward` (alg.args.reward_key): expected a number, found \"high\""
        ),
        "{}",
        out.stderr
    );

    // Empty: no rows, and no bytes at all.
    let empty = dir.join("empty.parquet");
    write_data(&empty, &[]);
    let out = logp(&empty, &dir.join("x.safetensors"));
    assert!(out.code != 0 && out.stderr.contains("empty.parquet: the file has no data rows"), "{}", out.stderr);
    let zero = dir.join("zero.parquet");
    std::fs::write(&zero, b"").unwrap();
    let out = run_on(dir, &zero, &[]);
    assert!(out.code != 0 && out.stderr.contains("zero.parquet: not a readable parquet file"), "{}", out.stderr);

    // A repeated uid names both rows.
    let mut dup = records.clone();
    dup[3].uid = dup[1].uid.clone();
    let dup_path = dir.join("dup.parquet");
    write_data(&dup_path, &dup);
    let out = logp(&dup_path, &dir.join("x.safetensors"));
    assert!(out.stderr.contains("dup.parquet: row 4: uid `syn-1` repeats row 2"), "{}", out.stderr);

    // A cache computed on the first four rows lacks the fifth: an error, or with
    // allow_missing_logp a counted warning and training on the other four.
    let four = dir.join("four.parquet");
    write_data(&four, &records[..4]);
    let cache = dir.join("four.logp.safetensors");
    assert_eq!(logp(&four, &cache).code, 0);
    let five = dir.join("five.parquet");
    write_data(&five, &records);
    let cache_arg = arg("alg.args.logp_cache", cache.display());
    let out = run_on(dir, &five, &[&cache_arg, "alg.args.max_length=32", "alg.args.eval_fraction=0.0"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("1 of 5 rows have no log-probs in") && out.stderr.contains("uid `syn-4`"),
        "{}",
        out.stderr
    );
    let out = run_on(
        dir,
        &five,
        &[&cache_arg, "alg.args.max_length=32", "alg.args.eval_fraction=0.0", "alg.args.allow_missing_logp=true"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("skipping them"), "{}", out.stderr);

    // A cache from another max_length does not line up with the tokens: named by uid.
    let out = run_on(dir, &four, &[&cache_arg, "alg.args.max_length=6"]);
    assert!(out.stderr.contains("the cache holds") && out.stderr.contains("uid `syn-"), "{}", out.stderr);
}

/// A row whose prompt leaves no room for its response no longer stops `tril logp`: it is
/// skipped and reported by row and uid (the others are written), an error with
/// `--strict`, or kept with its prompt cut from the left (`--overflow truncate-left`).
#[test]
fn logp_skips_or_left_truncates_a_row_that_does_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut records = synthetic_records(5, 3);
    records[2].prompt = (0..40).map(|i| (i % 20).to_string()).collect::<Vec<_>>().join(" ");
    let data = dir.join("long.parquet");
    write_data(&data, &records);
    let out = logp(&data, &dir.join("skip.safetensors"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("skipped 1 of 5 rows"), "{}", out.stderr);
    assert!(out.stderr.contains("row 3 (uid `syn-2`): the prompt alone has 40 tokens"), "{}", out.stderr);
    let skip = LogpCache::load(&dir.join("skip.safetensors")).unwrap();
    assert_eq!(skip.len(), 4);
    assert!(skip.get("syn-2").is_none());

    let out = logp_with(&data, &dir.join("strict.safetensors"), &["--strict"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("row 3 (uid `syn-2`)"), "{}", out.stderr);
    assert!(!dir.join("strict.safetensors").exists());

    let out = logp_with(&data, &dir.join("left.safetensors"), &["--overflow", "truncate-left"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let left = LogpCache::load(&dir.join("left.safetensors")).unwrap();
    assert_eq!(left.len(), 5);
    assert_eq!(left.get("syn-2").unwrap().len(), 7, "the whole response (6 tokens) and EOS");
    // Rows that fit are the same under both rules (within 1e-5: the batches are padded to
    // other lengths, and the CPU backend's sums depend on the shapes).
    for uid in ["syn-0", "syn-1", "syn-3", "syn-4"] {
        let (a, b) = (left.get(uid).unwrap(), skip.get(uid).unwrap());
        assert_eq!(a.len(), b.len(), "{uid}");
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5), "{uid}: {a:?} vs {b:?}");
    }
    // The kept prompt is the last 32 - 7 = 25 tokens of the original.
    let vocab = tril_algorithms::onpolicy::numbers_tokenizer().unwrap().vocab_size();
    let lm = load_lm::<CpuBackend>("builtin:tiny-gpt2", vocab, 42, 32, &Default::default()).unwrap().0;
    let tail = (15..40).map(|i| (i % 20).to_string()).collect::<Vec<_>>().join(" ");
    let want = independent_logp(&lm, &tail, &records[2].response);
    for (a, b) in left.get("syn-2").unwrap().iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let out = logp_with(&data, &dir.join("x.safetensors"), &["--overflow", "left"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--overflow: expected skip or truncate-left, found `left`"), "{}", out.stderr);
}

/// `tril logp` with an HF GPT-2 directory (tril-models' tiny transformers-made fixture)
/// equals transformers' own log-softmax (fixtures/make_logp_fixture.py, float64 there)
/// within 1e-4, with rows of different lengths padded into batches of two.
#[test]
fn logp_of_an_hf_gpt2_matches_transformers() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = here.join("../tril-models/tests/fixtures/gpt2");
    let fixture: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(here.join("tests/fixtures/logp_gpt2.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hf.parquet");
    let col = |k: &str| fixture.iter().map(|r| Some(r[k].as_str().unwrap().to_string())).collect::<Vec<_>>();
    let columns = [
        ("id", ParquetColumn::Str(col("uid"))),
        ("question", ParquetColumn::Str(col("prompt"))),
        ("answer", ParquetColumn::Str(col("response"))),
    ];
    write_parquet(&data, &columns, ParquetCodec::Zstd).unwrap();
    let out = tmp.path().join("hf.logp.safetensors");
    let run = tril(&[
        "logp",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--batch-size",
        "2",
        "--max-length",
        "64",
        "--uid-key",
        "id",
        "--prompt-key",
        "question",
        "--response-key",
        "answer",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let cache = LogpCache::load(&out).unwrap();
    for row in &fixture {
        let want: Vec<f64> = row["logp"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got = cache.get(row["uid"].as_str().unwrap()).unwrap();
        assert_eq!(got.len(), want.len(), "{}", row["uid"]);
        for (g, w) in got.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-4, "{}: {got:?} vs {want:?}", row["uid"]);
        }
    }
}

/// Kill an offline IPS run once its step-2 checkpoint exists and `--resume` it: every later
/// logged number and the final weights equal an uninterrupted run's.
#[test]
fn killed_and_resumed_ips_matches_an_uninterrupted_one() {
    let args = ["task=synthetic", "alg=offline_ips", "alg.args.save_checkpoints=true", "alg.args.save_every=2"];
    // 10 epochs x 6 steps, a line per step and a held-out NLL line per epoch.
    common::assert_kill_and_resume_matches(&args, 60, 60 + 10);
}
