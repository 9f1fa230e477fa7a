//! Property tests ("fuzzing in the repo", issue 13): the CSV, JSON lines and parquet readers
//! never panic, whatever the bytes; a bad file is an error naming it.
//!
//! Each property runs a bounded number of cases (1,900 in this file); set
//! `PROPTEST_CASES` to run more (or fewer) of every property.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use tril_tasks::table::{write_parquet, ParquetCodec, ParquetColumn, Table};

/// `n` cases, or `PROPTEST_CASES` when set; no regression files are written into the tree
/// (regressions found are kept as plain `#[test]`s instead).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// Reads `bytes` as file `name`: never a panic, and an error names the file.
fn read_names_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<Option<Table>, String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    match Table::read(&path) {
        Ok(table) => {
            // Every column reads (values or an error naming the row), none panics.
            for c in table.columns() {
                let _ = table.column(c, "k");
                let _ = table.numbers(c, "k");
            }
            Ok(Some(table))
        }
        Err(err) if err.to_string().starts_with(&path.display().to_string()) => Ok(None),
        Err(err) => Err(format!("error does not name {}: {err}", path.display())),
    }
}

/// Valid files of each format, made once: (name, bytes).
fn valid_files() -> &'static [(String, Vec<u8>)] {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut out = vec![
            ("ok.csv".to_string(), b"review,label\n\"good, fine\",1\nbad,0\n\"multi\nline\",1\n".to_vec()),
            (
                "ok.jsonl".to_string(),
                b"{\"prompt\": \"a\", \"n\": 1, \"l\": [1, 2]}\n{\"prompt\": \"b\\u00e9\", \"n\": null}\n".to_vec(),
            ),
        ];
        for (name, codec) in [
            ("plain.parquet", ParquetCodec::Uncompressed),
            ("snappy.parquet", ParquetCodec::Snappy),
            ("zstd.parquet", ParquetCodec::Zstd),
        ] {
            let path = dir.path().join(name);
            let columns = [
                ("uid", ParquetColumn::Str(vec![Some("q1".into()), None, Some("q2-é".into())])),
                ("reward", ParquetColumn::F64(vec![Some(0.5), Some(-1.0), None])),
                ("n", ParquetColumn::I64(vec![Some(3), None, Some(i64::MIN)])),
                ("prompt", ParquetColumn::StrList(vec![vec!["u".into(), "a".into()], vec![], vec!["x".into()]])),
            ];
            write_parquet(&path, &columns, codec).unwrap();
            out.push((name.to_string(), std::fs::read(&path).unwrap()));
        }
        out
    })
}

/// A mutation of a file: truncation, byte flips, byte overwrites, inserted bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<prop::sample::Index>(), prop::sample::select(&[0u8, 0xff, 0x7f, 0x80, b'"', b'\n', b',', b'{'][..]))
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Flip(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        Mutation::Set(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Mutation::Insert(i, b) => {
            let i = i.index(bytes.len());
            bytes.splice(i..i, b.iter().copied());
        }
    }
}

/// Bytes for a text format: arbitrary, or made of the format's own syntax.
fn text_bytes(tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(prop::sample::select(tokens), 0..40).prop_map(|t| t.concat().into_bytes()),
    ]
}

const CSV_TOKENS: &[&str] = &["a", "b", ",", "\"", "\"\"", "\n", "\r\n", "\r", " ", "1", "é", "\u{0}", "\u{feff}", "#"];
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"k\"",
    "\"v\"",
    ":",
    ",",
    "\n",
    "1",
    "-1e999",
    "1e400",
    "null",
    "true",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é\"",
    " ",
    "\\",
    "\"",
];

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn csv_reader_takes_any_bytes(bytes in text_bytes(CSV_TOKENS)) {
        let dir = tempfile::tempdir().unwrap();
        let table = read_names_file(dir.path(), "fuzz.csv", &bytes);
        prop_assert!(table.is_ok(), "{table:?}");
        if let Ok(Some(t)) = table {
            // A read table is rectangular: every row has every column.
            for c in t.columns() {
                prop_assert!(t.column(c, "k").map_or(true, |v| v.len() == t.len()));
            }
        }
    }

    #[test]
    fn jsonl_reader_takes_any_bytes(bytes in text_bytes(JSON_TOKENS)) {
        let dir = tempfile::tempdir().unwrap();
        let table = read_names_file(dir.path(), "fuzz.jsonl", &bytes);
        prop_assert!(table.is_ok(), "{table:?}");
    }

    #[test]
    fn parquet_reader_takes_any_bytes(
        tail in prop::collection::vec(any::<u8>(), 0..256),
        footer in any::<bool>(),
    ) {
        // With `footer`, the bytes end in a length and the `PAR1` magic so the reader gets
        // past the magic check into the footer parser.
        let mut bytes = b"PAR1".to_vec();
        bytes.extend_from_slice(&tail);
        if footer {
            bytes.extend_from_slice(&(tail.len() as u32).to_le_bytes());
            bytes.extend_from_slice(b"PAR1");
        }
        let dir = tempfile::tempdir().unwrap();
        let table = read_names_file(dir.path(), "fuzz.parquet", &bytes);
        prop_assert!(table.is_ok(), "{table:?}");
    }

    #[test]
    fn mutated_files_give_errors_not_panics(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let files = valid_files();
        let (name, bytes) = &files[which.index(files.len())];
        let mut bytes = bytes.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let dir = tempfile::tempdir().unwrap();
        let table = read_names_file(dir.path(), &format!("mutated-{name}"), &bytes);
        prop_assert!(table.is_ok(), "{table:?}");
    }
}

fn row() -> impl Strategy<Value = (String, Option<String>, f64)> {
    (any::<String>(), prop::option::of("[a-z ]{0,8}"), any::<f64>().prop_filter("finite", |x| x.is_finite()))
}

proptest! {
    #![proptest_config(cases(300))]

    /// What JSON lines and parquet files hold is what the table reads, value for value.
    #[test]
    fn written_tables_read_back(rows in prop::collection::vec(row(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let jsonl: PathBuf = dir.path().join("rt.jsonl");
        let text: String = rows
            .iter()
            .map(|(s, o, x)| serde_json::json!({"s": s, "o": o, "x": x}).to_string() + "\n")
            .collect();
        std::fs::write(&jsonl, text).unwrap();
        let parquet = dir.path().join("rt.parquet");
        let columns = [
            ("s", ParquetColumn::Str(rows.iter().map(|r| Some(r.0.clone())).collect())),
            ("o", ParquetColumn::Str(rows.iter().map(|r| r.1.clone()).collect())),
            ("x", ParquetColumn::F64(rows.iter().map(|r| Some(r.2)).collect())),
        ];
        write_parquet(&parquet, &columns, ParquetCodec::Snappy).unwrap();
        for path in [jsonl, parquet] {
            let t = Table::read(&path).unwrap();
            prop_assert_eq!(t.len(), rows.len());
            let mut columns = t.columns().to_vec();
            columns.sort();
            prop_assert_eq!(columns, ["o", "s", "x"]);
            let numbers = t.numbers("x", "k").unwrap();
            // Bit-exact (serde_json's `float_roundtrip`: without it a float with 17
            // significant digits read from JSON lines could be a few ULPs off).
            for (got, want) in numbers.iter().zip(rows.iter().map(|r| r.2)) {
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{}: {:e} != {:e}", path.display(), got, want);
            }
            let nonblank = rows.iter().all(|r| !r.0.trim().is_empty());
            if nonblank {
                prop_assert_eq!(t.column("s", "k").unwrap(), rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>());
            }
        }
    }
}
