//! DPO's training loop (`alg=dpo`): the offline loop of [`crate::offline`] over the
//! paired preferences of the task (`preference`, `synthetic_preference`), with the losses
//! of [`crate::offline::dpo`] (sigmoid/cDPO, IPO, hinge, robust) as TRL's `DPOTrainer`.
//!
//! Per optimizer step: `batch_size` pairs in `grad_accumulation` micro-batches; each
//! micro-batch runs the policy once over its chosen and rejected rows
//! (`prompt + completion + EOS`, truncated as TRL), reduces the completion log-probs per
//! sequence (summed; averaged for IPO) and takes [`crate::offline::dpo::dpo_loss`] against the
//! reference's log-probs.
//!
//! # Logged keys (TRL's)
//! `loss`, `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`, `rewards/margins`,
//! `logps/chosen`, `logps/rejected` (policy), `grad_norm`, `learning_rate`, `epoch`; the
//! same statistics over each evaluation split in `{split}_split_metrics.jsonl`.
//! Output: `checkpoints/iter_<steps>/policy`, an HF directory with its tokenizer (with
//! `alg.lora`, PEFT's adapter files instead; see [`crate::lora`]).
//!
//! # Deviations from TRL
//! - The reference log-probs are computed once before training (TRL's
//!   `precompute_ref_log_probs: true`); the reference is frozen, so the values are the
//!   same, and the reference model is not held during training.
//! - `--resume` is not implemented; the checkpoint holds the policy in HF layout only.

use crate::offline::dpo::{dpo_loss, DpoArgs, SequenceReduction};
use crate::offline::{
    completion_logprobs, frozen_logprobs, host, lm_batch, load_lm, loop_args, pad_id, tensor1, tokenize_pair, Lengths,
    Objective, OfflineParts, StatSums, Tokens,
};
use crate::trainer::{run_on_target, Run};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::path::Path;
use tril_core::config::Section;
use tril_core::plugin::{Algorithm, BuildCtx, PluginError, RunCtx, Split};
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::tokenizer::TextTokenizer;

/// DPO, built and validated from the composed config.
pub struct Dpo {
    args: DpoArgs,
    parts: OfflineParts,
}

fn build(args: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Algorithm>, PluginError> {
    let args = DpoArgs::extract(args)?;
    Ok(Box::new(Dpo { parts: OfflineParts::build(ctx, "dpo", loop_args!(args))?, args }))
}

tril_core::register!(algorithm,
    id: "dpo",
    doc: "Direct preference optimization with sigmoid/cDPO, IPO, hinge and robust losses (TRL's DPOTrainer).",
    config: DpoArgs,
    build: build);

/// A tokenized pair with its reference log-probs.
#[derive(Debug, Clone)]
pub struct EncodedPair {
    chosen: Tokens,
    rejected: Tokens,
    ref_chosen: f32,
    ref_rejected: f32,
}

struct DpoObjective<B: AutodiffBackend> {
    args: DpoArgs,
    pad: u32,
    device: B::Device,
    config: LmConfig,
    tokenizer: TextTokenizer,
    /// `alg.lora`: the checkpoint holds the adapter.
    lora: Option<tril_models::lora::LoraConfig>,
}

impl<B: AutodiffBackend> Objective<B> for DpoObjective<B> {
    type Model = CausalLm<B>;
    type Example = EncodedPair;

    fn loss(&self, model: &Self::Model, batch: &[&EncodedPair]) -> Result<(Tensor<B, 1>, StatSums), PluginError> {
        let b = batch.len();
        let rows: Vec<&Tokens> = batch.iter().map(|p| &p.chosen).chain(batch.iter().map(|p| &p.rejected)).collect();
        let lm = lm_batch::<B>(&rows, self.pad, &self.device);
        let logps = completion_logprobs(model, &lm, self.args.loss_type.reduction()); // [2B]
        let (chosen, rejected) = (logps.clone().narrow(0, 0, b), logps.narrow(0, b, b)); // [B], [B]
        let ref_chosen = tensor1::<B>(batch.iter().map(|p| p.ref_chosen).collect(), &self.device);
        let ref_rejected = tensor1::<B>(batch.iter().map(|p| p.ref_rejected).collect(), &self.device);
        // IPO averages over the completion: its rewards are logged on summed log-ratios (TRL 1.16).
        let lengths = (self.args.loss_type.reduction() == SequenceReduction::Mean).then(|| {
            let n = lm.target_mask.clone().sum_dim(1).reshape([2 * b]); // [2B]
            (n.clone().narrow(0, 0, b), n.narrow(0, b, b))
        });
        let (loss, stats) = dpo_loss(chosen.clone(), rejected.clone(), ref_chosen, ref_rejected, lengths, &self.args);
        let n = b as f64;
        let sum = |t: Tensor<B, 1>| host(t.detach()).iter().map(|&x| f64::from(x)).sum::<f64>();
        let mut sums = StatSums::default();
        sums.add("rewards/chosen", sum(stats.rewards_chosen), n);
        sums.add("rewards/rejected", sum(stats.rewards_rejected), n);
        sums.add("rewards/accuracies", sum(stats.reward_accuracy) * n, n);
        sums.add("rewards/margins", sum(stats.reward_margin) * n, n);
        sums.add("logps/chosen", sum(chosen), n);
        sums.add("logps/rejected", sum(rejected), n);
        Ok((loss, sums))
    }

    fn save(&self, model: &Self::Model, dir: &Path) -> Result<(), PluginError> {
        let lora = self.lora.as_ref();
        crate::lora::save_policy(model, &self.config, lora, &self.args.model_name, dir, &self.tokenizer)
    }

    fn model_dir(&self) -> &'static str {
        "policy"
    }

    fn plotted(&self) -> Vec<&'static str> {
        vec!["loss", "rewards/accuracies", "rewards/margins", "rewards/chosen"]
    }
}

impl Algorithm for Dpo {
    fn run(self: Box<Self>, ctx: &RunCtx<'_>) -> Result<(), PluginError> {
        run_on_target(ctx, *self)
    }
}

impl Run for Dpo {
    fn run<B: AutodiffBackend>(self, ctx: &RunCtx<'_>, device: B::Device) -> Result<(), PluginError> {
        let Dpo { args, parts } = self;
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
        let encode = |split: Split| -> Result<Vec<EncodedPair>, PluginError> {
            let pairs = parts.data(split, |t, s| t.preference_pairs(s))?;
            let mut out = Vec::with_capacity(pairs.len());
            for p in &pairs {
                out.push(EncodedPair {
                    chosen: tokenize_pair(&tokenizer, &p.prompt, &p.chosen, lengths, true, &p.id)?,
                    rejected: tokenize_pair(&tokenizer, &p.prompt, &p.rejected, lengths, true, &p.id)?,
                    ref_chosen: 0.0,
                    ref_rejected: 0.0,
                });
            }
            let score = |rows: Vec<&Tokens>| {
                frozen_logprobs(&reference, &rows, pad, args.loss_type.reduction(), args.eval_batch_size, &device)
            };
            let chosen = score(out.iter().map(|p| &p.chosen).collect());
            let rejected = score(out.iter().map(|p| &p.rejected).collect());
            for ((p, c), r) in out.iter_mut().zip(chosen).zip(rejected) {
                (p.ref_chosen, p.ref_rejected) = (c, r);
            }
            Ok(out)
        };
        let data = parts.encode_splits(encode)?;
        let lora = parts.lora.clone();
        let objective = DpoObjective { pad, device: device.clone(), config, tokenizer, args, lora };
        parts.fit(ctx, &objective, policy, data, &device)?;
        Ok(())
    }
}
