//! Evaluation shared by the on-policy loops: generate on each evaluation split with the
//! task's eval generation settings, compute every metric, and log the corpus scores and
//! predictions (TRIL's `evaluate_on_samples`, reference/tril.md §4.4). Metrics get the
//! policy at hand (`causal_perplexity` scores with it). The loop that calls it decides
//! when, and may add metrics of its own per split (BC's reference NLL).

use crate::onpolicy::{generate_for, lm_logprobs, Generated, PolicyView};
use crate::over_optimization::{EvalScoring, GOLD, KL, PROXY};
use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tril_core::plugin::{Metric, MetricOutput, MetricValue, PluginError, Sample, Split, Task, TextBatch};
use tril_core::progress;
use tril_core::tracker::Tracker;
use tril_models::causal_lm::CausalLm;
use tril_models::generate::GenerationConfig;
use tril_models::tokenizer::TextTokenizer;

/// What one evaluation reads: the policy, how to prompt it, and what to score.
pub struct Evaluation<'a, B: Backend> {
    /// The policy LM (no autodiff).
    pub policy: &'a CausalLm<B>,
    /// Its tokenizer (as metrics that score with the policy use it).
    pub tokenizer: &'a TextTokenizer,
    /// Its context length (`n_positions`).
    pub n_positions: usize,
    /// The prompt tokenizer (padded and truncated to `max_prompt_len`).
    pub prompt_tokenizer: &'a TextTokenizer,
    /// Generation settings (`sampling.eval_generation_kwargs`).
    pub generation: &'a GenerationConfig,
    /// The task whose splits are evaluated.
    pub task: &'a dyn Task,
    /// The metrics (`eval_metrics`).
    pub metrics: &'a mut [Box<dyn Metric>],
    /// Splits evaluated.
    pub splits: &'a [Split],
    /// Prompts per `generate` call.
    pub batch_size: usize,
    /// The run's seed; sampling (if the eval settings sample) uses `seed ^ 0x5eed_0000 ^ iteration`.
    pub seed: u64,
    /// The device.
    pub device: &'a B::Device,
}

impl<B: Backend> Evaluation<'_, B> {
    /// Evaluates at `iteration`: logs `{split}_split_metrics.jsonl` and
    /// `epoch_{iteration}_{split}_split_predictions.json`. Returns the headline keys worth
    /// plotting (`{split}/{metric}`: the task's own metrics first, of the diversity keys
    /// only distinct-2, at most three per split).
    pub fn run(self, iteration: usize, tracker: &mut Tracker) -> Result<Vec<String>, PluginError> {
        self.run_with(iteration, tracker, |_, _, _| Ok(()))
    }

    /// [`Evaluation::run`], also scoring the eval generations with the training (proxy)
    /// and gold rewards and measuring their KL from the initial policy, as `scoring` has
    /// them ([`crate::over_optimization`]: `over_optimization/proxy_reward`,
    /// `over_optimization/gold_reward`, `over_optimization/kl`, per sample and mean; the
    /// proxy's [`tril_core::plugin::RewardFn::diagnostics`] as `over_optimization/proxy_<name>`).
    pub fn run_scored(
        self,
        iteration: usize,
        tracker: &mut Tracker,
        scoring: EvalScoring<'_, B>,
    ) -> Result<Vec<String>, PluginError> {
        self.run_all(iteration, tracker, scoring, |_, _, _| Ok(()))
    }

    /// [`Evaluation::run`], with `extra` adding the loop's own metrics to each split's
    /// output before it is logged.
    pub fn run_with(
        self,
        iteration: usize,
        tracker: &mut Tracker,
        extra: impl FnMut(Split, &[Sample], &mut MetricOutput) -> Result<(), PluginError>,
    ) -> Result<Vec<String>, PluginError> {
        self.run_all(iteration, tracker, EvalScoring::none(), extra)
    }

    fn run_all(
        self,
        iteration: usize,
        tracker: &mut Tracker,
        mut scoring: EvalScoring<'_, B>,
        mut extra: impl FnMut(Split, &[Sample], &mut MetricOutput) -> Result<(), PluginError>,
    ) -> Result<Vec<String>, PluginError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5eed_0000 ^ iteration as u64);
        let view = PolicyView {
            lm: self.policy,
            tokenizer: self.tokenizer,
            n_positions: self.n_positions,
            device: self.device.clone(),
        };
        let mut plotted = Vec::new();
        for &split in self.splits {
            let samples = self.task.samples(split)?;
            let mut texts = Vec::with_capacity(samples.len());
            let mut kls = Vec::with_capacity(samples.len());
            let bar = progress::bar(samples.len() as u64, &format!("eval {}", split.name()));
            for chunk in samples.chunks(self.batch_size.max(1)) {
                let refs: Vec<&Sample> = chunk.iter().collect();
                let gen =
                    generate_for(self.policy, self.prompt_tokenizer, &refs, self.generation, &mut rng, self.device)?;
                if let Some(reference) = scoring.reference {
                    kls.extend(sequence_kl(self.policy, reference, &gen));
                }
                texts.extend(gen.texts);
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            let prompts: Vec<String> = samples.iter().map(|s| s.prompt.clone()).collect();
            let references: Vec<Vec<String>> = samples.iter().map(|s| s.references.clone()).collect();
            let mut merged = MetricOutput::new();
            let bar = progress::bar(self.metrics.len() as u64, &format!("eval {} metrics", split.name()));
            for metric in self.metrics.iter_mut() {
                let batch = TextBatch { prompts: &prompts, generations: &texts, references: &references };
                merged.extend(metric.compute_with_policy(batch, &view)?);
                bar.inc(1);
            }
            bar.finish_and_clear();
            let batch = || TextBatch { prompts: &prompts, generations: &texts, references: &references };
            if let Some(proxy) = scoring.proxy.as_deref_mut() {
                merged.insert(PROXY.into(), per_sample(proxy.score(batch())?));
                // An ensemble's members and spread on the eval generations (the seed's
                // `ensemble_variance` at evaluation).
                for (name, value) in proxy.diagnostics() {
                    merged.insert(
                        format!("over_optimization/proxy_{name}"),
                        MetricValue { per_sample: None, corpus: value },
                    );
                }
            }
            if let Some(gold) = scoring.gold.as_deref_mut() {
                merged.insert(GOLD.into(), per_sample(gold.score(batch())?));
            }
            if scoring.reference.is_some() {
                merged.insert(KL.into(), per_sample(kls));
            }
            extra(split, &samples, &mut merged)?;
            // The tracker logs the summary line ([`tril_core::summary`]) and draws every key.
            // (over_optimization/* have their own plot, plots/over_optimization.png.)
            let headline = merged.keys().filter(|k| {
                !k.starts_with("over_optimization/")
                    && (!k.starts_with("diversity_metrics/") || k.ends_with("/distinct-2"))
            });
            plotted.extend(headline.take(3).map(|k| format!("{}/{k}", split.name())));
            tracker.log_eval(iteration, split, &merged, &samples, &texts)?;
        }
        Ok(plotted)
    }
}

/// Per-sample values and their mean (NaN when empty).
fn per_sample(values: Vec<f64>) -> MetricValue {
    let corpus = values.iter().sum::<f64>() / values.len() as f64;
    MetricValue { per_sample: Some(values), corpus }
}

/// The summed log-ratio of each generation under `policy` and `reference` (the KL estimate
/// of [`crate::over_optimization`]).
///
/// # Shapes
/// `gen.ids`, `gen.mask`: `[B, P + N]`, `gen.gen_mask`: `[B, N]` -> `B` values
fn sequence_kl<B: Backend>(policy: &CausalLm<B>, reference: &CausalLm<B>, gen: &Generated<B>) -> Vec<f64> {
    let n = gen.gen_mask.dims()[1];
    if n == 0 {
        return vec![0.0; gen.ids.dims()[0]];
    }
    let lp = lm_logprobs(policy, gen.ids.clone(), gen.mask.clone(), n); // [B, N]
    let ref_lp = lm_logprobs(reference, gen.ids.clone(), gen.mask.clone(), n); // [B, N]
    let kl = ((lp - ref_lp) * gen.gen_mask.clone()).sum_dim(1); // [B, 1]
    tril_core::ops::host(kl).into_iter().map(f64::from).collect()
}
