//! `synthetic_preference`: a built-in, no-download preference set over the
//! `builtin:numbers` vocabulary, so `dpo`, `kto` and `reward_model` run on a fresh machine
//! with a `builtin:tiny-gpt2` policy.
//!
//! A prompt is a few increasing numbers below `max_number / 2` (`"3 7"`, as `synthetic`);
//! the **chosen** completion keeps counting (`"8 9 10 11"`), the **rejected** one is the
//! same numbers in decreasing order (`"11 10 9 8"`), so the two differ only in what the
//! `increasing_numbers` reward rewards: order. The same pairs serve as
//! - paired preferences ([`Task::preference_pairs`]);
//! - unpaired KTO examples ([`Task::unpaired`]): each pair gives its chosen completion
//!   (desirable) then its rejected one (undesirable);
//! - labelled texts ([`Task::labelled_texts`]): `"{prompt} {completion}"`, label 1
//!   (`increasing`) for chosen and 0 (`decreasing`) for rejected.

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tril_core::config::Section;
use tril_core::config::{Checker, Ranges};
use tril_core::plugin::{BuildCtx, LabelledText, PluginError, PreferencePair, Sample, Split, Task, UnpairedCompletion};

/// Config of the `synthetic_preference` task (`task.args`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticPreferenceConfig {
    /// Seed of the generator (each split draws from its own stream).
    pub seed: u64,
    /// Training pairs.
    pub n_train: usize,
    /// Validation pairs.
    pub n_val: usize,
    /// Test pairs.
    pub n_test: usize,
    /// Numbers are drawn from `0..max_number`; `builtin:numbers` covers 20.
    pub max_number: u32,
    /// Numbers in each prompt (drawn below `max_number / 2`).
    pub prompt_numbers: usize,
    /// Numbers in each completion (at least 2, so that reversing changes the order).
    pub completion_len: usize,
}

impl Ranges for SyntheticPreferenceConfig {
    /// At least one training pair; `max_number` >= 2, `prompt_numbers` in
    /// 1..=`max_number / 2` and `completion_len` in 2..=`max_number - max_number / 2`.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        crate::synthetic::check_numbers(c, self.n_train, self.max_number, self.prompt_numbers)?;
        let room = (self.max_number - self.max_number / 2) as usize;
        let ok = (2..=room).contains(&self.completion_len);
        let message = format!("expected 2..={room} (numbers left above max_number / 2)");
        c.satisfies(ok, "completion_len", self.completion_len, message)
    }
}

impl Default for SyntheticPreferenceConfig {
    fn default() -> Self {
        SyntheticPreferenceConfig {
            seed: 42,
            n_train: 256,
            n_val: 64,
            n_test: 64,
            max_number: 20,
            prompt_numbers: 2,
            completion_len: 4,
        }
    }
}

/// The synthetic preference task.
#[derive(Debug, Clone)]
pub struct SyntheticPreference {
    config: SyntheticPreferenceConfig,
}

impl SyntheticPreference {
    /// A task from its config; fails (naming the key) when pairs cannot be drawn.
    pub fn new(config: SyntheticPreferenceConfig) -> Result<Self, PluginError> {
        let pool = (config.max_number / 2) as usize;
        if config.prompt_numbers == 0 || config.prompt_numbers > pool {
            return Err(format!(
                "task.args.prompt_numbers must be in 1..={pool} (half of max_number = {}), found {}",
                config.max_number, config.prompt_numbers
            )
            .into());
        }
        // The largest prompt number is below max_number / 2, so at least
        // max_number - max_number / 2 numbers remain to continue with.
        let room = (config.max_number - config.max_number / 2) as usize;
        if config.completion_len < 2 || config.completion_len > room {
            return Err(format!(
                "task.args.completion_len must be in 2..={room} (numbers left above max_number / 2), found {}",
                config.completion_len
            )
            .into());
        }
        Ok(SyntheticPreference { config })
    }

    fn pair(&self, split: Split, ix: usize, rng: &mut ChaCha8Rng) -> PreferencePair {
        let c = &self.config;
        let mut prompt: Vec<u32> =
            sample(rng, (c.max_number / 2) as usize, c.prompt_numbers).into_iter().map(|n| n as u32).collect();
        prompt.sort_unstable();
        let last = *prompt.last().expect("prompt_numbers >= 1");
        let chosen: Vec<u32> = (last + 1..).take(c.completion_len).collect();
        let rejected: Vec<u32> = chosen.iter().rev().copied().collect();
        let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        PreferencePair {
            id: format!("synthetic_preference_{}_{ix}", split.name()),
            prompt: join(&prompt),
            chosen: join(&chosen),
            rejected: join(&rejected),
        }
    }
}

impl Task for SyntheticPreference {
    fn samples(&self, split: Split) -> Result<Vec<Sample>, PluginError> {
        let pairs = self.preference_pairs(split)?;
        Ok(pairs.into_iter().map(crate::preference::pair_sample).collect())
    }

    fn preference_pairs(&self, split: Split) -> Result<Vec<PreferencePair>, PluginError> {
        let (n, stream) = match split {
            Split::Train => (self.config.n_train, 0),
            Split::Val => (self.config.n_val, 1),
            Split::Test => (self.config.n_test, 2),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(stream);
        Ok((0..n).map(|ix| self.pair(split, ix, &mut rng)).collect())
    }

    fn unpaired(&self, split: Split) -> Result<Vec<UnpairedCompletion>, PluginError> {
        let pairs = self.preference_pairs(split)?;
        Ok(pairs
            .into_iter()
            .flat_map(|p| {
                [(p.chosen, true, "chosen"), (p.rejected, false, "rejected")].map(|(completion, desirable, tag)| {
                    UnpairedCompletion {
                        id: format!("{}_{tag}", p.id),
                        prompt: p.prompt.clone(),
                        completion,
                        desirable,
                    }
                })
            })
            .collect())
    }

    fn labelled_texts(&self, split: Split) -> Result<Vec<LabelledText>, PluginError> {
        Ok(self
            .unpaired(split)?
            .into_iter()
            .map(|e| LabelledText {
                id: e.id,
                text: format!("{} {}", e.prompt, e.completion),
                label: usize::from(e.desirable),
            })
            .collect())
    }

    fn label_names(&self) -> Vec<String> {
        vec!["decreasing".into(), "increasing".into()]
    }
}

fn build(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Task>, PluginError> {
    Ok(Box::new(SyntheticPreference::new(section.extract()?)?))
}

tril_core::register!(task,
    id: "synthetic_preference",
    doc: "Counting pairs (\"3 7\": chosen \"8 9 10 11\", rejected \"11 10 9 8\"): built-in preference data, no download.",
    config: SyntheticPreferenceConfig,
    build: build);

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(s: &str) -> Vec<u32> {
        s.split(' ').map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn chosen_counts_up_and_rejected_counts_down() {
        let task = SyntheticPreference::new(SyntheticPreferenceConfig::default()).unwrap();
        let pairs = task.preference_pairs(Split::Train).unwrap();
        assert_eq!(pairs.len(), 256);
        for p in &pairs {
            let (prompt, chosen, rejected) = (numbers(&p.prompt), numbers(&p.chosen), numbers(&p.rejected));
            assert!(prompt.windows(2).all(|w| w[0] < w[1]) && prompt[1] < 10, "{}", p.prompt);
            assert_eq!(chosen, (prompt[1] + 1..prompt[1] + 5).collect::<Vec<_>>());
            assert!(rejected.windows(2).all(|w| w[0] > w[1]) && *chosen.last().unwrap() < 20);
        }
        assert_eq!(task.preference_pairs(Split::Val).unwrap(), task.preference_pairs(Split::Val).unwrap());
        assert_ne!(task.preference_pairs(Split::Val).unwrap()[..8], task.preference_pairs(Split::Test).unwrap()[..8]);
    }

    #[test]
    fn unpaired_and_labelled_views_follow_the_pairs() {
        let config = SyntheticPreferenceConfig { n_val: 3, ..Default::default() };
        let task = SyntheticPreference::new(config).unwrap();
        let pairs = task.preference_pairs(Split::Val).unwrap();
        let unpaired = task.unpaired(Split::Val).unwrap();
        assert_eq!(unpaired.len(), 6);
        assert_eq!((unpaired[2].completion.as_str(), unpaired[2].desirable), (pairs[1].chosen.as_str(), true));
        assert_eq!((unpaired[3].completion.as_str(), unpaired[3].desirable), (pairs[1].rejected.as_str(), false));
        let texts = task.labelled_texts(Split::Val).unwrap();
        assert_eq!(texts[1].text, format!("{} {}", pairs[0].prompt, pairs[0].rejected));
        assert_eq!((texts[0].label, texts[1].label), (1, 0));
        assert_eq!(task.label_names()[1], "increasing");
    }

    #[test]
    fn impossible_sizes_are_refused() {
        let err = SyntheticPreference::new(SyntheticPreferenceConfig { completion_len: 11, ..Default::default() });
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("task.args.completion_len must be in 2..=10 (numbers left above max_number / 2), found 11"),
            "{err}"
        );
        let err = SyntheticPreference::new(SyntheticPreferenceConfig { prompt_numbers: 0, ..Default::default() });
        assert!(err.unwrap_err().to_string().contains("task.args.prompt_numbers"));
    }
}
