//! Host-side token selection with HF `generate` semantics (logits processors then warpers).
//!
//! Order, as in transformers: minimum-length EOS masking, then temperature, top-k, top-p,
//! then a draw from the softmax (or the argmax when greedy). Filtered entries are `-inf`.

use rand::Rng;

/// Divide logits by the temperature (HF `TemperatureLogitsWarper`; skipped for 1.0).
pub fn apply_temperature(scores: &mut [f32], temperature: f64) {
    if temperature != 1.0 {
        let t = temperature as f32;
        scores.iter_mut().for_each(|s| *s /= t);
    }
}

/// Keep the `k` largest scores and every score tied with the k-th (HF `TopKLogitsWarper`);
/// `k == 0` or `k >= len` is a no-op.
pub fn apply_top_k(scores: &mut [f32], k: usize) {
    if k == 0 || k >= scores.len() {
        return;
    }
    let mut sorted: Vec<f32> = scores.to_vec();
    sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    scores.iter_mut().filter(|s| **s < kth).for_each(|s| *s = f32::NEG_INFINITY);
}

/// Nucleus filtering (HF `TopPLogitsWarper`): sort ascending, drop the tokens whose
/// cumulative probability is `<= 1 - top_p`, always keeping the most likely token.
/// `top_p >= 1` is a no-op.
///
/// Equivalently (and so implemented): in descending order, a token is kept while the mass of
/// the tokens before it is `< top_p`. Only the head of the distribution is sorted: the 1024
/// most likely tokens, or all of them if those do not reach `top_p`.
pub fn apply_top_p(scores: &mut [f32], top_p: f64) {
    if top_p >= 1.0 || scores.is_empty() {
        return;
    }
    let probs = softmax(scores);
    let desc = |a: &usize, b: &usize| probs[*b].total_cmp(&probs[*a]);
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| probs[i] > 0.0).collect();
    const HEAD: usize = 1024;
    let mut sorted = false;
    if order.len() > HEAD {
        order.select_nth_unstable_by(HEAD - 1, desc);
        order[..HEAD].sort_by(desc);
        sorted = order[..HEAD].iter().map(|&i| probs[i]).sum::<f64>() >= top_p;
    }
    if !sorted {
        order.sort_by(desc);
    }
    let mut keep = vec![false; scores.len()];
    let mut before = 0.0f64;
    for &i in &order {
        if before >= top_p {
            break;
        }
        keep[i] = true;
        before += probs[i];
    }
    for (s, k) in scores.iter_mut().zip(keep) {
        if !k {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Softmax in f64.
pub fn softmax(scores: &[f32]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = scores.iter().map(|&s| ((s as f64) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// `log_softmax(logits)[index]`, computed in f64.
pub fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&s| ((s as f64) - max).exp()).sum();
    ((logits[index] as f64) - max - sum.ln()) as f32
}

/// Index of the largest score (the first one on ties, like `torch.argmax`).
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

/// Draw an index from `softmax(scores)` with one uniform number from `rng`.
pub fn sample<R: Rng + ?Sized>(scores: &[f32], rng: &mut R) -> usize {
    let probs = softmax(scores);
    let u: f64 = rng.random();
    let mut cum = 0.0;
    let mut last_nonzero = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > 0.0 {
            last_nonzero = i;
            cum += p;
            if u < cum {
                return i;
            }
        }
    }
    last_nonzero
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn top_k_keeps_ties() {
        let mut s = vec![1.0, 3.0, 2.0, 3.0, 0.5];
        apply_top_k(&mut s, 1);
        assert_eq!(s, vec![f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY]);
        let mut s = vec![1.0, 3.0, 2.0];
        apply_top_k(&mut s, 2);
        assert_eq!(s, vec![f32::NEG_INFINITY, 3.0, 2.0]);
    }

    #[test]
    fn top_p_matches_hf() {
        // torch: TopPLogitsWarper(0.8)(None, torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])))
        //   -> keeps 0.5 and 0.3 (ascending cumsum 0.05, 0.20 <= 0.2 removed; 0.5 > 0.2 kept)
        let mut s: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        apply_top_p(&mut s, 0.8);
        assert!(
            s[0].is_finite() && s[1].is_finite() && s[2] == f32::NEG_INFINITY && s[3] == f32::NEG_INFINITY,
            "{s:?}"
        );
        let mut s = vec![0.0f32, -100.0];
        apply_top_p(&mut s, 0.01);
        assert!(s[0].is_finite());
    }

    /// The partial sort gives what the literal HF algorithm (full ascending sort) gives.
    #[test]
    fn top_p_head_sort_equals_full_sort() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (n, scale, top_p) in [(5000, 1.0, 0.9), (5000, 8.0, 0.5), (3000, 0.01, 0.95), (50, 3.0, 0.3)] {
            let scores: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * scale).collect();
            let mut ours = scores.clone();
            apply_top_p(&mut ours, top_p);
            let probs = softmax(&scores);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
            let mut cum = 0.0;
            let mut removed = vec![false; n];
            for &i in &order[..n - 1] {
                cum += probs[i];
                removed[i] = cum <= 1.0 - top_p;
            }
            let ours_removed: Vec<bool> = ours.iter().map(|s| *s == f32::NEG_INFINITY).collect();
            assert_eq!(ours_removed, removed, "n {n} scale {scale} top_p {top_p}");
        }
    }

    #[test]
    fn log_softmax_and_sampling() {
        let l = [0.0f32, (2.0f32).ln()];
        assert!((log_softmax_at(&l, 1) - (2.0f32 / 3.0).ln()).abs() < 1e-6);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let scores = [0.0f32, f32::NEG_INFINITY, (3.0f32).ln()];
        let n = 4000;
        let twos = (0..n).filter(|_| sample(&scores, &mut rng) == 2).count();
        assert!((twos as f64 / n as f64 - 0.75).abs() < 0.03, "{twos}");
        assert_eq!(argmax(&[1.0, 5.0, 5.0]), 1);
    }
}
