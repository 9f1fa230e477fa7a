//! A sequence classifier of any supported family, loaded from an HF-layout directory:
//! BERT / DistilBERT (`lvwerra/distilbert-imdb`) or a causal LM of any family tril loads
//! (`GPT2ForSequenceClassification`, `LlamaForSequenceClassification`, ...).

use crate::error::RewardError;
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Tensor};
use std::path::Path;
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
        Ok(TextClassifier { model, num_labels, tokenizer, device: device.clone() })
    }

    /// Label probabilities of each text, `batch_size` texts per forward pass.
    pub fn probs(&self, texts: &[String], batch_size: usize) -> Result<Vec<Vec<f32>>, RewardError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch_size.max(1)) {
            let encoded = self.tokenizer.encode_batch(chunk)?;
            let (ids, mask) = encoded.to_tensors::<B>(&self.device); // [b, T]
            let logits: Tensor<B, 2> = match &self.model {
                Classifier::Encoder(m) => m.forward(ids, Some(mask)),
                Classifier::CausalLm(m) => m.forward(ids, Some(mask)),
            }; // [b, labels]
            let [b, labels] = logits.dims();
            let probs = activation::softmax(logits, 1).into_data().convert::<f32>();
            let flat = probs
                .to_vec::<f32>()
                .map_err(|e| tril_models::ModelError::input("classifier output", format!("{e:?}")))?;
            out.extend((0..b).map(|i| flat[i * labels..(i + 1) * labels].to_vec()));
        }
        Ok(out)
    }

    /// Number of labels the model predicts.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }
}
