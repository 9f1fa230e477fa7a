//! Parity of the lexical metrics with the Python packages TRIL's metrics call, on the
//! fixture written by `tests/fixtures/make_lexical.py` (31 pairs: multi-reference,
//! punctuation, casing, contractions, newlines, an empty prediction).
//!
//! Tolerances: 1e-12 for ROUGE, BLEU and METEOR (same arithmetic), 1e-9 for CIDEr-D (sums
//! over hash maps in a different order), exact equality for stems and tokens.

use serde_json::Value;
use tril_metrics::bleu::{corpus_bleu, BleuConfig};
use tril_metrics::cider::{cider_d, tokenize as cider_tokenize, CiderConfig};
use tril_metrics::meteor::{meteor_scores, MeteorConfig};
use tril_metrics::nltk_tokenize::word_tokenize;
use tril_metrics::porter::stem;
use tril_metrics::rouge::{rouge_scores, RougeConfig, ROUGE_TYPES};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lexical.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pairs(f: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let pairs = f["pairs"].as_array().unwrap();
    let preds = pairs.iter().map(|p| p["prediction"].as_str().unwrap().to_string()).collect();
    let refs = pairs
        .iter()
        .map(|p| p["references"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .collect();
    (preds, refs)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{name}[{i}]: tril {g} vs python {w}");
    }
}

#[test]
fn porter_stems_match_nltk() {
    let f = fixture();
    let stems = f["stems"].as_object().unwrap();
    assert!(stems.len() > 150, "fixture has {} words", stems.len());
    for (word, want) in stems {
        assert_eq!(stem(word), want.as_str().unwrap(), "stem({word})");
    }
}

#[test]
fn word_tokens_match_nltk() {
    let f = fixture();
    for (text, want) in f["tokens"].as_object().unwrap() {
        let want: Vec<&str> = want.as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(word_tokenize(text), want, "word_tokenize({text:?})");
    }
}

#[test]
fn rouge_matches_rouge_score() {
    let f = fixture();
    let (preds, refs) = pairs(&f);
    for (single, key) in [(true, "rouge_single"), (false, "rouge_multi")] {
        let got = rouge_scores(&preds, &refs, &RougeConfig { use_single_ref: single, use_stemmer: true });
        for (k, name) in ROUGE_TYPES.iter().enumerate() {
            assert_close(&format!("{key}.{name}"), &got[k], &floats(&f[key][name]), 1e-12);
        }
    }
}

#[test]
fn bleu_matches_hf_nmt_bleu() {
    let f = fixture();
    let (preds, refs) = pairs(&f);
    let c = BleuConfig::default();
    let corpus = corpus_bleu(&preds, &refs, &c);
    assert!((corpus - f["bleu_corpus"].as_f64().unwrap()).abs() < 1e-12, "{corpus}");
    for (i, want) in f["bleu_per_sample"].as_array().unwrap().iter().enumerate() {
        let got = corpus_bleu(&preds[i..=i], &refs[i..=i], &c);
        // Python divides by zero on an empty prediction (TRIL logs "n/a"); tril gives 0.
        let want = want.as_f64().unwrap_or_else(|| {
            assert!(preds[i].trim().is_empty(), "python failed on a non-empty prediction {i}");
            0.0
        });
        assert!((got - want).abs() < 1e-12, "bleu[{i}]: {got} vs {want}");
    }
}

#[test]
fn meteor_matches_nltk_without_wordnet() {
    let f = fixture();
    let (preds, refs) = pairs(&f);
    let (per_sample, mean) = meteor_scores(&preds, &refs, &MeteorConfig::default());
    let want = floats(&f["meteor_per_sample"]);
    assert_close("meteor", &per_sample, &want, 1e-12);
    assert!((mean - want.iter().sum::<f64>() / want.len() as f64).abs() < 1e-12);
}

#[test]
fn cider_matches_pycocoevalcap_on_whitespace_tokens() {
    let f = fixture();
    let (preds, refs) = pairs(&f);
    let got = cider_d(&preds, &refs, &CiderConfig { tokenize: false, ..Default::default() }).unwrap();
    assert_close("cider", &got, &floats(&f["cider_whitespace"]["per_sample"]), 1e-9);
    let mean = got.iter().sum::<f64>() / got.len() as f64;
    assert!((mean - f["cider_whitespace"]["corpus"].as_f64().unwrap()).abs() < 1e-9);
}

/// The whole CIDEr-D metric (tril's tokenizer) against TRIL's path (spaCy tokens). Not an
/// identity: this measures the tokenizer gap and bounds it.
#[test]
fn cider_with_tril_tokenizer_is_close_to_spacy_tokenized_cider() {
    let f = fixture();
    let (preds, refs) = pairs(&f);
    let spacy = f["spacy_tokens"].as_object().unwrap();
    let differing: Vec<(&String, String)> = spacy
        .iter()
        .map(|(t, _)| (t, cider_tokenize(t)))
        // CIDEr splits on whitespace, so spaCy's whitespace tokens ("\n") do not count.
        .filter(|(t, mine)| mine.split_whitespace().ne(spacy[*t].as_str().unwrap().split_whitespace()))
        .collect();
    for (t, mine) in &differing {
        eprintln!("tokens differ: {t:?}\n  tril:  {mine}\n  spacy: {}", spacy[*t].as_str().unwrap());
    }
    let got = cider_d(&preds, &refs, &CiderConfig::default()).unwrap();
    let want = floats(&f["cider_spacy"]["per_sample"]);
    let max_diff = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    let mean = got.iter().sum::<f64>() / got.len() as f64;
    let want_mean = f["cider_spacy"]["corpus"].as_f64().unwrap();
    eprintln!(
        "{} of {} texts tokenized differently; corpus CIDEr-D tril {mean} vs spaCy {want_mean}; max per-sample |diff| {max_diff}",
        differing.len(),
        spacy.len()
    );
    // Measured on this fixture: the tokenizers agree on all 71 texts, so the scores agree
    // to rounding. Other text may still differ (see the `cider` module docs).
    assert!(differing.is_empty(), "tokenizer differs from spaCy on {} texts", differing.len());
    assert!((mean - want_mean).abs() < 1e-9 && max_diff < 1e-9, "corpus {mean} vs {want_mean}");
}
