//! Beam search for GPT-2: HF `generate(num_beams=k, do_sample=False)` for decoder-only models.
//!
//! Follows `GenerationMixin._beam_search` of transformers 5.23 in its default settings:
//! `length_penalty=1.0`, `early_stopping=False`, `num_return_sequences=1`, one EOS id, with
//! `min_new_tokens` ([`GenerationConfig::min_length`]) masking EOS. Per prompt and step:
//!
//! 1. Each of the `k` running beams adds `log_softmax(logits)` of its next token to its score
//!    (EOS gets `-inf` while fewer than `min_length` new tokens exist). Before the first step
//!    beam 0 has score 0 and the others `-1e9`, so that the `k` beams start out distinct.
//! 2. The `2k` best (beam, token) candidates over all `k * V` are kept, best first.
//! 3. Among the first `k` of them, each that ends in EOS (or reaches `max_new_tokens`) is a
//!    finished hypothesis, scored
//!
//!    ```text
//!    score = sum_t log p(y_t | y_<t, x) / len^alpha
//!    ```
//!
//!    with `len` the number of new tokens, EOS included, and `alpha = length_penalty = 1.0`.
//!    A prompt keeps its `k` best finished hypotheses.
//! 4. The `k` best candidates that did not finish become the running beams; the KV cache rows
//!    are reordered by their parents ([`KvCache::select_rows`]).
//! 5. Early-stop heuristic (`early_stopping=False`): once `k` hypotheses are finished, a prompt
//!    is done when `best running score / (new tokens)^alpha` no longer beats the worst finished
//!    score; a done prompt adds no more hypotheses. Generation stops when every prompt is done
//!    or after `max_new_tokens`.
//!
//! The output row is the best finished hypothesis, padded with the pad id (mask 0) after EOS.
//! Its log-probs are the unmodified `log_softmax` of the model at each chosen token.
//!
//! Scores are summed in f32 as HF does (log-softmax is computed in f64 and rounded to f32), so
//! candidates whose scores are within float rounding of each other may be ordered differently
//! than in PyTorch. Known difference: HF fills finished sequences with
//! `pad_token_id or eos_token_id`, i.e. the EOS when the pad id is 0; tril always uses the pad id.

use std::cmp::Ordering;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{ModelError, Result};
use crate::generate::{check_prompt, int_tensor, GenerationConfig, GenerationOutput, SpecialTokens};
use crate::lm::{KvCache, LanguageModel, LmInput};

/// HF's `length_penalty` default (the exponent `alpha` of the length normalisation).
pub const LENGTH_PENALTY: f64 = 1.0;

/// HF's stand-in for "impossible" scores (initial scores of beams 1.., finished candidates
/// when choosing running beams).
const NEG: f32 = -1.0e9;

/// One partial or finished sequence of new tokens.
#[derive(Debug, Clone, PartialEq)]
struct Hypothesis {
    /// New tokens so far.
    tokens: Vec<u32>,
    /// Unmodified log-prob of each token.
    logprobs: Vec<f32>,
    /// Sum of the (processed) log-probs: the beam score HF accumulates.
    score: f32,
}

impl Hypothesis {
    fn extend(&self, token: u32, logprob: f32, score: f32) -> Self {
        let mut h = self.clone();
        h.tokens.push(token);
        h.logprobs.push(logprob);
        h.score = score;
        h
    }
}

/// The beam state of one prompt.
#[derive(Debug, Clone)]
struct PromptBeams {
    /// `k` running beams, best first.
    running: Vec<Hypothesis>,
    /// At most `k` finished hypotheses with their length-normalised scores, best first.
    finished: Vec<(f32, Hypothesis)>,
    /// The early-stop heuristic holds: no more finished hypotheses are accepted.
    done: bool,
}

impl PromptBeams {
    fn new(k: usize) -> Self {
        let beam = |i| Hypothesis { tokens: Vec::new(), logprobs: Vec::new(), score: if i == 0 { 0.0 } else { NEG } };
        Self { running: (0..k).map(beam).collect(), finished: Vec::new(), done: false }
    }

    /// Insert a finished hypothesis, keeping the `k` best (earlier entries win ties).
    fn add_finished(&mut self, score: f32, hyp: Hypothesis, k: usize) {
        let at = self.finished.iter().position(|(s, _)| *s < score).unwrap_or(self.finished.len());
        if at < k {
            self.finished.insert(at, (score, hyp));
            self.finished.truncate(k);
        }
    }
}

/// What one step needs to know besides the log-probs.
#[derive(Debug, Clone, Copy)]
struct StepRule {
    /// Index of the new token (0-based).
    step: usize,
    /// EOS is masked while `step < min_length`.
    min_length: usize,
    eos: Option<u32>,
    /// This step produces the last allowed token: every candidate finishes.
    last: bool,
    /// `(step + 1)^alpha`.
    length_norm: f32,
}

/// The `n` largest entries of `scores` as `(index, score)`, best first; ties keep the lower
/// index first.
fn top_n(scores: &[f32], n: usize) -> Vec<(usize, f32)> {
    let cmp = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let n = n.min(idx.len());
    if n == 0 {
        return Vec::new();
    }
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, scores[i])).collect()
}

/// `log_softmax` of one row of logits, in f64, rounded to f32.
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + logits.iter().map(|&s| ((s as f64) - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&s| ((s as f64) - lse) as f32).collect()
}

/// One beam-search step of one prompt (HF `_get_top_k_continuations`,
/// `_update_finished_beams`, `_get_running_beams_for_next_iteration` and
/// `_check_early_stop_heuristic`). Returns the parent beam of each new running beam.
///
/// # Shapes
/// - logprobs: `[k, V]` flat, the unmodified log-softmax of each running beam's next token
fn advance(beams: &mut PromptBeams, logprobs: &[f32], vocab: usize, rule: StepRule) -> Vec<usize> {
    let k = beams.running.len();
    let masked_eos = rule.eos.filter(|_| rule.step < rule.min_length).map(|e| e as usize);
    // 1. accumulated scores of every (beam, token)  // [k * V]
    let mut acc = Vec::with_capacity(k * vocab);
    for (i, beam) in beams.running.iter().enumerate() {
        let lp = &logprobs[i * vocab..(i + 1) * vocab];
        acc.extend(
            lp.iter().enumerate().map(|(v, &l)| if Some(v) == masked_eos { f32::NEG_INFINITY } else { l } + beam.score),
        );
    }
    // 2. the 2k best candidates, best first
    let cands = top_n(&acc, 2 * k); // [2k] (flat index, score)
    let hits = |c: usize| rule.last || rule.eos == Some((c % vocab) as u32);
    let child = |c: usize, score: f32| beams.running[c / vocab].extend((c % vocab) as u32, logprobs[c], score);
    // 3. finished hypotheses among the first k candidates
    let mut newly_finished = Vec::new();
    if !beams.done {
        for &(c, s) in cands.iter().take(k).filter(|(c, _)| hits(*c)) {
            let score = s / rule.length_norm;
            if score > NEG {
                newly_finished.push((score, child(c, s)));
            }
        }
    }
    // 4. running beams: the k best candidates, finished ones pushed down by -1e9
    let running_scores: Vec<f32> = cands.iter().map(|&(c, s)| if hits(c) { s + NEG } else { s }).collect();
    let next = top_n(&running_scores, k);
    let parents = next.iter().map(|&(j, _)| cands[j].0 / vocab).collect();
    let running = next.iter().map(|&(j, s)| child(cands[j].0, s)).collect();
    for (score, hyp) in newly_finished {
        beams.add_finished(score, hyp, k);
    }
    beams.running = running;
    // 5. early stop: can the best running beam still beat the worst finished one?
    if !beams.done && beams.finished.len() == k {
        let best_possible = beams.running[0].score / rule.length_norm;
        beams.done = best_possible.partial_cmp(&beams.finished[k - 1].0) != Some(Ordering::Greater);
    }
    parents
}

/// Beam search over left-padded prompts; `cfg.num_beams` beams per prompt (1 gives greedy
/// decoding). `do_sample`, `temperature`, `top_k` and `top_p` are not used. See the module
/// docs for the algorithm and the HF settings matched.
///
/// # Shapes
/// - input_ids, attention_mask: `[B, P]` (left-padded, mask 1 for real tokens)
/// - output: `[B, max_new_tokens]` tokens, log-probs and mask of each prompt's best hypothesis
pub fn beam_search<B: Backend>(
    model: &impl LanguageModel<B>,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Tensor<B, 2, Int>,
    cfg: &GenerationConfig,
    special: SpecialTokens,
) -> Result<GenerationOutput> {
    let k = cfg.num_beams;
    if k == 0 {
        return Err(ModelError::input("num_beams", "must be at least 1"));
    }
    let device = input_ids.device();
    let [b, p] = input_ids.dims();
    let (prompt_ids, prompt_mask) = check_prompt(model, input_ids.clone(), attention_mask.clone(), cfg)?;
    let (n, vocab) = (cfg.max_new_tokens, model.vocab_size());
    let mut rows: Vec<PromptBeams> = (0..b).map(|_| PromptBeams::new(k)).collect();
    let mut cache = cfg.use_cache.then(|| KvCache::with_capacity(model.n_layer(), p + n));
    // Prefill on the B prompts; the beams of a prompt share its logits (and later its cache rows).
    let mut logits = last_logits(model, LmInput::new(input_ids).with_mask(attention_mask), cache.as_mut())?; // [B, V]
    for step in 0..n {
        let rule = StepRule {
            step,
            min_length: cfg.min_length,
            eos: special.eos_token_id,
            last: step + 1 == n,
            length_norm: ((step + 1) as f64).powf(LENGTH_PENALTY) as f32,
        };
        let mut sources = Vec::with_capacity(b * k); // [B * k] row of `logits` (and cache) of each parent
        for (r, beams) in rows.iter_mut().enumerate() {
            // [k, V] log-probs of this prompt's beams (at step 0 all beams read the prompt's row)
            let logprobs: Vec<f32> = (0..k)
                .flat_map(|i| {
                    let src = if step == 0 { r } else { r * k + i };
                    log_softmax(&logits[src * vocab..(src + 1) * vocab])
                })
                .collect();
            let parents = advance(beams, &logprobs, vocab, rule);
            sources.extend(parents.into_iter().map(|i| if step == 0 { r } else { r * k + i } as i64));
        }
        if rule.last || rows.iter().all(|r| r.done) {
            break;
        }
        // Next input: each running beam's tokens (all of them without the cache).
        let width = p + step + 1;
        let mut mask = Vec::with_capacity(b * k * width); // [B * k, P + step + 1]
        for r in 0..b {
            for _ in 0..k {
                mask.extend_from_slice(&prompt_mask[r * p..(r + 1) * p]);
                mask.extend(std::iter::repeat_n(1, step + 1));
            }
        }
        let mask = int_tensor::<B>(mask, [b * k, width], &device);
        let beams = rows.iter().flat_map(|r| r.running.iter());
        let input = match cache.as_mut() {
            Some(c) => {
                c.select_rows(Tensor::from_data(TensorData::new(sources, [b * k]), &device));
                let last: Vec<i64> = beams.map(|h| h.tokens[step] as i64).collect();
                LmInput::new(int_tensor::<B>(last, [b * k, 1], &device)) // [B * k, 1]
            }
            None => {
                let mut seq = Vec::with_capacity(b * k * width);
                for (i, h) in beams.enumerate() {
                    let r = i / k;
                    seq.extend_from_slice(&prompt_ids[r * p..(r + 1) * p]);
                    seq.extend(h.tokens.iter().map(|&t| t as i64));
                }
                LmInput::new(int_tensor::<B>(seq, [b * k, width], &device)) // [B * k, P + step + 1]
            }
        };
        logits = last_logits(model, input.with_mask(mask), cache.as_mut())?; // [B * k, V]
    }
    Ok(best_hypotheses(&rows, n, special.pad_token_id))
}

/// Each prompt's best finished hypothesis as a row of `n` tokens, padded with `pad` (mask 0).
///
/// # Shapes
/// -> `[rows.len(), n]` tokens, log-probs and mask
fn best_hypotheses(rows: &[PromptBeams], n: usize, pad: u32) -> GenerationOutput {
    let b = rows.len();
    let mut out = GenerationOutput {
        tokens: vec![pad; b * n],
        logprobs: vec![0.0; b * n],
        sampling_logprobs: vec![0.0; b * n],
        mask: vec![0; b * n],
        batch: b,
        max_new_tokens: n,
    };
    for (r, beams) in rows.iter().enumerate() {
        // Every prompt has finished hypotheses after the last step; the fallback is for safety.
        let best = beams.finished.first().map_or(&beams.running[0], |(_, h)| h);
        for (j, (&t, &lp)) in best.tokens.iter().zip(&best.logprobs).enumerate().take(n) {
            // Chosen by the search, not drawn: the sampling log-prob stays 0 (certain).
            (out.tokens[r * n + j], out.logprobs[r * n + j], out.mask[r * n + j]) = (t, lp, 1);
        }
    }
    out
}

/// Run the model and copy the last-position logits to the host, `[rows * V]` flat.
fn last_logits<B: Backend>(
    model: &impl LanguageModel<B>,
    input: LmInput<B>,
    cache: Option<&mut KvCache<B>>,
) -> Result<Vec<f32>> {
    let logits = model.forward_with(input.last_logits_only(), cache).logits; // [rows, 1, V]
    logits.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| ModelError::input("logits", format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(step: usize, eos: Option<u32>, last: bool) -> StepRule {
        StepRule { step, min_length: 0, eos, last, length_norm: (step + 1) as f32 }
    }

    #[test]
    fn top_n_is_sorted_and_stable() {
        assert_eq!(top_n(&[0.1, 0.5, 0.5, -1.0, 0.3], 3), vec![(1, 0.5), (2, 0.5), (4, 0.3)]);
        assert_eq!(top_n(&[1.0], 3), vec![(0, 1.0)]);
    }

    #[test]
    fn first_step_expands_beam_zero_only() {
        // V = 4, k = 2: both beams see the same log-probs; only beam 0 (score 0) may expand.
        let lp = log_softmax(&[0.0, 1.0, 2.0, 3.0]);
        let mut beams = PromptBeams::new(2);
        let parents = advance(&mut beams, &[lp.clone(), lp.clone()].concat(), 4, rule(0, None, false));
        assert_eq!(parents, vec![0, 0]);
        let toks: Vec<u32> = beams.running.iter().map(|h| h.tokens[0]).collect();
        assert_eq!(toks, vec![3, 2]);
        assert_eq!(beams.running[1].logprobs[0], lp[2]);
    }

    #[test]
    fn eos_in_the_top_k_finishes_and_scores_by_length() {
        // EOS = 3 is the best token: it finishes with score lp / 1; the running beams are the
        // next best non-EOS tokens.
        let lp = log_softmax(&[0.0, 1.0, 2.0, 3.0]);
        let mut beams = PromptBeams::new(2);
        advance(&mut beams, &[lp.clone(), lp.clone()].concat(), 4, rule(0, Some(3), false));
        assert_eq!(beams.finished.len(), 1);
        assert_eq!(beams.finished[0].1.tokens, vec![3]);
        assert_eq!(beams.finished[0].0, lp[3]);
        let toks: Vec<u32> = beams.running.iter().map(|h| h.tokens[0]).collect();
        assert_eq!(toks, vec![2, 1]);
        // With EOS masked (min_length 1), EOS is never chosen.
        let mut beams = PromptBeams::new(2);
        let masked = StepRule { min_length: 1, ..rule(0, Some(3), false) };
        advance(&mut beams, &[lp.clone(), lp].concat(), 4, masked);
        assert!(beams.finished.is_empty());
    }

    #[test]
    fn eos_outside_the_top_k_does_not_finish() {
        // k = 1: the 2 candidates are tokens 2 and EOS = 1; EOS is second, so it is dropped.
        let mut beams = PromptBeams::new(1);
        advance(&mut beams, &log_softmax(&[0.0, 1.9, 2.0]), 3, rule(0, Some(1), false));
        assert!(beams.finished.is_empty());
        assert_eq!(beams.running[0].tokens, vec![2]);
    }

    #[test]
    fn early_stop_heuristic_freezes_the_finished_hypotheses() {
        // k = 1, EOS = 2. Step 0: EOS wins (lp2 = -0.79) and finishes; the running beam
        // (token 1, lp1 = -0.89) cannot beat it at length 1, so the prompt is done.
        let lp = log_softmax(&[0.0, 1.9, 2.0]);
        let mut beams = PromptBeams::new(1);
        advance(&mut beams, &lp, 3, rule(0, Some(2), false));
        assert!(beams.done);
        // Step 1: EOS is nearly certain, (lp1 + ~0) / 2 > lp2, yet it is not accepted (HF).
        let sure = log_softmax(&[-50.0, -50.0, 50.0]);
        assert!((lp[1] + sure[2]) / 2.0 > lp[2]);
        advance(&mut beams, &sure, 3, rule(1, Some(2), false));
        assert_eq!(beams.finished.len(), 1);
        assert_eq!(beams.finished[0].1.tokens, vec![2]);
    }

    #[test]
    fn last_step_finishes_the_top_k_and_stops_the_prompt() {
        let lp = log_softmax(&[0.0, 1.0, 2.0, 3.0]);
        let mut beams = PromptBeams::new(2);
        advance(&mut beams, &[lp.clone(), lp.clone()].concat(), 4, rule(0, None, false));
        advance(&mut beams, &[lp.clone(), lp.clone()].concat(), 4, rule(1, None, true));
        assert_eq!(beams.finished.len(), 2);
        assert_eq!(beams.finished[0].1.tokens, vec![3, 3]);
        assert_eq!(beams.finished[0].0, (lp[3] + lp[3]) / 2.0);
        assert!(beams.done);
    }
}
