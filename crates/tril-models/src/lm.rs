//! The plumbing every causal LM of tril shares: inputs and outputs of a forward pass
//! ([`LmInput`], [`LmHidden`], [`LmOutput`], [`LogitsSpan`]), the KV cache of incremental
//! decoding ([`KvCache`], one [`LayerCache`] slot per block), the additive attention bias for
//! padding and causality, positions from a left-padded mask, and `[B, T, D]` projections run as
//! one 2-D matmul. GPT-2, Llama and GPT-NeoX blocks all read these.

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

/// Additive attention bias for masked keys (finite, so fully masked rows stay finite).
pub const MASK_BIAS: f32 = -1e9;

/// Key and value tensors of one layer, `[B, H, T, head_dim]` each.
pub type LayerKv<B> = (Tensor<B, 4>, Tensor<B, 4>);

/// One layer's slot of a [`KvCache`] during a forward pass.
#[derive(Debug)]
pub struct LayerCache<'a, B: Backend> {
    slot: &'a mut Option<LayerKv<B>>,
    past: usize,
    capacity: usize,
}

impl<B: Backend> LayerCache<'_, B> {
    /// Store the new keys/values after the `past` cached ones and return all of them.
    /// Writes in place into a preallocated buffer while it has room (no copy of the past on
    /// backends that mutate uniquely owned tensors, e.g. ndarray and CubeCL), else concatenates.
    ///
    /// # Shapes
    /// - k, v: `[B, H, T, hd]` -> `[B, H, past + T, hd]` each
    pub fn append(self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> LayerKv<B> {
        let [b, h, t, hd] = k.dims();
        let total = self.past + t;
        let write = |buf: Tensor<B, 4>, new: Tensor<B, 4>| buf.slice_assign([0..b, 0..h, self.past..total, 0..hd], new);
        let (kb, vb) = match self.slot.take() {
            Some((kb, vb)) if kb.dims()[2] >= total => (write(kb, k), write(vb, v)),
            Some((kb, vb)) => (
                Tensor::cat(vec![kb.narrow(2, 0, self.past), k], 2),
                Tensor::cat(vec![vb.narrow(2, 0, self.past), v], 2),
            ),
            None if self.capacity > total => {
                let device = k.device();
                let zeros = || Tensor::<B, 4>::zeros([b, h, self.capacity, hd], &device);
                (write(zeros(), k), write(zeros(), v))
            }
            None => (k, v),
        };
        *self.slot = Some((kb.clone(), vb.clone()));
        (kb.narrow(2, 0, total), vb.narrow(2, 0, total))
    }
}

/// Keys and values of all layers for incremental decoding.
///
/// [`KvCache::with_capacity`] preallocates `[B, H, capacity, hd]` buffers on first use and
/// writes each step in place; [`KvCache::new`] grows by concatenation.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerKv<B>>>,
    len: usize,
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty, growing cache for a model with `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        Self::with_capacity(n_layer, 0)
    }

    /// An empty cache whose buffers hold `capacity` positions (prompt + new tokens).
    pub fn with_capacity(n_layer: usize, capacity: usize) -> Self {
        Self { layers: vec![None; n_layer], len: 0, capacity }
    }

    /// Number of cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One slot per layer for a forward pass over `t` new positions (in layer order); the
    /// cache counts those positions as cached from now on.
    pub fn layers_for(&mut self, t: usize) -> Vec<LayerCache<'_, B>> {
        let (past, capacity) = (self.len, self.capacity);
        self.len += t;
        self.layers.iter_mut().map(|slot| LayerCache { slot, past, capacity }).collect()
    }

    /// Keep the batch rows `indices` of every layer, in that order: row `j` becomes old row
    /// `indices[j]` (rows may repeat, so the batch can grow). Beam search reorders the cache by
    /// each new beam's parent this way (HF `Cache::reorder_cache`). Preallocated buffers keep
    /// their capacity.
    ///
    /// # Shapes
    /// - indices: `[B']`, values in `0..B`; each layer `[B, H, capacity, hd]` -> `[B', H, capacity, hd]`
    pub fn select_rows(&mut self, indices: Tensor<B, 1, Int>) {
        for slot in &mut self.layers {
            if let Some((k, v)) = slot.take() {
                *slot = Some((k.select(0, indices.clone()), v.select(0, indices.clone())));
            }
        }
    }
}

/// Which positions get LM logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsSpan {
    /// Every position: `[B, T, V]`.
    #[default]
    All,
    /// Only the last position: `[B, 1, V]` (what generation needs).
    Last,
    /// `len` positions from `start`: `[B, len, V]` (what scoring a generation needs: the
    /// vocabulary-wide head and softmax run on those positions only).
    Span {
        /// First position.
        start: usize,
        /// Number of positions.
        len: usize,
    },
}

/// Inputs of a causal LM forward pass (`forward_with` of every model).
#[derive(Debug, Clone)]
pub struct LmInput<B: Backend> {
    /// Token ids, `[B, T]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding, `[B, past + T]` (covers the cached positions too).
    pub attention_mask: Option<Tensor<B, 2, Int>>,
    /// Explicit positions `[B, T]`; by default derived from the mask (see module docs), as
    /// HF `generate` does. Note that a plain HF forward without `position_ids` (and so
    /// TRIL's log-prob recomputation) uses `past..past + T` even for left-padded rows; pass
    /// those positions here to reproduce it.
    pub position_ids: Option<Tensor<B, 2, Int>>,
    /// Return the hidden state after the embeddings and after every block.
    pub output_hidden_states: bool,
    /// Which positions get logits.
    pub logits: LogitsSpan,
}

impl<B: Backend> LmInput<B> {
    /// Ids only: no padding, positions `past..past + T`, logits everywhere.
    pub fn new(input_ids: Tensor<B, 2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask: None,
            position_ids: None,
            output_hidden_states: false,
            logits: LogitsSpan::All,
        }
    }

    /// Set the attention mask `[B, past + T]`.
    pub fn with_mask(mut self, attention_mask: Tensor<B, 2, Int>) -> Self {
        self.attention_mask = Some(attention_mask);
        self
    }

    /// Set explicit position ids `[B, T]`.
    pub fn with_positions(mut self, position_ids: Tensor<B, 2, Int>) -> Self {
        self.position_ids = Some(position_ids);
        self
    }

    /// Also return all hidden states.
    pub fn with_hidden_states(mut self) -> Self {
        self.output_hidden_states = true;
        self
    }

    /// Compute logits for the last position only.
    pub fn last_logits_only(mut self) -> Self {
        self.logits = LogitsSpan::Last;
        self
    }

    /// Compute logits for positions `start..start + len` only.
    pub fn logits_span(mut self, start: usize, len: usize) -> Self {
        self.logits = LogitsSpan::Span { start, len };
        self
    }
}

/// Outputs of a causal LM trunk (everything but the LM head).
#[derive(Debug, Clone)]
pub struct LmHidden<B: Backend> {
    /// Final hidden state after the final norm, `[B, T, D]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// With `output_hidden_states`: embeddings output, then each block's output (the last
    /// entry is after the final norm, as in HF), `n_layer + 1` tensors of `[B, T, D]`.
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

/// Outputs of a causal LM forward pass with its head.
#[derive(Debug, Clone)]
pub struct LmOutput<B: Backend> {
    /// LM logits, `[B, T, V]` (`[B, 1, V]` with [`LogitsSpan::Last`], `[B, len, V]` with
    /// [`LogitsSpan::Span`]).
    pub logits: Tensor<B, 3>,
    /// Final hidden state after the final norm, `[B, T, D]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// See [`LmHidden::hidden_states`].
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

/// `l.forward(x)` for a `[B, T, D]` input as one 2-D matmul over `B * T` rows (burn-ndarray
/// runs a 3-D input as `B` separate products, which is about 10x slower).
///
/// # Shapes
/// - x: `[B, T, D_in]` -> `[B, T, D_out]`
pub fn linear3<B: Backend>(l: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    let y = l.forward(x.reshape([b * t, d]));
    let o = y.dims()[1];
    y.reshape([b, t, o])
}

/// Positions from an attention mask as HF `generate` derives them: `cumsum(mask) - 1`, with
/// padded slots set to 1.
///
/// # Shapes
/// - mask: `[B, T]` (1 real, 0 pad) -> `[B, T]`
pub fn position_ids_from_mask<B: Backend>(mask: Tensor<B, 2, Int>) -> Tensor<B, 2, Int> {
    let pad = mask.clone().equal_elem(0);
    (mask.cumsum(1) - 1).mask_fill(pad, 1)
}

/// Additive attention bias: padded keys and future keys get [`MASK_BIAS`].
///
/// # Shapes
/// - mask: `[B, past + T]`; output `[B, 1, T, past + T]` (or `[1, 1, T, past + T]` without mask);
///   `None` when nothing is masked (no mask and `T == 1`).
pub fn attention_bias<B: Backend>(
    mask: Option<Tensor<B, 2, Int>>,
    q_len: usize,
    past: usize,
    device: &B::Device,
) -> Option<Tensor<B, 4>> {
    let k_len = past + q_len;
    let pad = mask.map(|m| {
        let [b, _] = m.dims();
        ((m.float() - 1.0) * (-MASK_BIAS)).reshape([b, 1, 1, k_len])
    });
    let causal = (q_len > 1).then(|| {
        let future: Tensor<B, 2, Bool> = Tensor::tril_mask([q_len, k_len], past as i64, device);
        Tensor::<B, 2>::zeros([q_len, k_len], device).mask_fill(future, MASK_BIAS).reshape([1, 1, q_len, k_len])
    });
    match (pad, causal) {
        (Some(p), Some(c)) => Some(p + c),
        (p, c) => p.or(c),
    }
}

/// Scaled dot-product attention with grouped keys/values: query head `h` reads key/value head
/// `h / (H / H_kv)` (HF `repeat_kv`), scores scaled by `1 / sqrt(hd)`, plus the additive bias.
///
/// # Shapes
/// - q: `[B, H, T, hd]`; k, v: `[B, H_kv, Tk, hd]` with `H % H_kv == 0`
/// - bias: `[B or 1, 1, T, Tk]` additive, or `None`
/// - output: `[B, H, T, hd]`
pub fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let [b, h, _, hd] = q.dims();
    let [_, h_kv, tk, _] = k.dims();
    let repeat = |x: Tensor<B, 4>| match h / h_kv {
        1 => x,
        n => x.reshape([b, h_kv, 1, tk, hd]).repeat_dim(2, n).reshape([b, h, tk, hd]),
    };
    let (k, v) = (repeat(k), repeat(v));
    let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt(); // [B, H, T, Tk]
    let scores = match bias {
        Some(bias) => scores + bias,
        None => scores,
    };
    burn::tensor::activation::softmax(scores, 3).matmul(v)
}

/// A causal LM: every family implements the trunk and the head; the forward passes built
/// on them are this trait's, written once. [`crate::causal_lm::CausalLm`] implements it too,
/// so [`crate::generate::generate`] takes any of them.
pub trait LanguageModel<B: Backend> {
    /// The trunk without the LM head (what value and classification heads read).
    ///
    /// # Shapes
    /// See [`LmInput`] and [`LmHidden`].
    fn trunk(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmHidden<B>;

    /// The LM head.
    ///
    /// # Shapes
    /// - hidden: `[B, T, D]` -> `[B, T, V]`
    fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3>;

    /// Number of blocks (the length of a [`KvCache`]).
    fn n_layer(&self) -> usize;

    /// Vocabulary size of the LM head.
    fn vocab_size(&self) -> usize;

    /// The longest sequence the model accepts.
    fn max_positions(&self) -> usize;

    /// Forward with every option: cache, explicit positions, hidden states, logits span.
    ///
    /// # Shapes
    /// See [`LmInput`] and [`LmOutput`].
    fn forward_with(&self, input: LmInput<B>, cache: Option<&mut KvCache<B>>) -> LmOutput<B> {
        let span = input.logits;
        let hidden = self.trunk(input, cache);
        let last = match span {
            LogitsSpan::All => hidden.last_hidden_state.clone(),
            LogitsSpan::Last => {
                let t = hidden.last_hidden_state.dims()[1];
                hidden.last_hidden_state.clone().narrow(1, t - 1, 1)
            }
            LogitsSpan::Span { start, len } => hidden.last_hidden_state.clone().narrow(1, start, len),
        };
        LmOutput {
            logits: self.lm_logits(last),
            last_hidden_state: hidden.last_hidden_state,
            hidden_states: hidden.hidden_states,
        }
    }

    /// Full forward with a padding mask: logits at every position.
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` (1 real, 0 pad) -> logits `[B, T, V]`
    fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> LmOutput<B> {
        let mut input = LmInput::new(input_ids);
        input.attention_mask = attention_mask;
        self.forward_with(input, None)
    }

    /// LM logits of positions `start..start + len` only, `[B, len, V]`: the vocabulary-wide
    /// head (and the caller's softmax) skip the other positions, and the result is
    /// contiguous (a slice of full logits is a strided view that CPU backends walk slowly).
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[B, T]` -> `[B, len, V]`
    fn span_logits(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        start: usize,
        len: usize,
    ) -> Tensor<B, 3> {
        let mut input = LmInput::new(input_ids).logits_span(start, len);
        input.attention_mask = attention_mask;
        self.forward_with(input, None).logits
    }
}
