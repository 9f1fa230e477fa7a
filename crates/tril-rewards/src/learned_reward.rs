//! `learned_reward`: the probability a sequence classifier gives to one label
//! (TRIL's `LearnedRewardFunction`; IMDB uses `lvwerra/distilbert-imdb`, label 1 =
//! positive). The classifier scores `prompt + generation` (no separator, as TRIL) when
//! `include_prompt_for_eval` is set, else the generation alone; texts are truncated
//! from the left to the model's maximum length.
//!
//! ```tex
//! r(x, y) = \operatorname{softmax}(f_\phi(x \Vert y))_{\ell}
//! ```
//!
//! # Deviations from TRIL
//! - Scoring runs on the run's `device` in batches of `batch_size` (TRIL: one batch).
//! - `is_trainable: true` is refused here; the trainable discriminator belongs to `gail`.

use crate::classifier::TextClassifier;
use crate::error::RewardError;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use tril_core::backend::{infer, InferJob, Target};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, PluginError, RewardFn, TextBatch};

/// Config of `learned_reward` (`reward_fn.args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedRewardConfig {
    /// Hub id or local HF-layout directory of the classifier.
    pub model_name: String,
    /// The label whose probability is the reward.
    pub label_ix: usize,
    /// Score `prompt + generation` (true, TRIL's default) or the generation alone.
    #[serde(default = "yes")]
    pub include_prompt_for_eval: bool,
    /// TRIL's flag for GAIL's discriminator; must be false here.
    #[serde(default)]
    pub is_trainable: bool,
    /// Texts per forward pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

impl Ranges for LearnedRewardConfig {
    /// `batch_size` >= 1; `label_ix` is checked against the classifier's labels when it loads.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("batch_size", self.batch_size, 1)
    }
}

fn yes() -> bool {
    true
}

fn default_batch() -> usize {
    32
}

/// The texts the classifier scores for a batch.
pub fn classifier_inputs(batch: &TextBatch<'_>, include_prompt: bool) -> Vec<String> {
    batch
        .generations
        .iter()
        .zip(batch.prompts)
        .map(|(g, p)| if include_prompt { format!("{p}{g}") } else { g.clone() })
        .collect()
}

/// A classifier reward on backend `B`.
#[derive(Debug)]
pub struct LearnedReward<B: Backend> {
    classifier: TextClassifier<B>,
    config: LearnedRewardConfig,
}

/// Loads the classifier named in `config` on the backend `target` names, as a reward
/// (`key` is the config key of `config`, for errors).
pub fn load_reward(config: LearnedRewardConfig, key: &str, target: Target) -> Result<Box<dyn RewardFn>, PluginError> {
    struct Load<'a>(LearnedRewardConfig, &'a str);
    impl InferJob for Load<'_> {
        type Output = Result<Box<dyn RewardFn>, RewardError>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            Ok(Box::new(LearnedReward::<B>::load(self.0, self.1, &device)?))
        }
    }
    Ok(infer(target, Load(config, key))??)
}

impl<B: Backend> LearnedReward<B> {
    /// Resolves and loads the classifier named in `config` onto `device`.
    pub fn load(config: LearnedRewardConfig, key: &str, device: &B::Device) -> Result<Self, RewardError> {
        if config.is_trainable {
            return Err(RewardError::Config {
                key: format!("{key}.is_trainable"),
                message: "a trainable learned_reward is the `gail` discriminator; set it to false here".into(),
            });
        }
        let dir = tril_models::resolve::model_dir(&config.model_name, &format!("{key}.model_name"))?;
        let classifier = TextClassifier::load(&dir, device)?;
        if config.label_ix >= classifier.num_labels() {
            return Err(RewardError::Config {
                key: format!("{key}.label_ix"),
                message: format!(
                    "label {} does not exist: {} has {} labels",
                    config.label_ix,
                    dir.display(),
                    classifier.num_labels()
                ),
            });
        }
        Ok(LearnedReward { classifier, config })
    }

    /// The reward of every sample of a batch.
    pub fn scores(&self, batch: &TextBatch<'_>) -> Result<Vec<f64>, RewardError> {
        let texts = classifier_inputs(batch, self.config.include_prompt_for_eval);
        let probs = self.classifier.probs(&texts, self.config.batch_size)?;
        Ok(probs.iter().map(|p| f64::from(p[self.config.label_ix])).collect())
    }
}

impl<B: Backend> RewardFn for LearnedReward<B> {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        batch.len()?;
        Ok(self.scores(&batch)?)
    }
}

fn build(section: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    load_reward(section.extract()?, section.key(), ctx.target()?)
}

tril_core::register!(reward_fn,
    id: "learned_reward",
    doc: "Probability of label `label_ix` under a sequence classifier (e.g. lvwerra/distilbert-imdb).",
    config: LearnedRewardConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry check of the `reward_fn` section of `yaml` (what `tril config` runs).
    fn range_error(yaml: &str, key: &str) -> String {
        let root = tril_core::config::parse_yaml(yaml, std::path::Path::new("task/imdb.yaml")).unwrap();
        let config = tril_core::config::Config::new(root, vec![]);
        tril_core::registry::Kind::RewardFn.check(&config.section(key).unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn ranges_are_checked_at_config_time() {
        let yaml = "reward_fn:\n  id: learned_reward\n  args:\n    model_name: x\n    label_ix: 1\n    include_prompt_for_eval: true\n    is_trainable: false\n    batch_size: 0\n";
        let err = range_error(yaml, "reward_fn");
        assert_eq!(err, "reward_fn.args.batch_size: expected at least 1, found 0 (task/imdb.yaml:8)");
    }
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tril-models/tests/fixtures").join(name)
    }

    /// HF's own probabilities for the fixture texts (written by make_fixtures.py).
    fn expected(name: &str) -> (Vec<String>, Vec<f32>, usize) {
        let bytes = std::fs::read(fixture(name).join("expected.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let texts: Vec<String> = serde_json::from_str(&meta.metadata().as_ref().unwrap()["texts"]).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let logits = st.tensor("logits").unwrap();
        let labels = logits.shape()[1];
        let values: Vec<f32> =
            logits.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        (texts, values, labels)
    }

    #[test]
    fn matches_transformers_probabilities_on_the_fixture_classifiers() {
        for name in ["distilbert", "bert"] {
            let (texts, logits, labels) = expected(name);
            let config = LearnedRewardConfig {
                model_name: fixture(name).display().to_string(),
                label_ix: 1,
                include_prompt_for_eval: false,
                is_trainable: false,
                batch_size: 2,
            };
            let mut reward = load_reward(config, "reward_fn.args", Target::default()).unwrap();
            let prompts = vec![String::new(); texts.len()];
            let refs = vec![vec![]; texts.len()];
            let got = reward.score(TextBatch { prompts: &prompts, generations: &texts, references: &refs }).unwrap();
            for (i, g) in got.iter().enumerate() {
                let row = &logits[i * labels..(i + 1) * labels];
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let z: f32 = row.iter().map(|x| (x - max).exp()).sum();
                let p1 = ((row[1] - max).exp() / z) as f64;
                assert!((g - p1).abs() < 1e-4, "{name} text {i}: {g} vs {p1}");
            }
        }
    }

    #[test]
    fn prompt_is_prepended_without_separator() {
        let (p, g, r) = (vec!["The movie".to_string()], vec![" was great".to_string()], vec![vec![]]);
        let batch = TextBatch { prompts: &p, generations: &g, references: &r };
        assert_eq!(classifier_inputs(&batch, true), vec!["The movie was great"]);
        assert_eq!(classifier_inputs(&batch, false), vec![" was great"]);
    }

    #[test]
    fn bad_label_and_trainable_are_refused() {
        let config = LearnedRewardConfig {
            model_name: fixture("distilbert").display().to_string(),
            label_ix: 5,
            include_prompt_for_eval: true,
            is_trainable: false,
            batch_size: 4,
        };
        let err = load_reward(config.clone(), "reward_fn.args", Target::default()).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains("reward_fn.args.label_ix: label 5 does not exist") && err.contains("has 2 labels"),
            "{err}"
        );
        let err = load_reward(
            LearnedRewardConfig { is_trainable: true, label_ix: 1, ..config },
            "reward_fn.args",
            Target::default(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(err.contains("reward_fn.args.is_trainable"), "{err}");
    }
}
