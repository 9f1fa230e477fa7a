//! `tril gold-eval RUN_DIR`: scores the eval generations a finished (or interrupted) run
//! wrote, `epoch_<n>_<split>_split_predictions.json`, with a gold reward that was not
//! loaded during training, and puts the gold score beside the proxy reward and the KL
//! from the initial policy that the run recorded at the same evaluations
//! ([`tril_algorithms::over_optimization`]).
//!
//! The gold reward is the run's config's `gold_reward_fn` after the command line's
//! overrides (`--reward ID` sets it to `{id: ID, args: {}}` first). Writes, in the run
//! directory (each rewritten whole, atomically, on every call):
//! - `gold_eval.jsonl`: one line per evaluation and split: `iteration`, `split`,
//!   `samples`, `proxy_reward`, `gold_reward`, `kl` (`null` where the run recorded none);
//! - `gold_eval_samples.jsonl`: one line per scored generation: `iteration`, `split`,
//!   `sample_id`, `gold_reward`;
//! - `plots/gold_eval_<split>.png`: proxy and gold versus KL and versus iteration.

use crate::commands::Failure;
use anyhow::{anyhow, Context};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tril_algorithms::over_optimization::{self, Point, KL, PROXY};
use tril_core::config::{compose_file_unresolved, parse_yaml, ComposeRequest};
use tril_core::plugin::{RewardFn, Split, TextBatch};
use tril_core::registry::Kind;

/// Arguments of `tril gold-eval`.
#[derive(Debug, clap::Args)]
pub struct GoldEvalArgs {
    /// The run directory (its `config.resolved.yaml` and `epoch_*_split_predictions.json`).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// The gold reward's registry id (`tril list reward_fn`): sets `gold_reward_fn` to
    /// `{id: ID, args: {}}` before the overrides; give its args as
    /// `gold_reward_fn.args.KEY=VALUE`.
    #[arg(long, value_name = "ID")]
    pub reward: Option<String>,
    /// Only this split (`train`, `val`, `test`); default: every split with predictions.
    #[arg(long, value_name = "SPLIT")]
    pub split: Option<Split>,
    /// Overrides of the run's resolved config, e.g.
    /// `gold_reward_fn={id: learned_reward, args: {model_name: DIR, label_ix: 1}}`, `device=cuda`.
    #[arg(value_name = "OVERRIDES")]
    pub overrides: Vec<String>,
}

/// One predictions file of the run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Evaluated {
    split: Split,
    iteration: usize,
    path: PathBuf,
}

/// `epoch_<n>_<split>_split_predictions.json` -> `(n, split)`.
fn parse_name(name: &str) -> Option<(usize, Split)> {
    let rest = name.strip_prefix("epoch_")?.strip_suffix("_split_predictions.json")?;
    let (n, split) = rest.split_once('_')?;
    Some((n.parse().ok()?, split.parse().ok()?))
}

/// Every predictions file of `run_dir` (of `only`, when given), by split then iteration.
fn predictions(run_dir: &Path, only: Option<Split>) -> anyhow::Result<Vec<Evaluated>> {
    let entries = std::fs::read_dir(run_dir).with_context(|| format!("reading {}", run_dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", run_dir.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some((iteration, split)) = parse_name(&name) {
            if only.is_none_or(|s| s == split) {
                out.push(Evaluated { split, iteration, path: entry.path() });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// TRIL's `<START-1>a<END-1><START-2>b<END-2>` back into `[a, b]` (the inverse of
/// [`tril_core::tracker::ref_text`]; text that is not in that form is one reference, and
/// an empty string none).
pub fn parse_ref_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    for i in 1.. {
        let (start, end) = (format!("<START-{i}>"), format!("<END-{i}>"));
        let Some(body) = rest.strip_prefix(start.as_str()) else { break };
        let Some(at) = body.find(end.as_str()) else { break };
        out.push(body[..at].to_string());
        rest = &body[at + end.len()..];
    }
    if out.is_empty() && !text.is_empty() || !rest.is_empty() && !out.is_empty() {
        return vec![text.to_string()];
    }
    out
}

/// The rows of one predictions file: prompts, generations, references, sample ids, and the
/// per-sample columns `keys` (None where absent or not a number).
struct Rows {
    prompts: Vec<String>,
    generations: Vec<String>,
    references: Vec<Vec<String>>,
    ids: Vec<String>,
    columns: BTreeMap<&'static str, Vec<Option<f64>>>,
}

fn read_rows(path: &Path) -> anyhow::Result<Rows> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<Map<String, Value>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a JSON list of prediction objects", path.display()))?;
    let mut out = Rows {
        prompts: Vec::new(),
        generations: Vec::new(),
        references: Vec::new(),
        ids: Vec::new(),
        columns: BTreeMap::new(),
    };
    for (i, row) in rows.iter().enumerate() {
        let text = |key: &str| -> anyhow::Result<String> {
            row.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{} row {i}: expected a string `{key}`", path.display()))
        };
        out.prompts.push(text("prompt_text")?);
        out.generations.push(text("generated_text")?);
        // tril always writes `ref_text`; a file without it has no references (rewards that
        // read them see none), which is what such a file says.
        out.references.push(parse_ref_text(&text("ref_text").unwrap_or_default()));
        out.ids.push(
            row.get("sample_id").map_or_else(|| i.to_string(), |v| v.as_str().map_or(v.to_string(), str::to_string)),
        );
        for key in [PROXY, KL] {
            out.columns.entry(key).or_default().push(row.get(key).and_then(Value::as_f64));
        }
    }
    Ok(out)
}

/// Mean of the finite values, `None` when there is none.
fn mean(values: &[Option<f64>]) -> Option<f64> {
    let finite: Vec<f64> = values.iter().flatten().copied().filter(|x| x.is_finite()).collect();
    (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
}

/// Builds the gold reward from the run's config and the command line.
fn gold_reward(args: &GoldEvalArgs) -> Result<Box<dyn RewardFn>, Failure> {
    let file = args.run_dir.join("config.resolved.yaml");
    if !file.is_file() {
        return Err(Failure::Config(anyhow!(
            "{} holds no tril run: {} is missing (RUN_DIR is the directory `tril run` printed)",
            args.run_dir.display(),
            file.display()
        )));
    }
    let mut overrides = Vec::new();
    if let Some(id) = &args.reward {
        let text =
            std::fs::read_to_string(&file).map_err(|e| Failure::Runtime(anyhow!("reading {}: {e}", file.display())))?;
        let has_key = parse_yaml(&text, &file)?.get("gold_reward_fn").is_some();
        let value = serde_json::to_string(id).map_err(|e| Failure::Config(e.into()))?;
        overrides.push(format!("{}gold_reward_fn={{id: {value}, args: {{}}}}", if has_key { "" } else { "+" }));
    }
    // `--reward` starts from empty args, so its args are new keys (no `+` needed).
    overrides.extend(args.overrides.iter().map(|o| {
        match o.starts_with("gold_reward_fn.args.") && args.reward.is_some() {
            true => format!("+{o}"),
            false => o.clone(),
        }
    }));
    let env = std::env::vars().filter(|(k, _)| k.starts_with("TRIL_")).collect();
    let config = compose_file_unresolved(&file, &ComposeRequest { args: overrides, env })?.resolve()?;
    let section = config
        .optional_section("gold_reward_fn")
        .filter(|s| s.node().value != tril_core::config::Value::Null)
        .ok_or_else(|| {
            Failure::Config(anyhow!(
                "gold_reward_fn: the run's config has no gold reward; pass --reward ID (and \
                 gold_reward_fn.args.KEY=VALUE) or gold_reward_fn={{id: ..., args: {{...}}}}"
            ))
        })?;
    Kind::RewardFn.check(&section)?;
    tril_core::plugin::target_of(&config)?;
    over_optimization::gold_reward_fn(&config)
        .map_err(|e| Failure::Config(anyhow!(e)))?
        .ok_or_else(|| Failure::Config(anyhow!("gold_reward_fn: not set")))
}

/// `tril gold-eval`.
pub fn run(args: &GoldEvalArgs) -> Result<(), Failure> {
    let mut gold = gold_reward(args)?;
    let evaluated = predictions(&args.run_dir, args.split).map_err(Failure::Config)?;
    if evaluated.is_empty() {
        let which = args.split.map_or("any split".to_string(), |s| format!("split `{}`", s.name()));
        return Err(Failure::Config(anyhow!(
            "{} has no evaluation predictions for {which} (epoch_<n>_<split>_split_predictions.json); the run \
             evaluates when alg.args.eval_every says so",
            args.run_dir.display()
        )));
    }
    let run = tril_core::run_dir::RunDir::open(&args.run_dir).map_err(|e| Failure::Runtime(e.into()))?;
    let (mut lines, mut samples) = (String::new(), String::new());
    let mut points: BTreeMap<Split, Vec<Point>> = BTreeMap::new();
    println!("{:>9}  {:5}  {:>7}  {:>12}  {:>12}  {:>10}", "iteration", "split", "samples", "proxy", "gold", "kl");
    let bar = tril_core::progress::bar(evaluated.len() as u64, "gold-eval");
    for e in &evaluated {
        let rows = read_rows(&e.path).map_err(Failure::Runtime)?;
        let batch = TextBatch { prompts: &rows.prompts, generations: &rows.generations, references: &rows.references };
        let scores =
            gold.score(batch).map_err(|err| Failure::Runtime(anyhow!("gold reward on {}: {err}", e.path.display())))?;
        if scores.len() != rows.generations.len() {
            return Err(Failure::Runtime(anyhow!(
                "the gold reward gave {} scores for the {} generations of {}",
                scores.len(),
                rows.generations.len(),
                e.path.display()
            )));
        }
        let scores_opt: Vec<Option<f64>> = scores.iter().map(|&x| Some(x)).collect();
        let point = Point {
            iteration: e.iteration as f64,
            kl: rows.columns.get(KL).and_then(|c| mean(c)),
            proxy: rows.columns.get(PROXY).and_then(|c| mean(c)),
            gold: mean(&scores_opt),
        };
        let number = |x: Option<f64>| x.and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number);
        let line = json!({
            "iteration": e.iteration,
            "split": e.split.name(),
            "samples": rows.generations.len(),
            "proxy_reward": number(point.proxy),
            "gold_reward": number(point.gold),
            "kl": number(point.kl),
        });
        lines.push_str(&format!("{line}\n"));
        for (id, score) in rows.ids.iter().zip(&scores) {
            let row = json!({"iteration": e.iteration, "split": e.split.name(), "sample_id": id, "gold_reward": number(Some(*score))});
            samples.push_str(&format!("{row}\n"));
        }
        let show = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        bar.suspend(|| {
            println!(
                "{:>9}  {:5}  {:>7}  {:>12}  {:>12}  {:>10}",
                e.iteration,
                e.split.name(),
                rows.generations.len(),
                show(point.proxy),
                show(point.gold),
                show(point.kl)
            )
        });
        tracing::debug!(iteration = e.iteration, split = e.split.name(), "gold-eval scored {}", e.path.display());
        points.entry(e.split).or_default().push(point);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let write =
        |name: &str, text: &str| run.write_atomic(name, text.as_bytes()).map_err(|e| Failure::Runtime(e.into()));
    write("gold_eval.jsonl", &lines)?;
    write("gold_eval_samples.jsonl", &samples)?;
    for (split, points) in &points {
        let path = args.run_dir.join(format!("plots/gold_eval_{}.png", split.name()));
        over_optimization::plot(&path, split.name(), points).map_err(|e| Failure::Runtime(anyhow!(e)))?;
    }
    if points.values().flatten().all(|p| p.kl.is_none()) {
        tracing::warn!(
            "the run recorded no KL from the initial policy at its evaluations (a run of a loop without a \
             reference, or from before tril recorded it): the plots show gold and proxy versus iteration only"
        );
    }
    eprintln!("wrote {}", args.run_dir.join("gold_eval.jsonl").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_text_round_trips() {
        for refs in [vec![], vec!["a".to_string()], vec!["one <b>".to_string(), String::new(), "three".to_string()]] {
            assert_eq!(parse_ref_text(&tril_core::tracker::ref_text(&refs)), refs);
        }
        assert_eq!(parse_ref_text("plain text"), vec!["plain text".to_string()]);
        assert_eq!(parse_ref_text("<START-1>a<END-1>tail"), vec!["<START-1>a<END-1>tail".to_string()]);
    }

    #[test]
    fn an_empty_predictions_file_reads_as_no_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epoch_3_val_split_predictions.json");
        std::fs::write(&path, "[]").unwrap();
        let rows = read_rows(&path).unwrap();
        assert!(rows.generations.is_empty() && !rows.columns.contains_key(KL));
        std::fs::write(&path, "[{\"prompt_text\": 1}]").unwrap();
        let err = read_rows(&path).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("row 0") && err.contains("prompt_text"), "{err}");
    }

    #[test]
    fn prediction_names_parse() {
        assert_eq!(parse_name("epoch_12_val_split_predictions.json"), Some((12, Split::Val)));
        assert_eq!(parse_name("epoch_0_test_split_predictions.json"), Some((0, Split::Test)));
        assert_eq!(parse_name("epoch_x_val_split_predictions.json"), None);
        assert_eq!(parse_name("val_split_metrics.jsonl"), None);
    }
}
