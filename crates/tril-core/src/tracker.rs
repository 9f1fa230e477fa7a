//! Trackers: what a run logs, in TRIL's files and key namespaces.
//!
//! | file | one line per | content |
//! |---|---|---|
//! | `rollout_info.jsonl` | iteration | `{"iteration": n, "rollout_buffer/...": x, ...}` |
//! | `training_info.jsonl` | iteration | `{"iteration": n, "ppo/...": x, "time/...": x, ...}` |
//! | `{split}_split_metrics.jsonl` | evaluation | `{"epoch": n, "metrics": {key: corpus score}}` (TRIL's form) |
//! | `epoch_{n}_{split}_split_predictions.json` | evaluation | a list of `{split_name, sample_id, prompt_text, generated_text, ref_text, <metric>: score}` |
//! | `plots/curves.png` | evaluation | the logged curves of the keys asked for |
//! | `plots/{split}_metrics.png` | evaluation | every key ever logged for that split, one panel per key (keys differing only in a trailing `-<n>`, such as `distinct-1..3`, share one) |
//!
//! Every value is also kept in memory so plots need no re-reading (and [`Tracker::resume`]
//! reloads it, so the plots of a resumed run continue the earlier points).
//!
//! Each evaluation also logs one INFO line, the compact summary of [`crate::summary`]
//! (`eval val @40: proxy_reward=0.5123 ...`), and every key at DEBUG (`-v`).
//!
//! Every metric line is also handed to the process's [`MetricSink`], when one is
//! installed ([`set_sink`]): the `tril` binary installs its Weights & Biases logger there,
//! so no algorithm knows about W&B.

use crate::error::Result;
use crate::plot::{plot_grid, plot_panels, Panel, Series};
use crate::plugin::{MetricOutput, Sample, Split};
use crate::run_dir::RunDir;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Scalar statistics keyed by their metric name (`ppo/approx_kl`, ...).
pub type Stats = BTreeMap<String, f64>;

/// A mirror of the metric lines a [`Tracker`] writes (the `tril` binary's W&B logger).
///
/// `record` runs on the training thread: it must return quickly and never fail the run
/// (the W&B logger appends to a local spool and wakes its own network thread).
pub trait MetricSink: Send + Sync {
    /// One line as written to `file` (`rollout_info.jsonl`, `training_info.jsonl`,
    /// `{split}_split_metrics.jsonl`), at `step` (the line's `iteration` or `epoch`), with
    /// its values flattened: evaluation scores as `<split>/<key>`, as in [`Tracker::history`].
    fn record(&self, file: &str, step: usize, values: &Map<String, Value>);
}

/// The process's metric sink. One global, like `tracing`'s dispatcher: trackers are built
/// inside every algorithm, and a sink is a property of the process (`tril run`), not of an
/// algorithm.
static SINK: RwLock<Option<Arc<dyn MetricSink>>> = RwLock::new(None);

/// Installs (or with `None` removes) the sink every [`Tracker`] of this process mirrors its
/// metric lines to.
pub fn set_sink(sink: Option<Arc<dyn MetricSink>>) {
    match SINK.write() {
        Ok(mut slot) => *slot = sink,
        Err(poisoned) => *poisoned.into_inner() = sink,
    }
}

/// Hands one metric line to the installed sink, if any (from rank 0 only in a
/// data-parallel run, like the files).
fn mirror(file: &str, step: usize, values: &Map<String, Value>) {
    if !crate::parallel::is_primary() {
        return;
    }
    let sink = match SINK.read() {
        Ok(slot) => slot.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    if let Some(sink) = sink {
        sink.record(file, step, values);
    }
}

/// Writes a run's logs into its run directory.
#[derive(Debug)]
pub struct Tracker {
    run: RunDir,
    history: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Tracker {
    /// A tracker writing into `run`.
    pub fn new(run: RunDir) -> Self {
        Tracker { run, history: BTreeMap::new() }
    }

    /// A tracker continuing a run from its checkpoint at `iteration` (`--resume`): every
    /// log line after that iteration (written by the interrupted process after its last
    /// checkpoint, or half-written when it was killed) is dropped from the JSONL files,
    /// which are rewritten atomically, and the kept points are reloaded for the plots.
    pub fn resume(run: RunDir, iteration: usize) -> Result<Self> {
        let mut tracker = Tracker::new(run);
        for file in ["rollout_info.jsonl", "training_info.jsonl"] {
            for line in tracker.keep_until(file, "iteration", iteration)? {
                let x = line["iteration"].as_f64().unwrap_or_default();
                for (k, v) in &line {
                    if k != "iteration" {
                        tracker.history.entry(k.clone()).or_default().push((x, v.as_f64().unwrap_or(f64::NAN)));
                    }
                }
            }
        }
        for split in Split::ALL {
            let file = format!("{}_split_metrics.jsonl", split.name());
            for line in tracker.keep_until(&file, "epoch", iteration)? {
                let x = line["epoch"].as_f64().unwrap_or_default();
                for (k, v) in line["metrics"].as_object().into_iter().flatten() {
                    let key = format!("{}/{k}", split.name());
                    tracker.history.entry(key).or_default().push((x, v.as_f64().unwrap_or(f64::NAN)));
                }
            }
        }
        Ok(tracker)
    }

    /// Keeps the lines of `file` whose `x_key` is at most `last` (and that parse), rewriting
    /// the file when anything was dropped; returns the kept lines.
    fn keep_until(&self, file: &str, x_key: &str, last: usize) -> Result<Vec<Map<String, Value>>> {
        let path = self.run.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(crate::CoreError::Io { path, source }),
        };
        let kept: Vec<Map<String, Value>> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Map<String, Value>>(l).ok())
            .filter(|m| m.get(x_key).and_then(Value::as_u64).is_some_and(|x| x as usize <= last))
            .collect();
        if kept.len() != text.lines().count() {
            let mut out = String::new();
            for line in &kept {
                out.push_str(&Value::Object(line.clone()).to_string());
                out.push('\n');
            }
            self.run.write_atomic(file, out.as_bytes())?;
        }
        Ok(kept)
    }

    /// The run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    fn record(&mut self, file: &str, x_key: &str, x: usize, stats: &Stats) -> Result<()> {
        let mut line = Map::new();
        line.insert(x_key.into(), json!(x));
        for (k, v) in stats {
            line.insert(k.clone(), json_number(*v));
            self.history.entry(k.clone()).or_default().push((x as f64, *v));
        }
        let line = Value::Object(line);
        self.run.append_jsonl(file, &line)?;
        if let Value::Object(values) = &line {
            mirror(file, x, values);
        }
        Ok(())
    }

    /// Logs one iteration's rollout statistics (`rollout_buffer/*`).
    pub fn log_rollout(&mut self, iteration: usize, stats: &Stats) -> Result<()> {
        self.record("rollout_info.jsonl", "iteration", iteration, stats)
    }

    /// Logs one iteration's training statistics (`ppo/*`, `time/*`, ...).
    pub fn log_training(&mut self, iteration: usize, stats: &Stats) -> Result<()> {
        self.record("training_info.jsonl", "iteration", iteration, stats)
    }

    /// Logs corpus statistics of an evaluation without predictions (the offline loops):
    /// one `{epoch, metrics}` line of `{split}_split_metrics.jsonl`, kept as `<split>/<key>`.
    pub fn log_split_metrics(&mut self, epoch: usize, split: Split, stats: &Stats) -> Result<()> {
        let corpus: Map<String, Value> = stats.iter().map(|(k, v)| (k.clone(), json_number(*v))).collect();
        for (k, v) in stats {
            self.history.entry(format!("{}/{k}", split.name())).or_default().push((epoch as f64, *v));
        }
        let file = format!("{}_split_metrics.jsonl", split.name());
        self.run.append_jsonl(&file, &json!({"epoch": epoch, "metrics": corpus}))?;
        mirror(&file, epoch, &split_line(epoch, split, &corpus));
        let values: Vec<(&str, f64)> = stats.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        self.evaluated(epoch, split, &values)
    }

    /// After an evaluation was written: its INFO summary line, every key at DEBUG, and
    /// `plots/{split}_metrics.png` redrawn.
    fn evaluated(&self, epoch: usize, split: Split, values: &[(&str, f64)]) -> Result<()> {
        tracing::info!("{}", crate::summary::eval_line(split.name(), epoch, values));
        if tracing::enabled!(tracing::Level::DEBUG) {
            let all: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            tracing::debug!("eval {} @{epoch} (all keys): {}", split.name(), all.join(" "));
        }
        self.plot_split(split)
    }

    /// Logs an evaluation: corpus scores to `{split}_split_metrics.jsonl` and every
    /// prediction with its per-sample scores to `epoch_{epoch}_{split}_split_predictions.json`.
    pub fn log_eval(
        &mut self,
        epoch: usize,
        split: Split,
        metrics: &MetricOutput,
        samples: &[Sample],
        generations: &[String],
    ) -> Result<()> {
        let corpus: Map<String, Value> = metrics.iter().map(|(k, v)| (k.clone(), json_number(v.corpus))).collect();
        for (k, v) in metrics {
            self.history.entry(format!("{}/{k}", split.name())).or_default().push((epoch as f64, v.corpus));
        }
        let file = format!("{}_split_metrics.jsonl", split.name());
        self.run.append_jsonl(&file, &json!({"epoch": epoch, "metrics": corpus}))?;
        mirror(&file, epoch, &split_line(epoch, split, &corpus));
        let values: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), v.corpus)).collect();
        self.evaluated(epoch, split, &values)?;
        let rows: Vec<Value> = samples
            .iter()
            .zip(generations)
            .enumerate()
            .map(|(i, (sample, generated))| {
                let mut row = Map::new();
                row.insert("split_name".into(), json!(split.name()));
                row.insert("sample_id".into(), json!(sample.id));
                row.insert("prompt_text".into(), json!(sample.prompt));
                row.insert("generated_text".into(), json!(generated));
                row.insert("ref_text".into(), json!(ref_text(&sample.references)));
                for (k, v) in metrics {
                    let score = v.per_sample.as_ref().and_then(|s| s.get(i)).map_or(json!("n/a"), |x| json_number(*x));
                    row.insert(k.clone(), score);
                }
                Value::Object(row)
            })
            .collect();
        let text = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
        self.run.write_atomic(format!("epoch_{epoch}_{}_split_predictions.json", split.name()), text.as_bytes())
    }

    /// The logged points of a key (`rollout_buffer/rewards`, `val/semantic/...`).
    pub fn history(&self, key: &str) -> &[(f64, f64)] {
        self.history.get(key).map_or(&[], Vec::as_slice)
    }

    /// Redraws `plots/curves.png` with one panel per key that has points.
    pub fn plot(&self, keys: &[&str]) -> Result<()> {
        let panels: Vec<Panel> = keys
            .iter()
            .filter(|k| !self.history(k).is_empty())
            .map(|k| Panel {
                title: (*k).to_string(),
                x_label: "iteration".into(),
                series: vec![Series { label: (*k).to_string(), points: self.history(k).to_vec() }],
            })
            .collect();
        if panels.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(self.run.join("plots"))
            .map_err(|source| crate::CoreError::Io { path: self.run.join("plots"), source })?;
        plot_panels(&self.run.join("plots/curves.png"), &panels)
    }
}

impl Tracker {
    /// Redraws `plots/{split}_metrics.png`: every key logged for `split` (by
    /// [`Tracker::log_eval`] or [`Tracker::log_split_metrics`], or reloaded on resume), one
    /// panel per key, two panels a row, in the order of the summary line's tiers
    /// ([`crate::summary`]); keys that differ only in a trailing `-<n>`
    /// (`diversity_metrics/distinct-1..3`) share a panel. Nothing is drawn before the
    /// split's first evaluation.
    pub fn plot_split(&self, split: Split) -> Result<()> {
        let prefix = format!("{}/", split.name());
        let mut panels: Vec<Panel> = Vec::new();
        for (key, points) in self.history.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
            let name = &key[prefix.len()..];
            let title = panel_title(name);
            let series = Series { label: name.to_string(), points: points.clone() };
            match panels.iter_mut().find(|p| p.title == title) {
                Some(panel) => panel.series.push(series),
                None => panels.push(Panel { title, x_label: "iteration".into(), series: vec![series] }),
            }
        }
        if panels.is_empty() {
            return Ok(());
        }
        // The summary line's tiers first (rewards, task metrics, ...), diversity last.
        panels.sort_by_key(|p| p.series.first().and_then(|s| crate::summary::tier(&s.label)).unwrap_or(u8::MAX));
        std::fs::create_dir_all(self.run.join("plots"))
            .map_err(|source| crate::CoreError::Io { path: self.run.join("plots"), source })?;
        plot_grid(&self.run.join(format!("plots/{}_metrics.png", split.name())), &panels, 2)
    }
}

/// The panel of a split metric: the key with a trailing `-<digits>` written `-n`
/// (`diversity_metrics/distinct-2` -> `diversity_metrics/distinct-n`).
fn panel_title(key: &str) -> String {
    match key.rsplit_once('-') {
        Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("{stem}-n"),
        _ => key.to_string(),
    }
}

/// An evaluation line flattened for a [`MetricSink`]: `{"epoch": n, "<split>/<key>": x}`.
fn split_line(epoch: usize, split: Split, corpus: &Map<String, Value>) -> Map<String, Value> {
    let mut line = Map::new();
    line.insert("epoch".into(), json!(epoch));
    for (k, v) in corpus {
        line.insert(format!("{}/{k}", split.name()), v.clone());
    }
    line
}

/// TRIL's reference format: `<START-1>ref one<END-1><START-2>ref two<END-2>`.
pub fn ref_text(references: &[String]) -> String {
    references.iter().enumerate().map(|(i, r)| format!("<START-{n}>{r}<END-{n}>", n = i + 1)).collect()
}

/// A JSON number, or `null` for NaN/infinity (which JSON cannot hold).
fn json_number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::MetricValue;

    #[test]
    fn resume_drops_lines_after_the_checkpoint_and_reloads_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(RunDir::open(dir.path()).unwrap());
        for i in 1..=4 {
            t.log_rollout(i, &Stats::from([("rollout_buffer/rewards".into(), i as f64 / 10.0)])).unwrap();
        }
        let metrics = MetricOutput::from([("m".to_string(), MetricValue { per_sample: None, corpus: 1.5 })]);
        t.log_eval(2, Split::Val, &metrics, &[], &[]).unwrap();
        t.log_eval(4, Split::Val, &metrics, &[], &[]).unwrap();
        // A killed process may leave half a line.
        let path = dir.path().join("rollout_info.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"iteration\":5,\"rollout_bu");
        std::fs::write(&path, text).unwrap();

        let t = Tracker::resume(RunDir::open(dir.path()).unwrap(), 2).unwrap();
        assert_eq!(t.history("rollout_buffer/rewards"), &[(1.0, 0.1), (2.0, 0.2)]);
        assert_eq!(t.history("val/m"), &[(2.0, 1.5)]);
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            kept,
            "{\"iteration\":1,\"rollout_buffer/rewards\":0.1}\n{\"iteration\":2,\"rollout_buffer/rewards\":0.2}\n"
        );
        let m = std::fs::read_to_string(dir.path().join("val_split_metrics.jsonl")).unwrap();
        assert_eq!(m.lines().count(), 1);
    }

    /// Keeps the lines that carry a `sink_test/` key (other tests' trackers run alongside).
    type Line = (String, usize, Map<String, Value>);

    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<Line>>);

    impl MetricSink for Recorder {
        fn record(&self, file: &str, step: usize, values: &Map<String, Value>) {
            if values.keys().any(|k| k.contains("sink_test/")) {
                if let Ok(mut lines) = self.0.lock() {
                    lines.push((file.to_string(), step, values.clone()));
                }
            }
        }
    }

    #[test]
    fn the_sink_sees_every_line_the_files_get() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());
        set_sink(Some(recorder.clone()));
        let mut t = Tracker::new(RunDir::open(dir.path()).unwrap());
        t.log_rollout(1, &Stats::from([("sink_test/r".into(), 0.5)])).unwrap();
        t.log_training(1, &Stats::from([("sink_test/loss".into(), f64::NAN)])).unwrap();
        t.log_split_metrics(1, Split::Val, &Stats::from([("sink_test/m".into(), 2.0)])).unwrap();
        let metrics = MetricOutput::from([("sink_test/e".to_string(), MetricValue { per_sample: None, corpus: 3.0 })]);
        t.log_eval(2, Split::Test, &metrics, &[], &[]).unwrap();
        set_sink(None);
        let lines = recorder.0.lock().unwrap().clone();
        let got: Vec<(String, usize, String)> =
            lines.into_iter().map(|(f, s, v)| (f, s, Value::Object(v).to_string())).collect();
        assert_eq!(
            got,
            vec![
                ("rollout_info.jsonl".into(), 1, r#"{"iteration":1,"sink_test/r":0.5}"#.into()),
                ("training_info.jsonl".into(), 1, r#"{"iteration":1,"sink_test/loss":null}"#.into()),
                ("val_split_metrics.jsonl".into(), 1, r#"{"epoch":1,"val/sink_test/m":2.0}"#.into()),
                ("test_split_metrics.jsonl".into(), 2, r#"{"epoch":2,"test/sink_test/e":3.0}"#.into()),
            ]
        );
    }

    #[test]
    fn writes_tril_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(RunDir::open(dir.path()).unwrap());
        t.log_rollout(1, &Stats::from([("rollout_buffer/rewards".into(), 0.5)])).unwrap();
        t.log_rollout(2, &Stats::from([("rollout_buffer/rewards".into(), f64::NAN)])).unwrap();
        let metrics = MetricOutput::from([(
            "semantic/x".to_string(),
            MetricValue { per_sample: Some(vec![1.0, 0.0]), corpus: 0.5 },
        )]);
        let samples: Vec<Sample> = (0..2)
            .map(|i| Sample {
                id: format!("s{i}"),
                prompt: "p".into(),
                references: vec!["a".into(), "b".into()],
                meta: Default::default(),
            })
            .collect();
        t.log_eval(10, Split::Val, &metrics, &samples, &["g0".into(), "g1".into()]).unwrap();
        let rollout = std::fs::read_to_string(dir.path().join("rollout_info.jsonl")).unwrap();
        assert_eq!(
            rollout,
            "{\"iteration\":1,\"rollout_buffer/rewards\":0.5}\n{\"iteration\":2,\"rollout_buffer/rewards\":null}\n"
        );
        let m = std::fs::read_to_string(dir.path().join("val_split_metrics.jsonl")).unwrap();
        assert_eq!(m, "{\"epoch\":10,\"metrics\":{\"semantic/x\":0.5}}\n");
        let preds: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("epoch_10_val_split_predictions.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(preds[1]["generated_text"], "g1");
        assert_eq!(preds[0]["ref_text"], "<START-1>a<END-1><START-2>b<END-2>");
        assert_eq!(preds[0]["semantic/x"], 1.0);
        assert_eq!(t.history("val/semantic/x"), &[(10.0, 0.5)]);
        t.plot(&["rollout_buffer/rewards", "val/semantic/x", "absent"]).unwrap();
        assert!(dir.path().join("plots/curves.png").is_file());
        assert!(dir.path().join("plots/val_metrics.png").is_file(), "an evaluation draws its split's plot");
        assert!(!dir.path().join("plots/test_metrics.png").exists());
    }

    #[test]
    fn split_plots_hold_every_key_and_survive_resume() {
        assert_eq!(panel_title("diversity_metrics/distinct-2"), "diversity_metrics/distinct-n");
        assert_eq!(panel_title("diversity_metrics/msttr-100"), "diversity_metrics/msttr-n");
        assert_eq!(panel_title("lexical/rouge_rougeL"), "lexical/rouge_rougeL");
        assert_eq!(panel_title("a-b"), "a-b");
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(RunDir::open(dir.path()).unwrap());
        for step in [1, 2] {
            let stats = Stats::from([("accuracy".into(), 0.5), ("loss".into(), 0.7)]);
            t.log_split_metrics(step, Split::Val, &stats).unwrap();
        }
        let png = dir.path().join("plots/val_metrics.png");
        assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
        std::fs::remove_file(&png).unwrap();
        let mut t = Tracker::resume(RunDir::open(dir.path()).unwrap(), 2).unwrap();
        assert_eq!(t.history("val/accuracy"), &[(1.0, 0.5), (2.0, 0.5)]);
        t.log_split_metrics(3, Split::Val, &Stats::from([("accuracy".into(), 0.75)])).unwrap();
        assert_eq!(t.history("val/accuracy").len(), 3, "the resumed run continues the curve");
        assert!(png.is_file());
    }
}
