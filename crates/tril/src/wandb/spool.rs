//! The W&B directory of a run (`RUN/wandb/`): what is to be sent and how far sending got.
//!
//! | file | written by | content |
//! |---|---|---|
//! | `run.json` | `tril run`, once | [`RunInfo`]: run id, project, entity, name, group, tags, notes, config |
//! | `spool.jsonl` | the training thread, appended | one [`Record`] a line |
//! | `state.json` | the uploader, after each accepted request | [`State`]: bytes of the spool sent, history rows sent, summary |
//!
//! No file here holds the API key: it lives in the environment and the Authorization
//! header only. The payloads W&B receives are built here as pure functions
//! ([`Batch::next`], [`config_payload`]) so they are tested without a server.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The run's W&B directory inside its run directory.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("wandb")
}

/// Who the run is on W&B (`run.json`), fixed when the run starts; `--resume` reuses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run id (W&B's run `name`, the last part of its URL).
    pub run_id: String,
    /// The project (`project_name`, or `WANDB_PROJECT`).
    pub project: String,
    /// The entity (`entity_name`, or `WANDB_ENTITY`; `null`: the key's default entity).
    pub entity: Option<String>,
    /// The display name.
    pub display_name: String,
    /// The run group.
    pub group: Option<String>,
    /// The run tags.
    pub tags: Vec<String>,
    /// The run notes.
    pub notes: Option<String>,
    /// The resolved config, as JSON.
    pub config: Value,
    /// Unix time (seconds) the run started: `_runtime` counts from here.
    pub started_at: f64,
}

/// One line of `spool.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A metric line the tracker wrote to `file` at `step`, at unix time `time`.
    History {
        /// The JSONL file the line went to.
        file: String,
        /// The line's iteration or epoch.
        step: usize,
        /// Unix time (seconds).
        time: f64,
        /// The line's values (evaluation scores as `<split>/<key>`).
        values: Map<String, Value>,
    },
    /// Files to upload, relative to the run directory (the final model).
    Files {
        /// Paths relative to the run directory.
        paths: Vec<String>,
    },
    /// The process ended with `exitcode`.
    Finish {
        /// The exit code of `tril run`.
        exitcode: i32,
    },
}

/// How far the upload got (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Bytes of `spool.jsonl` sent (or deliberately skipped).
    pub spool_offset: u64,
    /// History rows sent: the `offset` of the next `wandb-history.jsonl` chunk.
    pub history_rows: usize,
    /// The step of the last row sent; a later line at or below it (an iteration logged
    /// again after `--resume`) is not sent again.
    pub last_step: Option<usize>,
    /// The latest value of every key sent (`wandb-summary.json`).
    pub summary: Map<String, Value>,
}

impl State {
    /// Reads `state.json` (a fresh state when there is none).
    pub fn load(wandb_dir: &Path) -> anyhow::Result<State> {
        let path = wandb_dir.join("state.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes `state.json` atomically.
    pub fn save(&self, wandb_dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string(self)?;
        tril_core::run_dir::write_atomic(&wandb_dir.join("state.json"), text.as_bytes())?;
        Ok(())
    }
}

impl RunInfo {
    /// Reads `run.json`.
    pub fn load(wandb_dir: &Path) -> anyhow::Result<RunInfo> {
        let path = wandb_dir.join("run.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Writes `run.json` atomically.
    pub fn save(&self, wandb_dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        tril_core::run_dir::write_atomic(&wandb_dir.join("run.json"), text.as_bytes())?;
        Ok(())
    }
}

/// The complete lines of `spool.jsonl` from byte `offset`: each record with the byte
/// offset just past it. A line that does not parse (a torn write) is skipped.
pub fn read_from(wandb_dir: &Path, offset: u64) -> anyhow::Result<Vec<(Record, u64)>> {
    let path = wandb_dir.join("spool.jsonl");
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    file.seek(SeekFrom::Start(offset)).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_lines(&bytes, offset))
}

/// The records of the complete (newline-terminated) lines of `bytes`, which start at
/// byte `offset` of the spool, each with the offset just past its line.
fn parse_lines(bytes: &[u8], offset: u64) -> Vec<(Record, u64)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    while let Some(len) = bytes[start..].iter().position(|&b| b == b'\n') {
        let end = start + len + 1;
        if let Ok(record) = serde_json::from_slice::<Record>(&bytes[start..end]) {
            out.push((record, offset + end as u64));
        }
        start = end;
    }
    out
}

/// W&B's config payload: `{key: {"value": v}}` for each top-level key of the config.
pub fn config_payload(config: &Value) -> String {
    let wrapped: Map<String, Value> = match config {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), json!({ "value": v }))).collect(),
        other => Map::from_iter([("config".to_string(), json!({ "value": other }))]),
    };
    Value::Object(wrapped).to_string()
}

/// One history row: the values of every line at one step, with W&B's `_step`,
/// `_runtime` and `_timestamp`.
pub fn history_row(step: usize, time: f64, started_at: f64, values: &Map<String, Value>) -> Map<String, Value> {
    let mut row = values.clone();
    row.insert("_step".into(), json!(step));
    row.insert("_timestamp".into(), json!(time));
    row.insert("_runtime".into(), json!((time - started_at).max(0.0)));
    row
}

/// The next request to make from the unsent records.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Nothing to send (yet).
    Empty,
    /// History rows (each a JSON line) for `wandb-history.jsonl`, and the spool offset
    /// and last step once they are accepted; `rows` may be empty when every line was a
    /// repeat after `--resume`.
    History {
        /// The rows, in order.
        rows: Vec<Map<String, Value>>,
        /// The spool offset past the last record they cover.
        end: u64,
    },
    /// Files to upload (paths relative to the run directory).
    Files {
        /// The paths.
        paths: Vec<String>,
        /// The spool offset past the record.
        end: u64,
    },
    /// The end of the run.
    Finish {
        /// The exit code.
        exitcode: i32,
        /// The spool offset past the record.
        end: u64,
    },
}

/// At most this many history rows per request.
pub const MAX_ROWS: usize = 200;

impl Batch {
    /// The next request for `records` (read from `state.spool_offset`): a run of
    /// history lines merged into one row per step (lines at a step at or below
    /// `state.last_step` dropped), or the next files or finish record. Unless `all`, the
    /// rows of the last step are held back while no later record follows them: its
    /// evaluation line may still come.
    pub fn next(records: &[(Record, u64)], state: &State, started_at: f64, all: bool) -> Batch {
        let mut rows: Vec<(usize, Map<String, Value>)> = Vec::new();
        let mut end = state.spool_offset;
        let mut held_end = state.spool_offset;
        let mut last_step = state.last_step;
        for (record, record_end) in records {
            match record {
                Record::History { step, time, values, .. } => {
                    let repeat = last_step.is_some_and(|l| *step <= l) && rows.last().is_none_or(|(s, _)| s != step);
                    if !repeat {
                        match rows.last_mut() {
                            Some((s, row)) if s == step => {
                                row.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())))
                            }
                            _ => {
                                if rows.len() == MAX_ROWS {
                                    return Batch::History { rows: rows.into_iter().map(|(_, r)| r).collect(), end };
                                }
                                held_end = end;
                                rows.push((*step, history_row(*step, *time, started_at, values)));
                                last_step = Some(*step);
                            }
                        }
                    }
                    end = *record_end;
                }
                Record::Files { paths } if rows.is_empty() && end == state.spool_offset => {
                    return Batch::Files { paths: paths.clone(), end: *record_end }
                }
                Record::Finish { exitcode } if rows.is_empty() && end == state.spool_offset => {
                    return Batch::Finish { exitcode: *exitcode, end: *record_end }
                }
                Record::Files { .. } | Record::Finish { .. } => {
                    return Batch::History { rows: rows.into_iter().map(|(_, r)| r).collect(), end }
                }
            }
        }
        if end == state.spool_offset {
            return Batch::Empty;
        }
        if !all && !rows.is_empty() {
            // Hold the last step back: only whole steps are sent.
            rows.pop();
            end = held_end;
            if end == state.spool_offset {
                return Batch::Empty;
            }
        }
        Batch::History { rows: rows.into_iter().map(|(_, r)| r).collect(), end }
    }
}

/// The `file_stream` body for history rows starting at row `offset`, with the summary.
pub fn history_body(offset: usize, rows: &[Map<String, Value>], summary: &Map<String, Value>) -> Value {
    let content: Vec<String> = rows.iter().map(|r| Value::Object(r.clone()).to_string()).collect();
    json!({
        "files": {
            "wandb-history.jsonl": {"offset": offset, "content": content},
            "wandb-summary.json": {"offset": 0, "content": [Value::Object(summary.clone()).to_string()]},
        }
    })
}

/// The `file_stream` body that ends the run.
pub fn finish_body(exitcode: i32) -> Value {
    json!({"complete": true, "exitcode": exitcode})
}

/// The `file_stream` body that tells W&B files were uploaded.
pub fn uploaded_body(names: &[String]) -> Value {
    json!({"complete": false, "uploaded": names})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(step: usize, key: &str, x: f64, end: u64) -> (Record, u64) {
        let values = Map::from_iter([(key.to_string(), json!(x))]);
        (Record::History { file: "f.jsonl".into(), step, time: 100.0 + step as f64, values }, end)
    }

    #[test]
    fn config_is_wrapped_in_value_per_top_level_key() {
        let config = json!({"alg": {"id": "ppo"}, "seed": 3});
        let got: Value = serde_json::from_str(&config_payload(&config)).unwrap();
        assert_eq!(got, json!({"alg": {"value": {"id": "ppo"}}, "seed": {"value": 3}}));
    }

    #[test]
    fn lines_of_a_step_merge_into_one_row_and_the_last_step_waits() {
        let records = vec![history(1, "a", 1.0, 10), history(1, "b", 2.0, 20), history(2, "a", 3.0, 30)];
        let state = State::default();
        let Batch::History { rows, end } = Batch::next(&records, &state, 100.0, false) else { panic!() };
        assert_eq!(end, 20, "step 2 is held back");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            Value::Object(rows[0].clone()),
            json!({"a": 1.0, "b": 2.0, "_step": 1, "_timestamp": 101.0, "_runtime": 1.0})
        );
        let Batch::History { rows, end } = Batch::next(&records, &state, 100.0, true) else { panic!() };
        assert_eq!((rows.len(), end), (2, 30), "all: the last step goes too");
        assert_eq!(Batch::next(&records[2..], &State { spool_offset: 20, ..state }, 100.0, false), Batch::Empty);
    }

    #[test]
    fn repeats_after_resume_are_dropped_and_finish_comes_alone() {
        let records = vec![history(2, "a", 1.0, 10), history(3, "a", 2.0, 20), (Record::Finish { exitcode: 0 }, 30)];
        let state = State { last_step: Some(2), ..State::default() };
        let Batch::History { rows, end } = Batch::next(&records, &state, 100.0, false) else { panic!() };
        assert_eq!(end, 20, "a finish record ends the run of rows: step 3 is complete");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["_step"], 3);
        let after = State { spool_offset: 20, last_step: Some(3), ..State::default() };
        assert_eq!(Batch::next(&records[2..], &after, 100.0, false), Batch::Finish { exitcode: 0, end: 30 });
    }

    #[test]
    fn torn_lines_are_skipped_and_partial_lines_wait() {
        let good = serde_json::to_string(&Record::Finish { exitcode: 1 }).unwrap();
        let bytes = format!("{{\"type\":\"hist\n{good}\n{{\"type\"");
        let got = parse_lines(bytes.as_bytes(), 5);
        assert_eq!(got, vec![(Record::Finish { exitcode: 1 }, 5 + 14 + good.len() as u64 + 1)]);
    }

    #[test]
    fn bodies_match_the_file_stream_protocol() {
        let row = history_row(4, 110.0, 100.0, &Map::from_iter([("k".to_string(), json!(0.5))]));
        let summary = row.clone();
        let body = history_body(7, &[row], &summary);
        assert_eq!(body["files"]["wandb-history.jsonl"]["offset"], 7);
        let line = body["files"]["wandb-history.jsonl"]["content"][0].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(line).unwrap()["_step"], 4);
        assert_eq!(body["files"]["wandb-summary.json"]["offset"], 0);
        assert_eq!(finish_body(130), json!({"complete": true, "exitcode": 130}));
    }
}
