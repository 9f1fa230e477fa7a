//! BERT / RoBERTa / DistilBERT encoders, bare ([`Encoder`], HF `AutoModel`) or with a
//! sequence-classification head ([`EncoderClassifier`], HF `*ForSequenceClassification`).
//!
//! All are post-LayerNorm transformer encoders with the same layer; they differ in the
//! embeddings (BERT and RoBERTa add token-type embeddings; RoBERTa's positions start at
//! `padding_idx + 1`) and the head (BERT: `tanh(pooler(h_cls))`, RoBERTa:
//! `tanh(classifier.dense(h_cls))`, DistilBERT: `relu(pre_classifier(h_cls))`), followed by
//! `classifier` (RoBERTa: `classifier.out_proj`). [`EncoderKind`] picks the family.
//! Positions are `offset..offset + T` (encoders are right-padded; see
//! [`EncoderConfig::position_offset`]), padded keys get an additive
//! [`crate::gpt2::MASK_BIAS`]. No dropout (inference).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::gpt2::{attention_bias, linear3, Activation};

/// Which encoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncoderKind {
    /// BERT: token-type embeddings, tanh pooler.
    Bert,
    /// DistilBERT: no token types, ReLU `pre_classifier`.
    DistilBert,
    /// RoBERTa: BERT layers, positions offset by `padding_idx + 1`, `classifier.dense` head.
    Roberta,
}

/// Encoder classifier hyper-parameters (BERT names; the DistilBERT config keys `dim`,
/// `n_layers`, `n_heads`, `hidden_dim` map onto them).
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// BERT or DistilBERT.
    pub kind: EncoderKind,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_layers: usize,
    /// Number of attention heads.
    pub num_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Rows of the position table.
    pub max_position_embeddings: usize,
    /// Number of labels of the classifier.
    pub num_labels: usize,
    /// Token-type vocabulary (BERT; 0 for DistilBERT).
    #[config(default = 2)]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Feed-forward activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// Label names by id (`id2label`), may be empty.
    #[config(default = "Vec::new()")]
    pub labels: Vec<String>,
    /// First position id: 0 for BERT/DistilBERT, `pad_token_id + 1` (2) for RoBERTa, whose
    /// `create_position_ids_from_input_ids` numbers the non-pad tokens `padding_idx + 1..`.
    #[config(default = 0)]
    pub position_offset: usize,
}

impl EncoderConfig {
    /// `distilbert-base-uncased` with 2 labels (the shape of `lvwerra/distilbert-imdb`).
    pub fn distilbert_base() -> Self {
        Self::new(EncoderKind::DistilBert, 30522, 768, 6, 12, 3072, 512, 2).with_type_vocab_size(0)
    }

    /// `bert-base-uncased` with 2 labels.
    pub fn bert_base() -> Self {
        Self::new(EncoderKind::Bert, 30522, 768, 12, 12, 3072, 512, 2)
    }

    /// `roberta-large` (BERTScore's English model): 24 layers of width 1024, eps 1e-5.
    pub fn roberta_large() -> Self {
        Self::new(EncoderKind::Roberta, 50265, 1024, 24, 16, 4096, 514, 2)
            .with_type_vocab_size(1)
            .with_layer_norm_eps(1e-5)
            .with_position_offset(2)
    }

    /// Build a randomly initialised (lazily) classifier.
    pub fn init<B: Backend>(&self, device: &B::Device) -> EncoderClassifier<B> {
        let d = self.hidden_size;
        let Encoder { embeddings, layers, position_offset, .. } = self.init_encoder(device);
        EncoderClassifier {
            embeddings,
            layers,
            pooler: LinearConfig::new(d, d).init(device),
            classifier: LinearConfig::new(d, self.num_labels).init(device),
            kind: self.kind,
            position_offset,
        }
    }

    /// Build a randomly initialised (lazily) bare encoder (no pooler, no head).
    pub fn init_encoder<B: Backend>(&self, device: &B::Device) -> Encoder<B> {
        let (d, f) = (self.hidden_size, self.intermediate_size);
        let ln = || LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let layer = |_| EncoderLayer {
            query: LinearConfig::new(d, d).init(device),
            key: LinearConfig::new(d, d).init(device),
            value: LinearConfig::new(d, d).init(device),
            attn_out: LinearConfig::new(d, d).init(device),
            attn_norm: ln(),
            ffn_in: LinearConfig::new(d, f).init(device),
            ffn_out: LinearConfig::new(f, d).init(device),
            ffn_norm: ln(),
            n_head: self.num_heads,
            activation: self.activation,
        };
        let token_type = (self.kind != EncoderKind::DistilBert && self.type_vocab_size > 0)
            .then(|| EmbeddingConfig::new(self.type_vocab_size, d).init(device));
        Encoder {
            embeddings: EncoderEmbeddings {
                word: EmbeddingConfig::new(self.vocab_size, d).init(device),
                position: EmbeddingConfig::new(self.max_position_embeddings, d).init(device),
                token_type,
                layer_norm: ln(),
            },
            layers: (0..self.num_layers).map(layer).collect(),
            kind: self.kind,
            position_offset: self.position_offset,
        }
    }

    /// Longest input (special tokens included) the position table allows.
    pub fn max_input_len(&self) -> usize {
        self.max_position_embeddings.saturating_sub(self.position_offset)
    }
}

/// Word + position (+ token type) embeddings, then LayerNorm.
#[derive(Module, Debug)]
pub struct EncoderEmbeddings<B: Backend> {
    /// `[V, D]`.
    pub word: Embedding<B>,
    /// `[P, D]`.
    pub position: Embedding<B>,
    /// `[type_vocab, D]` (BERT only).
    pub token_type: Option<Embedding<B>>,
    /// LayerNorm after the sum.
    pub layer_norm: LayerNorm<B>,
}

/// One post-LayerNorm encoder layer (BERT `BertLayer` / DistilBERT `TransformerBlock`).
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    /// Attention output projection.
    pub attn_out: Linear<B>,
    /// LayerNorm after attention + residual.
    pub attn_norm: LayerNorm<B>,
    /// Feed-forward in.
    pub ffn_in: Linear<B>,
    /// Feed-forward out.
    pub ffn_out: Linear<B>,
    /// LayerNorm after feed-forward + residual.
    pub ffn_norm: LayerNorm<B>,
    /// Number of heads.
    pub n_head: usize,
    /// Feed-forward activation.
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> EncoderLayer<B> {
    /// # Shapes
    /// - x: `[B, T, D]`, bias: `[B, 1, 1, T]` additive -> `[B, T, D]`
    pub fn forward(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let hd = d / self.n_head;
        let heads = |l: &Linear<B>| linear3(l, x.clone()).reshape([b, t, self.n_head, hd]).swap_dims(1, 2);
        let (q, k, v) = (heads(&self.query), heads(&self.key), heads(&self.value)); // [B, H, T, hd]
        let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt(); // [B, H, T, T]
        let scores = match bias {
            Some(bias) => scores + bias,
            None => scores,
        };
        let ctx = activation::softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        let x = self.attn_norm.forward(x + linear3(&self.attn_out, ctx));
        let f = linear3(&self.ffn_out, self.activation.apply(linear3(&self.ffn_in, x.clone())));
        self.ffn_norm.forward(x + f)
    }
}

/// Embeddings then `layers` (the last hidden state of the layers given).
///
/// # Shapes
/// - input_ids, attention_mask, token_type_ids: `[B, T]` -> `[B, T, D]`
fn run_encoder<B: Backend>(
    e: &EncoderEmbeddings<B>,
    layers: &[EncoderLayer<B>],
    position_offset: usize,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Option<Tensor<B, 2, Int>>,
    token_type_ids: Option<Tensor<B, 2, Int>>,
) -> Tensor<B, 3> {
    let device = input_ids.device();
    let [b, t] = input_ids.dims();
    let (start, end) = (position_offset as i64, (position_offset + t) as i64);
    let positions = Tensor::<B, 1, Int>::arange(start..end, &device).reshape([1, t]).repeat_dim(0, b); // [B, T]
    let mut x = e.word.forward(input_ids) + e.position.forward(positions); // [B, T, D]
    if let Some(tt) = &e.token_type {
        let types = token_type_ids.unwrap_or_else(|| Tensor::zeros([b, t], &device));
        x = x + tt.forward(types);
    }
    let mut x = e.layer_norm.forward(x);
    let bias = attention_mask.and_then(|m| attention_bias(Some(m), 1, t - 1, &device)); // [B, 1, 1, T]
    for layer in layers {
        x = layer.forward(x, bias.clone());
    }
    x
}

/// A bare encoder (HF `BertModel` / `RobertaModel` / `DistilBertModel` without the pooler),
/// whose output is the last hidden state of its layers. [`Encoder::truncate`] keeps the first
/// layers only, as bert_score does (`model.encoder.layer[:num_layers]`).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Embeddings.
    pub embeddings: EncoderEmbeddings<B>,
    /// Encoder layers.
    pub layers: Vec<EncoderLayer<B>>,
    /// BERT, RoBERTa or DistilBERT.
    #[module(skip)]
    pub kind: EncoderKind,
    /// First position id (see [`EncoderConfig::position_offset`]).
    #[module(skip)]
    pub position_offset: usize,
}

impl<B: Backend> Encoder<B> {
    /// Keep the first `num_layers` layers (all of them when there are fewer).
    pub fn truncate(mut self, num_layers: usize) -> Self {
        self.layers.truncate(num_layers);
        self
    }

    /// Hidden state after the last kept layer (after the embeddings if none is kept).
    ///
    /// # Shapes
    /// - input_ids, attention_mask, token_type_ids: `[B, T]` -> `[B, T, D]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 3> {
        run_encoder(&self.embeddings, &self.layers, self.position_offset, input_ids, attention_mask, token_type_ids)
    }
}

/// BERT / RoBERTa / DistilBERT sequence classifier.
#[derive(Module, Debug)]
pub struct EncoderClassifier<B: Backend> {
    /// Embeddings.
    pub embeddings: EncoderEmbeddings<B>,
    /// Encoder layers.
    pub layers: Vec<EncoderLayer<B>>,
    /// BERT `pooler.dense` (tanh) / DistilBERT `pre_classifier` (ReLU), applied to `[CLS]`.
    pub pooler: Linear<B>,
    /// Projection to the labels.
    pub classifier: Linear<B>,
    /// BERT, RoBERTa or DistilBERT.
    #[module(skip)]
    pub kind: EncoderKind,
    /// First position id (see [`EncoderConfig::position_offset`]).
    #[module(skip)]
    pub position_offset: usize,
}

/// BERT classifier (alias of [`EncoderClassifier`] built with [`EncoderKind::Bert`]).
pub type BertClassifier<B> = EncoderClassifier<B>;
/// DistilBERT classifier (alias of [`EncoderClassifier`] built with [`EncoderKind::DistilBert`]).
pub type DistilBertClassifier<B> = EncoderClassifier<B>;

impl<B: Backend> EncoderClassifier<B> {
    /// Last hidden state of the encoder.
    ///
    /// # Shapes
    /// - input_ids, attention_mask, token_type_ids: `[B, T]` -> `[B, T, D]`
    pub fn encode(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 3> {
        run_encoder(&self.embeddings, &self.layers, self.position_offset, input_ids, attention_mask, token_type_ids)
    }

    /// Label logits from the `[CLS]` (first) position.
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> logits `[B, num_labels]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 2> {
        let h = self.encode(input_ids, attention_mask, None);
        let [b, _, d] = h.dims();
        let cls = h.narrow(1, 0, 1).reshape([b, d]);
        let pooled = match self.kind {
            EncoderKind::Bert | EncoderKind::Roberta => self.pooler.forward(cls).tanh(),
            EncoderKind::DistilBert => activation::relu(self.pooler.forward(cls)),
        };
        self.classifier.forward(pooled)
    }

    /// Label probabilities (softmax of [`Self::forward`]).
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> `[B, num_labels]`
    pub fn probs(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 2> {
        activation::softmax(self.forward(input_ids, attention_mask), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tril_core::backend::CpuBackend;

    #[test]
    fn padding_does_not_change_real_rows() {
        let dev = Default::default();
        for kind in [EncoderKind::Bert, EncoderKind::DistilBert, EncoderKind::Roberta] {
            let offset = if kind == EncoderKind::Roberta { 2 } else { 0 };
            let m =
                EncoderConfig::new(kind, 50, 16, 2, 4, 32, 16, 3).with_position_offset(offset).init::<CpuBackend>(&dev);
            let ids = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![2i64, 7, 9], [1, 3]), &dev);
            let padded = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![2i64, 7, 9, 0, 0], [1, 5]), &dev);
            let mask = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![1i64, 1, 1, 0, 0], [1, 5]), &dev);
            let a = m.forward(ids, None);
            let b = m.forward(padded, Some(mask));
            assert_eq!(a.dims(), [1, 3]);
            let diff = (a - b).abs().max().into_scalar();
            // 1e-4: padded and unpadded batches have other shapes, which flex sums in another order.
            assert!(diff < 1e-4, "{kind:?}: {diff}");
        }
    }
}
