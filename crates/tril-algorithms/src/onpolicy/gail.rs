//! GAIL (`alg=gail`; Ho & Ermon 2016, "Generative Adversarial Imitation Learning",
//! <https://arxiv.org/abs/1606.03476>; TRIL's `gail`, reference/tril.md §3.8): PPO whose
//! terminal reward is a discriminator's probability that a text is the expert's.
//!
//! Each iteration, after the rollouts ([`crate::onpolicy::ppo_run::RewardHook`]):
//! 1. the discriminator `D_φ` (a 2-label GPT-2 sequence classifier) takes `discrim_epochs`
//!    passes over the iteration's trajectories in shuffled minibatches of
//!    `discrim_batch_size`; each minibatch holds the policy's texts `x ‖ y` (label
//!    `1 - ℓ`) and the expert's `x ‖ y*` (prompt + the first reference, label `ℓ =
//!    label_ix`), and takes one clipped optimizer step on [`discriminator_loss`];
//! 2. every trajectory is re-scored without gradients; its terminal reward is
//!    `softmax(D_φ(x ‖ y))_ℓ`, the probability of "expert" ([`expert_probability`]);
//! 3. PPO's loop goes on as usual (KL penalty, GAE, clipped updates).
//!
//! ```tex
//! \max_\phi \; \mathbb{E}_{(x, y^*) \sim \text{data}} \log D_\phi(x \Vert y^*)
//!   + \mathbb{E}_{x,\, y \sim \pi_\theta} \log\big(1 - D_\phi(x \Vert y)\big), \qquad
//! r(x, y) = D_\phi(x \Vert y) = \operatorname{softmax}(f_\phi(x \Vert y))_\ell
//! ```
//! (Ho & Ermon eq. 17 with the labels swapped so that a high reward means "looks like
//! the expert", as TRIL.)
//!
//! # Config
//! `alg.args` holds PPO's keys plus `discrim_batch_size` and `discrim_epochs`
//! ([`GailArgs`]); the `reward_fn` of GAIL's alg section replaces the task's (as TRIL,
//! DESIGN.md's composition rule 4) and is TRIL's trainable `learned_reward`: `id:
//! learned_reward`, `args` ([`DiscriminatorArgs`]: `model_name`, `label_ix`,
//! `include_prompt_for_eval`, `is_trainable: true`, `batch_size`) and `optimizer: {id,
//! args}` (the optimizer registry's `adam`/`adamw`). The task's own reward is therefore
//! not computed during training; its metrics (`eval_metrics`) still score evaluations.
//!
//! # Logged keys (with the rollout metrics)
//! | key | meaning |
//! |---|---|
//! | `discriminator/loss` | mean [`discriminator_loss`] over the step's minibatches |
//! | `discriminator/accuracy` | before the step: fraction of the `2B` policy and expert texts whose more probable label is right |
//! | `discriminator/accuracy_after` | the same after the step |
//! | `discriminator/expert_score` | after the step: mean `D(x ‖ y*)` of the expert texts |
//! | `discriminator/policy_score` | after the step: mean `D(x ‖ y)`, the mean terminal reward |
//! | `discriminator/grad_norm` | mean gradient norm before clipping |
//! | `discriminator/lr` | the discriminator's learning rate |
//!
//! # Checkpoints
//! `checkpoints/iter_<n>/reward_hook/` holds `model.bin` and `optimizer.bin` (the exact
//! Burn state, so `--resume` continues bit for bit) and `discriminator/`, an HF
//! `GPT2ForSequenceClassification` directory (labels `policy`/`expert`) that
//! `learned_reward` loads.
//!
//! # Deviations from TRIL
//! - The discriminator is a GPT-2 classifier (`builtin:tiny-gpt2`, or a GPT-2 directory /
//!   hub id whose LM weights start the trunk; the head starts fresh) on the policy's
//!   tokenizer. TRIL uses `lvwerra/distilbert-imdb` (the task's sentiment model, so its
//!   discriminator starts as a sentiment classifier); BERT-family models cannot be
//!   trained in tril yet.
//! - The loss is cross-entropy over the two logits (= BCE with logits on `l_ℓ - l_{1-ℓ}`);
//!   TRIL passes softmax *probabilities* to `BCEWithLogitsLoss` as if they were logits.
//! - One reward per trajectory; TRIL's `rewards[:, length - 1] = reward` overwrites the
//!   whole column, leaving each trajectory the reward of the last trajectory of its length.
//! - The KL penalty stays in the reward (`alg.args.kl_in_reward: true` by default); TRIL
//!   drops it only through that overwrite. Set `kl_in_reward: false` to drop it.
//! - `discrim_batch_size` is honoured (TRIL does not read it and passes over PPO's buffer
//!   dataloader with PPO's minibatches); the rng is the run's seeded stream.
//! - Each step's gradient is clipped to `alg.args.max_grad_norm`.
//! - The optimizer's values are concrete in `cfgs/alg/gail.yaml`: TRIL's `lr:
//!   ${alg.optimizer_kwargs.lr}` names a key that no longer exists and does not resolve.
//! - Prompt and continuation are tokenized separately and the continuation (generation
//!   or reference) keeps its first `max_gen_len` tokens, as TRIL's `target_ids`; the
//!   prompt is cut on the left to fit the discriminator's context. An empty text reads
//!   as one pad (EOS) token.

use crate::guard::{At, Guard, Verdict};
use crate::offline::reward_model::classification_loss;
use crate::offline::{host, lm_batch, load_lm, pad_id, Lengths, Tokens};
use crate::onpolicy::load_tokenizer;
use crate::onpolicy::ppo::PpoArgs;
use crate::onpolicy::ppo_run::{Ppo, RewardHook, Rollouts};
use crate::trainer::{load_module, save_module, section, Optim};
use crate::validate::ensure;
use crate::AlgorithmError;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tril_core::config::{Checker, Config, Ranges, Section};
use tril_core::ops::clip_grad_norm;
use tril_core::ops::to_f32;
use tril_core::plugin::{Algorithm, BuildCtx, OptimizerSpec, PluginError};
use tril_core::registry;
use tril_core::tracker::Stats;
use tril_models::causal_lm::LmConfig;
use tril_models::heads::{LmClassifier, ScoreHeadConfig};
use tril_models::tokenizer::TextTokenizer;

/// GAIL's keys in `alg.args`, beside PPO's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GailArgs {
    /// Trajectories per discriminator minibatch; each brings its expert text too, so a
    /// minibatch scores twice as many texts (TRIL: 28, unread).
    pub discrim_batch_size: usize,
    /// Passes over the iteration's trajectories per discriminator step (TRIL: 1).
    pub discrim_epochs: usize,
}

impl Ranges for GailArgs {
    /// At least one trajectory per discriminator minibatch and one pass.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.satisfies(self.discrim_epochs > 0, "discrim_epochs", self.discrim_epochs, "expected at least 1 pass")?;
        let batch = self.discrim_batch_size;
        c.satisfies(batch > 0, "discrim_batch_size", batch, "expected at least 1 trajectory")
    }
}

impl Default for GailArgs {
    fn default() -> Self {
        GailArgs { discrim_batch_size: 28, discrim_epochs: 1 }
    }
}

/// What the config check reads from `gail`'s `alg.args`: PPO's keys and GAIL's. (The
/// build splits them and reads each part with `deny_unknown_fields`, so a misspelt key
/// is refused there, naming it.)
#[derive(Debug, Clone, Deserialize)]
pub struct GailAlgArgs {
    /// PPO's keys.
    #[serde(flatten)]
    pub ppo: PpoArgs,
    /// GAIL's keys.
    #[serde(flatten)]
    pub gail: GailArgs,
}

impl Ranges for GailAlgArgs {
    /// PPO's ranges and GAIL's.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        self.ppo.check_ranges(c)?;
        self.gail.check_ranges(c)
    }
}

/// `reward_fn.args`: TRIL's trainable `learned_reward`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscriminatorArgs {
    /// The trunk: `builtin:tiny-gpt2` (fresh, on the policy's tokenizer), or a GPT-2
    /// directory / hub id in the HF cache whose LM weights start the trunk.
    pub model_name: String,
    /// The label meaning "expert" (0 or 1; TRIL: 1); the reward is its probability.
    pub label_ix: usize,
    /// Score `prompt + continuation` (TRIL: true) or the continuation alone.
    #[serde(default = "yes")]
    pub include_prompt_for_eval: bool,
    /// TRIL's flag for a trained reward; `gail` needs `true`.
    #[serde(default)]
    pub is_trainable: bool,
    /// Texts per forward pass when scoring without gradients (TRIL: 32).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

impl Ranges for DiscriminatorArgs {
    /// `label_ix` is 0 or 1; at least one text per forward pass.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        let label = "expected 0 or 1 (the discriminator has 2 labels)";
        c.satisfies(self.label_ix <= 1, "label_ix", self.label_ix, label)?;
        c.satisfies(self.batch_size > 0, "batch_size", self.batch_size, "expected at least 1 text per forward pass")
    }
}

fn yes() -> bool {
    true
}

fn default_batch() -> usize {
    32
}

/// The whole `reward_fn` section (the optimizer is read by its registry entry).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RewardFnSection {
    id: String,
    args: DiscriminatorArgs,
    #[allow(dead_code)]
    optimizer: IgnoredAny,
}

/// The probability of label `label_ix` ("expert"): the discriminator's reward.
///
/// ```tex
/// D(x) = \operatorname{softmax}(l)_\ell
/// ```
///
/// # Shapes
/// `logits`: `[B, 2]` -> `[B]`
pub fn expert_probability<B: Backend>(logits: Tensor<B, 2>, label_ix: usize) -> Tensor<B, 1> {
    let logits = to_f32(logits);
    let [b, _] = logits.dims();
    softmax(logits, 1).slice([0..b, label_ix..label_ix + 1]).reshape([b])
}

/// GAIL's discriminator loss: cross-entropy of the policy's texts against label `1 - ℓ`
/// and the expert's against `ℓ`, averaged over the `2B` texts, and its accuracy.
///
/// ```tex
/// \mathcal{L} = -\frac{1}{2B}\sum_{i=1}^{B}\Big[\log\operatorname{softmax}(l^{E}_i)_\ell
///   + \log\operatorname{softmax}(l^{\pi}_i)_{1-\ell}\Big]
///   = \frac{1}{2B}\sum_i \Big[-\log\sigma(d^{E}_i) - \log\sigma(-d^{\pi}_i)\Big],
///   \quad d = l_\ell - l_{1-\ell}
/// ```
///
/// # Shapes
/// `policy_logits`, `expert_logits`: `[B, 2]` -> loss `[1]`, accuracy `[1]`
pub fn discriminator_loss<B: Backend>(
    policy_logits: Tensor<B, 2>,
    expert_logits: Tensor<B, 2>,
    label_ix: usize,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let policy_logits = to_f32(policy_logits);
    let expert_logits = to_f32(expert_logits);
    let b = policy_logits.dims()[0];
    let device = policy_logits.device();
    let mut labels = vec![(1 - label_ix) as i64; b];
    labels.extend(std::iter::repeat_n(label_ix as i64, b));
    let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [2 * b]), &device); // [2B]
    classification_loss(Tensor::cat(vec![policy_logits, expert_logits], 0), labels)
}

/// The trainable discriminator, GAIL's [`RewardHook`], on autodiff backend `B`.
pub struct Discriminator<B: AutodiffBackend> {
    args: DiscriminatorArgs,
    gail: GailArgs,
    model: LmClassifier<B>,
    optim: Optim<B, LmClassifier<B>>,
    spec: OptimizerSpec,
    config: LmConfig,
    tokenizer: TextTokenizer,
    pad: u32,
    max_gen_len: usize,
    max_grad_norm: f64,
    device: B::Device,
    /// The run's guard (its own skip budget): no discriminator step from a NaN/inf loss.
    guard: Option<Guard>,
}

/// What [`Discriminator::new`] needs besides its args.
#[derive(Clone)]
pub struct DiscriminatorSetup {
    /// The policy's tokenizer (the discriminator reads the same tokens).
    pub tokenizer: TextTokenizer,
    /// The discriminator's optimizer.
    pub spec: OptimizerSpec,
    /// The policy's prompt budget (sets the tiny trunk's context with `max_gen_len`).
    pub max_prompt_len: usize,
    /// Tokens kept of each continuation.
    pub max_gen_len: usize,
    /// Seeds the trunk (built-in) and head initialisation.
    pub seed: u64,
    /// Gradient-norm clip of each step.
    pub max_grad_norm: f64,
}

/// Everything the discriminator is built from, read and checked from the config before
/// the backend is known ([`DiscriminatorPlan::build`] makes the [`Discriminator`]).
#[derive(Clone)]
pub struct DiscriminatorPlan {
    args: DiscriminatorArgs,
    gail: GailArgs,
    setup: DiscriminatorSetup,
}

impl DiscriminatorPlan {
    /// Reads and checks `reward_fn` for `gail` with PPO's `ppo` args.
    pub fn from_config(config: &Config, ppo: &PpoArgs, gail: GailArgs) -> Result<Self, PluginError> {
        plan(config, ppo, gail)
    }

    /// The discriminator on `device`.
    pub fn build<B: AutodiffBackend>(&self, device: &B::Device) -> Result<Discriminator<B>, PluginError> {
        Discriminator::new(self.args.clone(), self.gail.clone(), self.setup.clone(), device)
    }
}

/// Reads and checks `reward_fn` for `gail` with PPO's `ppo` args.
fn plan(config: &Config, ppo: &PpoArgs, gail: GailArgs) -> Result<DiscriminatorPlan, PluginError> {
    let sec = config.optional_section("reward_fn").ok_or_else(|| {
        AlgorithmError::config(
            "reward_fn",
            "gail needs its discriminator here (id: learned_reward, args: {model_name, label_ix, is_trainable: true, \
             ...}, optimizer: {id, args})",
        )
    })?;
    let raw: RewardFnSection = sec.extract()?;
    if raw.id != "learned_reward" {
        let message = format!("gail's discriminator is a trainable `learned_reward`, not `{}`", raw.id);
        return Err(AlgorithmError::config("reward_fn.id", message).into());
    }
    let args_section = section(config, "reward_fn.args")?;
    let a = &raw.args;
    let trainable_msg = "gail trains its discriminator: set it to true (a frozen classifier reward is \
                         `learned_reward` as the task's reward_fn with alg=ppo)";
    ensure(a.is_trainable, &args_section, "is_trainable", trainable_msg)?;
    ensure(a.label_ix <= 1, &args_section, "label_ix", "expected 0 or 1 (the discriminator has 2 labels)")?;
    ensure(a.batch_size > 0, &args_section, "batch_size", "expected at least 1 text per forward pass")?;
    let spec = *registry::build_optimizer(&section(config, "reward_fn.optimizer")?, config)?;
    let root: tril_core::schema::RootConfig = config.extract("")?;
    let tok =
        root.alg.tokenizer.ok_or_else(|| AlgorithmError::config("alg.tokenizer", "gail needs a tokenizer section"))?;
    let setup = DiscriminatorSetup {
        tokenizer: load_tokenizer(&tok.model_name)?,
        spec,
        max_prompt_len: ppo.max_prompt_len,
        max_gen_len: ppo.max_gen_len,
        seed: ppo.seed.wrapping_add(1),
        max_grad_norm: ppo.max_grad_norm,
    };
    Ok(DiscriminatorPlan { args: raw.args, gail, setup })
}

impl<B: AutodiffBackend> Discriminator<B> {
    /// Builds the classifier `args.model_name` names with a fresh 2-label head on `device`.
    pub fn new(
        args: DiscriminatorArgs,
        gail: GailArgs,
        setup: DiscriminatorSetup,
        device: &B::Device,
    ) -> Result<Self, PluginError> {
        let device = device.clone();
        let lengths =
            Lengths { max_length: setup.max_prompt_len + setup.max_gen_len, max_prompt_length: setup.max_prompt_len };
        let name = &args.model_name;
        let (trunk, _, config) = load_lm(name, None, setup.tokenizer.vocab_size(), setup.seed, lengths, &device)
            .map_err(|e| {
                let message = format!("the discriminator `{name}` could not be built: {e}");
                AlgorithmError::config("reward_fn.args.model_name", message)
            })?;
        let score = crate::onpolicy::fresh_score_head::<B>(&ScoreHeadConfig::new(config.d_model(), 2), &device);
        // Materialise the lazily initialised head now, from the seeded stream.
        let _ = score.score.weight.val();
        let model = LmClassifier { transformer: trunk, score };
        Ok(Discriminator {
            optim: Optim::for_module(&setup.spec, &model),
            pad: pad_id(&setup.tokenizer),
            model,
            spec: setup.spec,
            config,
            tokenizer: setup.tokenizer,
            max_gen_len: setup.max_gen_len,
            max_grad_norm: setup.max_grad_norm,
            args,
            gail,
            device,
            guard: None,
        })
    }

    /// The discriminator with the run's guard checking each of its steps.
    pub fn with_guard(self, guard: Guard) -> Self {
        Discriminator { guard: Some(guard), ..self }
    }

    /// One text as the discriminator reads it (see the module docs).
    fn encode(&self, prompt: &str, continuation: &str) -> Result<Tokens, PluginError> {
        let mut completion = self.tokenizer.encode(continuation, false)?;
        completion.truncate(self.max_gen_len.min(self.config.max_positions()));
        let mut prompt =
            if self.args.include_prompt_for_eval { self.tokenizer.encode(prompt, false)? } else { Vec::new() };
        let room = self.config.max_positions() - completion.len();
        if prompt.len() > room {
            prompt.drain(..prompt.len() - room);
        }
        if prompt.is_empty() && completion.is_empty() {
            completion.push(self.pad);
        }
        Ok(Tokens { prompt, completion })
    }

    /// The policy's and the expert's texts of each trajectory.
    fn texts(&self, rollouts: &Rollouts<'_>) -> Result<(Vec<Tokens>, Vec<Tokens>), PluginError> {
        let b = rollouts.prompts.len();
        if rollouts.generations.len() != b || rollouts.references.len() != b {
            let message = format!(
                "{b} prompts, {} generations and {} reference lists",
                rollouts.generations.len(),
                rollouts.references.len()
            );
            return Err(AlgorithmError::training("gail", message).into());
        }
        let mut policy = Vec::with_capacity(b);
        let mut expert = Vec::with_capacity(b);
        for i in 0..b {
            let prompt = &rollouts.prompts[i];
            let reference = rollouts.references[i].first().ok_or_else(|| {
                let message =
                    format!("the prompt {prompt:?} has no reference; the expert's texts are the task's references");
                AlgorithmError::training("gail", message)
            })?;
            policy.push(self.encode(prompt, &rollouts.generations[i])?);
            expert.push(self.encode(prompt, reference)?);
        }
        Ok((policy, expert))
    }

    /// `D(x)` of every row, without gradients, `args.batch_size` rows per pass.
    fn score(&self, rows: &[Tokens]) -> Vec<f32> {
        let model = self.model.valid();
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.args.batch_size.max(1)) {
            let refs: Vec<&Tokens> = chunk.iter().collect();
            let batch = lm_batch::<B::InnerBackend>(&refs, self.pad, &self.device);
            let logits = model.forward(batch.ids, Some(batch.mask)); // [b, 2]
            out.extend(host(expert_probability(logits, self.args.label_ix)));
        }
        out
    }

    /// `discrim_epochs` passes of clipped steps over shuffled minibatches; returns the
    /// mean loss and the mean gradient norm before clipping.
    fn train(
        &mut self,
        iteration: usize,
        policy: &[Tokens],
        expert: &[Tokens],
        rng: &mut ChaCha8Rng,
    ) -> Result<(f64, f64), PluginError> {
        let mut order: Vec<usize> = (0..policy.len()).collect();
        let (mut losses, mut norms) = (Vec::new(), Vec::new());
        let mut step = 0;
        for _ in 0..self.gail.discrim_epochs {
            order.shuffle(rng);
            for mb in order.chunks(self.gail.discrim_batch_size) {
                let m = mb.len();
                let rows: Vec<&Tokens> = mb.iter().map(|&i| &policy[i]).chain(mb.iter().map(|&i| &expert[i])).collect();
                let batch = lm_batch::<B>(&rows, self.pad, &self.device);
                let logits = self.model.forward(batch.ids, Some(batch.mask)); // [2m, 2]
                let (mb_policy, mb_expert) = (logits.clone().narrow(0, 0, m), logits.narrow(0, m, m));
                let (loss, _) = discriminator_loss(mb_policy, mb_expert, self.args.label_ix);
                let value = f64::from(host(loss.clone().detach())[0]);
                let grads = GradientsParams::from_grads(loss.backward(), &self.model);
                let (grads, norm) = clip_grad_norm(&self.model, grads, self.max_grad_norm)?;
                step += 1;
                if let Some(guard) = &mut self.guard {
                    let checked = [("discriminator/loss", value), ("discriminator/grad_norm", norm)];
                    if guard.step(At::update(iteration, step), &checked)? == Verdict::Skip {
                        continue;
                    }
                }
                losses.push(value);
                norms.push(norm);
                self.model = self.optim.step(self.spec.lr, self.model.clone(), grads);
            }
        }
        Ok((mean(&losses), mean(&norms)))
    }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Fraction of texts on the right side of 1/2: expert texts above, policy texts not.
fn accuracy(policy: &[f32], expert: &[f32]) -> f64 {
    let right = policy.iter().filter(|&&p| p <= 0.5).count() + expert.iter().filter(|&&p| p > 0.5).count();
    right as f64 / (policy.len() + expert.len()).max(1) as f64
}

fn mean32(xs: &[f32]) -> f64 {
    mean(&xs.iter().map(|&x| f64::from(x)).collect::<Vec<_>>())
}

impl<B: AutodiffBackend> RewardHook for Discriminator<B> {
    fn rewards(
        &mut self,
        iteration: usize,
        rollouts: &Rollouts<'_>,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Vec<f32>, Stats), PluginError> {
        // 1. the texts, 2. accuracy before the step, 3. the step, 4. re-score.
        let (policy, expert) = self.texts(rollouts)?;
        let before = accuracy(&self.score(&policy), &self.score(&expert));
        let (loss, grad_norm) = self.train(iteration, &policy, &expert, rng)?;
        let rewards = self.score(&policy); // [B]
        let expert_scores = self.score(&expert); // [B]
        let mut stats = Stats::new();
        stats.insert("discriminator/loss".into(), loss);
        stats.insert("discriminator/accuracy".into(), before);
        stats.insert("discriminator/accuracy_after".into(), accuracy(&rewards, &expert_scores));
        stats.insert("discriminator/expert_score".into(), mean32(&expert_scores));
        stats.insert("discriminator/policy_score".into(), mean32(&rewards));
        stats.insert("discriminator/grad_norm".into(), grad_norm);
        stats.insert("discriminator/lr".into(), self.spec.lr);
        Ok((rewards, stats))
    }

    fn save(&self, dir: &Path) -> Result<(), PluginError> {
        std::fs::create_dir_all(dir).map_err(|e| AlgorithmError::io("creating", dir, e))?;
        save_module(&self.model, &dir.join("model"))?;
        self.optim.save(&dir.join("optimizer"))?;
        let mut labels = vec!["policy".to_string(); 2];
        labels[self.args.label_ix] = "expert".into();
        let hf = dir.join("discriminator");
        tril_models::hf::save_lm_classifier(&self.model.valid(), &self.config, &labels, &hf, Some(&self.tokenizer))?;
        Ok(())
    }

    fn restore(&mut self, dir: &Path) -> Result<(), PluginError> {
        let model = load_module(self.model.clone(), &dir.join("model"), &self.device)
            .map_err(|e| AlgorithmError::training("gail", format!("restoring the discriminator: {e}")))?;
        self.optim = Optim::for_module(&self.spec, &model)
            .load(&dir.join("optimizer"), &self.device)
            .map_err(|e| AlgorithmError::training("gail", format!("restoring the discriminator's optimizer: {e}")))?;
        self.model = model;
        Ok(())
    }
}

fn build(_args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let (args, gail): (PpoArgs, GailArgs) =
        crate::trainer::extract_split(ctx.config, "alg.args", &["discrim_batch_size", "discrim_epochs"])?;
    let alg_args = section(ctx.config, "alg.args")?;
    ensure(gail.discrim_epochs > 0, &alg_args, "discrim_epochs", "expected at least 1 pass")?;
    ensure(gail.discrim_batch_size > 0, &alg_args, "discrim_batch_size", "expected at least 1 trajectory")?;
    if ctx.config.extract::<String>("alg.policy.id").is_ok_and(|id| id == "multi_actor_critic") {
        let message = "`multi_actor_critic` is read by the roll-in algorithms; gail uses `actor_critic` or \
                       `actor_critic_shared`";
        return Err(AlgorithmError::config("alg.policy.id", message).into());
    }
    let ppo = Ppo::from_config(ctx.config, "gail", args.clone(), true, false)?;
    let hook = DiscriminatorPlan::from_config(ctx.config, &args, gail)?;
    Ok(Box::new(ppo.with_discriminator(hook)))
}

tril_core::register!(algorithm,
    id: "gail",
    doc: "GAIL: PPO on a GPT-2 discriminator's probability that a text is the expert's, trained each iteration (TRIL's gail).",
    config: GailAlgArgs,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onpolicy::numbers_tokenizer;
    use crate::test_util::{t2, Cpu};
    use rand::{Rng, SeedableRng};
    use tril_core::plugin::OptimizerKind;

    fn v(t: Tensor<Cpu, 1>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// The loss against a second implementation, BCE with logits on `d = l_ℓ - l_{1-ℓ}`
    /// (hand-computed: d^π = (1, -2), d^E = (0.5, 3) for ℓ = 1).
    #[test]
    fn loss_is_bce_on_the_logit_difference() {
        let policy = [0.0, 1.0, 2.0, 0.0]; // d = 1, -2
        let expert = [0.5, 1.0, -1.0, 2.0]; // d = 0.5, 3
        let log_sigmoid = |x: f64| -(1.0 + (-x).exp()).ln();
        let want = -(log_sigmoid(-1.0) + log_sigmoid(2.0) + log_sigmoid(0.5) + log_sigmoid(3.0)) / 4.0;
        let (loss, acc) = discriminator_loss(t2(&policy, 2), t2(&expert, 2), 1);
        assert!((f64::from(v(loss)[0]) - want).abs() < 1e-6, "{want}");
        // Right: policy row 2 (d < 0), expert rows 1 and 2 (d > 0).
        assert!((v(acc)[0] - 0.75).abs() < 1e-6);
        // label_ix 0 flips which logit means "expert": swapping the columns gives the same loss.
        let swap = |x: &[f64]| [x[1], x[0], x[3], x[2]];
        let (flipped, _) = discriminator_loss(t2(&swap(&policy), 2), t2(&swap(&expert), 2), 0);
        assert!((f64::from(v(flipped)[0]) - want).abs() < 1e-6);
        let p = v(expert_probability(t2(&expert, 2), 1));
        assert!((f64::from(p[0]) - 1.0 / (1.0 + (-0.5f64).exp())).abs() < 1e-6, "{p:?}");
    }

    fn discriminator(
        lr: f64,
        batch: usize,
        epochs: usize,
        seed: u64,
    ) -> Discriminator<tril_core::backend::CpuAutodiff> {
        let args = DiscriminatorArgs {
            model_name: "builtin:tiny-gpt2".into(),
            label_ix: 1,
            include_prompt_for_eval: true,
            is_trainable: true,
            batch_size: 16,
        };
        let spec = OptimizerSpec {
            kind: OptimizerKind::AdamW,
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            no_decay: vec![],
        };
        let setup = DiscriminatorSetup {
            tokenizer: numbers_tokenizer().unwrap(),
            spec,
            max_prompt_len: 4,
            max_gen_len: 8,
            seed,
            max_grad_norm: 1.0,
        };
        let gail = GailArgs { discrim_batch_size: batch, discrim_epochs: epochs };
        Discriminator::new(args, gail, setup, &Default::default()).unwrap()
    }

    fn join(xs: impl Iterator<Item = u32>) -> String {
        xs.map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
    }

    /// Synthetic-task texts: the expert continues the prompt's increasing run, the
    /// "policy" emits random numbers.
    fn toy(n: usize, rng: &mut ChaCha8Rng) -> (Vec<String>, Vec<String>, Vec<Vec<String>>) {
        let (mut prompts, mut gens, mut refs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let start = rng.random_range(0..8u32);
            prompts.push(join(start..start + 3));
            gens.push(join((0..8).map(|_| rng.random_range(0..20u32))));
            refs.push(vec![join(start + 3..start + 11)]);
        }
        (prompts, gens, refs)
    }

    #[test]
    fn accuracy_rises_on_separable_texts() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (p, g, r) = toy(32, &mut rng);
        let rollouts = Rollouts { prompts: &p, generations: &g, references: &r };
        let mut d = discriminator(1e-3, 8, 1, 3);
        let (_, first) = d.rewards(1, &rollouts, &mut rng).unwrap();
        let mut last = first.clone();
        for i in 2..=15 {
            last = d.rewards(i, &rollouts, &mut rng).unwrap().1;
        }
        let (before, after) = (first["discriminator/accuracy"], last["discriminator/accuracy_after"]);
        println!(
            "accuracy {before:.3} -> {after:.3}; loss {:.4} -> {:.4}; expert {:.3} / policy {:.3}",
            first["discriminator/loss"],
            last["discriminator/loss"],
            last["discriminator/expert_score"],
            last["discriminator/policy_score"]
        );
        assert!(after >= 0.95 && after - before >= 0.3, "accuracy {before} -> {after}");
        assert!(last["discriminator/loss"] < first["discriminator/loss"]);
        assert!(last["discriminator/expert_score"] > 0.8 && last["discriminator/policy_score"] < 0.2, "{last:?}");
        // Held-out texts of the same two kinds are told apart too.
        let (p2, g2, r2) = toy(16, &mut ChaCha8Rng::seed_from_u64(99));
        let (policy, expert) = d.texts(&Rollouts { prompts: &p2, generations: &g2, references: &r2 }).unwrap();
        let held_out = accuracy(&d.score(&policy), &d.score(&expert));
        println!("held-out accuracy {held_out:.3}");
        assert!(held_out >= 0.9, "{held_out}");
    }

    #[test]
    fn rewards_are_per_trajectory_probabilities() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut p, mut g, mut r) = toy(6, &mut rng);
        // Two identical trajectories get one reward; an empty generation is scored too.
        (p[5], g[5], r[5]) = (p[4].clone(), g[4].clone(), r[4].clone());
        g[3] = String::new();
        let mut d = discriminator(1e-3, 4, 2, 3);
        let (rewards, stats) =
            d.rewards(1, &Rollouts { prompts: &p, generations: &g, references: &r }, &mut rng).unwrap();
        assert_eq!(rewards.len(), 6);
        assert!(rewards.iter().all(|x| (0.0..=1.0).contains(x)), "{rewards:?}");
        assert_eq!(rewards[4], rewards[5]);
        let distinct: std::collections::BTreeSet<u32> = rewards.iter().map(|x| x.to_bits()).collect();
        assert!(distinct.len() >= 5, "different texts, different rewards: {rewards:?}");
        let mean_reward = rewards.iter().map(|&x| f64::from(x)).sum::<f64>() / 6.0;
        assert!((stats["discriminator/policy_score"] - mean_reward).abs() < 1e-6);
        for key in ["loss", "accuracy", "accuracy_after", "expert_score", "grad_norm"] {
            assert!(stats[&format!("discriminator/{key}")].is_finite(), "{key}: {stats:?}");
        }
        // No reference: refused, naming the prompt.
        r[0].clear();
        let err = d.rewards(2, &Rollouts { prompts: &p, generations: &g, references: &r }, &mut rng).unwrap_err();
        assert!(err.to_string().contains("has no reference"), "{err}");
    }

    #[test]
    fn save_and_restore_continue_exactly() {
        let dir = std::env::temp_dir().join(format!("tril-gail-hook-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (p, g, r) = toy(8, &mut rng);
        let rollouts = Rollouts { prompts: &p, generations: &g, references: &r };
        let mut a = discriminator(1e-3, 4, 1, 3);
        a.rewards(1, &rollouts, &mut rng).unwrap();
        a.save(&dir.join("reward_hook")).unwrap();
        assert!(dir.join("reward_hook/discriminator/model.safetensors").is_file());
        // Built from another seed: everything it then does comes from the restored state.
        let mut b = discriminator(1e-3, 4, 1, 4);
        b.restore(&dir.join("reward_hook")).unwrap();
        let mut rng_b = rng.clone();
        let (ra, sa) = a.rewards(2, &rollouts, &mut rng).unwrap();
        let (rb, sb) = b.rewards(2, &rollouts, &mut rng_b).unwrap();
        assert_eq!(ra, rb);
        assert_eq!(sa, sb);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
