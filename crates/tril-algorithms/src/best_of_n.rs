//! Sampling for `tril best-of-n` (reward-model over-optimization: Gao et al. 2022,
//! <https://arxiv.org/abs/2210.10760>; Coste et al. 2024, <https://arxiv.org/abs/2310.02743>):
//! N completions per prompt from a policy, with the generation settings PPO samples its
//! rollouts with (`alg.policy.args.gen_kwargs`), generic over the backend. The binary
//! scores them with the proxy and gold rewards and applies the unbiased estimator
//! (`tril_rewards::best_of_n`); this file only loads the policy and samples.

use crate::onpolicy::policies::actor_critic_args;
use crate::onpolicy::{build_models, generate_for, generation_config};
use crate::AlgorithmError;
use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tril_core::config::Config;
use tril_core::plugin::{PluginError, PolicySpec, Sample};
use tril_core::progress;
use tril_core::schema::Side;
use tril_models::causal_lm::CausalLm;
use tril_models::generate::GenerationConfig;
use tril_models::tokenizer::TextTokenizer;

/// The key PPO reads its rollout generation settings from (by default it interpolates
/// `${sampling.train_generation_kwargs}`).
pub const GEN_KWARGS_KEY: &str = "alg.policy.args.gen_kwargs";

/// How best-of-n samples: the policy's rollout settings, resolved from the config.
#[derive(Debug, Clone)]
pub struct BonSampling {
    /// Completions per prompt, N >= 1.
    pub n: usize,
    /// Rows (prompt copies) per `generate` call, >= 1.
    pub batch_size: usize,
    /// Seed of the sampling stream (and of `builtin:tiny-gpt2`'s initialisation).
    pub seed: u64,
    /// A log line every this many batches (0: none).
    pub log_every: usize,
    /// Generation settings (sampling on).
    pub generation: GenerationConfig,
    /// Which end of a too-long prompt is cut (`alg.policy.args.prompt_truncation_side`).
    pub truncation: Side,
}

impl BonSampling {
    /// Reads `alg.policy.args` (generation settings, truncation side) and checks that it
    /// samples: greedy settings would give N copies of one completion, refused naming the key.
    /// Also refuses a `max_new_tokens` other than `alg.policy.args.max_gen_len`, as PPO does.
    pub fn from_config(
        config: &Config,
        n: usize,
        batch_size: usize,
        seed: u64,
        log_every: usize,
    ) -> Result<Self, PluginError> {
        if n == 0 {
            return Err(AlgorithmError::config("--n", "expected at least 1 completion per prompt").into());
        }
        if batch_size == 0 {
            return Err(AlgorithmError::config("--batch-size", "expected at least 1 row per batch").into());
        }
        let (args, _guide) = actor_critic_args(config, "alg.policy.args")?;
        let kw = &args.gen_kwargs;
        if !kw.do_sample {
            let message = format!(
                "best-of-n needs sampled completions, but do_sample is false (greedy decoding gives N copies of one \
                 completion); set {GEN_KWARGS_KEY}.do_sample=true (by default it is \
                 ${{sampling.train_generation_kwargs}}: sampling.train_generation_kwargs.do_sample=true)"
            );
            return Err(AlgorithmError::config(format!("{GEN_KWARGS_KEY}.do_sample"), message).into());
        }
        if kw.max_new_tokens != args.max_gen_len {
            let message =
                format!("must equal alg.policy.args.max_gen_len ({}), found {}", args.max_gen_len, kw.max_new_tokens);
            return Err(AlgorithmError::config(format!("{GEN_KWARGS_KEY}.max_new_tokens"), message).into());
        }
        Ok(BonSampling {
            n,
            batch_size,
            seed,
            log_every,
            generation: generation_config(kw),
            truncation: args.prompt_truncation_side,
        })
    }
}

/// One prompt's N completions.
#[derive(Debug, Clone, PartialEq)]
pub struct Completions {
    /// The sample's id.
    pub id: String,
    /// The prompt as the policy saw it (decoded after truncation), as PPO hands it to rewards.
    pub prompt: String,
    /// The sample's references.
    pub references: Vec<String>,
    /// The N completions (decoded, special tokens skipped).
    pub texts: Vec<String>,
}

/// The policy LM `spec` names (`builtin:tiny-gpt2` initialized from `seed`, else an HF
/// directory or cached hub id), loaded as PPO loads it ([`build_models`]), so a seed gives
/// the very policy a PPO run starts from.
pub fn load_policy<B: Backend>(
    spec: &PolicySpec,
    vocab_size: usize,
    seed: u64,
    device: &B::Device,
) -> Result<CausalLm<B>, PluginError> {
    let (model, _reference, _config) = build_models::<B>(spec, "alg.policy.args.model_name", vocab_size, seed, device)?;
    Ok(model.policy)
}

/// Samples `opts.n` completions of every sample's prompt, in batches of `opts.batch_size`
/// rows (each row one copy of a prompt), from a stream seeded with `opts.seed`; a
/// progress bar, and a log line every `opts.log_every` batches.
pub fn sample_completions<B: Backend>(
    lm: &CausalLm<B>,
    prompt_tok: &TextTokenizer,
    samples: &[Sample],
    opts: &BonSampling,
    device: &B::Device,
) -> Result<Vec<Completions>, PluginError> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    // 1. every prompt N times, row r is prompt r / N
    let rows: Vec<&Sample> = samples.iter().flat_map(|s| std::iter::repeat_n(s, opts.n)).collect();
    let mut out: Vec<Completions> = samples
        .iter()
        .map(|s| Completions {
            id: s.id.clone(),
            prompt: String::new(),
            references: s.references.clone(),
            texts: Vec::with_capacity(opts.n),
        })
        .collect();
    let batches = rows.len().div_ceil(opts.batch_size);
    let bar = progress::bar(rows.len() as u64, "best-of-n");
    let started = std::time::Instant::now();
    // 2. generate batch by batch
    for (b, chunk) in rows.chunks(opts.batch_size).enumerate() {
        let gen = generate_for(lm, prompt_tok, chunk, &opts.generation, &mut rng, device)?;
        let first_row = b * opts.batch_size;
        for (i, (prompt, text)) in gen.prompts.into_iter().zip(gen.texts).enumerate() {
            let c = &mut out[(first_row + i) / opts.n];
            c.prompt = prompt;
            c.texts.push(text);
        }
        bar.inc(chunk.len() as u64);
        if opts.log_every > 0 && ((b + 1) % opts.log_every == 0 || b + 1 == batches) {
            let done = (first_row + chunk.len()).min(rows.len());
            tracing::info!(
                "best-of-n: batch {}/{batches}, {done}/{} completions, {:.1} s",
                b + 1,
                rows.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tril_core::backend::CpuBackend;

    /// `cfgs/` composed for `task=synthetic alg=ppo` with `overrides`, as `tril config` does.
    fn synthetic_config(overrides: &[&str]) -> Config {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
        let args = ["task=synthetic", "alg=ppo"].iter().chain(overrides).map(|a| a.to_string()).collect();
        let req = tril_core::config::ComposeRequest { args, env: vec![] };
        tril_core::config::compose(&tril_core::config::DirStore::new(dir), &req).unwrap()
    }

    #[test]
    fn greedy_settings_are_refused_naming_the_key() {
        let config = synthetic_config(&["sampling.train_generation_kwargs.do_sample=false"]);
        let err = BonSampling::from_config(&config, 4, 8, 0, 0).unwrap_err().to_string();
        assert!(err.contains("alg.policy.args.gen_kwargs.do_sample"), "{err}");
        let config = synthetic_config(&[]);
        let ok = BonSampling::from_config(&config, 4, 8, 0, 0).unwrap();
        assert!(ok.generation.do_sample);
        assert_eq!(ok.generation.max_new_tokens, 16);
        assert!(BonSampling::from_config(&config, 0, 8, 0, 0).unwrap_err().to_string().contains("--n"));
    }

    #[test]
    fn every_prompt_gets_n_seeded_completions() {
        let config = synthetic_config(&[]);
        let opts = BonSampling::from_config(&config, 3, 4, 7, 0).unwrap();
        let spec = tril_core::registry::build_policy(&config.section("alg.policy").unwrap(), &config).unwrap();
        let tok = crate::onpolicy::numbers_tokenizer().unwrap();
        let root: tril_core::schema::RootConfig = config.extract("").unwrap();
        let prompt_tok =
            crate::onpolicy::prompt_tokenizer(&tok, Side::Left, Side::Left, root.sampling.max_prompt_len, true);
        let device = Default::default();
        let lm = load_policy::<CpuBackend>(&spec, tok.vocab_size(), 0, &device).unwrap();
        let samples: Vec<Sample> = (0..3)
            .map(|i| Sample {
                id: format!("p{i}"),
                prompt: format!("{i} {}", i + 1),
                references: vec!["5 6 7".into()],
                meta: Default::default(),
            })
            .collect();
        // 9 rows in batches of 4: the batches straddle prompts
        let a = sample_completions(&lm, &prompt_tok, &samples, &opts, &device).unwrap();
        assert_eq!(a.len(), 3);
        for (c, s) in a.iter().zip(&samples) {
            assert_eq!(c.texts.len(), 3);
            assert_eq!((c.id.as_str(), c.prompt.as_str()), (s.id.as_str(), s.prompt.as_str()));
        }
        let distinct: std::collections::BTreeSet<&String> = a.iter().flat_map(|c| &c.texts).collect();
        assert!(distinct.len() > 1, "sampled completions should differ: {a:?}");
        let b = sample_completions(&lm, &prompt_tok, &samples, &opts, &device).unwrap();
        assert_eq!(a, b, "same seed, same completions");
    }
}
