//! KTO's training loop (`alg=kto`): the offline loop of [`crate::offline`] over the
//! task's unpaired, labelled completions (`unpaired_preference`, `synthetic_preference`),
//! with [`crate::offline::kto::kto_loss`] as TRL's `KTOTrainer` (`loss_type: kto`).
//!
//! Per micro-batch: the policy scores each `prompt + completion + EOS` and each
//! mismatched `prompt + other completion` (the KL pairs); the reference point `z0` is the
//! clamped, detached mean policy-minus-reference log-ratio of the KL pairs
//! ([`crate::offline::kto::kto_kl_reference_point`]).
//!
//! # Logged keys (TRL's)
//! `loss`, `kl`, `rewards/chosen`, `rewards/rejected`, `rewards/margins`,
//! `logps/chosen`, `logps/rejected`, `grad_norm`, `learning_rate`, `epoch`.
//! Output: `checkpoints/iter_<steps>/policy` (with `alg.lora`, PEFT's adapter files; see
//! [`crate::lora`]).
//!
//! # Deviations from TRL
//! - The mismatched completion of each example is fixed once: TRL rotates completions by
//!   one within each batch of the dataset order; tril rotates by one along a seeded
//!   shuffle of the split, so that neighbouring rows sharing a prompt (as
//!   `synthetic_preference`'s chosen/rejected rows) are not paired with each other.
//! - Reference log-probs (of completions and KL pairs) are computed once before training
//!   (TRL's `precompute_ref_log_probs: true`).

use crate::offline::dpo::SequenceReduction;
use crate::offline::kto::{kto_kl_reference_point, kto_loss, KtoArgs};
use crate::offline::{
    completion_logprobs, frozen_logprobs, host, lm_batch, load_lm, loop_args, pad_id, tensor1, tokenize_pair, Lengths,
    Objective, OfflineParts, StatSums, Tokens,
};
use crate::trainer::{run_on_target, Run};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tril_core::config::Section;
use tril_core::plugin::{Algorithm, BuildCtx, PluginError, RunCtx, Split};
use tril_core::tracker::Stats;
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::tokenizer::TextTokenizer;

/// KTO, built and validated from the composed config.
pub struct Kto {
    args: KtoArgs,
    parts: OfflineParts,
}

fn build(args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let args = KtoArgs::extract(args)?;
    Ok(Box::new(Kto { parts: OfflineParts::build(ctx, "kto", loop_args!(args))?, args }))
}

tril_core::register!(algorithm,
    id: "kto",
    doc: "Kahneman-Tversky optimization from unpaired desirable/undesirable completions (TRL's KTOTrainer).",
    config: KtoArgs,
    build: build);

/// A tokenized example, its mismatched KL pair and their reference log-probs.
#[derive(Debug, Clone)]
pub struct EncodedUnpaired {
    tokens: Tokens,
    kl_tokens: Tokens,
    desirable: bool,
    ref_logp: f32,
    ref_kl_logp: f32,
}

struct KtoObjective<B: AutodiffBackend> {
    args: KtoArgs,
    pad: u32,
    device: B::Device,
    config: LmConfig,
    tokenizer: TextTokenizer,
    /// `alg.lora`: the checkpoint holds the adapter.
    lora: Option<tril_models::lora::LoraConfig>,
}

impl<B: AutodiffBackend> Objective<B> for KtoObjective<B> {
    type Model = CausalLm<B>;
    type Example = EncodedUnpaired;

    fn loss(&self, model: &Self::Model, batch: &[&EncodedUnpaired]) -> Result<(Tensor<B, 1>, StatSums), PluginError> {
        let b = batch.len();
        let rows: Vec<&Tokens> = batch.iter().map(|e| &e.tokens).chain(batch.iter().map(|e| &e.kl_tokens)).collect();
        let lm = lm_batch::<B>(&rows, self.pad, &self.device);
        let logps = completion_logprobs(model, &lm, SequenceReduction::Sum); // [2B]
        let (policy, policy_kl) = (logps.clone().narrow(0, 0, b), logps.narrow(0, b, b).detach()); // [B], [B]
        let ref_logps = tensor1::<B>(batch.iter().map(|e| e.ref_logp).collect(), &self.device);
        let ref_kl = tensor1::<B>(batch.iter().map(|e| e.ref_kl_logp).collect(), &self.device);
        let z0 = kto_kl_reference_point(policy_kl, ref_kl); // [1]
        let flags: Vec<bool> = batch.iter().map(|e| e.desirable).collect();
        let desirable = Tensor::<B, 1, Bool>::from_data(TensorData::new(flags.clone(), [b]), &self.device);
        let (loss, stats) = kto_loss(policy.clone(), ref_logps, desirable, z0, &self.args);
        let one = |t: Tensor<B, 1>| f64::from(host(t)[0]);
        let mut sums = StatSums::default();
        sums.add("kl", one(stats.kl) * b as f64, b as f64);
        sums.add("rewards/chosen", one(stats.chosen_sum), one(stats.chosen_count));
        sums.add("rewards/rejected", one(stats.rejected_sum), one(stats.rejected_count));
        for (lp, d) in host(policy.detach()).into_iter().zip(flags) {
            sums.add(if d { "logps/chosen" } else { "logps/rejected" }, f64::from(lp), 1.0);
        }
        Ok((loss, sums))
    }

    fn derive(&self, stats: &mut Stats) {
        if let (Some(c), Some(r)) = (stats.get("rewards/chosen"), stats.get("rewards/rejected")) {
            stats.insert("rewards/margins".into(), c - r);
        }
    }

    fn save(&self, model: &Self::Model, dir: &Path) -> Result<(), PluginError> {
        let lora = self.lora.as_ref();
        crate::lora::save_policy(model, &self.config, lora, &self.args.model_name, dir, &self.tokenizer)
    }

    fn model_dir(&self) -> &'static str {
        "policy"
    }

    fn plotted(&self) -> Vec<&'static str> {
        vec!["loss", "kl", "rewards/margins", "rewards/chosen"]
    }
}

impl Algorithm for Kto {
    fn run(self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError> {
        run_on_target(ctx, *self)
    }
}

impl Run for Kto {
    fn run<B: AutodiffBackend>(self, ctx: &RunCtx<'_>, device: B::Device) -> Result<(), PluginError> {
        let Kto { args, parts } = self;
        let tokenizer = parts.prepare()?;
        let lengths = Lengths { max_length: args.max_length, max_prompt_length: args.max_prompt_length };
        let (policy, reference, config) = load_lm::<B>(
            &args.model_name,
            args.ref_model_name.as_deref(),
            tokenizer.vocab_size(),
            args.seed,
            lengths,
            &device,
        )?;
        let own_reference = args.ref_model_name.is_some();
        let (policy, reference) =
            crate::lora::lora_policy_and_reference(policy, reference, own_reference, parts.lora.as_ref(), &device)?;
        let pad = pad_id(&tokenizer);
        let encode = |split: Split| -> Result<Vec<EncodedUnpaired>, PluginError> {
            let examples = parts.data(split, |t, s| t.unpaired(s))?;
            let n = examples.len();
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(args.seed ^ 0x6b74_6f00));
            let mut partner = vec![0; n];
            for (k, &i) in order.iter().enumerate() {
                partner[i] = order[(k + 1) % n];
            }
            let mut out = Vec::with_capacity(n);
            for (i, e) in examples.iter().enumerate() {
                let other = &examples[partner[i]];
                out.push(EncodedUnpaired {
                    tokens: tokenize_pair(&tokenizer, &e.prompt, &e.completion, lengths, true, &e.id)?,
                    kl_tokens: tokenize_pair(&tokenizer, &e.prompt, &other.completion, lengths, true, &other.id)?,
                    desirable: e.desirable,
                    ref_logp: 0.0,
                    ref_kl_logp: 0.0,
                });
            }
            let score = |rows: Vec<&Tokens>| {
                frozen_logprobs(&reference, &rows, pad, SequenceReduction::Sum, args.eval_batch_size, &device)
            };
            let main = score(out.iter().map(|e| &e.tokens).collect());
            let kl = score(out.iter().map(|e| &e.kl_tokens).collect());
            for ((e, m), k) in out.iter_mut().zip(main).zip(kl) {
                (e.ref_logp, e.ref_kl_logp) = (m, k);
            }
            Ok(out)
        };
        let data = parts.encode_splits(encode)?;
        let lora = parts.lora.clone();
        let objective = KtoObjective { pad, device: device.clone(), config, tokenizer, args, lora };
        parts.fit(ctx, &objective, policy, data, &device)?;
        Ok(())
    }
}
