//! Parity of `bert_score` with the bert_score package on the fixture written by
//! `tests/fixtures/make_bert_score.py`: 10 samples (single and multiple references, an empty
//! candidate, an empty / blank reference, repeated words, a candidate truncated at 64
//! tokens) scored with the tiny BERT, DistilBERT and RoBERTa fixtures of tril-models at
//! 1 and 2 layers and batch sizes 64 and 3.
//!
//! Token ids must be equal; P, R and F agree to 1e-5 absolute (float32 encoders; the
//! observed difference is printed).

use serde_json::Value;
use std::path::Path;
use tril_core::backend::Target;
use tril_core::plugin::{Metric, RewardFn, TextBatch};
use tril_metrics::bert_score::{BertScoreConfig, BertScoreFn, BertScorer};

const TOL: f64 = 1e-5;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bert_score.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn cases(f: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let cases = f["cases"].as_array().unwrap();
    let cands = cases.iter().map(|c| c["candidate"].as_str().unwrap().to_string()).collect();
    let refs = cases
        .iter()
        .map(|c| c["references"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .collect();
    (cands, refs)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn matches_bert_score_package() {
    let f = fixture();
    let (cands, refs) = cases(&f);
    for run in f["runs"].as_array().unwrap() {
        let model = run["model"].as_str().unwrap();
        let layers = run["num_layers"].as_u64().unwrap() as usize;
        let batch_size = run["batch_size"].as_u64().unwrap() as usize;
        let name = format!("{model} L{layers} bs{batch_size}");
        let scorer =
            BertScorer::<tril_core::backend::CpuBackend>::load(&root().join(model), layers, &Default::default())
                .unwrap();
        for (sentence, ids) in run["ids"].as_object().unwrap() {
            let want: Vec<u32> = ids.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(scorer.encode(sentence).unwrap(), want, "{name}: ids of {sentence:?}");
        }
        let got = scorer.score(&cands, &refs, batch_size).unwrap();
        let mut worst = 0f64;
        for (col, key) in [(0, "P"), (1, "R"), (2, "F")] {
            for (i, (g, w)) in got.iter().zip(floats(&run[key])).enumerate() {
                let g = [g.precision, g.recall, g.f1][col];
                worst = worst.max((g - w).abs());
                assert!((g - w).abs() <= TOL, "{name} {key}[{i}]: tril {g} vs bert_score {w}");
            }
        }
        eprintln!("{name}: max |diff| {worst:.2e}");
    }
}

/// The registered metric and reward give bert_score's F1 through a config with a local
/// model_name, and the metric's mean is the mean F1.
#[test]
fn metric_and_reward_report_f1() {
    let f = fixture();
    let (cands, refs) = cases(&f);
    let run = &f["runs"][0];
    let config = BertScoreConfig {
        model_name: Some(root().join(run["model"].as_str().unwrap()).display().to_string()),
        num_layers: Some(run["num_layers"].as_u64().unwrap() as usize),
        ..Default::default()
    };
    let want = floats(&run["F"]);
    let prompts = vec![String::new(); cands.len()];
    let batch = TextBatch { prompts: &prompts, generations: &cands, references: &refs };
    let mut metric = BertScoreFn::new(&config, "eval_metrics.0.args", Target::default()).unwrap();
    let out = metric.compute(batch).unwrap();
    let v = &out["semantic/bert_score"];
    let per_sample = v.per_sample.clone().unwrap();
    for (g, w) in per_sample.iter().zip(&want) {
        assert!((g - w).abs() <= TOL, "{g} vs {w}");
    }
    assert!((v.corpus - want.iter().sum::<f64>() / want.len() as f64).abs() <= TOL);
    let mut reward = BertScoreFn::new(&config, "reward_fn.args", Target::default()).unwrap();
    assert_eq!(reward.score(batch).unwrap(), per_sample);
}

/// A model that is not available locally is refused when built, naming the key.
#[test]
fn missing_model_is_a_clear_error() {
    let config = BertScoreConfig {
        model_name: Some("/nonexistent/roberta-large".into()),
        num_layers: Some(17),
        ..Default::default()
    };
    let err = BertScoreFn::new(&config, "eval_metrics.3.args", Target::default()).unwrap_err().to_string();
    assert!(err.contains("eval_metrics.3.args.model_name") && err.contains("huggingface-cli download"), "{err}");
}
