//! `ensemble`: PPO against K proxy reward models at once (Coste et al., "Reward Model
//! Ensembles Help Mitigate Overoptimization", ICLR 2024, <https://arxiv.org/abs/2310.02743>).
//! Every member scores the whole batch (batched passes of `batch_size` texts); the K
//! scores of each sample are combined by [`crate::ensemble::combine`]:
//!
//! ```tex
//! (M)   R_{\mathrm{mean}} = \frac{1}{K}\sum_{k} R_k \qquad
//! (WCO) R_{\mathrm{WCO}}  = \min_{k} R_k \qquad
//! (UWO) R_{\mathrm{UWO}}  = \frac{1}{K}\sum_{k} R_k - \lambda\,\frac{1}{K}\sum_{k}\big(R_k - \bar R\big)^2
//! ```
//!
//! `R_k` is member `k`'s **raw scalar reward** (`output: reward`, the paper's setting): `l_1 -
//! l_0` of a 2-label model (what `alg=reward_model` trains), the logit of a 1-label model
//! (TRL's `num_labels=1`); or, with `output: probability`, the softmax probability of label
//! `label_ix` (as `learned_reward`). Texts are `prompt + generation` with no separator when
//! `include_prompt_for_eval` (as `learned_reward`), else the generation alone.
//!
//! # Variance convention
//! The UWO variance is the **population** variance over members (divide by K; 0 for K = 1).
//! The authors' PPO code (`ppo_reward_functions.py`) uses `torch.var`, the **sample**
//! variance (divide by K - 1); their best-of-n code uses `np.var` (population). To reproduce
//! their PPO runs set `uwo_weight = lambda * K / (K - 1)` (0.125 for K = 5, lambda = 0.1).
//!
//! # Config (`reward_fn.args`)
//! | key | default | meaning |
//! |---|---|---|
//! | `model_names` | — | the member directories (or hub ids), K >= 1 |
//! | `model_name` + `seeds` | — | instead of `model_names`: a path with `{seed}`, expanded once per seed |
//! | `objective` | `mean` | `mean`, `wco` or `uwo` |
//! | `uwo_weight` | `0.1` | lambda of UWO, finite and >= 0 |
//! | `output` | `reward` | `reward` (raw scalar) or `probability` (softmax of `label_ix`) |
//! | `label_ix` | `1` | the label of `output: probability` |
//! | `include_prompt_for_eval` | `true` | score `prompt + generation` |
//! | `batch_size` | `32` | texts per forward pass |
//!
//! ```yaml
//! reward_fn:
//!   id: ensemble
//!   args:
//!     model_name: 'runs/rm/reward_models/seed_{seed}'   # alg=reward_model alg.args.seeds=[1,2,3]
//!     seeds: [1, 2, 3]
//!     objective: uwo
//!     uwo_weight: 0.1
//! ```
//!
//! # Logged keys
//! [`RewardFn::diagnostics`] after each batch: `rm_0` .. `rm_{K-1}` (each member's mean score
//! over the batch), `rm_spread` ([`crate::ensemble::EnsembleStats::spread`]) and
//! `rm_combined` (the mean combined reward); the loops log them as `rollout_buffer/<name>`.
//!
//! # Non-finite scores
//! A sample that any member scores NaN or infinite gets that member's (the first such
//! member's) value as its combined reward, so the loops' non-finite guard sees it; the
//! other samples are combined as usual, and `rm_spread` and `rm_combined` average over the
//! finite samples only (`rm_k` averages all of member `k`'s scores, so it is non-finite too).
//!
//! # Deviations from the paper
//! - Members are scored one after another on the run's device, not in parallel.

use crate::classifier::TextClassifier;
use crate::ensemble::{combine, EnsembleConfig, EnsembleObjective, EnsembleStats};
use crate::error::RewardError;
use crate::learned_reward::classifier_inputs;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use tril_core::backend::{infer, InferJob, Target};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, PluginError, RewardFn, TextBatch};

/// What each member contributes as its score `R_k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsembleOutput {
    /// The raw scalar reward: `l_1 - l_0` (2 labels) or `l_0` (1 label). The paper's setting.
    #[default]
    Reward,
    /// The softmax probability of label `label_ix`.
    Probability,
}

/// Config of `ensemble` (`reward_fn.args`): the members as `model_names`, or as
/// `model_name` with `{seed}` plus `seeds` (exactly one form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleRewardConfig {
    /// The members' directories or hub ids (K >= 1); exclusive with `model_name`.
    #[serde(default)]
    pub model_names: Option<Vec<String>>,
    /// A path holding `{seed}`, expanded once per entry of `seeds`; exclusive with `model_names`.
    #[serde(default)]
    pub model_name: Option<String>,
    /// The seeds `{seed}` of `model_name` takes (K >= 1, no repeats).
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    /// `mean`, `wco` or `uwo`.
    #[serde(default)]
    pub objective: EnsembleObjective,
    /// lambda of UWO (population variance; see the module docs), finite and >= 0.
    #[serde(default = "default_uwo_weight")]
    pub uwo_weight: f64,
    /// `reward` (raw scalar reward, default) or `probability` (softmax of `label_ix`).
    #[serde(default)]
    pub output: EnsembleOutput,
    /// The label whose probability is the score when `output: probability`.
    #[serde(default = "default_label")]
    pub label_ix: usize,
    /// Score `prompt + generation` (true, as `learned_reward`) or the generation alone.
    #[serde(default = "yes")]
    pub include_prompt_for_eval: bool,
    /// Texts per forward pass of each member.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_uwo_weight() -> f64 {
    EnsembleConfig::default().uwo_weight
}

fn default_label() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn default_batch() -> usize {
    32
}

/// One member as named in the config: the model name and the config key it comes from
/// (relative to `reward_fn.args`, e.g. `model_names[1]` or `model_name (seed 3)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberName {
    /// Directory or hub id, `{seed}` expanded.
    pub name: String,
    /// The key naming it, for errors.
    pub field: String,
}

impl EnsembleRewardConfig {
    /// The members the config names, in order; on a malformed config, the field at fault
    /// and what was expected.
    fn member_names_at(&self) -> Result<Vec<MemberName>, (&'static str, String)> {
        match (&self.model_names, &self.model_name, &self.seeds) {
            (Some(_), Some(_), _) => Err((
                "model_name",
                "give the members either as model_names: [dir, ...] or as model_name with {seed} plus seeds, \
                 not both"
                    .into(),
            )),
            (Some(_), None, Some(_)) => {
                Err(("seeds", "seeds expands {seed} in model_name; with model_names list every member instead".into()))
            }
            (Some(names), None, None) => match names.is_empty() {
                true => Err(("model_names", "expected at least one reward model".into())),
                false => Ok(names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| MemberName { name: n.clone(), field: format!("model_names[{i}]") })
                    .collect()),
            },
            (None, Some(_), None) => Err((
                "seeds",
                "model_name names one member per seed: give seeds: [s1, s2, ...] (or list the members as \
                 model_names)"
                    .into(),
            )),
            (None, Some(template), Some(seeds)) => {
                if !template.contains("{seed}") {
                    return Err(("model_name", format!("`{template}` has no `{{seed}}` for seeds to fill in")));
                }
                if seeds.is_empty() {
                    return Err(("seeds", "expected at least one seed".into()));
                }
                if let Some((i, s)) = seeds.iter().enumerate().find(|(i, s)| seeds[..*i].contains(s)) {
                    return Err(("seeds", format!("seed {s} appears twice (again at index {i})")));
                }
                Ok(seeds
                    .iter()
                    .map(|s| MemberName {
                        name: template.replace("{seed}", &s.to_string()),
                        field: format!("model_name (seed {s})"),
                    })
                    .collect())
            }
            (None, None, _) => Err((
                "model_names",
                "no members: give model_names: [dir, ...] or model_name: path/with/{seed} plus seeds: [...]".into(),
            )),
        }
    }

    /// The members the config names, `{seed}` expanded; errors name `key.<field>`
    /// (`key` is this config's key, e.g. `reward_fn.args`).
    pub fn member_names(&self, key: &str) -> Result<Vec<MemberName>, RewardError> {
        self.member_names_at()
            .map_err(|(field, message)| RewardError::Config { key: format!("{key}.{field}"), message })
    }

    /// The combination settings.
    pub fn ensemble(&self) -> EnsembleConfig {
        EnsembleConfig { objective: self.objective, uwo_weight: self.uwo_weight }
    }
}

impl Ranges for EnsembleRewardConfig {
    /// The member forms (exactly one; `{seed}` present with `seeds`; K >= 1), `uwo_weight`
    /// finite and >= 0, `batch_size` >= 1. Labels are checked when the members load.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        self.member_names_at().map_err(|(field, message)| c.invalid(field, message))?;
        c.finite("uwo_weight", self.uwo_weight)?;
        c.non_negative("uwo_weight", self.uwo_weight)?;
        c.at_least("batch_size", self.batch_size, 1)
    }
}

/// An ensemble of K classifiers on backend `B`, each with its own model and tokenizer.
#[derive(Debug)]
pub struct EnsembleReward<B: Backend> {
    members: Vec<TextClassifier<B>>,
    config: EnsembleRewardConfig,
    last: Vec<(String, f64)>,
}

/// Loads every member named in `config` on the backend `target` names, as a reward
/// (`key` is the config key of `config`, for errors).
pub fn load_ensemble(
    config: EnsembleRewardConfig,
    key: &str,
    target: Target,
) -> Result<Box<dyn RewardFn>, PluginError> {
    struct Load<'a>(EnsembleRewardConfig, &'a str);
    impl InferJob for Load<'_> {
        type Output = Result<Box<dyn RewardFn>, RewardError>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            Ok(Box::new(EnsembleReward::<B>::load(self.0, self.1, &device)?))
        }
    }
    Ok(infer(target, Load(config, key))??)
}

impl<B: Backend> EnsembleReward<B> {
    /// Checks `config` and loads its members onto `device`; an error names the member's
    /// key (`reward_fn.args.model_names[i]`, or `model_name (seed s)` with the expanded path).
    pub fn load(config: EnsembleRewardConfig, key: &str, device: &B::Device) -> Result<Self, RewardError> {
        config.ensemble().validate().map_err(|e| match e {
            RewardError::Config { key: field, message } => {
                RewardError::Config { key: format!("{key}.{field}"), message }
            }
            other => RewardError::WithKey { key: key.into(), source: Box::new(other) },
        })?;
        if config.batch_size == 0 {
            return Err(RewardError::Config {
                key: format!("{key}.batch_size"),
                message: "expected at least 1".into(),
            });
        }
        let mut members = Vec::new();
        for member in config.member_names(key)? {
            let field = format!("{key}.{}", member.field);
            let dir = tril_models::resolve::model_dir(&member.name, &field)?;
            let with_key = |e: RewardError| RewardError::WithKey {
                key: format!("{field} = {}", member.name),
                source: Box::new(e),
            };
            let classifier = TextClassifier::<B>::load(&dir, device).map_err(with_key)?;
            match config.output {
                EnsembleOutput::Reward => classifier.check_scalar().map_err(with_key)?,
                EnsembleOutput::Probability => check_probability_label(&classifier, &config, key)?,
            }
            members.push(classifier);
        }
        Ok(EnsembleReward { members, config, last: Vec::new() })
    }

    /// Number of members, K.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Each member's scores of a batch, `[K, N]`.
    pub fn member_scores(&self, batch: &TextBatch<'_>) -> Result<Vec<Vec<f64>>, RewardError> {
        let texts = classifier_inputs(batch, self.config.include_prompt_for_eval);
        let size = self.config.batch_size;
        self.members
            .iter()
            .map(|m| match self.config.output {
                EnsembleOutput::Reward => Ok(m.rewards(&texts, size)?.into_iter().map(f64::from).collect()),
                EnsembleOutput::Probability => {
                    Ok(m.probs(&texts, size)?.iter().map(|p| f64::from(p[self.config.label_ix])).collect())
                }
            })
            .collect()
    }
}

/// `label_ix` must exist, and a 1-label model's probability is always 1.
fn check_probability_label<B: Backend>(
    classifier: &TextClassifier<B>,
    config: &EnsembleRewardConfig,
    key: &str,
) -> Result<(), RewardError> {
    let labels = classifier.num_labels();
    let message = match labels {
        1 => format!("{} has 1 label, whose probability is always 1; use output: reward", classifier.dir().display()),
        _ if config.label_ix >= labels => {
            format!("label {} does not exist: {} has {labels} labels", config.label_ix, classifier.dir().display())
        }
        _ => return Ok(()),
    };
    Err(RewardError::Config { key: format!("{key}.label_ix"), message })
}

/// [`combine`] with non-finite scores passed through: a sample that any member scores
/// non-finite gets the first such score as its combined value; the rest are combined as
/// usual and the stats cover them only. `scores`: `[K, N]`, K >= 1 -> `[N]`.
pub fn combine_passing_non_finite(
    scores: &[Vec<f64>],
    cfg: &EnsembleConfig,
) -> Result<(Vec<f64>, EnsembleStats), RewardError> {
    let n = scores.first().map_or(0, Vec::len);
    if scores.iter().any(|m| m.len() != n) || scores.iter().flatten().all(|x| x.is_finite()) {
        return combine(scores, cfg); // the shape errors, or the plain case
    }
    let bad: Vec<Option<f64>> = (0..n).map(|i| scores.iter().map(|m| m[i]).find(|x| !x.is_finite())).collect();
    let keep: Vec<usize> = (0..n).filter(|&i| bad[i].is_none()).collect();
    let finite: Vec<Vec<f64>> = scores.iter().map(|m| keep.iter().map(|&i| m[i]).collect()).collect();
    let (combined, stats) = combine(&finite, cfg)?;
    let mut out: Vec<f64> = bad.iter().map(|b| b.unwrap_or(0.0)).collect();
    for (&i, v) in keep.iter().zip(combined) {
        out[i] = v;
    }
    Ok((out, stats))
}

fn mean_of(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

impl<B: Backend> RewardFn for EnsembleReward<B> {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        let n = batch.len()?;
        self.last.clear();
        let scores = self.member_scores(&batch)?; // [K, N]
        let (combined, stats) = combine_passing_non_finite(&scores, &self.config.ensemble())?; // [N]
        if n > 0 {
            self.last.extend(scores.iter().enumerate().map(|(k, s)| (format!("rm_{k}"), mean_of(s))));
            self.last.push(("rm_spread".into(), stats.spread));
            let finite: Vec<f64> = combined.iter().copied().filter(|x| x.is_finite()).collect();
            if !finite.is_empty() {
                self.last.push(("rm_combined".into(), mean_of(&finite)));
            }
        }
        Ok(combined)
    }

    fn diagnostics(&self) -> Vec<(String, f64)> {
        self.last.clone()
    }
}

fn build(section: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    load_ensemble(section.extract()?, section.key(), ctx.target()?)
}

tril_core::register!(reward_fn,
    id: "ensemble",
    doc: "Ensemble of K reward models combined by mean, wco (min) or uwo (mean - lambda * variance) (Coste et al. 2024).",
    config: EnsembleRewardConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, Tensor, TensorData};
    use std::path::{Path, PathBuf};
    use tril_models::causal_lm::LmConfig;
    use tril_models::gpt2::Gpt2Config;
    use tril_models::heads::{LmClassifier, ScoreHeadConfig};
    use tril_models::tokenizer::TextTokenizer;

    type Cpu = tril_core::backend::CpuBackend;

    fn tokenizer() -> TextTokenizer {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tril-models/tests/fixtures/gpt2");
        TextTokenizer::from_dir(&dir).unwrap()
    }

    const PROMPTS: [&str; 4] = ["the movie ", "a film ", "it was ", "we saw "];
    const GENERATIONS: [&str; 4] = ["was good", "was bad and long", "fine", "the best thing"];

    /// Samples of the tests: prompts, generations and (empty) references.
    fn batch_parts() -> (Vec<String>, Vec<String>, Vec<Vec<String>>) {
        (PROMPTS.map(String::from).to_vec(), GENERATIONS.map(String::from).to_vec(), vec![Vec::new(); 4])
    }

    /// A random tiny GPT-2 classifier with `labels` labels saved to `dir`; returns its logits
    /// of each `prompt + generation`, computed one text at a time on the in-memory model.
    fn member(dir: &Path, labels: usize) -> Vec<Vec<f32>> {
        let device = Default::default();
        let config = LmConfig::from(Gpt2Config::new(384, 32, 8, 1, 2));
        let model = LmClassifier::<Cpu> {
            transformer: config.init(&device),
            score: ScoreHeadConfig::new(8, labels).init(&device),
        };
        let tok = tokenizer();
        let logits: Vec<Vec<f32>> = PROMPTS
            .iter()
            .zip(GENERATIONS)
            .map(|(p, g)| {
                let ids: Vec<i64> = tok.encode(&format!("{p}{g}"), false).unwrap().into_iter().map(i64::from).collect();
                let n = ids.len();
                let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
                model.forward(ids, None).into_data().to_vec::<f32>().unwrap()
            })
            .collect();
        let names: Vec<String> = (0..labels).map(|i| format!("label_{i}")).collect();
        tril_models::hf::save_lm_classifier(&model, &config, &names, dir, Some(&tok)).unwrap();
        logits
    }

    fn config(names: &[&Path], objective: EnsembleObjective) -> EnsembleRewardConfig {
        EnsembleRewardConfig {
            model_names: Some(names.iter().map(|p| p.display().to_string()).collect()),
            model_name: None,
            seeds: None,
            objective,
            uwo_weight: 0.1,
            output: EnsembleOutput::Reward,
            label_ix: 1,
            include_prompt_for_eval: true,
            batch_size: 3,
        }
    }

    fn score(config: EnsembleRewardConfig) -> (Vec<f64>, Vec<(String, f64)>) {
        let mut reward = load_ensemble(config, "reward_fn.args", Target::default()).unwrap();
        let (p, g, r) = batch_parts();
        let out = reward.score(TextBatch { prompts: &p, generations: &g, references: &r }).unwrap();
        (out, reward.diagnostics())
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    /// K = 1: the raw reward is `l_1 - l_0` (2 labels) or `l_0` (1 label) of the model's own
    /// logits, and `output: probability` is the softmax of `label_ix`.
    #[test]
    fn single_member_equals_its_raw_reward() {
        let tmp = tempfile::tempdir().unwrap();
        let (two, one) = (tmp.path().join("two"), tmp.path().join("one"));
        let logits = member(&two, 2);
        let (got, diag) = score(config(&[&two], EnsembleObjective::Uwo));
        let want: Vec<f64> = logits.iter().map(|l| f64::from(l[1] - l[0])).collect();
        assert!(close(&got, &want, 1e-5), "{got:?} vs {want:?}");
        assert_eq!(diag.iter().find(|(k, _)| k == "rm_spread").unwrap().1, 0.0);
        let logits1 = member(&one, 1);
        let (got, _) = score(config(&[&one], EnsembleObjective::Mean));
        let want: Vec<f64> = logits1.iter().map(|l| f64::from(l[0])).collect();
        assert!(close(&got, &want, 1e-5), "{got:?} vs {want:?}");
        let probability =
            EnsembleRewardConfig { output: EnsembleOutput::Probability, ..config(&[&two], Default::default()) };
        let (got, _) = score(probability);
        let want: Vec<f64> = logits.iter().map(|l| 1.0 / (1.0 + f64::from(l[0] - l[1]).exp())).collect();
        assert!(close(&got, &want, 1e-5), "{got:?} vs {want:?}");
    }

    /// K = 3: each objective equals `ensemble::combine` of the members' individual scores,
    /// and the diagnostics are the members' means, the spread and the combined mean.
    #[test]
    fn objectives_equal_combine_of_member_scores() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|k| tmp.path().join(format!("m{k}"))).collect();
        for d in &dirs {
            member(d, 2);
        }
        let paths: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let singles: Vec<Vec<f64>> = paths.iter().map(|p| score(config(&[p], Default::default())).0).collect();
        assert!(singles[0] != singles[1], "random members should differ: {singles:?}");
        for objective in [EnsembleObjective::Mean, EnsembleObjective::Wco, EnsembleObjective::Uwo] {
            let cfg = EnsembleRewardConfig { uwo_weight: 0.5, ..config(&paths, objective) };
            let (want, stats) = combine(&singles, &cfg.ensemble()).unwrap();
            let (got, diag) = score(cfg);
            assert!(close(&got, &want, 1e-12), "{objective:?}: {got:?} vs {want:?}");
            let keys: Vec<&str> = diag.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, ["rm_0", "rm_1", "rm_2", "rm_spread", "rm_combined"]);
            for (k, single) in singles.iter().enumerate() {
                assert!((diag[k].1 - single.iter().sum::<f64>() / 4.0).abs() < 1e-12, "rm_{k}");
            }
            assert!((diag[3].1 - stats.spread).abs() < 1e-12 && stats.spread > 0.0);
            assert!((diag[4].1 - want.iter().sum::<f64>() / 4.0).abs() < 1e-12);
        }
    }

    /// `model_name` + `seeds` expands `{seed}` and loads the same members as `model_names`.
    #[test]
    fn seed_template_expands_to_the_member_paths() {
        let tmp = tempfile::tempdir().unwrap();
        for s in [3, 7] {
            member(&tmp.path().join(format!("rm/seed_{s}")), 2);
        }
        let template = tmp.path().join("rm/seed_{seed}").display().to_string();
        let seeded = EnsembleRewardConfig {
            model_names: None,
            model_name: Some(template),
            seeds: Some(vec![7, 3]),
            ..config(&[], EnsembleObjective::Wco)
        };
        let names = seeded.member_names("reward_fn.args").unwrap();
        let want = [7, 3].map(|s| tmp.path().join(format!("rm/seed_{s}")).display().to_string());
        assert_eq!(names.iter().map(|m| m.name.clone()).collect::<Vec<_>>(), want);
        assert_eq!(names[1].field, "model_name (seed 3)");
        let listed = [7, 3].map(|s| tmp.path().join(format!("rm/seed_{s}")));
        let listed: Vec<&Path> = listed.iter().map(PathBuf::as_path).collect();
        assert_eq!(score(seeded).0, score(config(&listed, EnsembleObjective::Wco)).0);
    }

    /// The registry check (`tril config`) of `args`, as the error text.
    fn check_error(args: &str) -> String {
        let yaml = format!("reward_fn:\n  id: ensemble\n  args:\n{args}");
        let root = tril_core::config::parse_yaml(&yaml, Path::new("task/x.yaml")).unwrap();
        let config = tril_core::config::Config::new(root, vec![]);
        let section = config.section("reward_fn").unwrap();
        tril_core::registry::Kind::RewardFn.check(&section).unwrap_err().to_string()
    }

    #[test]
    fn malformed_configs_name_the_key() {
        let cases = [
            (
                "    model_names: [a]\n    model_name: b/{seed}\n    seeds: [1]\n",
                "reward_fn.args.model_name",
                "not both",
            ),
            ("    model_name: b/seed\n    seeds: [1, 2]\n", "reward_fn.args.model_name", "no `{seed}`"),
            ("    model_name: b/{seed}\n", "reward_fn.args.seeds", "give seeds"),
            ("    model_names: [a]\n    seeds: [1]\n", "reward_fn.args.seeds", "model_names"),
            ("    model_names: []\n", "reward_fn.args.model_names", "at least one"),
            ("    model_name: b/{seed}\n    seeds: []\n", "reward_fn.args.seeds", "at least one seed"),
            ("    model_name: b/{seed}\n    seeds: [1, 2, 1]\n", "reward_fn.args.seeds", "seed 1 appears twice"),
            ("    objective: uwo\n", "reward_fn.args.model_names", "no members"),
            ("    model_names: [a]\n    uwo_weight: -1\n", "reward_fn.args.uwo_weight", ""),
            ("    model_names: [a]\n    batch_size: 0\n", "reward_fn.args.batch_size", ""),
            ("    model_names: [a]\n    objective: min\n", "objective", ""),
            ("    model_names: [a]\n    weights: [1]\n", "weights", ""),
        ];
        for (args, key, what) in cases {
            let err = check_error(args);
            assert!(err.contains(key) && err.contains(what), "{args}: {err}");
        }
    }

    /// Load-time errors: a missing member names its key, a 3-label model its directory, a
    /// probability of a missing label the `label_ix` key.
    #[test]
    fn load_errors_name_the_member() {
        let tmp = tempfile::tempdir().unwrap();
        let (good, three) = (tmp.path().join("good"), tmp.path().join("three"));
        member(&good, 2);
        member(&three, 3);
        let missing = tmp.path().join("missing");
        let err = |cfg: EnsembleRewardConfig| {
            load_ensemble(cfg, "reward_fn.args", Target::default()).map(|_| ()).unwrap_err().to_string()
        };
        let e = err(config(&[&good, &missing], Default::default()));
        assert!(e.contains("reward_fn.args.model_names[1]") && e.contains("missing"), "{e}");
        let e = err(config(&[&good, &three], Default::default()));
        assert!(e.contains("reward_fn.args.model_names[1]") && e.contains("has 3 labels"), "{e}");
        assert!(e.contains(&three.display().to_string()), "{e}");
        let probability = EnsembleRewardConfig {
            output: EnsembleOutput::Probability,
            label_ix: 2,
            ..config(&[&good], Default::default())
        };
        let e = err(probability);
        assert!(e.contains("reward_fn.args.label_ix: label 2 does not exist"), "{e}");
        let e = err(EnsembleRewardConfig { uwo_weight: f64::NAN, ..config(&[&good], Default::default()) });
        assert!(e.starts_with("reward_fn.args.uwo_weight: must be finite"), "{e}");
        let seeded = EnsembleRewardConfig {
            model_names: None,
            model_name: Some(tmp.path().join("s{seed}").display().to_string()),
            seeds: Some(vec![5]),
            ..config(&[], Default::default())
        };
        let e = err(seeded);
        assert!(e.contains("reward_fn.args.model_name (seed 5)") && e.contains("s5"), "{e}");
    }

    /// A non-finite member score is the combined reward of its sample; the rest combine as usual.
    #[test]
    fn non_finite_scores_pass_through() {
        let scores = vec![vec![1.0, f64::NAN, 2.0, 0.0], vec![3.0, 1.0, f64::NEG_INFINITY, 4.0]];
        let cfg = EnsembleConfig { objective: EnsembleObjective::Wco, uwo_weight: 0.1 };
        let (out, stats) = combine_passing_non_finite(&scores, &cfg).unwrap();
        assert_eq!((out[0], out[2], out[3]), (1.0, f64::NEG_INFINITY, 0.0));
        assert!(out[1].is_nan());
        let (_, finite_stats) = combine(&[vec![1.0, 0.0], vec![3.0, 4.0]], &cfg).unwrap();
        assert_eq!(stats, finite_stats);
        let (plain, _) = combine_passing_non_finite(&[vec![1.0], vec![2.0]], &cfg).unwrap();
        assert_eq!(plain, vec![1.0]);
        assert!(combine_passing_non_finite(&[vec![1.0], vec![]], &cfg).is_err());
    }

    #[test]
    fn config_round_trips_with_defaults() {
        let cfg: EnsembleRewardConfig = serde_json::from_str(r#"{"model_names": ["a", "b"]}"#).unwrap();
        assert_eq!(
            (cfg.objective, cfg.uwo_weight, cfg.output, cfg.label_ix, cfg.include_prompt_for_eval, cfg.batch_size),
            (EnsembleObjective::Mean, 0.1, EnsembleOutput::Reward, 1, true, 32)
        );
        let back: EnsembleRewardConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }
}
