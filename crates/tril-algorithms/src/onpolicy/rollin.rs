//! Roll-in / roll-out, shared by PPO++, AggreVaTeD, LOLS and D2LOLS (TRIL's
//! `RollinProcessor`, reference/tril.md §3.3).
//!
//! One model *rolls in*: it generates a whole continuation, of which the first `k_i` tokens
//! are kept. The other model *rolls out*: it generates again with those `k_i` tokens forced
//! and continues freely. Per trajectory,
//!
//! ```tex
//! \text{mix}_i \sim \text{Bernoulli}(\beta), \qquad
//! k_i \sim \mathcal{U}\{1, \dots, L_i - 1\} \text{ if } \text{mix}_i \wedge L_i \ge 2, \text{ else } 0, \qquad
//! M_{i,t} = [t < k_i]
//! ```
//! where `L_i` is the roll-in generation's length (EOS included). Which segment the policy
//! learns from and which one trains the critic depends on who rolled in ([`Mode`]):
//!
//! | mode | rolls in | rolls out | policy loss on | value loss on | critic |
//! |---|---|---|---|---|---|
//! | `ppo_pp` (PPO++) | guide | policy | the policy's suffix, `¬M` | `¬M` | the policy's |
//! | `aggrevate` (AggreVaTeD) | policy | guide | the policy's prefix, `M` | the guide's suffix, `¬M` | policy's (`aggrevated`) or the guide critic (LOLS/D2LOLS) |
//!
//! This file holds the pure functions (lengths, masks, forced prefixes), the per-iteration
//! plan an algorithm's [`Schedule`] returns, and the guide settings the PPO loop
//! ([`crate::onpolicy::ppo_run`]) reads. The algorithms are [`crate::onpolicy::ppo_pp`], [`crate::onpolicy::aggrevated`],
//! [`crate::onpolicy::lols`] and [`crate::onpolicy::d2lols`].
//!
//! # Deviations from TRIL
//! - The guide really is the guide: TRIL's `generate(actor_fn="guide")` samples the
//!   *current policy's* weights with the guide's kwargs (reference/tril.md §5.1); here the
//!   guide (the frozen reference, or the `guide_model_name` model) generates.
//! - In LOLS and D2LOLS the AggreVaTeD iterations use AggreVaTeD's masks (policy loss on
//!   the learner's prefix, the guide critic trained on the guide's suffix). TRIL's method
//!   resolution gives them PPO++'s unflipped mask instead (§3.6), which trains the guide
//!   critic on the learner's tokens.
//! - All draws (mix, `k_i`, LOLS's mode) come from the run's one seeded stream, so a run
//!   is reproducible and resumes exactly; TRIL seeds two NumPy generators with
//!   `seed + 123` and `seed + 12345` and leaves sampling unseeded.

use crate::onpolicy::policies::{Beta, GuideArgs};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tril_models::generate::GenerationOutput;

/// Who rolls in, in one iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PPO++: the guide rolls in, the policy rolls out.
    PpoPp,
    /// AggreVaTeD: the policy rolls in, the guide rolls out.
    Aggrevate,
}

impl Mode {
    /// TRIL's `alg_type` tag (`ppo_pp`, `aggrevate`).
    pub fn tag(self) -> &'static str {
        match self {
            Mode::PpoPp => "ppo_pp",
            Mode::Aggrevate => "aggrevate",
        }
    }
}

/// Which critic gives the values and is trained, in one iteration (TRIL's `value_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFn {
    /// The policy's critic.
    Policy,
    /// The guide critic (`create_guide_critic`).
    Guide,
}

/// How one iteration's rollouts are made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterationPlan {
    /// Roll-in mode; `None` is plain PPO (the policy generates everything).
    pub mode: Option<Mode>,
    /// Probability of a roll-in prefix.
    pub beta: f64,
    /// The critic of this iteration.
    pub value_fn: ValueFn,
}

impl IterationPlan {
    /// Plain PPO.
    pub const PLAIN: IterationPlan = IterationPlan { mode: None, beta: 0.0, value_fn: ValueFn::Policy };

    /// `mode` with the policy's critic and `beta` for that mode.
    pub fn with_policy_critic(mode: Mode, beta: &Beta) -> Self {
        IterationPlan { mode: Some(mode), beta: beta.for_mode(mode), value_fn: ValueFn::Policy }
    }
}

/// Chooses each iteration's [`IterationPlan`]: the one thing the four roll-in algorithms
/// do differently. `rng` is the run's seeded stream (checkpointed with it).
pub trait Schedule: Send {
    /// The plan of `iteration` (1-based).
    fn plan(&mut self, iteration: usize, rng: &mut ChaCha8Rng) -> IterationPlan;
}

/// A roll-in algorithm's settings, as the PPO loop reads them.
pub struct Rollin {
    /// The guide args of `alg.policy.args`.
    pub guide: GuideArgs,
    /// The per-iteration plan.
    pub schedule: Box<dyn Schedule>,
}

/// Roll-in lengths `k_i` for roll-in generations of lengths `lengths` (EOS included):
/// with probability `beta` uniform in `1..=L_i - 1` (when `L_i >= 2`), else 0.
pub fn rollin_lengths<R: Rng + ?Sized>(lengths: &[usize], beta: f64, rng: &mut R) -> Vec<usize> {
    lengths
        .iter()
        .map(|&l| {
            let mix = rng.random_bool(beta.clamp(0.0, 1.0));
            if mix && l >= 2 {
                rng.random_range(1..l)
            } else {
                0
            }
        })
        .collect()
}

/// The roll-in mask `M[i, t] = t < k_i`, row-major `[B, N]`.
pub fn rollin_mask(k: &[usize], n: usize) -> Vec<f32> {
    k.iter().flat_map(|&k| (0..n).map(move |t| if t < k { 1.0 } else { 0.0 })).collect()
}

/// The first `k_i` tokens of row `i` of the roll-in generation: what the roll-out forces.
pub fn prefixes(rollin: &GenerationOutput, k: &[usize]) -> Vec<Vec<u32>> {
    k.iter().enumerate().map(|(i, &k)| rollin.row(i)[..k.min(rollin.max_new_tokens)].to_vec()).collect()
}

/// The policy-loss and value-loss masks of a mixed trajectory (row-major `[B, N]`), from
/// its real-token mask and the roll-in mask `M` (see the table in the module docs).
pub fn segment_masks(mode: Option<Mode>, gen_mask: &[f32], rollin: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let prefix: Vec<f32> = gen_mask.iter().zip(rollin).map(|(g, m)| g * m).collect();
    let suffix: Vec<f32> = gen_mask.iter().zip(rollin).map(|(g, m)| g * (1.0 - m)).collect();
    match mode {
        None => (gen_mask.to_vec(), gen_mask.to_vec()),
        Some(Mode::PpoPp) => (suffix.clone(), suffix),
        Some(Mode::Aggrevate) => (prefix, suffix),
    }
}

/// `out` with every row cut or padded (pad id, mask 0) to `width` tokens, so that roll-ins
/// and roll-outs of different `max_new_tokens` stack into one `[B, max_gen_len]` buffer.
pub fn with_width(out: GenerationOutput, width: usize, pad: u32) -> GenerationOutput {
    if out.max_new_tokens == width {
        return out;
    }
    let mut w = GenerationOutput {
        tokens: vec![pad; out.batch * width],
        logprobs: vec![0.0; out.batch * width],
        sampling_logprobs: vec![0.0; out.batch * width],
        mask: vec![0; out.batch * width],
        batch: out.batch,
        max_new_tokens: width,
    };
    let keep = width.min(out.max_new_tokens);
    for i in 0..out.batch {
        let (src, dst) = (i * out.max_new_tokens, i * width);
        w.tokens[dst..dst + keep].copy_from_slice(&out.tokens[src..src + keep]);
        w.logprobs[dst..dst + keep].copy_from_slice(&out.logprobs[src..src + keep]);
        w.sampling_logprobs[dst..dst + keep].copy_from_slice(&out.sampling_logprobs[src..src + keep]);
        w.mask[dst..dst + keep].copy_from_slice(&out.mask[src..src + keep]);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lengths_are_zero_or_inside_the_rollin() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let lengths: Vec<usize> = (0..2000).map(|i| i % 10).collect();
        let k = rollin_lengths(&lengths, 0.6, &mut rng);
        for (&l, &k) in lengths.iter().zip(&k) {
            assert!(k == 0 || (1..l).contains(&k), "L {l} k {k}");
            if l < 2 {
                assert_eq!(k, 0);
            }
        }
        // Among rows that can roll in (L >= 2), about beta of them do.
        let eligible: Vec<usize> = lengths.iter().zip(&k).filter(|(&l, _)| l >= 2).map(|(_, &k)| k).collect();
        let frac = eligible.iter().filter(|&&k| k > 0).count() as f64 / eligible.len() as f64;
        assert!((frac - 0.6).abs() < 0.05, "{frac}");
        // beta 0: nothing; beta 1: every eligible row.
        assert!(rollin_lengths(&lengths, 0.0, &mut rng).iter().all(|&k| k == 0));
        let all = rollin_lengths(&lengths, 1.0, &mut rng);
        assert!(lengths.iter().zip(&all).all(|(&l, &k)| (l >= 2) == (k > 0)));
    }

    #[test]
    fn prefix_length_is_uniform() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let k = rollin_lengths(&vec![5; 40_000], 1.0, &mut rng);
        for v in 1..5 {
            let frac = k.iter().filter(|&&k| k == v).count() as f64 / k.len() as f64;
            assert!((frac - 0.25).abs() < 0.01, "k={v}: {frac}");
        }
    }

    #[test]
    fn masks_per_mode() {
        let m = rollin_mask(&[2, 0], 4);
        assert_eq!(m, vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let gen = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        let (upd, val) = segment_masks(Some(Mode::PpoPp), &gen, &m);
        assert_eq!(upd, vec![0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(val, upd);
        let (upd, val) = segment_masks(Some(Mode::Aggrevate), &gen, &m);
        assert_eq!(upd, vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(val, vec![0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        // Policy and value segments never overlap and together cover every real token.
        let (upd, val) = segment_masks(Some(Mode::Aggrevate), &gen, &m);
        for i in 0..gen.len() {
            assert_eq!(upd[i] + val[i], gen[i]);
        }
        assert_eq!(segment_masks(None, &gen, &m), (gen.to_vec(), gen.to_vec()));
    }

    fn output(rows: &[&[u32]], width: usize) -> GenerationOutput {
        let mut tokens = Vec::new();
        let mut mask = Vec::new();
        for r in rows {
            for t in 0..width {
                tokens.push(r.get(t).copied().unwrap_or(0));
                mask.push(u32::from(t < r.len()));
            }
        }
        let logprobs: Vec<f32> = mask.iter().map(|&m| -(m as f32)).collect();
        let sampling_logprobs = logprobs.clone();
        GenerationOutput { tokens, logprobs, sampling_logprobs, mask, batch: rows.len(), max_new_tokens: width }
    }

    #[test]
    fn prefixes_and_width() {
        let out = output(&[&[5, 6, 7], &[8, 9]], 4);
        assert_eq!(prefixes(&out, &[2, 0]), vec![vec![5, 6], vec![]]);
        let wide = with_width(out.clone(), 6, 0);
        assert_eq!(wide.row(0), &[5, 6, 7, 0, 0, 0]);
        assert_eq!(wide.lengths(), vec![3, 2]);
        let narrow = with_width(out, 2, 0);
        assert_eq!(narrow.row(1), &[8, 9]);
        assert_eq!(narrow.logprobs, vec![-1.0, -1.0, -1.0, -1.0]);
    }
}
