//! The unbiased best-of-n estimator (Nakano et al. 2021, "WebGPT", appendix;
//! Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization",
//! <https://arxiv.org/abs/2210.10760>, appendix).
//!
//! Given N samples of one prompt with proxy scores `p_j` and gold scores `g_j`, the
//! best-of-n policy (n <= N) draws n of them and keeps the one the proxy ranks highest.
//! Instead of resampling, take the expectation over all `C(N, n)` n-subsets (drawn
//! uniformly, without replacement). With the proxies sorted ascending,
//! `p_(1) <= ... <= p_(N)`, the sample at rank `i` is the subset maximum with probability
//!
//! ```tex
//! w_i(n) = \frac{\binom{i-1}{n-1}}{\binom{N}{n}}, \qquad i = n..N,
//! \qquad E[\text{proxy of BoN}_n] = \sum_{i=n}^{N} w_i(n)\, p_{(i)}
//! ```
//!
//! and the KL of best-of-n from the sampling policy is `KL_bon(n) = ln n - (n - 1)/n`.
//!
//! # Ties
//! Among tied proxy maxima of a subset the choice is **uniformly random**. The gold
//! expectation is then exact as follows: for a group `G` of samples with equal proxy
//! (occupying ranks `a..=b`), the probability that the subset's maximum lies in `G` is
//! `\sum_{i=a}^{b} w_i(n)`, and given that, the expected gold of a uniform pick among the
//! subset's members of `G` is the plain mean of `g` over `G` (by symmetry), so
//!
//! ```tex
//! E[\text{gold of BoN}_n] = \sum_{G} \Big(\sum_{i \in G} w_i(n)\Big)\, \bar g_G
//! ```
//!
//! The proxy expectation does not depend on the tie rule.
//!
//! # Numerics
//! The weights come from the recurrence `w_N(n) = n / N`,
//! `w_{i-1}(n) = w_i(n) (i - n) / (i - 1)`, downward from the largest weight, so no
//! binomial is ever formed: N in the thousands neither overflows nor loses the
//! significant weights (negligible ones may underflow to 0). Cost is O(N^2) for all n.
//!
//! # Deviations from the papers
//! - The explicit tie rule above (the papers assume distinct scores).
//!
//! ```
//! use tril_rewards::best_of_n::{best_of_n, kl_bon};
//! let curve = best_of_n(&[0.0, 1.0, 2.0], &[5.0, 6.0, 4.0]).unwrap();
//! assert_eq!(curve[2].proxy, 2.0); // n = N: always the proxy maximum
//! assert_eq!(curve[2].gold, 4.0);
//! assert_eq!(curve[0].kl, kl_bon(1)); // 0.0
//! ```

use crate::RewardError;

/// One point of the best-of-n curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BonPoint {
    /// Subset size n (1..=N).
    pub n: usize,
    /// Expected proxy score of the best-of-n choice.
    pub proxy: f64,
    /// Expected gold score of the proxy's best-of-n choice.
    pub gold: f64,
    /// `KL_bon(n) = ln n - (n - 1)/n`, nats.
    pub kl: f64,
}

/// KL of best-of-n from the base policy, `ln n - (n - 1)/n` (0 for n <= 1).
pub fn kl_bon(n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    n.ln() - (n - 1.0) / n
}

/// Weights `w_i(n) = C(i-1, n-1) / C(N, n)` for ranks i = 1..=N (index i - 1), summing to 1;
/// all zeros when n is 0 or above N.
pub fn bon_weights(big_n: usize, n: usize) -> Vec<f64> {
    let mut w = vec![0.0; big_n];
    if n == 0 || n > big_n {
        return w;
    }
    // 1. the top rank is the maximum of n of the N draws with probability n / N
    let mut wi = n as f64 / big_n as f64;
    w[big_n - 1] = wi;
    // 2. walk down: w_{i-1} = w_i (i - n) / (i - 1), stopping once rank i - 1 < n
    for i in (n + 1..=big_n).rev() {
        wi *= (i - n) as f64 / (i - 1) as f64;
        w[i - 2] = wi;
    }
    w
}

/// The best-of-n curve of one prompt: for n = 1..=N, the expected proxy and gold score.
///
/// # Shapes
/// `proxy`, `gold`: `[N]`, N >= 1, all finite. Returns `[N]` points, n = 1..=N.
pub fn best_of_n(proxy: &[f64], gold: &[f64]) -> Result<Vec<BonPoint>, RewardError> {
    check_prompt(proxy, gold, "")?;
    let big_n = proxy.len();
    // 1. sort by proxy ascending (total order: all finite)
    let mut order: Vec<usize> = (0..big_n).collect();
    order.sort_by(|&a, &b| proxy[a].total_cmp(&proxy[b]));
    let sorted_proxy: Vec<f64> = order.iter().map(|&j| proxy[j]).collect(); // [N]
                                                                            // 2. tie groups: ranks [start, end) with equal proxy, and their mean gold
    let mut groups: Vec<(usize, usize, f64)> = Vec::new();
    let mut start = 0;
    while start < big_n {
        let mut end = start + 1;
        while end < big_n && sorted_proxy[end] == sorted_proxy[start] {
            end += 1;
        }
        let gold_mean = order[start..end].iter().map(|&j| gold[j]).sum::<f64>() / (end - start) as f64;
        groups.push((start, end, gold_mean));
        start = end;
    }
    // 3. expectations per n
    let curve = (1..=big_n)
        .map(|n| {
            let w = bon_weights(big_n, n); // [N]
            let proxy_e: f64 = w.iter().zip(&sorted_proxy).map(|(wi, p)| wi * p).sum();
            let gold_e: f64 = groups.iter().map(|&(a, b, g)| w[a..b].iter().sum::<f64>() * g).sum();
            BonPoint { n, proxy: proxy_e, gold: gold_e, kl: kl_bon(n) }
        })
        .collect();
    Ok(curve)
}

/// The best-of-n curve averaged over prompts (each prompt weighs the same).
///
/// # Shapes
/// `proxy`, `gold`: `[P, N]`, P >= 1, the same N >= 1 for every prompt. Returns `[N]`.
pub fn best_of_n_mean(proxy: &[Vec<f64>], gold: &[Vec<f64>]) -> Result<Vec<BonPoint>, RewardError> {
    if proxy.is_empty() {
        return Err(RewardError::Empty { what: "best-of-n prompts".into() });
    }
    if gold.len() != proxy.len() {
        return Err(RewardError::Shape {
            what: "best-of-n gold prompts (as proxy prompts)".into(),
            expected: proxy.len(),
            got: gold.len(),
        });
    }
    let big_n = proxy[0].len();
    let mut sum: Vec<BonPoint> = Vec::new();
    for (p, (pr, gd)) in proxy.iter().zip(gold).enumerate() {
        if pr.len() != big_n {
            return Err(RewardError::Shape {
                what: format!("best-of-n proxy of prompt {p} (samples, as prompt 0)"),
                expected: big_n,
                got: pr.len(),
            });
        }
        check_prompt(pr, gd, &format!(" of prompt {p}"))?;
        let curve = best_of_n(pr, gd)?;
        if sum.is_empty() {
            sum = curve;
        } else {
            for (s, c) in sum.iter_mut().zip(&curve) {
                s.proxy += c.proxy;
                s.gold += c.gold;
            }
        }
    }
    let prompts = proxy.len() as f64;
    for s in &mut sum {
        s.proxy /= prompts;
        s.gold /= prompts;
    }
    Ok(sum)
}

/// Checks N >= 1, equal lengths and finite scores of one prompt.
fn check_prompt(proxy: &[f64], gold: &[f64], suffix: &str) -> Result<(), RewardError> {
    if proxy.is_empty() {
        return Err(RewardError::Empty { what: format!("best-of-n samples{suffix}") });
    }
    if gold.len() != proxy.len() {
        return Err(RewardError::Shape {
            what: format!("best-of-n gold{suffix} (samples, as proxy)"),
            expected: proxy.len(),
            got: gold.len(),
        });
    }
    for (name, xs) in [("proxy", proxy), ("gold", gold)] {
        if let Some((i, &value)) = xs.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(RewardError::NonFinite { what: format!("best-of-n {name}{suffix}, sample {i}"), value });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_input() {
        let err = best_of_n(&[1.0, 2.0], &[1.0]).unwrap_err();
        assert!(matches!(err, RewardError::Shape { expected: 2, got: 1, .. }), "{err}");
        let err = best_of_n(&[1.0, f64::NAN], &[1.0, 2.0]).unwrap_err();
        assert!(err.to_string().contains("proxy, sample 1"), "{err}");
        let err = best_of_n(&[1.0, 2.0], &[f64::NEG_INFINITY, 2.0]).unwrap_err();
        assert!(err.to_string().contains("gold, sample 0"), "{err}");
        assert!(matches!(best_of_n(&[], &[]).unwrap_err(), RewardError::Empty { .. }));
        assert!(best_of_n_mean(&[], &[]).is_err());
        let err = best_of_n_mean(&[vec![1.0], vec![1.0, 2.0]], &[vec![1.0], vec![1.0, 2.0]]).unwrap_err();
        assert!(err.to_string().contains("prompt 1"), "{err}");
        let err = best_of_n_mean(&[vec![1.0]], &[vec![f64::NAN]]).unwrap_err();
        assert!(err.to_string().contains("gold of prompt 0, sample 0"), "{err}");
    }

    #[test]
    fn weights_sum_to_one_for_large_n() {
        // second implementation: the recurrence against exact sums and the n = 1 / n = N ends
        for big_n in [1, 2, 7, 3000] {
            for n in [1, 2, big_n / 2 + 1, big_n].into_iter().filter(|&n| n <= big_n) {
                let w = bon_weights(big_n, n);
                let total: f64 = w.iter().sum();
                assert!((total - 1.0).abs() < 1e-12, "N={big_n} n={n}: {total}");
                assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0));
            }
            let uniform = bon_weights(big_n, 1);
            assert!(uniform.iter().all(|x| (x - 1.0 / big_n as f64).abs() < 1e-15));
            let top = bon_weights(big_n, big_n);
            assert_eq!(top[big_n - 1], 1.0);
        }
        assert!(bon_weights(3, 0).iter().all(|&x| x == 0.0));
        assert!(bon_weights(3, 4).iter().all(|&x| x == 0.0));
    }

    /// Exact binomial in u128 (fine for N <= 60).
    fn binom(n: u128, k: u128) -> u128 {
        if k > n {
            return 0;
        }
        (0..k).fold(1u128, |acc, j| acc * (n - j) / (j + 1))
    }

    #[test]
    fn weights_match_exact_binomials() {
        // R21: the recurrence against C(i-1, n-1) / C(N, n) formed directly
        let big_n = 60usize;
        for n in 1..=big_n {
            let w = bon_weights(big_n, n);
            let total = binom(big_n as u128, n as u128) as f64;
            for i in 1..=big_n {
                let want = binom(i as u128 - 1, n as u128 - 1) as f64 / total;
                let err = (w[i - 1] - want).abs() / want.max(f64::MIN_POSITIVE);
                assert!(want == w[i - 1] || err < 1e-13, "n={n} i={i}: {} vs {want}", w[i - 1]);
            }
        }
    }

    #[test]
    fn all_tied_gives_the_mean_gold() {
        let curve = best_of_n(&[1.0; 4], &[0.0, 1.0, 2.0, 5.0]).unwrap();
        for p in curve {
            assert_eq!(p.proxy, 1.0);
            assert!((p.gold - 2.0).abs() < 1e-15);
        }
    }

    #[test]
    fn kl_bon_values() {
        assert_eq!(kl_bon(0), 0.0);
        assert_eq!(kl_bon(1), 0.0);
        assert!((kl_bon(2) - (2f64.ln() - 0.5)).abs() < 1e-15);
    }
}
