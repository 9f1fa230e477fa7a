//! Heads on top of a transformer trunk: value heads (critics) and sequence classification.
//!
//! - [`ValueHead`]: one scalar per token from the last hidden state. TRIL's `mlp_head`:
//!   `false` is `Linear(d, 1)`, `true` is `Linear(d, 2d) -> ReLU -> Linear(2d, 1)`.
//! - [`ValueModel`]: a separate critic (own trunk + value head), TRIL's `LMCritic`.
//! - [`LmWithValueHead`]: a shared trunk giving LM logits and values in one pass.
//! - [`ScoreHead`] / [`LmClassifier`]: HF `*ForSequenceClassification` of a causal LM
//!   (bias-free `score` linear, read at the last real token).
//!
//! Every trunk is a [`CausalLm`], so the heads work on any architecture.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Int, Tensor};

use crate::causal_lm::CausalLm;
use crate::lm::{linear3, LmInput};

/// Configuration of a [`ValueHead`].
#[derive(Config, Debug)]
pub struct ValueHeadConfig {
    /// Width of the hidden state it reads.
    pub d_model: usize,
    /// `Linear(d, 2d) -> ReLU -> Linear(2d, 1)` instead of `Linear(d, 1)` (TRIL's `mlp_head`).
    #[config(default = false)]
    pub mlp: bool,
}

impl ValueHeadConfig {
    /// Build the head (PyTorch-default uniform initialisation).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ValueHead<B> {
        if self.mlp {
            ValueHead {
                hidden: Some(LinearConfig::new(self.d_model, 2 * self.d_model).init(device)),
                out: LinearConfig::new(2 * self.d_model, 1).init(device),
            }
        } else {
            ValueHead { hidden: None, out: LinearConfig::new(self.d_model, 1).init(device) }
        }
    }
}

/// Scalar value per position.
#[derive(Module, Debug)]
pub struct ValueHead<B: Backend> {
    /// First layer of the MLP head (`None` for the linear head).
    pub hidden: Option<Linear<B>>,
    /// Output layer to one value.
    pub out: Linear<B>,
}

impl<B: Backend> ValueHead<B> {
    /// # Shapes
    /// - hidden: `[B, T, D]` -> values `[B, T]`
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let x = match &self.hidden {
            Some(l) => activation::relu(linear3(l, hidden)),
            None => hidden,
        };
        let v = linear3(&self.out, x); // [B, T, 1]
        let [b, t, _] = v.dims();
        v.reshape([b, t])
    }
}

/// A separate critic: its own trunk and a value head (TRIL's `LMCritic`).
#[derive(Module, Debug)]
pub struct ValueModel<B: Backend> {
    /// The trunk (its LM head is never used).
    pub transformer: CausalLm<B>,
    /// The value head.
    pub v_head: ValueHead<B>,
}

impl<B: Backend> ValueModel<B> {
    /// Values of every position.
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> values `[B, T]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 2> {
        let mut input = LmInput::new(input_ids);
        input.attention_mask = attention_mask;
        self.v_head.forward(self.transformer.trunk(input, None).last_hidden_state)
    }
}

/// Output of [`LmWithValueHead::forward`].
#[derive(Debug, Clone)]
pub struct ActorCriticOutput<B: Backend> {
    /// LM logits `[B, T, V]`.
    pub logits: Tensor<B, 3>,
    /// Values `[B, T]`.
    pub values: Tensor<B, 2>,
}

/// An LM and a value head sharing one trunk.
#[derive(Module, Debug)]
pub struct LmWithValueHead<B: Backend> {
    /// The LM (trunk + tied head).
    pub lm: CausalLm<B>,
    /// The value head, reading the trunk's last hidden state.
    pub v_head: ValueHead<B>,
}

impl<B: Backend> LmWithValueHead<B> {
    /// Logits and values in one pass.
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> logits `[B, T, V]`, values `[B, T]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> ActorCriticOutput<B> {
        let out = self.lm.forward(input_ids, attention_mask);
        ActorCriticOutput { values: self.v_head.forward(out.last_hidden_state), logits: out.logits }
    }
}

/// Configuration of a [`ScoreHead`].
#[derive(Config, Debug)]
pub struct ScoreHeadConfig {
    /// Width of the hidden state it reads.
    pub d_model: usize,
    /// Number of labels.
    pub num_labels: usize,
}

impl ScoreHeadConfig {
    /// Build the head.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ScoreHead<B> {
        ScoreHead { score: LinearConfig::new(self.d_model, self.num_labels).with_bias(false).init(device) }
    }
}

/// Sequence classification read at the last real token (HF `*ForSequenceClassification`).
#[derive(Module, Debug)]
pub struct ScoreHead<B: Backend> {
    /// Bias-free projection to the labels.
    pub score: Linear<B>,
}

/// Hidden state at the last position whose mask is 1 (the last real token).
///
/// HF finds that position from `input_ids != pad_token_id`; using the attention mask is the
/// same whenever the padding is exactly the masked positions, and also works when the pad
/// token is the EOS token that ends a real sequence.
///
/// # Shapes
/// - hidden: `[B, T, D]`, attention_mask: `[B, T]` -> `[B, D]`
pub fn last_token_hidden<B: Backend>(hidden: Tensor<B, 3>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 2> {
    let [b, t, d] = hidden.dims();
    let idx = match attention_mask {
        Some(mask) => {
            let device = mask.device();
            let positions = Tensor::<B, 1, Int>::arange(0..t as i64, &device).reshape([1, t]);
            (mask * positions).argmax(1) // [B, 1]
        }
        None => Tensor::<B, 2, Int>::full([b, 1], t as i64 - 1, &hidden.device()),
    };
    let idx = idx.reshape([b, 1, 1]).repeat_dim(2, d);
    hidden.gather(1, idx).reshape([b, d])
}

impl<B: Backend> ScoreHead<B> {
    /// # Shapes
    /// - hidden: `[B, T, D]`, attention_mask: `[B, T]` -> logits `[B, num_labels]`
    pub fn forward(&self, hidden: Tensor<B, 3>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 2> {
        self.score.forward(last_token_hidden(hidden, attention_mask))
    }
}

/// Sequence classifier on a causal LM trunk (HF `GPT2ForSequenceClassification`,
/// `LlamaForSequenceClassification`, ...).
#[derive(Module, Debug)]
pub struct LmClassifier<B: Backend> {
    /// The trunk.
    pub transformer: CausalLm<B>,
    /// The classification head.
    pub score: ScoreHead<B>,
}

impl<B: Backend> LmClassifier<B> {
    /// Label logits at the last real token.
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> logits `[B, num_labels]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> Tensor<B, 2> {
        let mut input = LmInput::new(input_ids);
        input.attention_mask = attention_mask.clone();
        self.score.forward(self.transformer.trunk(input, None).last_hidden_state, attention_mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt2::Gpt2Config;
    use burn::tensor::TensorData;
    use tril_core::backend::CpuBackend;

    #[test]
    fn value_heads_shapes() {
        let dev = Default::default();
        let x = Tensor::<CpuBackend, 3>::ones([2, 5, 8], &dev);
        for mlp in [false, true] {
            let head = ValueHeadConfig::new(8).with_mlp(mlp).init::<CpuBackend>(&dev);
            assert_eq!(head.forward(x.clone()).dims(), [2, 5]);
            assert_eq!(head.hidden.is_some(), mlp);
        }
        let head = ValueHeadConfig::new(8).with_mlp(true).init::<CpuBackend>(&dev);
        assert_eq!(head.hidden.as_ref().unwrap().weight.dims(), [8, 16]);
    }

    #[test]
    fn last_token_is_last_real_position() {
        let dev = Default::default();
        let hidden = Tensor::<CpuBackend, 1, Int>::arange(0..12, &dev).float().reshape([2, 3, 2]);
        let mask = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![1i64, 1, 0, 0, 1, 1], [2, 3]), &dev);
        let got = last_token_hidden(hidden.clone(), Some(mask)).into_data().to_vec::<f32>().unwrap();
        assert_eq!(got, vec![2.0, 3.0, 10.0, 11.0]);
        let got = last_token_hidden(hidden, None).into_data().to_vec::<f32>().unwrap();
        assert_eq!(got, vec![4.0, 5.0, 10.0, 11.0]);
    }

    #[test]
    fn shared_and_separate_critics_run() {
        let dev = Default::default();
        let cfg = Gpt2Config::tiny();
        let ids = Tensor::<CpuBackend, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4], [2, 2]), &dev);
        let ac =
            LmWithValueHead { lm: cfg.init::<CpuBackend>(&dev).into(), v_head: ValueHeadConfig::new(64).init(&dev) };
        let out = ac.forward(ids.clone(), None);
        assert_eq!((out.logits.dims(), out.values.dims()), ([2, 2, 512], [2, 2]));
        let critic = ValueModel {
            transformer: cfg.init::<CpuBackend>(&dev).into(),
            v_head: ValueHeadConfig::new(64).with_mlp(true).init(&dev),
        };
        assert_eq!(critic.forward(ids, None).dims(), [2, 2]);
    }
}
