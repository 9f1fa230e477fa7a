//! The spine every on-policy algorithm shares (DESIGN.md "Data flow of one PPO iteration"):
//! the actor-critic module, the tokenizer and models a [`PolicySpec`] names, prompt
//! batches and rollouts (generate, score, reference and value passes) and evaluation.
//! Functions only: the loop that orders them lives in each algorithm's file.

pub mod aggrevated;
pub mod d2lols;
pub mod gail;
pub mod kl_controller;
pub mod lols;
pub mod policies;
pub mod ppo;
pub mod ppo_pp;
pub mod ppo_run;
pub mod rollin;

use crate::offline::prompt_cell_text;
use crate::AlgorithmError;
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use tril_core::ops::{gather_logprobs, logprobs_and_entropy};
use tril_core::plugin::{CriticLayout, PluginError, PolicyLm, PolicySpec, Sample};
use tril_core::schema::{GenKwargs, Side};
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::generate::{generate_with_prefix, GenerationConfig, GenerationOutput, SpecialTokens};
use tril_models::gpt2::Gpt2Config;
use tril_models::heads::{ScoreHead, ScoreHeadConfig, ValueHead, ValueHeadConfig, ValueModel};
use tril_models::lm::LmInput;
use tril_models::tokenizer::{PaddingSide, TextTokenizer, TokenizerOptions, TruncationSide};

/// Policy LM and critic in one module, so one optimizer and one gradient clip cover both.
/// Exactly one of `critic` (TRIL's separate copy) and `shared_head` (a value head on the
/// policy's own trunk) is set.
#[derive(Module, Debug)]
pub struct ActorCritic<B: Backend> {
    /// The policy LM.
    pub policy: CausalLm<B>,
    /// Separate critic (trunk + value head).
    pub critic: Option<ValueModel<B>>,
    /// Value head on the policy trunk.
    pub shared_head: Option<ValueHead<B>>,
    /// The guide's critic (`multi_actor_critic` with `create_guide_critic`: LOLS, D2LOLS).
    pub guide_critic: Option<ValueModel<B>>,
}

/// What one forward pass over `prompt + generation` gives for the generated positions.
#[derive(Debug, Clone)]
pub struct Scored<B: Backend> {
    /// Log-probs of the generated tokens, `[B, N]`.
    pub logprobs: Tensor<B, 2>,
    /// Entropy of the policy at each generated position, `[B, N]`.
    pub entropy: Tensor<B, 2>,
    /// Value of the state before each generated token, `[B, N]`.
    pub values: Tensor<B, 2>,
}

/// The generated-position slice: logits at `t - 1` predict token `t`.
fn generated_span(len: usize, n: usize) -> std::ops::Range<usize> {
    len - n - 1..len - 1
}

impl<B: Backend> ActorCritic<B> {
    /// Scores the generated part of `ids` (its last `n` columns), values from the policy's critic.
    ///
    /// # Shapes
    /// `ids`, `mask`: `[B, P + N]` -> [`Scored`] of `[B, N]`
    pub fn score(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Int>, n: usize) -> Scored<B> {
        self.score_with(ids, mask, n, crate::onpolicy::rollin::ValueFn::Policy, false)
    }

    /// [`ActorCritic::score`] with the values of the critic `value_fn` names.
    /// `entropy_grad: false` detaches the entropy (logged, not trained: `ent_coef: 0`), so the
    /// backward pass skips its vocabulary-wide product ([`logprobs_and_entropy`]).
    ///
    /// # Panics
    /// With [`crate::onpolicy::rollin::ValueFn::Guide`] on a model built without a guide critic.
    pub fn score_with(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        n: usize,
        value_fn: crate::onpolicy::rollin::ValueFn,
        entropy_grad: bool,
    ) -> Scored<B> {
        let [b, len] = ids.dims();
        let span = generated_span(len, n);
        // Logits only where the actions are predicted: the vocabulary-wide head and softmax
        // skip the prompt's positions.
        let input = LmInput::new(ids.clone()).with_mask(mask.clone()).logits_span(span.start, n);
        let out = self.policy.forward_with(input, None);
        let logits = out.logits; // [B, N, V]
        let actions = ids.clone().slice([0..b, len - n..len]); // [B, N]
        let values = match (value_fn, &self.critic, &self.shared_head) {
            (crate::onpolicy::rollin::ValueFn::Guide, _, _) => {
                self.guide_critic.as_ref().expect("a guide critic").forward(ids, Some(mask))
                // [B, P + N]
            }
            (_, Some(critic), _) => critic.forward(ids, Some(mask)), // [B, P + N]
            (_, None, Some(head)) => head.forward(out.last_hidden_state), // [B, P + N]
            (_, None, None) => panic!("ActorCritic built without a critic"),
        };
        let (logprobs, entropy) = logprobs_and_entropy(logits, actions, entropy_grad); // [B, N] each
        Scored {
            logprobs,
            entropy,
            values: tril_core::ops::to_f32(values.slice([0..b, span])), // losses are f32
        }
    }
}

/// Log-probs of the last `n` tokens of `ids` under an LM (the reference pass).
///
/// # Shapes
/// `ids`, `mask`: `[B, P + N]` -> `[B, N]`
pub fn lm_logprobs<B: Backend>(
    lm: &CausalLm<B>,
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Int>,
    n: usize,
) -> Tensor<B, 2> {
    let [b, len] = ids.dims();
    let logits = lm.span_logits(ids.clone(), Some(mask), generated_span(len, n).start, n); // [B, N, V]
    gather_logprobs(logits, ids.slice([0..b, len - n..len]))
}

/// A policy LM and its tokenizer as metrics see it ([`PolicyLm`]).
pub struct PolicyView<'a, B: Backend> {
    /// The policy.
    pub lm: &'a CausalLm<B>,
    /// Its tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// Its context length (`n_positions`).
    pub n_positions: usize,
    /// Where it runs.
    pub device: B::Device,
}

impl<B: Backend> PolicyLm for PolicyView<'_, B> {
    fn encode(&self, text: &str) -> Result<Vec<u32>, PluginError> {
        Ok(self.tokenizer.encode(text, false)?)
    }

    fn token_logprobs(&self, ids: &[u32]) -> Result<Vec<f64>, PluginError> {
        if ids.len() < 2 {
            return Ok(Vec::new());
        }
        let n = ids.len();
        let data: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(data, [1, n]), &self.device); // [1, n]
        let mask = input.ones_like();
        let lp = lm_logprobs(self.lm, input, mask, n - 1); // [1, n - 1]
        let values = lp.into_data().convert::<f64>().to_vec::<f64>();
        Ok(values
            .map_err(|e| AlgorithmError::TensorData { what: "token log-probs".into(), message: format!("{e:?}") })?)
    }

    fn context_len(&self) -> usize {
        self.n_positions
    }
}

/// The built-in vocabulary of the `synthetic` task: `<|endoftext|>` (id 0, EOS and pad)
/// and the numbers `0..NUMBERS` as whole words (the task's default `max_number`).
/// Numbers in the built-in vocabulary.
pub const NUMBERS: u32 = 20;

#[allow(missing_docs)]
pub fn numbers_tokenizer() -> Result<TextTokenizer, PluginError> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
    let mut vocab: HashMap<String, u32> = HashMap::from([("<|endoftext|>".to_string(), 0)]);
    vocab.extend((0..NUMBERS).map(|n| (n.to_string(), n + 1)));
    let model = WordLevel::builder().vocab(vocab.into_iter().collect()).unk_token("<|endoftext|>".into()).build()?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(WhitespaceSplit));
    tok.add_special_tokens(vec![tokenizers::AddedToken::from("<|endoftext|>", true)])?;
    Ok(TextTokenizer::new(tok).with_eos_token("<|endoftext|>")?)
}

fn side_padding(side: Side) -> PaddingSide {
    match side {
        Side::Left => PaddingSide::Left,
        Side::Right => PaddingSide::Right,
    }
}

fn side_truncation(side: Side) -> TruncationSide {
    match side {
        Side::Left => TruncationSide::Left,
        Side::Right => TruncationSide::Right,
    }
}

/// Warns (once, with a count and an example) when prompts of `split` are longer than
/// `max_len` tokens: they are cut on the `side` end, as TRIL does, which users may not
/// expect. Returns how many are cut.
pub fn warn_long_prompts(
    tokenizer: &TextTokenizer,
    samples: &[Sample],
    max_len: usize,
    side: Side,
    split: &str,
) -> Result<usize, PluginError> {
    let mut long = 0;
    let mut example = None;
    for s in samples {
        let prompt = prompt_cell_text(tokenizer, &s.prompt, &s.id)?;
        let n = tokenizer.encode(&prompt, false)?.len();
        if n > max_len {
            long += 1;
            example.get_or_insert_with(|| (s.id.clone(), n));
        }
    }
    if let Some((id, n)) = example {
        tracing::warn!(
            "{long} of {} {split} prompts are longer than sampling.max_prompt_len ({max_len} tokens) and are cut on \
             the {} (sampling.prompt_truncation_side); e.g. `{id}` has {n} tokens",
            samples.len(),
            match side {
                Side::Left => "left",
                Side::Right => "right",
            }
        );
    }
    Ok(long)
}

/// Loads the tokenizer named by `alg.tokenizer.model_name` (`builtin:numbers`,
/// `builtin:gpt2`: GPT-2's exact BPE built offline, [`TextTokenizer::gpt2`], a local
/// directory or a hub id in the HF cache).
pub fn load_tokenizer(name: &str) -> Result<TextTokenizer, PluginError> {
    if name == "builtin:numbers" {
        return numbers_tokenizer();
    }
    if name == "builtin:gpt2" {
        return Ok(TextTokenizer::gpt2()?);
    }
    if let Some(other) = name.strip_prefix("builtin:") {
        let message = format!("unknown built-in tokenizer `{other}` (known: numbers, gpt2)");
        return Err(AlgorithmError::config("alg.tokenizer.model_name", message).into());
    }
    Ok(TextTokenizer::from_dir(&tril_models::resolve::model_dir(name, "alg.tokenizer.model_name")?)?)
}

/// The run preamble of the generating loops: `alg.tokenizer` loaded, and the same
/// tokenizer set up for prompts as `sampling` and the policy's truncation side say.
pub fn run_tokenizers(
    tokenizer: &tril_core::schema::TokenizerConfig,
    sampling: &tril_core::schema::SamplingConfig,
    truncation: Side,
) -> Result<(TextTokenizer, TextTokenizer), PluginError> {
    let tok = load_tokenizer(&tokenizer.model_name)?;
    let prompt_tok = prompt_tokenizer(
        &tok,
        sampling.prompt_padding_side,
        truncation,
        sampling.max_prompt_len,
        tokenizer.pad_token_as_eos_token,
    );
    Ok((tok, prompt_tok))
}

/// The same tokenizer set up for prompts: padded and truncated to exactly `max_len`.
pub fn prompt_tokenizer(
    tok: &TextTokenizer,
    padding: Side,
    truncation: Side,
    max_len: usize,
    pad_as_eos: bool,
) -> TextTokenizer {
    tok.clone().with_options(TokenizerOptions {
        padding_side: side_padding(padding),
        truncation_side: side_truncation(truncation),
        max_length: Some(max_len),
        pad_to_max_length: true,
        pad_token_as_eos_token: pad_as_eos,
        add_special_tokens: false,
    })
}

/// Builds the actor-critic and the frozen reference a policy spec names (`key`: the config
/// key of `spec.model_name`, for errors). `builtin:tiny-gpt2`
/// is a 2-layer, 64-wide GPT-2 initialized from `seed` for the embedded default. Fresh
/// parameters (that GPT-2, the value head) are drawn on the host ([`seed_fresh_parameters`]),
/// so a seed gives every device the same starting weights.
pub fn build_models<B: Backend>(
    spec: &PolicySpec,
    key: &str,
    vocab_size: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(ActorCritic<B>, CausalLm<B>, LmConfig), PluginError> {
    seed_fresh_parameters::<B>(device, seed);
    let (policy, config) = if spec.model_name == "builtin:tiny-gpt2" {
        let config =
            LmConfig::from(Gpt2Config::new(vocab_size, (spec.max_prompt_len + spec.max_gen_len).max(32), 64, 2, 4));
        (fresh_lm(&config, device), config)
    } else {
        let dir = tril_models::resolve::model_dir(&spec.model_name, key)?;
        let loaded = tril_models::hf::load_lm::<B>(&dir, device)?;
        (loaded.model, loaded.config)
    };
    // Parameters initialise lazily and a clone of an uninitialised parameter would draw
    // its own values: materialise them so policy, reference and critic trunk start equal.
    // A clone also keeps the parameter ids, which key gradients and optimizer state, so
    // the critic's trunk gets fresh ids (the reference is never optimized).
    let context = spec.max_prompt_len + spec.max_gen_len;
    if context > config.max_positions() {
        let message = format!(
            "max_prompt_len ({}) + max_gen_len ({}) = {context} tokens exceed the context of `{}` ({} positions); \
             lower sampling.max_prompt_len or sampling.max_gen_len",
            spec.max_prompt_len,
            spec.max_gen_len,
            spec.model_name,
            config.max_positions()
        );
        return Err(AlgorithmError::config("alg.policy.args", message).into());
    }
    policy.visit(&mut Materialize);
    let (reference, critic_trunk) = (policy.clone(), policy.clone().map(&mut FreshIds));
    if config.vocab_size() < vocab_size {
        return Err(AlgorithmError::Vocabulary {
            model: spec.model_name.clone(),
            embeddings: config.vocab_size(),
            tokens: vocab_size,
        }
        .into());
    }
    let head = fresh_value_head::<B>(&ValueHeadConfig::new(config.d_model()).with_mlp(spec.mlp_head), device);
    let model = match spec.critic {
        CriticLayout::Separate => ActorCritic {
            policy,
            critic: Some(ValueModel { transformer: critic_trunk, v_head: head }),
            shared_head: None,
            guide_critic: None,
        },
        CriticLayout::SharedTrunk => ActorCritic { policy, critic: None, shared_head: Some(head), guide_critic: None },
    };
    Ok((model, reference.no_grad(), config))
}

/// A guide critic for `model` (TRIL builds it from the policy's `model_name`): a copy of
/// the policy's initial trunk with fresh parameter ids and a new value head.
pub fn with_guide_critic<B: Backend>(mut model: ActorCritic<B>, mlp_head: bool, device: &B::Device) -> ActorCritic<B> {
    let trunk = model.policy.clone().map(&mut FreshIds);
    let head = fresh_value_head::<B>(&ValueHeadConfig::new(model.policy.d_model()).with_mlp(mlp_head), device);
    model.guide_critic = Some(ValueModel { transformer: trunk, v_head: head });
    model
}

/// A causal LM of architecture `config` with fresh weights (from the host's seeded stream,
/// [`seed_fresh_parameters`]): Burn's default initialisation, except the token and position
/// embeddings ([`CausalLm::embeddings_mut`]), which get HF's `N(0, 0.02)` (Burn's `N(0, 1)` would make the tied LM head's
/// logits so peaked that a fresh policy never explores). `builtin:tiny-gpt2` and `bc`'s
/// `from_scratch` use it.
pub fn fresh_lm<B: Backend>(config: &LmConfig, device: &B::Device) -> CausalLm<B> {
    let mut host = config.init::<HostBackend>(&HOST);
    let normal = burn::tensor::Distribution::Normal(0.0, 0.02);
    // `lazy_shape`, not `dims`: reading the shape must not initialise (draw) the old table.
    for table in host.embeddings_mut() {
        let dims: [usize; 2] = table.weight.lazy_shape().dims();
        table.weight = burn::module::Param::from_tensor(Tensor::random(dims, normal, &HOST));
    }
    drawn_on_host(config.init::<B>(device), &host)
}

/// A fresh value head (drawn on the host, [`drawn_on_host`]).
fn fresh_value_head<B: Backend>(config: &ValueHeadConfig, device: &B::Device) -> ValueHead<B> {
    drawn_on_host(config.init::<B>(device), &config.init::<HostBackend>(&HOST))
}

/// A fresh classification head (drawn on the host, [`drawn_on_host`]): GAIL's
/// discriminator, the reward model.
pub(crate) fn fresh_score_head<B: Backend>(config: &ScoreHeadConfig, device: &B::Device) -> ScoreHead<B> {
    drawn_on_host(config.init::<B>(device), &config.init::<HostBackend>(&HOST))
}

/// The backend fresh parameters are drawn on, whatever device trains: the host's. Burn's
/// CPU backends (ndarray, flex) draw from one seeded host generator each (the same
/// algorithm), the CubeCL ones (cuda, wgpu) from their own on-device generator; drawing on
/// the host gives every device the same starting weights for a seed, and leaves a CPU
/// run's numbers as they were when it drew on its own backend.
use tril_core::backend::{HostBackend, HOST};

/// Seeds the streams fresh parameters come from: the host's (tril draws every fresh
/// parameter there, then copies it to the device, so one seed gives every backend the same
/// starting weights) and, for anything else that draws on the device, `device`'s.
pub fn seed_fresh_parameters<B: Backend>(device: &B::Device, seed: u64) {
    B::seed(device, seed);
    HostBackend::seed(&HOST, seed);
}

/// `module`, freshly configured on its device (no parameter drawn yet), with each float
/// parameter drawn from its twin in `host` (the same architecture configured on
/// [`HostBackend`]) when first used, then copied to the device in the device's float type.
/// The draws happen when and in the order the module's own lazy initialisers would have
/// run, from the host stream ([`seed_fresh_parameters`]); parameter ids stay `module`'s.
pub(crate) fn drawn_on_host<B: Backend, M: Module<B>, H: Module<HostBackend>>(module: M, host: &H) -> M {
    type Draw = std::sync::Arc<dyn Fn() -> TensorData + Send + Sync>;
    struct Collect(Vec<(Draw, burn::tensor::Shape)>);
    impl burn::module::ModuleVisitor<HostBackend> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<HostBackend, D>>) {
            // A clone of a lazy parameter carries its initialiser; `val` runs it once.
            let twin = param.clone();
            self.0.push((std::sync::Arc::new(move || twin.val().into_data()), param.lazy_shape()));
        }
    }
    struct Load(std::vec::IntoIter<(Draw, burn::tensor::Shape)>);
    impl<B: Backend> burn::module::ModuleMapper<B> for Load {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<B, D>>,
        ) -> burn::module::Param<Tensor<B, D>> {
            let (draw, shape) = self.0.next().expect("the host twin has the module's parameters");
            assert_eq!(shape, param.lazy_shape(), "host twin parameter shape");
            // Fresh parameters are trainable; `no_grad` later still applies to the lazy state.
            burn::module::Param::uninitialized(
                param.id,
                move |device, require_grad| Tensor::from_data(draw(), device).set_require_grad(require_grad),
                param.lazy_device(),
                true,
                shape,
            )
        }
    }
    let mut twins = Collect(Vec::new());
    host.visit(&mut twins);
    let mut load = Load(twins.0.into_iter());
    let module = module.map(&mut load);
    assert!(load.0.next().is_none(), "the host twin has the module's parameters");
    module
}

/// Forces every lazily initialised parameter to take its value.
struct Materialize;

impl<B: Backend> burn::module::ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Gives every float parameter a new id (an independent copy for the optimizer).
struct FreshIds;

impl<B: Backend> burn::module::ModuleMapper<B> for FreshIds {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        let (_, tensor, _) = param.consume();
        burn::module::Param::initialized(burn::module::ParamId::new(), tensor)
    }
}

/// TRIL's generation kwargs as tril-models' generation config (HF defaults where unset).
pub fn generation_config(kw: &GenKwargs) -> GenerationConfig {
    let d = GenerationConfig::default();
    GenerationConfig {
        do_sample: kw.do_sample,
        temperature: kw.temperature.unwrap_or(d.temperature),
        top_k: kw.top_k.unwrap_or(d.top_k),
        top_p: kw.top_p.unwrap_or(d.top_p),
        min_length: kw.min_length.unwrap_or(0),
        max_new_tokens: kw.max_new_tokens,
        num_beams: kw.num_beams.unwrap_or(1),
        use_cache: true,
    }
}

/// An endless, seeded stream of shuffled sample indices (TRIL's infinite shuffled loader).
/// Serializable, so a checkpoint resumes mid-pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PromptSampler {
    order: Vec<usize>,
    next: usize,
}

impl PromptSampler {
    /// A sampler over `n` samples.
    pub fn new(n: usize) -> Self {
        PromptSampler { order: (0..n).collect(), next: n }
    }

    /// A sampler over this data-parallel replica's share of `n` prompts
    /// ([`tril_core::parallel::partition`]; all `n` on a single device): what rollout
    /// loops draw their `batch_size_per_process` prompts from.
    pub fn for_replica(n: usize) -> Self {
        let order = tril_core::parallel::partition(n);
        let next = order.len();
        PromptSampler { order, next }
    }

    /// Number of samples it draws from.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when it draws from no sample.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Indices left in the current pass (a full pass once the order is used up, since the
    /// next [`PromptSampler::take`] reshuffles): what an epoch-based loop takes last.
    pub fn remaining(&self) -> usize {
        if self.next >= self.order.len() {
            self.order.len()
        } else {
            self.order.len() - self.next
        }
    }

    /// The next `k` indices, reshuffling with `rng` whenever the order is used up.
    pub fn take(&mut self, k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        use rand::seq::SliceRandom;
        let mut out = Vec::with_capacity(k);
        while out.len() < k && !self.order.is_empty() {
            if self.next >= self.order.len() {
                self.order.shuffle(rng);
                self.next = 0;
            }
            out.push(self.order[self.next]);
            self.next += 1;
        }
        out
    }
}

/// A rollout loop's generator for this data-parallel replica: seeded with the run's
/// `seed`, on the replica's own stream ([`tril_core::parallel::stream`]; stream 0, a
/// single-device run's, for rank 0).
pub fn replica_rng(seed: u64) -> ChaCha8Rng {
    let mut rng: ChaCha8Rng = rand::SeedableRng::seed_from_u64(seed);
    rng.set_stream(tril_core::parallel::stream());
    rng
}

/// A rollout loop's generator and prompt sampler after a resume: rank 0 continues
/// exactly from the checkpoint's; the other replicas (whose state the checkpoint does not
/// hold) continue the restored generator on their own stream and start a fresh pass over
/// their share of the `n` prompts.
pub fn replica_draws(rng: ChaCha8Rng, sampler: PromptSampler, n: usize) -> (ChaCha8Rng, PromptSampler) {
    let fresh = PromptSampler::for_replica(n);
    if tril_core::parallel::rank() == 0 && sampler.len() == fresh.len() {
        return (rng, sampler);
    }
    let mut rng = rng;
    let position = rng.get_word_pos();
    rng.set_stream(tril_core::parallel::stream());
    rng.set_word_pos(position);
    (rng, fresh)
}

/// Prompts of `samples` tokenized, and their generated continuations decoded.
#[derive(Debug, Clone)]
pub struct Generated<B: Backend> {
    /// `prompt + generation` ids, `[B, P + N]`.
    pub ids: Tensor<B, 2, Int>,
    /// Attention mask of `ids`, `[B, P + N]`.
    pub mask: Tensor<B, 2, Int>,
    /// Mask of the generated tokens as floats, `[B, N]`.
    pub gen_mask: Tensor<B, 2>,
    /// The raw generation output.
    pub output: GenerationOutput,
    /// Decoded prompts (as the policy saw them, after truncation).
    pub prompts: Vec<String>,
    /// Decoded generations (special tokens skipped).
    pub texts: Vec<String>,
}

/// The tokens the PPO family trains on and rewards, row-major `[B, N]` (1.0 or 0.0).
///
/// `train_eos: false` is TRIL's convention (`base_online.py` `generate_batch`:
/// `masks = act != pad_token_id` with `pad_token_as_eos_token`): the EOS that ends a
/// generation is padding, so it is neither trained nor valued, and the terminal reward
/// ([`crate::onpolicy::ppo::token_rewards`]) lands on the last real token. A generation
/// that is only an EOS then has no action: its reward is dropped, as in TRIL (which writes
/// it at index -1, a masked position). `train_eos: true` keeps the EOS as the last action,
/// trained and rewarded, so the policy also learns when to stop (the generation mask).
pub fn action_mask(output: &GenerationOutput, eos_token_id: Option<u32>, train_eos: bool) -> Vec<f32> {
    output
        .tokens
        .iter()
        .zip(&output.mask)
        .map(|(&token, &m)| {
            let eos = eos_token_id == Some(token);
            if m == 1 && (train_eos || !eos) {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// The attention mask the PPO family scores a rollout with: the generation's own
/// (`mask`, the stopping EOS attended) when `train_eos`, else the prompt's followed by
/// the actions, so that the EOS is padding for attention too, as TRIL's forward passes
/// (`attention_mask = obs != pad_token_id`, pad = EOS). Only positions after the EOS,
/// which no loss reads, see the difference.
///
/// # Shapes
/// `mask`: `[B, P + N]`, `actions`: `[B, N]` -> `[B, P + N]`
pub fn rollout_attention<B: Backend>(
    mask: Tensor<B, 2, Int>,
    actions: Tensor<B, 2>,
    train_eos: bool,
) -> Tensor<B, 2, Int> {
    if train_eos {
        return mask;
    }
    let [b, width] = mask.dims();
    let n = actions.dims()[1];
    Tensor::cat(vec![mask.slice([0..b, 0..width - n]), actions.int()], 1)
}

/// Tokenizes the prompts of `samples`, generates with `lm` and decodes.
pub fn generate_for<B: Backend>(
    lm: &CausalLm<B>,
    tokenizer: &TextTokenizer,
    samples: &[&Sample],
    cfg: &GenerationConfig,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Result<Generated<B>, PluginError> {
    generate_forced(lm, tokenizer, samples, cfg, None, cfg.max_new_tokens, rng, device)
}

/// [`generate_for`] with row `i` forced to start with `forced[i]` (a roll-in prefix) and
/// the output cut or padded to `width` tokens (the rollout buffer's `max_gen_len`).
#[allow(clippy::too_many_arguments)]
pub fn generate_forced<B: Backend>(
    lm: &CausalLm<B>,
    tokenizer: &TextTokenizer,
    samples: &[&Sample],
    cfg: &GenerationConfig,
    forced: Option<&[Vec<u32>]>,
    width: usize,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Result<Generated<B>, PluginError> {
    // Conversational prompts render through the tokenizer's chat template (a generation
    // prompt after the last user turn); plain text passes through.
    let prompts =
        samples.iter().map(|s| prompt_cell_text(tokenizer, &s.prompt, &s.id)).collect::<Result<Vec<String>, _>>()?;
    let encoded = tokenizer.encode_batch(&prompts)?;
    let (prompt_ids, prompt_mask) = encoded.to_tensors::<B>(device); // [B, P]
    let eos = tokenizer.eos_token_id();
    let pad = tokenizer
        .pad_token_id()
        .or(eos)
        .ok_or_else(|| AlgorithmError::Tokenizer { lacks: "neither a pad nor an EOS token".into() })?;
    let special = SpecialTokens { eos_token_id: eos, pad_token_id: pad };
    let output = generate_with_prefix(lm, prompt_ids.clone(), prompt_mask.clone(), cfg, special, forced, rng)?;
    let output = crate::onpolicy::rollin::with_width(output, width, pad);
    let (tokens, _, gen_mask) = output.to_tensors::<B>(device); // [B, N]
    let ids = Tensor::cat(vec![prompt_ids, tokens], 1);
    let mask = Tensor::cat(vec![prompt_mask, gen_mask.clone().int()], 1);
    let rows: Vec<Vec<u32>> = (0..encoded.batch).map(|i| encoded.row(i).to_vec()).collect();
    let prompts = tokenizer.decode_batch(&rows, true)?;
    let gen_rows: Vec<Vec<u32>> = (0..output.batch).map(|i| output.row(i).to_vec()).collect();
    let texts = tokenizer.decode_batch(&gen_rows, true)?;
    Ok(Generated { ids, mask, gen_mask, output, prompts, texts })
}

/// Token ids of each sample's first reference, right-padded/truncated to `n` (TRIL's
/// target-regularization targets), with their mask.
///
/// # Shapes
/// -> ids `[B, N]`, mask `[B, N]`
pub fn reference_targets<B: Backend>(
    tokenizer: &TextTokenizer,
    samples: &[&Sample],
    n: usize,
    device: &B::Device,
) -> Result<(Tensor<B, 2, Int>, Tensor<B, 2>), PluginError> {
    let pad = tokenizer.pad_token_id().or(tokenizer.eos_token_id()).unwrap_or(0);
    let mut ids = vec![pad as i64; samples.len() * n];
    let mut mask = vec![0f32; samples.len() * n];
    for (i, s) in samples.iter().enumerate() {
        let reference = s.references.first().map_or("", String::as_str);
        let toks = tokenizer.encode(reference, false)?;
        for (j, t) in toks.iter().take(n).enumerate() {
            ids[i * n + j] = *t as i64;
            mask[i * n + j] = 1.0;
        }
    }
    let shape = [samples.len(), n];
    Ok((
        Tensor::from_data(TensorData::new(ids, shape), device),
        Tensor::from_data(TensorData::new(mask, shape), device),
    ))
}

/// What an on-policy checkpoint's `trainer_state.json` holds besides the model and
/// optimizer files (`trainer/`): enough to continue exactly (`--resume`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OnPolicyState {
    /// The algorithm that wrote it (`ppo`, `grpo`, ...).
    pub algorithm: String,
    /// The last completed iteration.
    pub iteration: usize,
    /// The KL controller's state (empty for algorithms without one).
    #[serde(default)]
    pub kl_state: Vec<f64>,
    /// The training RNG (sampling, shuffling).
    pub rng: crate::trainer::RngState,
    /// The position in the shuffled train prompts.
    pub sampler: PromptSampler,
    /// Bad steps the guard skipped so far (`guard.skip_nonfinite` is a budget per run).
    #[serde(default)]
    pub guard_skipped: usize,
}

impl OnPolicyState {
    /// The state of `algorithm` after `iteration` (or optimizer step): the RNG's position
    /// and the sampler's, no KL controller state (see [`OnPolicyState::with_kl_state`]).
    pub fn new(algorithm: &str, iteration: usize, rng: &ChaCha8Rng, sampler: &PromptSampler) -> Self {
        OnPolicyState {
            algorithm: algorithm.to_string(),
            iteration,
            kl_state: Vec::new(),
            rng: crate::trainer::RngState::of(rng),
            sampler: sampler.clone(),
            guard_skipped: 0,
        }
    }

    /// The same state with the KL controller's state (PPO and the algorithms on its loop).
    pub fn with_kl_state(self, kl_state: Vec<f64>) -> Self {
        OnPolicyState { kl_state, ..self }
    }

    /// Reads the state of the checkpoint `dir` of `iteration`, checking that `algorithm`
    /// wrote it over `n_train` train prompts.
    pub fn read(dir: &std::path::Path, algorithm: &str, iteration: usize, n_train: usize) -> Result<Self, PluginError> {
        let file = dir.join("trainer_state.json");
        let refused = |message: String| AlgorithmError::Checkpoint { path: file.display().to_string(), message };
        let text = std::fs::read_to_string(&file).map_err(|e| AlgorithmError::file(&file, e))?;
        let state: OnPolicyState =
            serde_json::from_str(&text).map_err(|e| refused(format!("not a tril on-policy trainer state: {e}")))?;
        if state.algorithm != algorithm {
            let message = format!("written by `{}`, but this run's algorithm is `{algorithm}`", state.algorithm);
            return Err(refused(message).into());
        }
        if state.iteration != iteration {
            return Err(refused(format!("holds iteration {}, expected {iteration}", state.iteration)).into());
        }
        // A data-parallel run's checkpoint holds rank 0's sampler: all prompts (loops that
        // shard each batch) or its share (rollout loops, see `PromptSampler::for_replica`).
        let world = tril_core::parallel::world();
        if state.sampler.len() != n_train && (world == 1 || state.sampler.len() != n_train.div_ceil(world)) {
            let message = format!(
                "the checkpoint was taken over {} train prompts, this run draws from {n_train}{}; resume with the task and `devices` the run had",
                state.sampler.len(),
                if world > 1 { format!(" ({} per replica over {world} replicas)", n_train.div_ceil(world)) } else { String::new() }
            );
            return Err(refused(message).into());
        }
        Ok(state)
    }

    /// Writes `checkpoints/iter_<n>/` of the tracker's run atomically: what `export` puts
    /// there (the HF model directories), the exact `trainer/{model,optimizer}` state,
    /// `trainer_state.json` (its presence marks the checkpoint complete; with the guard's
    /// count of skipped steps) and, last, the manifest with the value of the guard's
    /// `checkpoint.best_metric`; then applies `checkpoint.save_total_limit` (see
    /// [`crate::checkpoint`]). Weights holding a NaN/inf are refused before anything is
    /// written; a failed write leaves the previous checkpoints as they were.
    pub fn write_checkpoint<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
        &self,
        tracker: &tril_core::tracker::Tracker,
        guard: &crate::guard::Guard,
        module: &M,
        optim: &crate::trainer::Optim<B, M>,
        export: impl FnOnce(&std::path::Path) -> Result<(), PluginError>,
    ) -> Result<(), PluginError> {
        guard.weights(self.iteration, module)?;
        if !tril_core::parallel::is_primary() {
            return Ok(()); // data-parallel: rank 0 writes the checkpoints
        }
        let keep = guard.keep();
        let state = serde_json::to_string_pretty(&OnPolicyState { guard_skipped: guard.skipped(), ..self.clone() })?;
        let metric = keep.best_metric.as_ref().and_then(|name| {
            let value = tracker.history(name).iter().rev().find(|(x, _)| *x <= self.iteration as f64);
            if value.is_none() {
                tracing::warn!("checkpoint.best_metric `{name}` has not been logged yet; this checkpoint has no value");
            }
            value.map(|&(_, v)| (name.clone(), v))
        });
        let run = tracker.run_dir();
        let rel = format!("checkpoints/iter_{}", self.iteration);
        let dir = run
            .write_dir_atomic::<PluginError>(&rel, |tmp| {
                export(tmp)?;
                std::fs::create_dir_all(tmp.join("trainer"))?;
                crate::trainer::save_module(module, &tmp.join("trainer/model"))?;
                optim.save(&tmp.join("trainer/optimizer"))?;
                tril_core::run_dir::write_atomic(&tmp.join(crate::checkpoint::STATE), state.as_bytes())?;
                crate::checkpoint::write_manifest(tmp, metric).map(|_| ())
            })
            .map_err(|e| AlgorithmError::Checkpoint {
                path: run.join(&rel).display().to_string(),
                message: format!("could not be written ({e}); the previous checkpoints are intact"),
            })?;
        tracing::info!(iteration = self.iteration, dir = %dir.display(), "checkpoint written");
        crate::checkpoint::prune(run.path(), keep)?;
        Ok(())
    }

    /// Restores the newest complete checkpoint of `run_dir` (`--resume`): the state, the
    /// module (parameter ids included), its optimizer with the parameter groups rebuilt
    /// over the restored ids, and a tracker whose logs stop at that iteration.
    pub fn restore<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
        run_dir: &std::path::Path,
        algorithm: &str,
        n_train: usize,
        module: M,
        optimizer: &tril_core::plugin::OptimizerSpec,
        device: &B::Device,
    ) -> Result<(Self, M, crate::trainer::Optim<B, M>, tril_core::tracker::Tracker), PluginError> {
        let (iteration, dir) = crate::checkpoint::latest_checkpoint(run_dir)?;
        let state = OnPolicyState::read(&dir, algorithm, iteration, n_train)?;
        let module = crate::trainer::load_module(module, &dir.join("trainer/model"), device)?;
        let optim =
            crate::trainer::Optim::for_module(optimizer, &module).load(&dir.join("trainer/optimizer"), device)?;
        let tracker = tril_core::tracker::Tracker::resume(tril_core::run_dir::RunDir::open(run_dir)?, iteration)?;
        tracing::info!(iteration, checkpoint = %dir.display(), "resuming after the checkpoint of iteration {iteration}");
        Ok((state, module, optim, tracker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn numbers_tokenizer_round_trips() {
        let tok = numbers_tokenizer().unwrap();
        let ids = tok.encode("3 4 17", false).unwrap();
        assert_eq!(ids, vec![4, 5, 18]);
        assert_eq!(tok.decode_batch(&[vec![4u32, 5, 18, 0, 0]], true).unwrap(), vec!["3 4 17"]);
        assert_eq!(tok.eos_token_id(), Some(0));
    }

    #[test]
    fn action_mask_drops_the_stopping_eos_unless_trained() {
        // Row 0 stops at its third token (EOS = 0, then padding); row 1 never stops; row 2
        // is an EOS alone.
        let output = GenerationOutput {
            tokens: vec![5, 6, 0, 0, 7, 8, 9, 4, 0, 0, 0, 0],
            logprobs: vec![-1.0; 12],
            sampling_logprobs: vec![-1.0; 12],
            mask: vec![1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0],
            batch: 3,
            max_new_tokens: 4,
        };
        let tril = action_mask(&output, Some(0), false);
        assert_eq!(tril, vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let trained = action_mask(&output, Some(0), true);
        assert_eq!(trained, vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        // The terminal reward follows the mask: on the last real token (TRIL), or the EOS.
        type Cpu = tril_core::backend::CpuBackend;
        let dev = Default::default();
        let m = |v: Vec<f32>| Tensor::<Cpu, 2>::from_data(TensorData::new(v, [3, 4]), &dev);
        let terminal = Tensor::<Cpu, 1>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0], [3]), &dev);
        let zeros = || m(vec![0.0; 12]);
        let (rewards, _, _) = crate::onpolicy::ppo::token_rewards(terminal.clone(), m(tril), zeros(), zeros(), 0.1);
        let rewards = rewards.into_data().to_vec::<f32>().unwrap();
        assert_eq!(rewards, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        let (rewards, _, _) = crate::onpolicy::ppo::token_rewards(terminal, m(trained), zeros(), zeros(), 0.1);
        let rewards = rewards.into_data().to_vec::<f32>().unwrap();
        assert_eq!(rewards, vec![0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn prompt_sampler_covers_every_sample_each_pass() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut s = PromptSampler::new(5);
        let mut first: Vec<usize> = s.take(5, &mut rng);
        first.sort_unstable();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.take(7, &mut rng).len(), 7);
    }
}
