//! Tokenizers: HF `tokenizer.json` with TRIL's padding/truncation options, batch encode/decode.
//!
//! [`TextTokenizer`] wraps a `tokenizers::Tokenizer` with the options of TRIL's tokenizer
//! config (`padding_side`, `truncation_side`, `max_length`, `pad_token_as_eos_token`) and
//! returns batches as flat row-major `Vec`s plus their shape ([`Encoded`]), ready for
//! [`Encoded::to_tensors`].

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, PostProcessor, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::error::{ModelError, Result};

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingSide {
    /// Pad before the text (prompts for causal generation).
    #[default]
    Left,
    /// Pad after the text.
    Right,
}

/// Which side is cut when a text is longer than `max_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TruncationSide {
    /// Drop the beginning (keep the end of a prompt).
    #[default]
    Left,
    /// Drop the end.
    Right,
}

/// Padding/truncation options (TRIL's `tokenizer` config keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerOptions {
    /// Side to pad on.
    #[serde(default)]
    pub padding_side: PaddingSide,
    /// Side to truncate on.
    #[serde(default)]
    pub truncation_side: TruncationSide,
    /// Truncate to this many tokens (special tokens included); `None`: no truncation.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Pad every batch to `max_length` instead of to its longest row (HF `padding="max_length"`).
    #[serde(default)]
    pub pad_to_max_length: bool,
    /// Use the EOS token as the pad token (GPT-2 has no pad token).
    #[serde(default)]
    pub pad_token_as_eos_token: bool,
    /// Add the post-processor's special tokens (`[CLS] ... [SEP]` for BERT).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
}

fn yes() -> bool {
    true
}

impl Default for TokenizerOptions {
    fn default() -> Self {
        Self {
            padding_side: PaddingSide::Left,
            truncation_side: TruncationSide::Left,
            max_length: None,
            pad_to_max_length: false,
            pad_token_as_eos_token: false,
            add_special_tokens: true,
        }
    }
}

/// A tokenized batch: row-major `[batch, seq_len]` ids and attention mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, `batch * seq_len`, row-major.
    pub ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding, same layout as `ids`.
    pub attention_mask: Vec<u32>,
    /// Number of rows.
    pub batch: usize,
    /// Length of every row.
    pub seq_len: usize,
}

impl Encoded {
    /// Row `i` of the ids.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Ids and mask as Int tensors on `device`.
    ///
    /// # Shapes
    /// - both `[batch, seq_len]`
    pub fn to_tensors<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let shape = [self.batch, self.seq_len];
        let ids: Vec<i64> = self.ids.iter().map(|&x| x as i64).collect();
        let mask: Vec<i64> = self.attention_mask.iter().map(|&x| x as i64).collect();
        (
            Tensor::from_data(TensorData::new(ids, shape), device),
            Tensor::from_data(TensorData::new(mask, shape), device),
        )
    }
}

/// Names tried, in order, when a tokenizer does not say which token is EOS / padding.
const EOS_NAMES: [&str; 4] = ["<|endoftext|>", "</s>", "<eos>", "[SEP]"];
const PAD_NAMES: [&str; 4] = ["<pad>", "[PAD]", "<|pad|>", "<|padding|>"];

/// A `tokenizer.json` tokenizer with TRIL's padding and truncation options.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    eos_token_id: Option<u32>,
    pad_token_id: Option<u32>,
    options: TokenizerOptions,
    chat_template: Option<crate::chat_template::ChatTemplate>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_token_id", &self.eos_token_id)
            .field("pad_token_id", &self.pad_token_id)
            .field("options", &self.options)
            .finish()
    }
}

impl TextTokenizer {
    /// Wrap a tokenizers `Tokenizer`; EOS and pad tokens are found by name (`<|endoftext|>`,
    /// `</s>`, ... / `<pad>`, `[PAD]`, ...) or from its padding settings.
    pub fn new(inner: Tokenizer) -> Self {
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let eos_token_id = find(&EOS_NAMES);
        let pad_token_id = inner.get_padding().map(|p| p.pad_id).or_else(|| find(&PAD_NAMES));
        Self { inner, eos_token_id, pad_token_id, options: TokenizerOptions::default(), chat_template: None }
    }

    /// Load a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| ModelError::tokenizer(path.display().to_string(), e))?;
        Ok(Self::new(inner))
    }

    /// Load `dir/tokenizer.json`; EOS/pad tokens named in `dir/tokenizer_config.json` (HF's
    /// `eos_token` / `pad_token`) take precedence over the name-based guess, and its chat
    /// template (or `dir/chat_template.jinja`) renders conversational rows
    /// ([`crate::chat_template`]).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut tok = Self::from_file(&dir.join(crate::hf::TOKENIZER_FILE))?;
        tok.chat_template = crate::chat_template::ChatTemplate::from_dir(dir)?;
        let cfg_path = dir.join("tokenizer_config.json");
        if cfg_path.is_file() {
            let cfg = crate::hf::read_json(&cfg_path)?;
            let token = |key: &str| {
                let v = cfg.get(key)?;
                v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str())).map(str::to_string)
            };
            if let Some(id) = token("eos_token").and_then(|t| tok.inner.token_to_id(&t)) {
                tok.eos_token_id = Some(id);
            }
            if let Some(id) = token("pad_token").and_then(|t| tok.inner.token_to_id(&t)) {
                tok.pad_token_id = Some(id);
            }
        }
        Ok(tok)
    }

    /// The exact GPT-2 tokenizer (see [`crate::gpt2_tokenizer::gpt2_tokenizer`]).
    pub fn gpt2() -> Result<Self> {
        Ok(Self::new(crate::gpt2_tokenizer::gpt2_tokenizer()?))
    }

    /// Set padding/truncation options.
    pub fn with_options(mut self, options: TokenizerOptions) -> Self {
        self.options = options;
        self
    }

    /// Set the EOS token by name.
    pub fn with_eos_token(mut self, token: &str) -> Result<Self> {
        self.eos_token_id = Some(self.id_of(token)?);
        Ok(self)
    }

    /// Set the pad token by name.
    pub fn with_pad_token(mut self, token: &str) -> Result<Self> {
        self.pad_token_id = Some(self.id_of(token)?);
        Ok(self)
    }

    fn id_of(&self, token: &str) -> Result<u32> {
        self.inner
            .token_to_id(token)
            .ok_or_else(|| ModelError::input("token", format!("`{token}` is not in the vocabulary")))
    }

    /// The options in use.
    pub fn options(&self) -> &TokenizerOptions {
        &self.options
    }

    /// The wrapped tokenizers `Tokenizer`.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens (1 + the largest id).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1)
    }

    /// Id of a token, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// EOS id, if known.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// Pad id used for batches: EOS with `pad_token_as_eos_token`, else the pad token.
    pub fn pad_token_id(&self) -> Option<u32> {
        if self.options.pad_token_as_eos_token {
            self.eos_token_id
        } else {
            self.pad_token_id
        }
    }

    /// Error unless every id of this tokenizer is a row of the model's embedding table.
    pub fn check_vocab(&self, model_vocab_size: usize, what: &str) -> Result<()> {
        let v = self.vocab_size();
        if v > model_vocab_size {
            return Err(ModelError::VocabMismatch {
                tokenizer_vocab: v,
                model_vocab: model_vocab_size,
                detail: what.to_string(),
            });
        }
        Ok(())
    }

    fn configured(&self) -> Result<Tokenizer> {
        let mut tok = self.inner.clone();
        let o = &self.options;
        // tokenizers subtracts the special tokens from max_length unchecked (a panic in debug
        // builds, no truncation at all in release ones).
        let special = tok.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if let Some(n) = o.max_length.filter(|&n| n < special) {
            return Err(ModelError::input(
                "tokenizer max_length",
                format!("{n} is less than the {special} special tokens the tokenizer adds to every text"),
            ));
        }
        let trunc = o.max_length.map(|max_length| TruncationParams {
            max_length,
            direction: match o.truncation_side {
                TruncationSide::Left => TruncationDirection::Left,
                TruncationSide::Right => TruncationDirection::Right,
            },
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        });
        tok.with_truncation(trunc).map_err(|e| ModelError::tokenizer("truncation", e))?;
        let pad_id = self.pad_token_id().ok_or_else(|| {
            ModelError::input("tokenizer", "no pad token: set pad_token_as_eos_token, or name one with with_pad_token")
        })?;
        let strategy = match (o.pad_to_max_length, o.max_length) {
            (true, Some(n)) => PaddingStrategy::Fixed(n),
            _ => PaddingStrategy::BatchLongest,
        };
        tok.with_padding(Some(PaddingParams {
            strategy,
            direction: match o.padding_side {
                PaddingSide::Left => PaddingDirection::Left,
                PaddingSide::Right => PaddingDirection::Right,
            },
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: self.inner.id_to_token(pad_id).unwrap_or_default(),
        }));
        Ok(tok)
    }

    /// Tokenize a batch with padding and truncation.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Encoded> {
        let tok = self.configured()?;
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = tok
            .encode_batch(inputs, self.options.add_special_tokens)
            .map_err(|e| ModelError::tokenizer("encode", e))?;
        let seq_len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut out = Encoded { ids: Vec::new(), attention_mask: Vec::new(), batch: encodings.len(), seq_len };
        for e in &encodings {
            out.ids.extend_from_slice(e.get_ids());
            out.attention_mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(out)
    }

    /// Tokenize one text without padding or truncation.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let e = self.inner.encode(text, add_special_tokens).map_err(|e| ModelError::tokenizer("encode", e))?;
        Ok(e.get_ids().to_vec())
    }

    /// Decode rows of ids; with `skip_special_tokens`, special tokens (EOS, pad) are dropped.
    pub fn decode_batch<R: AsRef<[u32]>>(&self, rows: &[R], skip_special_tokens: bool) -> Result<Vec<String>> {
        let rows: Vec<&[u32]> = rows.iter().map(AsRef::as_ref).collect();
        self.inner.decode_batch(&rows, skip_special_tokens).map_err(|e| ModelError::tokenizer("decode", e))
    }

    /// Write the tokenizer as `tokenizer.json` (without the batch padding/truncation options),
    /// and its chat template as `chat_template.jinja` beside it (what transformers 5 reads).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, true).map_err(|e| ModelError::tokenizer(path.display().to_string(), e))?;
        if let (Some(t), Some(dir)) = (&self.chat_template, path.parent()) {
            let file = dir.join("chat_template.jinja");
            std::fs::write(&file, t.source()).map_err(|e| ModelError::io(&file, e))?;
        }
        Ok(())
    }

    /// The chat template of `tokenizer_config.json` / `chat_template.jinja`, if the tokenizer
    /// directory has one.
    pub fn chat_template(&self) -> Option<&crate::chat_template::ChatTemplate> {
        self.chat_template.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    #[test]
    fn left_and_right_padding_and_truncation() {
        let tok = TextTokenizer::from_dir(&fixture("gpt2")).unwrap();
        assert_eq!(tok.eos_token_id(), tok.token_to_id("<|endoftext|>"));
        let tok = tok.with_options(TokenizerOptions { pad_token_as_eos_token: true, ..Default::default() });
        let eos = tok.eos_token_id().unwrap();
        let enc = tok.encode_batch(&["the movie was great", "boring"]).unwrap();
        let short = tok.encode("boring", false).unwrap();
        assert_eq!(enc.batch, 2);
        assert_eq!(&enc.row(1)[enc.seq_len - short.len()..], short.as_slice());
        assert!(enc.row(1)[..enc.seq_len - short.len()].iter().all(|&x| x == eos));
        assert_eq!(enc.attention_mask[enc.seq_len..].iter().sum::<u32>() as usize, short.len());

        let full = tok.encode("the movie was great", false).unwrap();
        let opts = TokenizerOptions {
            padding_side: PaddingSide::Right,
            truncation_side: TruncationSide::Left,
            max_length: Some(2),
            pad_to_max_length: true,
            pad_token_as_eos_token: true,
            add_special_tokens: true,
        };
        let enc = tok.clone().with_options(opts.clone()).encode_batch(&["the movie was great"]).unwrap();
        assert_eq!(enc.ids, full[full.len() - 2..].to_vec());
        let opts = TokenizerOptions { truncation_side: TruncationSide::Right, max_length: Some(8), ..opts };
        let enc = tok.with_options(opts).encode_batch(&["the movie was great"]).unwrap();
        assert_eq!(enc.seq_len, 8);
        assert_eq!(&enc.ids[..2], &full[..2]);
    }

    #[test]
    fn no_pad_token_is_an_error() {
        let tok = TextTokenizer::from_file(&fixture("gpt2/tokenizer.json")).unwrap();
        let err = tok.encode_batch(&["a", "bb"]).unwrap_err().to_string();
        assert!(err.contains("no pad token"), "{err}");
    }

    #[test]
    fn decode_skips_special_tokens() {
        let tok = TextTokenizer::from_dir(&fixture("gpt2")).unwrap();
        let eos = tok.eos_token_id().unwrap();
        let mut ids = tok.encode("the movie", false).unwrap();
        ids.push(eos);
        let out = tok.decode_batch(&[ids.clone()], true).unwrap();
        assert_eq!(out, vec!["the movie".to_string()]);
        assert!(tok.decode_batch(&[ids], false).unwrap()[0].ends_with("<|endoftext|>"));
    }

    #[test]
    fn options_deserialize_with_tril_names() {
        let o: TokenizerOptions = serde_json::from_str(
            r#"{"padding_side":"left","truncation_side":"right","max_length":64,"pad_token_as_eos_token":true}"#,
        )
        .unwrap();
        assert_eq!((o.truncation_side, o.max_length, o.add_special_tokens), (TruncationSide::Right, Some(64), true));
        assert!(serde_json::from_str::<TokenizerOptions>(r#"{"padding":"left"}"#).is_err());
    }

    /// Found by tests/fuzz.rs: a max_length below the 2 special tokens RoBERTa adds panicked
    /// in tokenizers ("attempt to subtract with overflow").
    #[test]
    fn max_length_below_the_special_tokens_is_an_error() {
        let tok = TextTokenizer::from_dir(&fixture("roberta")).unwrap();
        let opts = TokenizerOptions { max_length: Some(1), ..TokenizerOptions::default() };
        let err = tok.clone().with_options(opts).encode_batch(&["a b c"]).unwrap_err().to_string();
        assert!(err.contains("1 is less than the 2 special tokens"), "{err}");
        let opts = TokenizerOptions { max_length: Some(2), ..TokenizerOptions::default() };
        assert_eq!(tok.with_options(opts).encode_batch(&["a b c"]).unwrap().seq_len, 2);
    }
}
