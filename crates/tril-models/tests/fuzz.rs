//! Property tests ("fuzzing in the repo", issue 13): the safetensors / HF loaders and the
//! tokenizers never panic, abort or allocate without bound, whatever `config.json`, the
//! safetensors header or the text holds; bad input is a `ModelError` naming the file.
//!
//! Each property runs a bounded number of cases (2,120 in this file); set
//! `PROPTEST_CASES` to run more (or fewer) of every property.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fixture, B};
use proptest::prelude::*;
use serde_json::{json, Value};
use tril_models::hf::encoder::{load_encoder, load_encoder_classifier};
use tril_models::hf::{load_gpt2, load_lm_classifier, load_value_model, Checkpoint};
use tril_models::tokenizer::{PaddingSide, TextTokenizer, TokenizerOptions, TruncationSide};
use tril_models::ModelError;

/// `n` cases, or `PROPTEST_CASES` when set; no regression files are written into the tree
/// (regressions found are kept as plain `#[test]`s instead).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// A copy of a fixture model directory (config.json + model.safetensors).
fn model_dir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// Every loader that reads this directory; each gives a model or an error naming it.
fn load_all(dir: &Path) -> Result<usize, String> {
    let dev = Default::default();
    let results: Vec<Result<(), ModelError>> = vec![
        load_gpt2::<B>(dir, &dev).map(|_| ()),
        load_value_model::<B>(dir, true, &dev).map(|_| ()),
        load_lm_classifier::<B>(dir, &dev).map(|_| ()),
        load_encoder_classifier::<B>(dir, &dev).map(|_| ()),
        load_encoder::<B>(dir, None, &dev).map(|_| ()),
        load_encoder::<B>(dir, Some(1), &dev).map(|_| ()),
    ];
    let mut ok = 0;
    for r in results {
        match r {
            Ok(()) => ok += 1,
            Err(e) if e.to_string().contains(&dir.display().to_string()) => {}
            Err(e) => return Err(format!("error does not name {}: {e}", dir.display())),
        }
    }
    Ok(ok)
}

/// Values for size keys: absurd, negative, zero, fractional, of the wrong type.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(
            &[0u64, 1, 2, 3, 4, 31, 64, 1 << 20, 1_000_000_000, 1 << 31, 1 << 32, 1_000_000_000_000, u64::MAX][..]
        )
        .prop_map(|v| json!(v)),
        prop::sample::select(&[-1i64, -64, i64::MIN][..]).prop_map(|v| json!(v)),
        prop::sample::select(&[0.5f64, 1e300, -0.0, 64.0][..]).prop_map(|v| json!(v)),
        Just(Value::Null),
        Just(json!("64")),
        Just(json!([64])),
        Just(json!({})),
        Just(json!(true)),
    ]
}

const SIZE_KEYS: &[&str] = &[
    "vocab_size",
    "n_positions",
    "n_ctx",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "layer_norm_epsilon",
    "bos_token_id",
    "eos_token_id",
    "activation_function",
    "model_type",
    "tie_word_embeddings",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "pad_token_id",
    "num_labels",
    "id2label",
    "dim",
    "n_layers",
    "n_heads",
    "hidden_dim",
    "hidden_act",
];

/// One change to config.json: a key set to an odd value, or removed.
fn config_edit() -> impl Strategy<Value = (&'static str, Option<Value>)> {
    (prop::sample::select(SIZE_KEYS), prop::option::weighted(0.85, odd_value()))
}

proptest! {
    #![proptest_config(cases(300))]

    /// Absurd sizes in config.json are errors naming the file, never aborts or huge
    /// allocations (an `n_layer` of 10^9 must not build 10^9 layers).
    #[test]
    fn edited_configs_give_errors_not_aborts(
        which in prop::sample::select(&["gpt2", "bert", "roberta", "distilbert"][..]),
        edits in prop::collection::vec(config_edit(), 1..4),
    ) {
        let dir = model_dir(which);
        let path = dir.path().join("config.json");
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (key, value) in &edits {
            match value {
                Some(v) => config[*key] = v.clone(),
                None => {
                    config.as_object_mut().unwrap().remove(*key);
                }
            }
        }
        std::fs::write(&path, config.to_string()).unwrap();
        let loaded = load_all(dir.path());
        prop_assert!(loaded.is_ok(), "{loaded:?}");
    }
}

/// The fixture GPT-2 checkpoint, split into its header JSON and data bytes.
fn gpt2_parts() -> &'static (serde_json::Map<String, Value>, Vec<u8>) {
    static PARTS: OnceLock<(serde_json::Map<String, Value>, Vec<u8>)> = OnceLock::new();
    PARTS.get_or_init(|| {
        let bytes = std::fs::read(fixture("gpt2").join("model.safetensors")).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
    })
}

/// A change to one tensor's header entry.
#[derive(Debug, Clone)]
enum HeaderEdit {
    Dtype(&'static str),
    Shape(Vec<u64>),
    Offsets(u64, u64),
    Remove,
    Garbage(Value),
}

fn header_edit() -> impl Strategy<Value = (prop::sample::Index, HeaderEdit)> {
    let dim = prop::sample::select(&[0u64, 1, 3, 64, 192, 1 << 31, 1 << 32, 1 << 62, u64::MAX][..]);
    let offset = prop::sample::select(&[0u64, 1, 4, 768, 49920, 401_000, 1 << 40, u64::MAX][..]);
    let edit = prop_oneof![
        prop::sample::select(&["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F4", "Q"][..])
            .prop_map(HeaderEdit::Dtype),
        prop::collection::vec(dim, 0..4).prop_map(HeaderEdit::Shape),
        (offset.clone(), offset).prop_map(|(a, b)| HeaderEdit::Offsets(a, b)),
        Just(HeaderEdit::Remove),
        prop::sample::select(vec![json!(null), json!(1), json!("x"), json!([1, 2]), json!({"dtype": "F32"})])
            .prop_map(HeaderEdit::Garbage),
    ];
    (any::<prop::sample::Index>(), edit)
}

/// How the 8-byte header length is written.
#[derive(Debug, Clone)]
enum LengthEdit {
    Right,
    Plus(i64),
    Absurd(u64),
}

fn length_edit() -> impl Strategy<Value = LengthEdit> {
    prop_oneof![
        3 => Just(LengthEdit::Right),
        1 => prop::sample::select(&[-8i64, -1, 1, 8, 1 << 20][..]).prop_map(LengthEdit::Plus),
        1 => prop::sample::select(&[0u64, 1, 1 << 27, 1 << 40, u64::MAX / 2, u64::MAX][..]).prop_map(LengthEdit::Absurd),
    ]
}

proptest! {
    #![proptest_config(cases(400))]

    /// A corrupt safetensors header (length past the file, garbage JSON, shapes that
    /// overflow or disagree with the dtype, offsets out of range, a cut file) is an error
    /// naming the file, never a panic or a huge allocation.
    #[test]
    fn corrupt_safetensors_give_errors(
        edits in prop::collection::vec(header_edit(), 0..3),
        length in length_edit(),
        cut in prop::option::weighted(0.2, any::<prop::sample::Index>()),
        flip in prop::option::weighted(0.2, (any::<prop::sample::Index>(), 1..=255u8)),
    ) {
        let (header, data) = gpt2_parts();
        let mut header = header.clone();
        let names: Vec<String> = header.keys().filter(|k| *k != "__metadata__").cloned().collect();
        for (i, edit) in &edits {
            let name = &names[i.index(names.len())];
            if !header.get(name).is_some_and(Value::is_object) {
                continue;
            }
            match edit {
                HeaderEdit::Dtype(d) => header[name]["dtype"] = json!(d),
                HeaderEdit::Shape(s) => header[name]["shape"] = json!(s),
                HeaderEdit::Offsets(a, b) => header[name]["data_offsets"] = json!([a, b]),
                HeaderEdit::Remove => {
                    header.remove(name);
                }
                HeaderEdit::Garbage(v) => header[name] = v.clone(),
            }
        }
        let text = Value::Object(header).to_string().into_bytes();
        let n = match length {
            LengthEdit::Right => text.len() as u64,
            LengthEdit::Plus(d) => (text.len() as i64 + d).max(0) as u64,
            LengthEdit::Absurd(n) => n,
        };
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend_from_slice(&text);
        bytes.extend_from_slice(data);
        if let Some((i, b)) = flip {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        if let Some(i) = cut {
            bytes.truncate(i.index(bytes.len()));
        }
        let dir = model_dir("gpt2");
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        match Checkpoint::open(&path) {
            Ok(mut ckpt) => {
                let names: Vec<String> = ckpt.names().map(str::to_string).collect();
                for name in &names {
                    for r in [ckpt.read_f32(name).map(|_| ()), ckpt.read_i64(name).map(|_| ()),
                              ckpt.tensor::<B, 2>(name, [64, 192], &Default::default()).map(|_| ())] {
                        if let Err(e) = r {
                            prop_assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
                        }
                    }
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("model.safetensors"), "{e}"),
        }
        let loaded = load_all(dir.path());
        prop_assert!(loaded.is_ok(), "{loaded:?}");
    }
}

/// A `weight_map` entry of a shard index: a real shard, a missing or odd file, not a name.
fn shard_entry() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!("model-00001-of-00002.safetensors"),
        json!("model-00002-of-00002.safetensors"),
        json!("missing.safetensors"),
        json!("config.json"),
        json!(""),
        json!("."),
        json!(1),
        json!(null),
        json!(["model-00001-of-00002.safetensors"]),
    ])
}

proptest! {
    #![proptest_config(cases(200))]

    /// A sharded checkpoint whose index names missing, odd or non-file shards, or misses
    /// tensors, is an error naming the directory.
    #[test]
    fn odd_shard_indexes_give_errors(
        entries in prop::collection::vec((prop::sample::select(&["transformer.wte.weight", "transformer.ln_f.bias", "x", ""][..]), shard_entry()), 0..5),
        weight_map in prop_oneof![Just("weight_map"), Just("weights")],
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture("gpt2").join("config.json"), dir.path().join("config.json")).unwrap();
        // Two shards: the fixture's tensors split by name.
        let mut ckpt = Checkpoint::open(&fixture("gpt2")).unwrap();
        let names: Vec<String> = ckpt.names().map(str::to_string).collect();
        let mut shards = [Vec::new(), Vec::new()];
        for (i, name) in names.iter().enumerate() {
            let (values, shape) = ckpt.read_f32(name).unwrap();
            shards[i % 2].push((name.clone(), values, shape));
        }
        let mut map = serde_json::Map::new();
        for (i, shard) in shards.into_iter().enumerate() {
            let file = format!("model-0000{}-of-00002.safetensors", i + 1);
            for (name, _, _) in &shard {
                map.insert(name.clone(), json!(file));
            }
            tril_models::hf::write_safetensors(&dir.path().join(&file), shard).unwrap();
        }
        let untouched = entries.is_empty() && weight_map == "weight_map";
        for (name, entry) in entries {
            map.insert(name.to_string(), entry);
        }
        let index = json!({ weight_map: map });
        std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
        let loaded = load_all(dir.path());
        prop_assert!(loaded.is_ok(), "{loaded:?}");
        // The index as written loads (as an LM and as a critic).
        prop_assert!(!untouched || loaded.unwrap() >= 2);
    }
}

/// The GPT-2 tokenizer, built once (in memory, from tiktoken-rs's ranks: nothing to download).
fn gpt2() -> &'static TextTokenizer {
    static TOK: OnceLock<TextTokenizer> = OnceLock::new();
    TOK.get_or_init(|| TextTokenizer::gpt2().unwrap())
}

/// The tokenizers of the fixture models (byte-level BPE, WordPiece), when present.
fn fixture_tokenizers() -> &'static [(PathBuf, TextTokenizer)] {
    static TOKS: OnceLock<Vec<(PathBuf, TextTokenizer)>> = OnceLock::new();
    TOKS.get_or_init(|| {
        ["gpt2", "bert", "roberta", "distilbert"]
            .iter()
            .map(|m| fixture(m))
            .filter(|d| {
                let present = d.join("tokenizer.json").is_file();
                if !present {
                    eprintln!("skipped: no {}", d.join("tokenizer.json").display());
                }
                present
            })
            .map(|d| {
                let t = TextTokenizer::from_dir(&d).unwrap();
                (d, t)
            })
            .collect()
    })
}

/// Text with what trips tokenizers: special-token names, NUL and control characters,
/// combining marks, surrogate-looking escapes, emoji sequences, runs of spaces, contractions.
fn odd_text() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "a",
        "The",
        " the",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\u{0}",
        "\u{7f}",
        "\u{85}",
        "\u{200b}",
        "\u{feff}",
        "e\u{301}",
        "\u{301}\u{301}",
        "日本語",
        "👩\u{200d}👩\u{200d}👧",
        "🇫🇷",
        "'s",
        "'ll",
        "n't",
        "123",
        "1.5e-3",
        "<|endoftext|>",
        "<|endoftext",
        "[CLS]",
        "[PAD]",
        "<s>",
        "</s>",
        "<pad>",
        "\\ud800",
        "\u{fffd}",
        "\u{10ffff}",
        "ǅ",
        "ß",
        "İ",
    ];
    prop_oneof![any::<String>(), prop::collection::vec(prop::sample::select(PIECES), 0..24).prop_map(|p| p.concat()),]
}

proptest! {
    #![proptest_config(cases(600))]

    /// GPT-2's byte-level BPE is lossless: decode(encode(s)) == s for every string.
    #[test]
    fn gpt2_tokenizer_round_trips(text in odd_text()) {
        let tok = gpt2();
        let ids = tok.encode(&text, false).unwrap();
        prop_assert!(ids.iter().all(|&i| i <= 50256));
        let back = tok.decode_batch(&[ids], false).unwrap();
        prop_assert_eq!(&back[0], &text);
    }

    /// Batches through every fixture tokenizer with padding and truncation options, and
    /// decoding of arbitrary ids (out of the vocabulary too): values or errors, no panic.
    #[test]
    fn tokenizers_take_any_text_and_ids(
        texts in prop::collection::vec(odd_text(), 1..4),
        max_length in prop::option::of(0usize..12),
        left in any::<bool>(),
        ids in prop::collection::vec(prop_oneof![0u32..600, any::<u32>()], 0..16),
    ) {
        for (dir, tok) in fixture_tokenizers() {
            let options = TokenizerOptions {
                padding_side: if left { PaddingSide::Left } else { PaddingSide::Right },
                truncation_side: if left { TruncationSide::Right } else { TruncationSide::Left },
                max_length,
                pad_to_max_length: max_length.is_some() && left,
                pad_token_as_eos_token: true,
                ..TokenizerOptions::default()
            };
            if let Ok(enc) = tok.clone().with_options(options).encode_batch(&texts) {
                prop_assert_eq!(enc.ids.len(), enc.batch * enc.seq_len, "{}", dir.display());
                prop_assert_eq!(enc.batch, texts.len());
                if let Some(n) = max_length.filter(|&n| n > 0) {
                    prop_assert!(enc.seq_len <= n.max(2), "{} > {n} ({})", enc.seq_len, dir.display());
                }
            }
            for skip_special_tokens in [true, false] {
                let _ = tok.decode_batch(std::slice::from_ref(&ids), skip_special_tokens);
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(20))]

    /// Long texts (up to 20,000 characters, long words without spaces) round-trip too.
    #[test]
    fn gpt2_tokenizer_takes_long_texts(parts in prop::collection::vec(odd_text(), 1..200), word in 0usize..20_000) {
        let text = parts.concat() + &"x".repeat(word);
        let tok = gpt2();
        let ids = tok.encode(&text, false).unwrap();
        prop_assert_eq!(&tok.decode_batch(&[ids], false).unwrap()[0], &text);
    }
}

/// The fixture directories load as they are: the properties above start from valid input.
#[test]
fn fixtures_load_unchanged() {
    for name in ["gpt2", "bert", "roberta", "distilbert"] {
        let dir = model_dir(name);
        assert!(load_all(dir.path()).unwrap() >= 1, "{name}");
    }
}
