//! A sequence classifier of any supported family, loaded from an HF-layout directory:
//! BERT / DistilBERT (`lvwerra/distilbert-imdb`) or a causal LM of any family tril loads
//! (`GPT2ForSequenceClassification`, `LlamaForSequenceClassification`, ...).
//!
//! Two readings of its logits `l` per text: label probabilities
//! ([`TextClassifier::probs`], `softmax(l)`) and a scalar reward ([`TextClassifier::rewards`]):
//!
//! ```tex
//! r = l_1 - l_0 \quad (\text{2 labels, tril's pairwise reward models}), \qquad
//! r = l_0 \quad (\text{1 label, TRL's num\_labels=1 reward models})
//! ```

use crate::error::RewardError;
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Tensor};
use std::path::{Path, PathBuf};
use tril_models::bert::EncoderClassifier;
use tril_models::heads::LmClassifier;
use tril_models::tokenizer::{PaddingSide, TextTokenizer, TokenizerOptions, TruncationSide};

/// The classifier families tril loads.
#[derive(Debug)]
pub enum Classifier<B: Backend> {
    /// BERT or DistilBERT with a classification head.
    Encoder(Box<EncoderClassifier<B>>),
    /// A causal LM scored at the last non-pad token.
    CausalLm(Box<LmClassifier<B>>),
}

/// A classifier with its tokenizer, scoring texts in batches.
#[derive(Debug)]
pub struct TextClassifier<B: Backend> {
    model: Classifier<B>,
    num_labels: usize,
    tokenizer: TextTokenizer,
    device: B::Device,
    dir: PathBuf,
}

/// `(model_type, num_labels)` from `config.json`.
fn read_config(dir: &Path) -> Result<(String, usize), RewardError> {
    let file = dir.join("config.json");
    let text = std::fs::read_to_string(&file).map_err(|e| tril_models::ModelError::io(&file, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| tril_models::ModelError::input(file.display().to_string(), format!("invalid JSON: {e}")))?;
    let kind = json.get("model_type").and_then(|v| v.as_str()).unwrap_or("").to_string();
    Ok((kind, tril_models::hf::encoder::num_labels(&json, &file)?))
}

impl<B: Backend> TextClassifier<B> {
    /// Loads the model and `tokenizer.json` in `dir`; texts are truncated from the left
    /// (TRIL) to the model's maximum length and right-padded.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, RewardError> {
        let (kind, num_labels) = read_config(dir)?;
        let causal = tril_models::hf::causal::SUPPORTED_MODEL_TYPES.contains(&kind.as_str());
        let (model, max_len) = match causal {
            true => {
                let loaded = tril_models::hf::load_lm_classifier::<B>(dir, device)?;
                (Classifier::CausalLm(Box::new(loaded.model)), loaded.config.max_positions())
            }
            false => {
                let loaded = tril_models::hf::load_encoder_classifier::<B>(dir, device)?;
                (Classifier::Encoder(Box::new(loaded.model)), loaded.config.max_position_embeddings)
            }
        };
        let options = TokenizerOptions {
            padding_side: PaddingSide::Right,
            truncation_side: TruncationSide::Left,
            max_length: Some(max_len),
            pad_token_as_eos_token: causal,
            ..TokenizerOptions::default()
        };
        let tokenizer = TextTokenizer::from_dir(dir)?.with_options(options);
        Ok(TextClassifier { model, num_labels, tokenizer, device: device.clone(), dir: dir.to_path_buf() })
    }

    /// `read(logits)` of each text as host rows, `batch_size` texts per forward pass.
    fn rows(
        &self,
        texts: &[String],
        batch_size: usize,
        read: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Result<Vec<Vec<f32>>, RewardError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch_size.max(1)) {
            let encoded = self.tokenizer.encode_batch(chunk)?;
            let (ids, mask) = encoded.to_tensors::<B>(&self.device); // [b, T]
            let logits: Tensor<B, 2> = match &self.model {
                Classifier::Encoder(m) => m.forward(ids, Some(mask)),
                Classifier::CausalLm(m) => m.forward(ids, Some(mask)),
            }; // [b, labels]
            let values = read(logits); // [b, k]
            let [b, k] = values.dims();
            let flat = values
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| tril_models::ModelError::input("classifier output", format!("{e:?}")))?;
            out.extend((0..b).map(|i| flat[i * k..(i + 1) * k].to_vec()));
        }
        Ok(out)
    }

    /// Label probabilities of each text, `batch_size` texts per forward pass.
    pub fn probs(&self, texts: &[String], batch_size: usize) -> Result<Vec<Vec<f32>>, RewardError> {
        self.rows(texts, batch_size, |logits| activation::softmax(logits, 1))
    }

    /// Raw label logits of each text, `batch_size` texts per forward pass.
    pub fn logits(&self, texts: &[String], batch_size: usize) -> Result<Vec<Vec<f32>>, RewardError> {
        self.rows(texts, batch_size, |logits| logits)
    }

    /// The scalar reward of each text, `batch_size` texts per forward pass: `l_1 - l_0`
    /// for a 2-label model, the one logit `l_0` of a 1-label model (TRL's `num_labels=1`).
    /// Computed in f32 on the host from the logits (exactly the subtraction
    /// `reward_model`'s `pairwise_rewards` does on the device).
    ///
    /// # Errors
    /// [`RewardError::Labels`], naming the model directory, for any other label count
    /// (checked before any forward pass; see [`TextClassifier::check_scalar`]).
    pub fn rewards(&self, texts: &[String], batch_size: usize) -> Result<Vec<f32>, RewardError> {
        self.check_scalar()?;
        let logits = self.logits(texts, batch_size)?;
        Ok(logits.iter().map(|l| if self.num_labels == 2 { l[1] - l[0] } else { l[0] }).collect())
    }

    /// Whether [`TextClassifier::rewards`] can read this model: 1 or 2 labels, else
    /// [`RewardError::Labels`] naming the model directory.
    pub fn check_scalar(&self) -> Result<(), RewardError> {
        match self.num_labels {
            1 | 2 => Ok(()),
            labels => Err(RewardError::Labels { dir: self.dir.clone(), labels }),
        }
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of labels the model predicts.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }
}
