//! Shared, pure tensor functions of the on-policy algorithms (R2: share functions,
//! never control flow). Each is tested against a second implementation.
//!
//! Shapes: `B` sequences, `T` generated positions, `V` vocabulary.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};

/// `x` in f32, whatever the run's `precision` (a no-op when it already is): log-softmax,
/// log-probs, KL, advantages and losses are computed in f32 (DESIGN.md "Backends").
pub fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.cast(burn::tensor::FloatDType::F32)
}

/// The values of a tensor of any rank on the host, as f32, row-major. Reading a tensor
/// back fails only if the backend lost it (a device error); that is a bug, not bad input,
/// so it panics with the backend's message rather than inventing values.
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    let data = t.into_data().convert::<f32>();
    match data.to_vec::<f32>() {
        Ok(v) => v,
        Err(e) => panic!("reading a tensor back from the device failed: {e:?}"),
    }
}

/// The single value of a one-element tensor, as f64 (whatever the float type).
pub fn scalar<B: Backend, const D: usize>(t: Tensor<B, D>) -> f64 {
    use burn::tensor::ElementConversion;
    t.into_scalar().elem::<f64>()
}

/// Masked mean over all entries: `sum(x * mask) / sum(mask)` (0 when the mask is empty).
///
/// # Shapes
/// `x`, `mask`: `[B, T]` -> `[1]`
pub fn masked_mean<B: Backend>(x: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    let x = to_f32(x);
    let mask = to_f32(mask);
    let n = mask.clone().sum().clamp_min(1e-8);
    (x * mask).sum() / n
}

/// Masked variance (`unbiased` applies Bessel's correction `n / (n - 1)`, as TRL does).
///
/// # Shapes
/// `x`, `mask`: `[B, T]` -> `[1]`
pub fn masked_var<B: Backend>(x: Tensor<B, 2>, mask: Tensor<B, 2>, unbiased: bool) -> Tensor<B, 1> {
    let x = to_f32(x);
    let mask = to_f32(mask);
    let mean = masked_mean(x.clone(), mask.clone());
    let centered = x - mean.unsqueeze::<2>();
    let var = masked_mean(centered.powf_scalar(2.0), mask.clone());
    if unbiased {
        let n = mask.sum();
        var * n.clone() / (n - 1.0).clamp_min(1e-8)
    } else {
        var
    }
}

/// Whitens `x` over the masked entries: `(x - mean) / sqrt(var + 1e-8)`, adding the mean
/// back when `shift_mean` is false (TRL's `masked_whiten`). Masked-out entries are
/// returned as computed; callers multiply by the mask where it matters.
///
/// # Shapes
/// `x`, `mask`: `[B, T]` -> `[B, T]`
pub fn masked_whiten<B: Backend>(x: Tensor<B, 2>, mask: Tensor<B, 2>, shift_mean: bool) -> Tensor<B, 2> {
    let x = to_f32(x);
    let mask = to_f32(mask);
    let mean = masked_mean(x.clone(), mask.clone()).unsqueeze::<2>();
    let var = masked_var(x.clone(), mask, true).unsqueeze::<2>();
    let whitened = (x - mean.clone()) / (var + 1e-8).sqrt();
    if shift_mean {
        whitened
    } else {
        whitened + mean
    }
}

/// Log-probabilities of `tokens` under `logits`: `log_softmax(logits)[b, t, tokens[b, t]]`.
///
/// # Shapes
/// `logits`: `[B, T, V]`, `tokens`: `[B, T]` -> `[B, T]`
pub fn gather_logprobs<B: Backend>(logits: Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [b, t, _] = logits.dims();
    let logits = rows(to_f32(logits)); // [B*T, V]
    log_softmax(logits, 1).gather(1, tokens.reshape([b * t, 1])).reshape([b, t])
}

/// `[B, T, V]` as `[B*T, V]` rows. Callers pass slices of the logits (`logits[:, a..b]`),
/// which are strided views on CPU backends: the reshape packs them once, so the several
/// passes of a softmax over the vocabulary run on contiguous memory (on burn-flex the
/// strided passes were 18% of a GPT-2 forward + log-probs).
fn rows<B: Backend>(logits: Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, t, v] = logits.dims();
    logits.reshape([b * t, v])
}

/// Entropy of the categorical distribution at each position:
/// `H = logsumexp(z) - sum(softmax(z) * z)`.
///
/// # Shapes
/// `logits`: `[B, T, V]` -> `[B, T]`
pub fn entropy_from_logits<B: Backend>(logits: Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, t, _] = logits.dims();
    let logp = log_softmax(rows(to_f32(logits)), 1); // [B*T, V]
    let p = logp.clone().exp();
    (p * logp).sum_dim(1).reshape([b, t]).neg()
}

/// Log-probs of `tokens` and the entropy at each position from one log-softmax over the
/// vocabulary (what [`gather_logprobs`] and [`entropy_from_logits`] give, at the cost of
/// one of them): `log p = log_softmax(z)`, `lp = log p[token]`, `H = -sum_v p_v log p_v`.
///
/// `entropy_grad: false` detaches the entropy (it is only logged, e.g. PPO with
/// `ent_coef: 0`), so the backward pass does not go through its `[B*T, V]` product.
///
/// # Shapes
/// `logits`: `[B, T, V]`, `tokens`: `[B, T]` -> log-probs `[B, T]`, entropy `[B, T]`
pub fn logprobs_and_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    tokens: Tensor<B, 2, Int>,
    entropy_grad: bool,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [b, t, _] = logits.dims();
    let logp = log_softmax(rows(to_f32(logits)), 1); // [B*T, V]
    let logprobs = logp.clone().gather(1, tokens.reshape([b * t, 1])).reshape([b, t]);
    let logp = if entropy_grad { logp } else { logp.detach() };
    let entropy = (logp.clone().exp() * logp).sum_dim(1).reshape([b, t]).neg();
    (logprobs, entropy)
}

/// Per-token estimators of `KL(pi || ref)` from sampled tokens (Schulman, "Approximating
/// KL divergence", 2020), with `log r = logp_ref - logp`:
///
/// ```tex
/// k_1 = -\log r, \quad k_2 = \tfrac12 (\log r)^2, \quad k_3 = (r - 1) - \log r
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// `logp - logp_ref` (TRIL's penalty; unbiased, can be negative).
    K1,
    /// `0.5 (logp - logp_ref)^2` (biased, non-negative).
    K2,
    /// `(r - 1) - log r` (unbiased, non-negative; GRPO's).
    K3,
}

/// Per-token KL estimate.
///
/// # Shapes
/// `logp`, `logp_ref`: `[B, T]` -> `[B, T]`
pub fn kl_estimate<B: Backend>(logp: Tensor<B, 2>, logp_ref: Tensor<B, 2>, estimator: KlEstimator) -> Tensor<B, 2> {
    let logp = to_f32(logp);
    let logp_ref = to_f32(logp_ref);
    let log_r = logp_ref - logp;
    match estimator {
        KlEstimator::K1 => log_r.neg(),
        KlEstimator::K2 => log_r.powf_scalar(2.0) * 0.5,
        KlEstimator::K3 => (log_r.clone().exp() - 1.0) - log_r,
    }
}

/// The GAE discount matrix `D[s, t] = (gamma * lambda)^(s - t)` for `s >= t`, else 0.
fn discount_matrix<B: Backend>(t: usize, gamma_lambda: f64, device: &B::Device) -> Tensor<B, 2> {
    let mut data = vec![0f32; t * t];
    for s in 0..t {
        for col in 0..=s {
            data[s * t + col] = gamma_lambda.powi((s - col) as i32) as f32;
        }
    }
    Tensor::from_data(TensorData::new(data, [t, t]), (device, burn::tensor::DType::F32))
}

/// Generalized advantage estimation over right-padded sequences (Schulman et al. 2016),
/// as TRIL's `OnlineBuffer`: values and rewards are masked, `V_T = 0`, no done flags.
///
/// ```tex
/// \delta_t = r_t + \gamma V_{t+1} - V_t, \qquad
/// A_t = \sum_{l \ge 0} (\gamma\lambda)^l \delta_{t+l}, \qquad R_t = A_t + V_t
/// ```
///
/// Vectorized: `A = delta @ D` with the discount matrix `D`, one matmul and no loop over
/// time (so no host sync on a GPU). Returns `(advantages, returns)`.
///
/// # Shapes
/// `rewards`, `values`, `masks`: `[B, T]` -> (`[B, T]`, `[B, T]`)
pub fn gae<B: Backend>(
    rewards: Tensor<B, 2>,
    values: Tensor<B, 2>,
    masks: Tensor<B, 2>,
    gamma: f64,
    lambda: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let rewards = to_f32(rewards);
    let values = to_f32(values);
    let masks = to_f32(masks);
    let [b, t] = values.dims();
    let device = values.device();
    let values = values * masks.clone(); // [B, T]
    let rewards = rewards * masks; // [B, T]
    let next_values = Tensor::cat(
        vec![values.clone().slice([0..b, 1..t]), Tensor::zeros([b, 1], (&device, burn::tensor::DType::F32))],
        1,
    ); // [B, T]
    let deltas = rewards + next_values * gamma - values.clone(); // [B, T]
    let advantages = deltas.matmul(discount_matrix(t, gamma * lambda, &device)); // [B, T]
    let returns = advantages.clone() + values;
    (advantages, returns)
}

/// The reference GAE: TRIL's backward loop, on host `f64`, for tests and checks.
/// Inputs are row-major `[b, t]`.
pub fn gae_loop(
    rewards: &[f64],
    values: &[f64],
    masks: &[f64],
    b: usize,
    t: usize,
    gamma: f64,
    lambda: f64,
) -> Vec<f64> {
    let mut adv = vec![0.0; b * t];
    for row in 0..b {
        let mut last = 0.0;
        for step in (0..t).rev() {
            let i = row * t + step;
            let v = values[i] * masks[i];
            let next_v = if step + 1 < t { values[i + 1] * masks[i + 1] } else { 0.0 };
            let delta = rewards[i] * masks[i] + gamma * next_v - v;
            last = delta + gamma * lambda * last;
            adv[i] = last;
        }
    }
    adv
}

/// Explained variance `1 - Var[y - y_hat] / (Var[y] + 1e-8)` over every entry, with
/// torch's unbiased variance: TRIL's `utils/helpers.py` `explained_variance` (host).
/// Fewer than two entries: `NaN`, as `torch.var`.
pub fn explained_variance(pred: &[f64], target: &[f64]) -> f64 {
    let n = target.len().min(pred.len());
    if n < 2 {
        return f64::NAN;
    }
    let var = |x: &dyn Fn(usize) -> f64| {
        let mean = (0..n).map(x).sum::<f64>() / n as f64;
        (0..n).map(|i| (x(i) - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    };
    1.0 - var(&|i| target[i] - pred[i]) / (var(&|i| target[i]) + 1e-8)
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
    ids: Vec<(ParamId, usize)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = to_f32(g).powf_scalar(2.0).sum(); // the norm in f32 whatever the precision
            self.total = Some(match self.total.take() {
                Some(t) => t + sq,
                None => sq,
            });
            self.ids.push((param.id, D));
        }
    }
}

fn scale_grad<B: Backend, const D: usize>(grads: &mut GradientsParams, id: ParamId, scale: Tensor<B, 1>) {
    if let Some(g) = grads.remove::<B, D>(id) {
        let scale = scale.cast(burn::tensor::FloatDType::from(g.dtype())).reshape([1; D]);
        let scaled = g * scale;
        grads.register::<B, D>(id, scaled);
    }
}

/// The global L2 norm of `module`'s gradients in `grads` (0 when it has none), without
/// clipping: for logging one module's share of a jointly clipped step.
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorm::<B> { grads, total: None, ids: Vec::new() };
    module.visit(&mut visitor);
    visitor.total.map_or(0.0, |total| burn::tensor::ElementConversion::elem::<f64>(total.sqrt().into_scalar()))
}

/// Global-norm gradient clipping, as `torch.nn.utils.clip_grad_norm_` (Burn's own clipping
/// is per tensor): with `n = sqrt(sum_p ||g_p||^2)`, every gradient is scaled by
/// `min(1, max_norm / (n + 1e-6))`. Returns the clipped gradients and the norm before
/// clipping (one host read, for logging).
///
/// Every trainer passes its gradients through here before its optimizer step, so this is
/// where data-parallel replicas exchange them ([`crate::parallel::sync_grads`]): the norm,
/// the clipping and the step are then those of the global batch on every replica. The
/// exchange is the one way this fails.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> crate::Result<(GradientsParams, f64)> {
    let mut grads = crate::parallel::sync_grads(module, grads)?;
    let mut visitor = SquaredNorm::<B> { grads: &grads, total: None, ids: Vec::new() };
    module.visit(&mut visitor);
    let (Some(total), ids) = (visitor.total, visitor.ids) else {
        return Ok((grads, 0.0));
    };
    let norm = total.sqrt(); // [1]
    let scale = (norm.clone() + 1e-6).recip().mul_scalar(max_norm).clamp_max(1.0); // [1], f32
    for (id, rank) in ids {
        match rank {
            1 => scale_grad::<B::InnerBackend, 1>(&mut grads, id, scale.clone()),
            2 => scale_grad::<B::InnerBackend, 2>(&mut grads, id, scale.clone()),
            3 => scale_grad::<B::InnerBackend, 3>(&mut grads, id, scale.clone()),
            4 => scale_grad::<B::InnerBackend, 4>(&mut grads, id, scale.clone()),
            other => unreachable!("parameters of rank {other} are not used by tril models"),
        }
    }
    let norm = norm.into_scalar();
    Ok((grads, burn::tensor::ElementConversion::elem::<f64>(norm)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    type Cpu = crate::backend::CpuBackend;

    fn tensor2(data: &[f64], b: usize, t: usize) -> Tensor<Cpu, 2> {
        let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(v, [b, t]), &Default::default())
    }

    fn to_vec(x: Tensor<Cpu, 2>) -> Vec<f64> {
        x.into_data().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
    }

    /// Deterministic pseudo-random numbers in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn gae_vectorized_equals_the_loop_with_padding() {
        let (b, t) = (5, 13);
        let rewards = noise(b * t, 1);
        let values = noise(b * t, 2);
        let lens = [13, 1, 7, 0, 12];
        let masks: Vec<f64> = (0..b * t).map(|i| if i % t < lens[i / t] { 1.0 } else { 0.0 }).collect();
        for (gamma, lambda) in [(0.99, 0.95), (1.0, 0.95), (1.0, 1.0), (0.5, 0.0)] {
            let expected = gae_loop(&rewards, &values, &masks, b, t, gamma, lambda);
            let (adv, ret) = gae(tensor2(&rewards, b, t), tensor2(&values, b, t), tensor2(&masks, b, t), gamma, lambda);
            let (adv, ret) = (to_vec(adv), to_vec(ret));
            for i in 0..b * t {
                assert!((adv[i] - expected[i]).abs() < 1e-5, "adv[{i}] {} vs {}", adv[i], expected[i]);
                let r = expected[i] + values[i] * masks[i];
                assert!((ret[i] - r).abs() < 1e-5, "ret[{i}]");
            }
        }
    }

    #[test]
    fn masked_mean_var_whiten_match_naive() {
        let x = [1.0, 2.0, 3.0, 100.0, 4.0, 5.0];
        let m = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        let vals: Vec<f64> = x.iter().zip(&m).filter(|(_, &m)| m > 0.0).map(|(x, _)| *x).collect();
        let mean = vals.iter().sum::<f64>() / 4.0;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 3.0;
        let got_mean: f32 = masked_mean(tensor2(&x, 2, 3), tensor2(&m, 2, 3)).into_scalar();
        let got_var: f32 = masked_var(tensor2(&x, 2, 3), tensor2(&m, 2, 3), true).into_scalar();
        assert!((got_mean as f64 - mean).abs() < 1e-6);
        assert!((got_var as f64 - var).abs() < 1e-5);
        let w = to_vec(masked_whiten(tensor2(&x, 2, 3), tensor2(&m, 2, 3), true));
        assert!((w[0] - (1.0 - mean) / (var + 1e-8).sqrt()).abs() < 1e-5);
    }

    #[test]
    fn logprobs_entropy_and_kl_match_naive() {
        let logits = [0.1f64, 2.0, -1.0, 0.5, 0.5, 0.5];
        let t: Tensor<Cpu, 3> = Tensor::from_data(
            TensorData::new(logits.iter().map(|&x| x as f32).collect::<Vec<_>>(), [1, 2, 3]),
            &Default::default(),
        );
        let tokens: Tensor<Cpu, 2, Int> =
            Tensor::from_data(TensorData::new(vec![1i64, 2], [1, 2]), &Default::default());
        let lp = to_vec(gather_logprobs(t.clone(), tokens));
        let lse0 = logits[..3].iter().map(|x| x.exp()).sum::<f64>().ln();
        assert!((lp[0] - (2.0 - lse0)).abs() < 1e-6);
        assert!((lp[1] - (1.0f64 / 3.0).ln()).abs() < 1e-6);
        let h = to_vec(entropy_from_logits(t));
        let p: Vec<f64> = logits[..3].iter().map(|x| (x - lse0).exp()).collect();
        let h0: f64 = -p.iter().map(|p| p * p.ln()).sum::<f64>();
        assert!((h[0] - h0).abs() < 1e-6 && (h[1] - 3f64.ln()).abs() < 1e-6);

        let (lp, lr) = (tensor2(&[-1.0, -2.0], 1, 2), tensor2(&[-1.5, -1.0], 1, 2));
        let k1 = to_vec(kl_estimate(lp.clone(), lr.clone(), KlEstimator::K1));
        let k3 = to_vec(kl_estimate(lp, lr, KlEstimator::K3));
        assert!((k1[0] - 0.5).abs() < 1e-6 && (k1[1] + 1.0).abs() < 1e-6);
        let r = (-0.5f64).exp();
        assert!((k3[0] - ((r - 1.0) - (-0.5))).abs() < 1e-6);
    }

    #[test]
    fn fused_logprobs_and_entropy_equal_the_separate_ops_and_detach_on_request() {
        type Ad = crate::backend::CpuAutodiff;
        let device = Default::default();
        let (b, t, v) = (2, 3, 7);
        let z: Vec<f32> = noise(b * t * v, 5).into_iter().map(|x| (4.0 * x) as f32).collect();
        let tokens: Vec<i64> = (0..b * t).map(|i| (i * 3 % v) as i64).collect();
        let leaf = || Tensor::<Ad, 3>::from_data(TensorData::new(z.clone(), [b, t, v]), &device).require_grad();
        let toks = || Tensor::<Ad, 2, Int>::from_data(TensorData::new(tokens.clone(), [b, t]), &device);
        let host2 = |x: Tensor<Ad, 2>| x.inner().into_data().to_vec::<f32>().unwrap();
        let (lp, h) = logprobs_and_entropy(leaf(), toks(), true);
        let (lp_ref, h_ref) = (gather_logprobs(leaf(), toks()), entropy_from_logits(leaf()));
        for (got, want) in [(host2(lp), host2(lp_ref)), (host2(h), host2(h_ref))] {
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{g} vs {w}");
            }
        }
        // d(sum lp + sum H)/dz: with the entropy's gradient, as the separate ops give it;
        // detached, the log-probs' alone.
        let grad_of = |entropy_grad: bool, with_entropy: bool| -> Vec<f32> {
            let z = leaf();
            let (lp, h) = logprobs_and_entropy(z.clone(), toks(), entropy_grad);
            let loss = if with_entropy { lp.sum() + h.sum() } else { lp.sum() };
            z.grad(&loss.backward()).unwrap().into_data().to_vec::<f32>().unwrap()
        };
        let separate = {
            let z = leaf();
            let loss = gather_logprobs(z.clone(), toks()).sum() + entropy_from_logits(z.clone()).sum();
            z.grad(&loss.backward()).unwrap().into_data().to_vec::<f32>().unwrap()
        };
        let (fused, detached, lp_only) = (grad_of(true, true), grad_of(false, true), grad_of(true, false));
        for i in 0..b * t * v {
            assert!((fused[i] - separate[i]).abs() < 1e-5, "[{i}] {} vs {}", fused[i], separate[i]);
            assert!((detached[i] - lp_only[i]).abs() < 1e-6, "[{i}] detached entropy still has a gradient");
        }
        assert!(fused.iter().zip(&lp_only).any(|(a, b)| (a - b).abs() > 1e-3), "the entropy gradient is not zero");
    }

    #[test]
    fn explained_variance_cases() {
        let y = [1.0, 2.0, 3.0, 4.0];
        assert!((explained_variance(&y, &y) - 1.0).abs() < 1e-9);
        let mean = [2.5; 4];
        assert!(explained_variance(&mean, &y).abs() < 1e-6);
        // torch: 1 - var([1, 0, 1, 0]) / var([1, 2, 3, 4]) = 1 - (1/3) / (5/3), unbiased both
        assert!((explained_variance(&[0.0, 2.0, 2.0, 4.0], &y) - 0.8).abs() < 1e-8);
        assert!(explained_variance(&[1.0], &[1.0]).is_nan());
    }

    #[test]
    fn global_norm_clip_scales_all_gradients_together() {
        type Ad = crate::backend::CpuAutodiff;
        let device = Default::default();
        let layer: Linear<Ad> = LinearConfig::new(3, 2).init(&device);
        let x: Tensor<Ad, 2> = Tensor::ones([4, 3], &device) * 10.0;
        let loss = layer.forward(x).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        let norm_of = |g: &GradientsParams| -> f64 {
            let w: Tensor<Cpu, 2> = g.get(layer.weight.id).unwrap();
            let b: Tensor<Cpu, 1> = g.get(layer.bias.as_ref().unwrap().id).unwrap();
            let s: f32 = w.powf_scalar(2.0).sum().into_scalar() + b.powf_scalar(2.0).sum().into_scalar();
            (s as f64).sqrt()
        };
        // d(sum)/dW = 4 * 10 per entry (6 entries), d/db = 4 (2 entries).
        let expected = (6.0 * 1600.0f64 + 2.0 * 16.0).sqrt();
        assert!((norm_of(&grads) - expected).abs() < 1e-3);
        let (clipped, norm) = clip_grad_norm(&layer, grads, 1.0).unwrap();
        assert!((norm - expected).abs() < 1e-3);
        assert!((norm_of(&clipped) - 1.0).abs() < 1e-4);
        let w: Tensor<Cpu, 2> = clipped.get(layer.weight.id).unwrap();
        let w0: f32 = w.slice([0..1, 0..1]).into_scalar();
        assert!(((w0 as f64) - 40.0 / expected).abs() < 1e-5, "direction is kept");
    }
}
