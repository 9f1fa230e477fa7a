//! Local tabular data: CSV (with a header row) and JSON lines, read into string columns.
//!
//! Every problem names the file and the 1-based data row.

use crate::error::TaskError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Rows of named string columns read from one file.
#[derive(Debug, Clone)]
pub struct Table {
    path: PathBuf,
    columns: Vec<String>,
    rows: Vec<BTreeMap<String, String>>,
}

impl Table {
    /// Reads a `.csv` (header row required) or `.jsonl`/`.json` (one object per line) file.
    pub fn read(path: &Path) -> Result<Table, TaskError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "csv" => read_csv(path),
            "jsonl" | "json" => read_jsonl(path),
            _ => Err(TaskError::Format { path: path.to_path_buf() }),
        }
    }

    /// The file this table came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the file has no data row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The values of `column`, one per row; `key` is the config key naming the column
    /// (for the error). Empty values are errors naming the row.
    pub fn column(&self, column: &str, key: &str) -> Result<Vec<String>, TaskError> {
        if !self.columns.iter().any(|c| c == column) {
            return Err(TaskError::MissingColumn {
                path: self.path.clone(),
                column: column.into(),
                columns: self.columns.join(", "),
                key: key.into(),
            });
        }
        self.rows
            .iter()
            .enumerate()
            .map(|(i, row)| match row.get(column) {
                Some(v) if !v.trim().is_empty() => Ok(v.clone()),
                _ => Err(TaskError::Row {
                    path: self.path.clone(),
                    row: i + 1,
                    message: format!("column `{column}` is empty or missing"),
                }),
            })
            .collect()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Io { path: path.to_path_buf(), source }
}

fn read_csv(path: &Path) -> Result<Table, TaskError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_path(path).map_err(|e| csv_error(path, e))?;
    let columns: Vec<String> = reader.headers().map_err(|e| csv_error(path, e))?.iter().map(str::to_string).collect();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| TaskError::Row { path: path.into(), row: i + 1, message: e.to_string() })?;
        rows.push(columns.iter().cloned().zip(record.iter().map(str::to_string)).collect());
    }
    Ok(Table { path: path.into(), columns, rows })
}

fn csv_error(path: &Path, e: csv::Error) -> TaskError {
    match e.into_kind() {
        csv::ErrorKind::Io(source) => TaskError::Io { path: path.into(), source },
        other => TaskError::Row { path: path.into(), row: 0, message: format!("{other:?}") },
    }
}

fn read_jsonl(path: &Path) -> Result<Table, TaskError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row_error = |message: String| TaskError::Row { path: path.into(), row: i + 1, message };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| row_error(format!("invalid JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(row_error("expected a JSON object".into()));
        };
        let mut row = BTreeMap::new();
        for (k, v) in map {
            if !columns.contains(&k) {
                columns.push(k.clone());
            }
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            row.insert(k, text);
        }
        rows.push(row);
    }
    Ok(Table { path: path.into(), columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn csv_and_jsonl_columns() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "a.csv", "review,sentiment\n\"good, fine\",positive\nbad,negative\n");
        let t = Table::read(&csv).unwrap();
        assert_eq!(t.column("review", "k").unwrap(), vec!["good, fine", "bad"]);
        let jsonl =
            write(dir.path(), "a.jsonl", "{\"text\": \"x\", \"label\": 1}\n\n{\"text\": \"y\", \"label\": 0}\n");
        let t = Table::read(&jsonl).unwrap();
        assert_eq!(t.column("label", "k").unwrap(), vec!["1", "0"]);
    }

    #[test]
    fn errors_name_file_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "a.csv", "review,sentiment\nok,positive\n,negative\n");
        let t = Table::read(&csv).unwrap();
        let err = t.column("text", "task.args.text_column").unwrap_err().to_string();
        assert!(err.contains("no column `text` (columns: review, sentiment); set task.args.text_column"), "{err}");
        let err = t.column("review", "k").unwrap_err().to_string();
        assert!(err.contains("a.csv: row 2: column `review` is empty"), "{err}");
        let bad = write(dir.path(), "b.jsonl", "{\"text\": 1}\nnot json\n");
        let err = Table::read(&bad).unwrap_err().to_string();
        assert!(err.contains("b.jsonl: row 2: invalid JSON"), "{err}");
        let err = Table::read(&write(dir.path(), "c.txt", "")).unwrap_err().to_string();
        assert!(err.contains("unsupported data file format"), "{err}");
    }
}
