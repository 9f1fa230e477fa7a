//! `synthetic`: the embedded default task. Prompts are a few increasing numbers
//! ("3 7"); the reference continues counting ("8 9 10 ..."). Paired with the
//! `increasing_numbers` reward (RL4LMs' "increasing numbers" task) it needs no
//! download and trains in seconds on a CPU.

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tril_core::config::Section;
use tril_core::config::{Checker, Ranges};
use tril_core::plugin::{BuildCtx, PluginError, Sample, Split, Task};

/// Config of the `synthetic` task (`task.args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Seed of the prompt generator (each split draws from its own stream).
    pub seed: u64,
    /// Training prompts.
    pub n_train: usize,
    /// Validation prompts.
    pub n_val: usize,
    /// Test prompts.
    pub n_test: usize,
    /// Numbers are drawn from `0..max_number`; the vocabulary must cover them.
    pub max_number: u32,
    /// Numbers in each prompt.
    pub prompt_numbers: usize,
    /// Numbers in each reference continuation (fewer near `max_number`).
    pub reference_len: usize,
}

impl Ranges for SyntheticConfig {
    /// At least one training example; `max_number` >= 2 and `prompt_numbers` in
    /// 1..=`max_number / 2` (prompts draw distinct numbers below `max_number / 2`).
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        check_numbers(c, self.n_train, self.max_number, self.prompt_numbers)
    }
}

/// The ranges both synthetic tasks share: `n_train` >= 1, `max_number` >= 2 and
/// `prompt_numbers` in 1..=`max_number / 2`.
pub(crate) fn check_numbers(
    c: &Checker<'_>,
    n_train: usize,
    max_number: u32,
    prompt_numbers: usize,
) -> tril_core::Result<()> {
    c.at_least("n_train", n_train, 1)?;
    c.at_least("max_number", max_number, 2)?;
    let pool = (max_number / 2) as usize;
    let message = format!("expected 1..={pool} (half of max_number = {max_number})");
    c.satisfies((1..=pool).contains(&prompt_numbers), "prompt_numbers", prompt_numbers, message)
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 42,
            n_train: 512,
            n_val: 64,
            n_test: 64,
            max_number: 20,
            prompt_numbers: 2,
            reference_len: 8,
        }
    }
}

/// The synthetic counting task.
#[derive(Debug, Clone)]
pub struct Synthetic {
    config: SyntheticConfig,
}

impl Synthetic {
    /// A task from its config; fails if prompts cannot be drawn.
    pub fn new(config: SyntheticConfig) -> Result<Self, PluginError> {
        let pool = (config.max_number / 2) as usize;
        if config.prompt_numbers == 0 || config.prompt_numbers > pool {
            return Err(format!(
                "task.args.prompt_numbers must be in 1..={pool} (half of max_number = {}), found {}",
                config.max_number, config.prompt_numbers
            )
            .into());
        }
        Ok(Synthetic { config })
    }

    fn sample(&self, split: Split, ix: usize, rng: &mut ChaCha8Rng) -> Sample {
        let c = &self.config;
        let mut prompt: Vec<u32> =
            sample(rng, (c.max_number / 2) as usize, c.prompt_numbers).into_iter().map(|n| n as u32).collect();
        prompt.sort_unstable();
        let last = *prompt.last().expect("prompt_numbers >= 1");
        let reference: Vec<u32> = (last + 1..c.max_number).take(c.reference_len).collect();
        let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        Sample {
            id: format!("synthetic_{}_{ix}", split.name()),
            prompt: join(&prompt),
            references: vec![join(&reference)],
            meta: Default::default(),
        }
    }
}

impl Task for Synthetic {
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError> {
        let (n, stream) = match split {
            Split::Train => (self.config.n_train, 0),
            Split::Val => (self.config.n_val, 1),
            Split::Test => (self.config.n_test, 2),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(stream);
        Ok((0..n).map(|ix| self.sample(split, ix, &mut rng)).collect())
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Task>, PluginError> {
    Ok(Box::new(Synthetic::new(section.extract()?)?))
}

tril_core::register!(task,
    id: "synthetic",
    doc: "Counting prompts (\"3 7\" -> \"8 9 10 ...\"): the embedded default, no download.",
    config: SyntheticConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry check of the `task` section of `yaml` (what `tril config` runs).
    fn range_error(yaml: &str, key: &str) -> String {
        let root = tril_core::config::parse_yaml(yaml, std::path::Path::new("task/synthetic.yaml")).unwrap();
        let config = tril_core::config::Config::new(root, vec![]);
        tril_core::registry::Kind::Task.check(&config.section(key).unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn ranges_are_checked_at_config_time() {
        let err = range_error("task:\n  id: synthetic\n  args:\n    prompt_numbers: 11\n", "task");
        assert_eq!(
            err,
            "task.args.prompt_numbers: expected 1..=10 (half of max_number = 20), found 11 (task/synthetic.yaml:4)"
        );
        let err = range_error(
            "task:\n  id: preference\n  args:\n    datasets: []\n    val_fraction: 0.6\n    test_fraction: 0.4\n",
            "task",
        );
        assert!(err.starts_with("task.args.test_fraction: expected val_fraction + test_fraction < 1"), "{err}");
        assert!(err.ends_with("found 0.4 (task/synthetic.yaml:6)"), "{err}");
        let err = range_error("task:\n  id: imdb\n  args:\n    val_fraction: 1\n", "task");
        assert_eq!(err, "task.args.val_fraction: expected a number in [0, 1), found 1 (task/synthetic.yaml:4)");
    }

    #[test]
    fn prompts_increase_and_references_continue() {
        let task = Synthetic::new(SyntheticConfig { n_train: 50, ..Default::default() }).unwrap();
        let train = task.samples(Split::Train).unwrap();
        assert_eq!(train.len(), 50);
        for s in &train {
            let p: Vec<u32> = s.prompt.split(' ').map(|t| t.parse().unwrap()).collect();
            assert_eq!(p.len(), 2);
            assert!(p[0] < p[1] && p[1] < 10, "{}", s.prompt);
            let r: Vec<u32> = s.references[0].split(' ').map(|t| t.parse().unwrap()).collect();
            assert_eq!(r[0], p[1] + 1);
            assert!(r.windows(2).all(|w| w[1] == w[0] + 1) && *r.last().unwrap() < 20);
        }
    }

    #[test]
    fn seeded_and_splits_differ() {
        let task = Synthetic::new(SyntheticConfig::default()).unwrap();
        assert_eq!(task.samples(Split::Val).unwrap(), task.samples(Split::Val).unwrap());
        assert_ne!(task.samples(Split::Val).unwrap()[..8], task.samples(Split::Test).unwrap()[..8]);
        let other = Synthetic::new(SyntheticConfig { seed: 7, ..Default::default() }).unwrap();
        assert_ne!(other.samples(Split::Train).unwrap()[..8], task.samples(Split::Train).unwrap()[..8]);
    }

    #[test]
    fn impossible_prompt_sizes_are_refused() {
        let err = Synthetic::new(SyntheticConfig { prompt_numbers: 11, ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("task.args.prompt_numbers must be in 1..=10"), "{err}");
    }
}
