//! Local tabular data: CSV (with a header row), JSON lines and Parquet, read into string
//! columns.
//!
//! Every problem names the file and the 1-based data row.
//!
//! In JSON lines, a value that is not a string (a list, an object, a number) reads as its
//! compact JSON text with object keys in the order written, so a conversational cell
//! (`[{"role": "user", "content": ...}]`) reads back as the conversation it was.
//!
//! Parquet is read with the `parquet` crate's record API (no arrow): strings as they are,
//! numbers and booleans in their decimal text, lists, maps and structs as JSON text (so a
//! `prompt_pretokenized` list column reads as `["user text", "assistant prefix"]`), and
//! nulls as missing values. Snappy and zstd compressed files are read; other codecs give
//! an error naming the file. [`write_parquet`] writes the small files tests and fixtures
//! need.

use crate::error::TaskError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tril_models::chat_template::Json;

/// Rows of named string columns read from one file.
#[derive(Debug, Clone)]
pub struct Table {
    path: PathBuf,
    columns: Vec<String>,
    rows: Vec<BTreeMap<String, String>>,
}

impl Table {
    /// Reads a `.csv` (header row required), `.jsonl`/`.json` (one object per line) or
    /// `.parquet` file.
    pub fn read(path: &Path) -> Result<Table, TaskError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "csv" => read_csv(path),
            "jsonl" | "json" => read_jsonl(path),
            "parquet" | "pq" => read_parquet(path),
            _ => Err(TaskError::Format { path: path.to_path_buf() }),
        }
    }

    /// One table of the rows of `tables` in order (the shards of one dataset split); the
    /// columns and path are the first table's. No tables: an empty table.
    pub fn concat(tables: Vec<Table>) -> Table {
        let mut tables = tables.into_iter();
        let Some(mut first) = tables.next() else {
            return Table { path: PathBuf::new(), columns: Vec::new(), rows: Vec::new() };
        };
        for t in tables {
            for c in t.columns {
                if !first.columns.contains(&c) {
                    first.columns.push(c);
                }
            }
            first.rows.extend(t.rows);
        }
        first
    }

    /// The column names, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether the file has a column named `column`.
    pub fn has_column(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
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

    /// The value of `column` in 0-based data row `row`, if present (empty values included).
    pub fn value(&self, row: usize, column: &str) -> Option<&str> {
        self.rows.get(row)?.get(column).map(String::as_str)
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

    /// The values of `column` parsed as numbers, one per row; errors name the file, the
    /// row, the column and the value found.
    pub fn numbers(&self, column: &str, key: &str) -> Result<Vec<f64>, TaskError> {
        let values = self.column(column, key)?;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.trim().parse::<f64>().map_err(|_| TaskError::Row {
                    path: self.path.clone(),
                    row: i + 1,
                    message: format!("column `{column}` ({key}): expected a number, found {}", preview(v)),
                })
            })
            .collect()
    }
}

/// A value quoted for an error message, shortened to 60 characters.
fn preview(v: &str) -> String {
    let short: String = v.chars().take(60).collect();
    if short.len() < v.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
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
        let value = Json::parse(line).map_err(|e| row_error(format!("invalid JSON: {e}")))?;
        let Json::Object(mut fields) = value else {
            return Err(row_error("expected a JSON object".into()));
        };
        // Columns in order of first appearance, each row's keys sorted (as ever); nested
        // values keep their key order as written (conversational cells, tool calls).
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut row = BTreeMap::new();
        for (k, v) in fields {
            if !columns.contains(&k) {
                columns.push(k.clone());
            }
            let text = match v {
                Json::String(s) => s,
                Json::Null => String::new(),
                other => other.to_json_string(),
            };
            row.insert(k, text);
        }
        rows.push(row);
    }
    Ok(Table { path: path.into(), columns, rows })
}

fn parse_error(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> TaskError + '_ {
    move |e| TaskError::Parse { path: path.to_path_buf(), message: format!("not a readable parquet file: {e}") }
}

fn read_parquet(path: &Path) -> Result<Table, TaskError> {
    // The parquet decoder panics on some corrupt files ("Decoder for dict should have been
    // set" after one flipped byte): such a file is an error naming it, as any other.
    std::panic::catch_unwind(|| read_parquet_records(path)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        Err(TaskError::Parse {
            path: path.to_path_buf(),
            message: format!("not a readable parquet file: corrupt data ({what})"),
        })
    })
}

fn read_parquet_records(path: &Path) -> Result<Table, TaskError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(io(path))?;
    let reader = SerializedFileReader::new(file).map_err(parse_error(path))?;
    let columns: Vec<String> =
        reader.metadata().file_metadata().schema().get_fields().iter().map(|f| f.name().to_string()).collect();
    let mut rows = Vec::new();
    for (i, row) in reader.get_row_iter(None).map_err(parse_error(path))?.enumerate() {
        let row_error = |message: String| TaskError::Row { path: path.into(), row: i + 1, message };
        let row = row.map_err(|e| row_error(format!("unreadable row: {e}")))?;
        let mut out = BTreeMap::new();
        for (name, field) in row.get_column_iter() {
            match field_text(field) {
                Ok(Some(text)) => {
                    out.insert(name.clone(), text);
                }
                Ok(None) => {}
                Err(message) => return Err(row_error(format!("column `{name}`: {message}"))),
            }
        }
        rows.push(out);
    }
    Ok(Table { path: path.into(), columns, rows })
}

/// A parquet cell as text (see the module docs); `None` for null.
fn field_text(field: &parquet::record::Field) -> Result<Option<String>, String> {
    use parquet::record::Field;
    Ok(match field {
        Field::Null => None,
        Field::Str(s) => Some(s.clone()),
        Field::Bytes(b) => Some(
            std::str::from_utf8(b.data()).map_err(|_| "binary value that is not UTF-8 text".to_string())?.to_string(),
        ),
        Field::Float(x) => Some(x.to_string()),
        Field::Double(x) => Some(x.to_string()),
        Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => Some(field_json(field)?.to_json_string()),
        other => Some(other.to_string()),
    })
}

/// A parquet value as JSON (nested values of list, map and struct columns), struct
/// fields and map entries in their stored order.
fn field_json(field: &parquet::record::Field) -> Result<Json, String> {
    use parquet::record::Field;
    let number = |x: f64| serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number);
    Ok(match field {
        Field::Null => Json::Null,
        Field::Bool(b) => Json::Bool(*b),
        Field::Float(x) => number(f64::from(*x)),
        Field::Double(x) => number(*x),
        Field::Byte(_) | Field::Short(_) | Field::Int(_) | Field::Long(_) => {
            Json::parse(&field.to_string()).map_err(|e| e.to_string())?
        }
        Field::UByte(_) | Field::UShort(_) | Field::UInt(_) | Field::ULong(_) => {
            Json::parse(&field.to_string()).map_err(|e| e.to_string())?
        }
        Field::ListInternal(list) => Json::Array(list.elements().iter().map(field_json).collect::<Result<_, _>>()?),
        Field::MapInternal(map) => Json::Object(
            map.entries()
                .iter()
                .map(|(k, v)| Ok((field_text(k)?.unwrap_or_default(), field_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Field::Group(row) => Json::Object(
            row.get_column_iter().map(|(k, v)| Ok((k.clone(), field_json(v)?))).collect::<Result<_, String>>()?,
        ),
        other => Json::String(field_text(other)?.unwrap_or_default()),
    })
}

/// One column for [`write_parquet`]; every column must have the same number of rows.
#[derive(Debug, Clone, PartialEq)]
pub enum ParquetColumn {
    /// Optional UTF-8 strings (`None` is null).
    Str(Vec<Option<String>>),
    /// Optional doubles.
    F64(Vec<Option<f64>>),
    /// Optional 64-bit integers.
    I64(Vec<Option<i64>>),
    /// A list of strings per row (the standard three-level LIST layout).
    StrList(Vec<Vec<String>>),
}

impl ParquetColumn {
    fn len(&self) -> usize {
        match self {
            ParquetColumn::Str(v) => v.len(),
            ParquetColumn::F64(v) => v.len(),
            ParquetColumn::I64(v) => v.len(),
            ParquetColumn::StrList(v) => v.len(),
        }
    }

    fn schema(&self, name: &str) -> String {
        match self {
            ParquetColumn::Str(_) => format!("OPTIONAL BYTE_ARRAY {name} (UTF8);"),
            ParquetColumn::F64(_) => format!("OPTIONAL DOUBLE {name};"),
            ParquetColumn::I64(_) => format!("OPTIONAL INT64 {name};"),
            ParquetColumn::StrList(_) => {
                format!(
                    "OPTIONAL GROUP {name} (LIST) {{ REPEATED GROUP list {{ OPTIONAL BYTE_ARRAY element (UTF8); }} }}"
                )
            }
        }
    }
}

/// Compression of a file [`write_parquet`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCodec {
    /// No compression.
    Uncompressed,
    /// Snappy (the most common codec of parquet files).
    Snappy,
    /// Zstandard at its default level.
    Zstd,
}

/// Optional values with their definition levels (1 = present, 0 = null).
fn levels<T: Clone>(values: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
    let defs = values.iter().map(|v| i16::from(v.is_some())).collect();
    (values.iter().flatten().cloned().collect(), defs)
}

/// Writes `columns` (name, values) as one row group of a parquet file at `path`.
pub fn write_parquet(path: &Path, columns: &[(&str, ParquetColumn)], codec: ParquetCodec) -> Result<(), TaskError> {
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let failed = |e: parquet::errors::ParquetError| TaskError::Parse {
        path: path.to_path_buf(),
        message: format!("writing parquet: {e}"),
    };
    let rows = columns.first().map_or(0, |(_, c)| c.len());
    if let Some((name, c)) = columns.iter().find(|(_, c)| c.len() != rows) {
        return Err(TaskError::Parse {
            path: path.into(),
            message: format!("column `{name}` has {} rows, the first column {rows}", c.len()),
        });
    }
    let fields: Vec<String> = columns.iter().map(|(name, c)| c.schema(name)).collect();
    let schema = parquet::schema::parser::parse_message_type(&format!("message schema {{ {} }}", fields.join(" ")))
        .map_err(failed)?;
    let compression = match codec {
        ParquetCodec::Uncompressed => Compression::UNCOMPRESSED,
        ParquetCodec::Snappy => Compression::SNAPPY,
        ParquetCodec::Zstd => Compression::ZSTD(ZstdLevel::default()),
    };
    let props = std::sync::Arc::new(WriterProperties::builder().set_compression(compression).build());
    let file = std::fs::File::create(path).map_err(io(path))?;
    let mut writer = SerializedFileWriter::new(file, std::sync::Arc::new(schema), props).map_err(failed)?;
    let mut group = writer.next_row_group().map_err(failed)?;
    let bytes = |v: Vec<String>| v.into_iter().map(|s| ByteArray::from(s.into_bytes())).collect::<Vec<_>>();
    for (_, column) in columns {
        let mut w = group.next_column().map_err(failed)?.ok_or_else(|| TaskError::Parse {
            path: path.into(),
            message: "the schema has fewer columns than given".into(),
        })?;
        match column {
            ParquetColumn::Str(v) => {
                let (values, defs) = levels(v);
                w.typed::<ByteArrayType>().write_batch(&bytes(values), Some(&defs), None).map_err(failed)?;
            }
            ParquetColumn::F64(v) => {
                let (values, defs) = levels(v);
                w.typed::<DoubleType>().write_batch(&values, Some(&defs), None).map_err(failed)?;
            }
            ParquetColumn::I64(v) => {
                let (values, defs) = levels(v);
                w.typed::<Int64Type>().write_batch(&values, Some(&defs), None).map_err(failed)?;
            }
            ParquetColumn::StrList(rows) => {
                // Levels: 1 = empty list, 3 = an element; repetition 1 continues a row's list.
                let (mut values, mut defs, mut reps) = (Vec::new(), Vec::new(), Vec::new());
                for row in rows {
                    if row.is_empty() {
                        defs.push(1);
                        reps.push(0);
                    }
                    for (j, item) in row.iter().enumerate() {
                        values.push(ByteArray::from(item.as_str()));
                        defs.push(3);
                        reps.push(i16::from(j > 0));
                    }
                }
                w.typed::<ByteArrayType>().write_batch(&values, Some(&defs), Some(&reps)).map_err(failed)?;
            }
        }
        w.close().map_err(failed)?;
    }
    group.close().map_err(failed)?;
    writer.close().map_err(failed)?;
    Ok(())
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
    fn jsonl_nested_values_keep_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let line =
            r#"{"z": 1, "prompt": [{"role": "user", "content": "hi", "b": {"y": 1, "x": [2.5, null]}}], "a": true}"#;
        let t = Table::read(&write(dir.path(), "c.jsonl", &format!("{line}\n"))).unwrap();
        assert_eq!(t.columns(), ["a", "prompt", "z"]);
        let prompt = t.column("prompt", "k").unwrap();
        assert_eq!(prompt[0], r#"[{"role":"user","content":"hi","b":{"y":1,"x":[2.5,null]}}]"#);
        assert_eq!(t.column("a", "k").unwrap(), vec!["true"]);
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

    #[test]
    fn parquet_round_trips_strings_numbers_lists_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        for (codec, name) in [
            (ParquetCodec::Snappy, "a.parquet"),
            (ParquetCodec::Zstd, "b.parquet"),
            (ParquetCodec::Uncompressed, "c.pq"),
        ] {
            let path = dir.path().join(name);
            let columns = [
                ("uid", ParquetColumn::Str(vec![Some("q1-0".into()), Some("q1-1".into()), Some("q2-0".into())])),
                ("reward", ParquetColumn::F64(vec![Some(0.5), Some(-1.25), None])),
                ("n", ParquetColumn::I64(vec![Some(3), Some(-7), Some(0)])),
                (
                    "prompt_pretokenized",
                    ParquetColumn::StrList(vec![
                        vec!["user \"hi\"".into(), "assistant".into()],
                        vec![],
                        vec!["only".into()],
                    ]),
                ),
            ];
            write_parquet(&path, &columns, codec).unwrap();
            let t = Table::read(&path).unwrap();
            assert_eq!(t.columns(), ["uid", "reward", "n", "prompt_pretokenized"]);
            assert_eq!(t.len(), 3);
            assert_eq!(t.column("uid", "k").unwrap(), vec!["q1-0", "q1-1", "q2-0"]);
            assert_eq!(t.column("n", "k").unwrap(), vec!["3", "-7", "0"]);
            let lists = t.column("prompt_pretokenized", "k").unwrap();
            let first: Vec<String> = serde_json::from_str(&lists[0]).unwrap();
            assert_eq!(first, vec!["user \"hi\"", "assistant"]);
            assert_eq!(lists[1], "[]");
            assert_eq!(lists[2], r#"["only"]"#);
            // The null reward is row 3.
            let err = t.numbers("reward", "alg.args.reward_key").unwrap_err().to_string();
            assert!(err.contains(&format!("{name}: row 3: column `reward` is empty or missing")), "{err}");
        }
    }

    #[test]
    fn parquet_errors_name_file_column_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        let columns = [
            ("uid", ParquetColumn::Str(vec![Some("a".into()), Some("b".into())])),
            ("reward", ParquetColumn::Str(vec![Some("1.5".into()), Some("high".into())])),
        ];
        write_parquet(&path, &columns, ParquetCodec::Snappy).unwrap();
        let t = Table::read(&path).unwrap();
        let err = t.numbers("reward", "alg.args.reward_key").unwrap_err().to_string();
        assert!(
            err.contains(
                "bad.parquet: row 2: column `reward` (alg.args.reward_key): expected a number, found \"high\""
            ),
            "{err}"
        );
        let err = t.column("response", "alg.args.response_key").unwrap_err().to_string();
        assert!(err.contains("bad.parquet: no column `response` (columns: uid, reward)"), "{err}");
        // An empty file and a truncated one are parse errors naming the file.
        let empty = write(dir.path(), "empty.parquet", "");
        let err = Table::read(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.parquet: not a readable parquet file"), "{err}");
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.parquet");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = Table::read(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.parquet: not a readable parquet file"), "{err}");
        // A file with the columns but no rows reads as an empty table.
        let none = dir.path().join("none.parquet");
        write_parquet(&none, &[("uid", ParquetColumn::Str(vec![]))], ParquetCodec::Snappy).unwrap();
        assert!(Table::read(&none).unwrap().is_empty());
    }

    /// Found by tests/fuzz.rs: one byte set to `"` in an uncompressed file made the parquet
    /// decoder panic ("Decoder for dict should have been set"). Every single-byte corruption
    /// of a small file is now a table or an error naming the file.
    #[test]
    fn corrupt_parquet_bytes_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ok.parquet");
        let columns = [
            ("uid", ParquetColumn::Str(vec![Some("q1".into()), None, Some("q2".into())])),
            ("reward", ParquetColumn::F64(vec![Some(0.5), Some(-1.0), None])),
            ("n", ParquetColumn::I64(vec![Some(3), None, Some(i64::MIN)])),
            ("prompt", ParquetColumn::StrList(vec![vec!["u".into(), "a".into()], vec![], vec!["x".into()]])),
        ];
        write_parquet(&path, &columns, ParquetCodec::Uncompressed).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad.parquet");
        let mut errors = 0;
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] = b'"';
            std::fs::write(&bad, &b).unwrap();
            if let Err(e) = Table::read(&bad) {
                assert!(e.to_string().starts_with(&bad.display().to_string()), "{e}");
                errors += 1;
            }
        }
        assert!(errors > 0);
    }
}
