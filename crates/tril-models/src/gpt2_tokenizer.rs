//! The exact GPT-2 tokenizer, built offline from the `r50k_base` ranks that `tiktoken-rs` embeds.
//!
//! GPT-2's `encoder.json` is the byte-level (`bytes_to_unicode`) spelling of the r50k_base
//! tokens, with the same ids, and `vocab.bpe` lists merge `i` as the pair that forms token
//! `256 + i`. The pair is recovered by running byte-pair encoding on the token's bytes with
//! only the ranks below its own (HF's `TikTokenConverter` does the same); a test checks the
//! result against tiktoken-rs's shipped `encoder.json` / `vocab.bpe` when they are on disk.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

use crate::error::{ModelError, Result};

/// GPT-2's `<|endoftext|>` id.
pub const GPT2_EOS_ID: u32 = 50256;
const N_RANKS: u32 = 50256;

/// GPT-2's reversible byte -> printable char map (`bytes_to_unicode` in `encoder.py`).
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        map[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    map
}

/// Split `token` into the parts BPE reaches using only ranks below `max_rank`.
fn bpe_parts(token: &[u8], ranks: &HashMap<Vec<u8>, u32>, max_rank: u32) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = token.iter().map(|&b| vec![b]).collect();
    loop {
        let best = (0..parts.len().saturating_sub(1))
            .filter_map(|i| {
                let joined = [parts[i].as_slice(), parts[i + 1].as_slice()].concat();
                ranks.get(&joined).filter(|&&r| r < max_rank).map(|&r| (r, i))
            })
            .min();
        let Some((_, i)) = best else { return parts };
        let right = parts.remove(i + 1);
        parts[i].extend(right);
    }
}

/// Vocabulary (byte-level strings -> id, special token excluded) and merges, in rank order.
pub fn gpt2_vocab_and_merges() -> (Vec<String>, Vec<(String, String)>) {
    let bpe = tiktoken_rs::r50k_base_singleton();
    let byte_char = bytes_to_unicode();
    let spell = |bytes: &[u8]| bytes.iter().map(|&b| byte_char[b as usize]).collect::<String>();
    let tokens: Vec<Vec<u8>> = (0..N_RANKS).map(|id| bpe.decode_bytes(&[id]).unwrap_or_default()).collect();
    let ranks: HashMap<Vec<u8>, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let vocab = tokens.iter().map(|t| spell(t)).collect();
    let merges = (256..N_RANKS)
        .map(|r| {
            let parts = bpe_parts(&tokens[r as usize], &ranks, r);
            match parts.as_slice() {
                [a, b] => (spell(a), spell(b)),
                _ => (spell(&tokens[r as usize]), String::new()),
            }
        })
        .collect();
    (vocab, merges)
}

/// The GPT-2 `tokenizer.json` (byte-level BPE, `<|endoftext|>` = 50256 special), as HF ships it.
pub fn gpt2_tokenizer_json() -> Value {
    let (vocab, merges) = gpt2_vocab_and_merges();
    let mut v = Map::new();
    for (id, tok) in vocab.into_iter().enumerate() {
        v.insert(tok, json!(id));
    }
    v.insert("<|endoftext|>".into(), json!(GPT2_EOS_ID));
    let merges: Vec<Value> = merges.into_iter().map(|(a, b)| json!([a, b])).collect();
    let byte_level = |add_prefix_space: bool, trim_offsets: bool| json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets, "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": GPT2_EOS_ID, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": true, "special": true}],
        "normalizer": null,
        "pre_tokenizer": byte_level(false, true),
        "post_processor": byte_level(true, false),
        "decoder": byte_level(true, true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": Value::Object(v), "merges": merges},
    })
}

/// The exact GPT-2 tokenizer (`gpt2` on the hub), built in memory without network or files.
/// Built once per process (about 0.5 s), then cloned.
pub fn gpt2_tokenizer() -> Result<Tokenizer> {
    static CACHE: OnceLock<std::result::Result<Tokenizer, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let text = gpt2_tokenizer_json().to_string();
            Tokenizer::from_bytes(text.as_bytes()).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| ModelError::tokenizer("building the GPT-2 tokenizer", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "Hello world, this is GPT-2!  Ünïcödé — 日本語 text\n\twith   spaces<|endoftext|> and 12345 numbers.";

    #[test]
    fn ids_equal_tiktoken_r50k_base() {
        let tok = gpt2_tokenizer().unwrap();
        let ours = tok.encode(TEXT, false).unwrap().get_ids().to_vec();
        let theirs: Vec<u32> = tiktoken_rs::r50k_base_singleton().encode_with_special_tokens(TEXT);
        assert_eq!(ours, theirs);
        let hello = tok.encode("Hello world, this is GPT-2!", false).unwrap().get_ids().to_vec();
        assert_eq!(hello, vec![15496, 995, 11, 428, 318, 402, 11571, 12, 17, 0]);
        assert_eq!(tok.decode(&ours, false).unwrap(), TEXT);
    }

    /// Compare with the `encoder.json` / `vocab.bpe` files shipped in the tiktoken-rs crate
    /// sources, when cargo's registry is on this machine.
    #[test]
    fn merges_equal_shipped_vocab_bpe() {
        let home = std::env::var("CARGO_HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
        let Ok(entries) = std::fs::read_dir(home.join("registry/src")) else {
            eprintln!("skipped: no cargo registry sources");
            return;
        };
        let assets = entries.flatten().map(|e| e.path().join("tiktoken-rs-0.12.1/assets")).find(|p| p.is_dir());
        let Some(assets) = assets else {
            eprintln!("skipped: tiktoken-rs-0.12.1 sources not found");
            return;
        };
        let (vocab, merges) = gpt2_vocab_and_merges();
        let bpe = std::fs::read_to_string(assets.join("vocab.bpe")).unwrap();
        let shipped: Vec<(String, String)> = bpe
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (a, b) = l.split_once(' ').unwrap();
                (a.to_string(), b.to_string())
            })
            .collect();
        assert_eq!(shipped.len(), merges.len());
        let bad = shipped.iter().zip(&merges).filter(|(a, b)| a != b).count();
        assert_eq!(bad, 0, "merges differing from vocab.bpe");
        let enc: HashMap<String, u32> =
            serde_json::from_str(&std::fs::read_to_string(assets.join("encoder.json")).unwrap()).unwrap();
        for (id, tok) in vocab.iter().enumerate() {
            assert_eq!(enc.get(tok), Some(&(id as u32)), "token {id}");
        }
    }
}
