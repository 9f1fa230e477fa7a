//! Batched autoregressive generation with a KV cache (HF `generate` semantics).
//!
//! Prompts are left-padded (`[B, P]` ids + mask). Each step runs the model on the new tokens
//! only (with [`GenerationConfig::use_cache`]; without it the whole sequence is recomputed,
//! which gives the same tokens), copies the last-position logits to the host once, and picks
//! one token per row there: EOS is masked until `min_length` new tokens exist, then
//! temperature, top-k, top-p and a draw from the seeded RNG (or the argmax when greedy).
//! A row stops after its EOS; later slots hold the pad id with mask 0. With `num_beams > 1`
//! (and `do_sample: false`) [`generate`] runs beam search instead ([`crate::beam`]).
//!
//! **Log-probs returned** are `log_softmax(model logits)[chosen token]` of the *unmodified*
//! distribution (no temperature, top-k/top-p or min-length masking), computed in f64 on the
//! host: what TRIL obtains by re-running the policy forward on the generated sequence.
//! **Sampling log-probs** are those of the distribution the token was actually drawn from
//! (min-length, temperature, top-k and top-p applied; 0 for a greedy pick, which is certain):
//! under top-k the unmodified log-prob of a drawn token can sit far below its sampling
//! log-prob, and a KL penalty estimated with it rewards a policy for spreading mass over
//! tokens it never draws (PPO's `kl_logprobs`).
//!
//! Generate with a module on a plain backend (for an autodiff model, `model.valid()`), so that
//! no autodiff graph is recorded and the KV cache is written in place.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::lm::{KvCache, LanguageModel, LmInput};
use crate::sampling;

/// Generation settings, with HF / TRIL `gen_kwargs` names and HF defaults, so TRIL configs
/// deserialize directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// Sample (true) or take the argmax (false).
    pub do_sample: bool,
    /// Softmax temperature when sampling (must be > 0).
    pub temperature: f64,
    /// Keep the `top_k` most likely tokens when sampling; 0 disables (HF default 50).
    pub top_k: usize,
    /// Nucleus sampling mass in (0, 1]; 1 disables.
    pub top_p: f64,
    /// Minimum number of **new** tokens before EOS may be chosen. TRIL's `min_length` for
    /// causal models is rewritten to `prompt_len + min_length`, i.e. it means new tokens;
    /// `min_new_tokens` is accepted as an alias.
    #[serde(alias = "min_new_tokens")]
    pub min_length: usize,
    /// Number of new tokens (the width of every output).
    pub max_new_tokens: usize,
    /// Beams per prompt: 1 decodes greedily or samples; more runs beam search
    /// ([`crate::beam`], HF `num_beams` with `do_sample=False`; beam sampling is refused).
    pub num_beams: usize,
    /// Use the KV cache (true) or recompute the whole sequence each step (false).
    pub use_cache: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            min_length: 0,
            max_new_tokens: 20,
            num_beams: 1,
            use_cache: true,
        }
    }
}

impl GenerationConfig {
    /// Greedy decoding of `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self { max_new_tokens, ..Self::default() }
    }

    /// Check the values; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, value: String, reason: &str| {
            Err(ModelError::InvalidConfigValue {
                file: "<generation config>".into(),
                key: key.into(),
                value,
                reason: reason.into(),
            })
        };
        if self.do_sample && !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature", self.temperature.to_string(), "must be a positive number");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p.to_string(), "must be in (0, 1]");
        }
        if self.num_beams == 0 {
            return bad("num_beams", "0".into(), "must be at least 1");
        }
        if self.num_beams > 1 && self.do_sample {
            return bad(
                "num_beams",
                self.num_beams.to_string(),
                "beam sampling (num_beams > 1 with do_sample: true) is not implemented; use do_sample: false for beam search or num_beams: 1 to sample",
            );
        }
        Ok(())
    }
}

/// Special token ids for generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Stop a row when it emits this token (`None`: never stop early).
    pub eos_token_id: Option<u32>,
    /// Fill value after a row stopped (GPT-2: the EOS id, as TRIL's `pad_token_as_eos_token`).
    pub pad_token_id: u32,
}

/// Generated tokens, their log-probs and masks, row-major `[batch, max_new_tokens]` on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// Chosen tokens; the pad id after a row's EOS.
    pub tokens: Vec<u32>,
    /// `log_softmax(logits)[token]` of the unmodified model distribution; 0 where mask is 0.
    pub logprobs: Vec<f32>,
    /// The log-prob of `token` under the distribution it was drawn from (min-length,
    /// temperature, top-k, top-p applied; 0 for a greedy pick; the unmodified log-prob for a
    /// forced token); 0 where mask is 0.
    pub sampling_logprobs: Vec<f32>,
    /// 1 for generated tokens (the EOS included), 0 after it.
    pub mask: Vec<u32>,
    /// Number of rows.
    pub batch: usize,
    /// Width of every row (`max_new_tokens`).
    pub max_new_tokens: usize,
}

impl GenerationOutput {
    /// Row `i` of the tokens.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.max_new_tokens..(i + 1) * self.max_new_tokens]
    }

    /// Number of real tokens of each row (EOS included).
    pub fn lengths(&self) -> Vec<usize> {
        self.mask.chunks(self.max_new_tokens.max(1)).map(|r| r.iter().filter(|&&m| m == 1).count()).collect()
    }

    /// Tokens `[B, N]` (Int), log-probs `[B, N]` and mask `[B, N]` (f32 whatever the
    /// device's float type: they feed losses) on `device`.
    pub fn to_tensors<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2>, Tensor<B, 2>) {
        let shape = [self.batch, self.max_new_tokens];
        let toks: Vec<i64> = self.tokens.iter().map(|&t| t as i64).collect();
        let mask: Vec<f32> = self.mask.iter().map(|&m| m as f32).collect();
        (
            Tensor::from_data(TensorData::new(toks, shape), device),
            Tensor::from_data(TensorData::new(self.logprobs.clone(), shape), (device, burn::tensor::DType::F32)),
            Tensor::from_data(TensorData::new(mask, shape), (device, burn::tensor::DType::F32)),
        )
    }
}

fn host_ints<B: Backend>(t: Tensor<B, 2, Int>, what: &str) -> Result<Vec<i64>> {
    t.into_data().convert::<i64>().into_vec::<i64>().map_err(|e| ModelError::input(what, format!("{e:?}")))
}

pub(crate) fn int_tensor<B: Backend>(values: Vec<i64>, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Check prompt shapes and values (R19); returns the host copies of ids and mask.
pub(crate) fn check_prompt<B: Backend>(
    model: &impl LanguageModel<B>,
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Int>,
    cfg: &GenerationConfig,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let (idims, mdims) = (ids.dims(), mask.dims());
    if idims != mdims {
        return Err(ModelError::input("attention_mask", format!("shape {mdims:?} differs from input_ids {idims:?}")));
    }
    if idims[0] == 0 || idims[1] == 0 {
        return Err(ModelError::input("input_ids", format!("empty prompt batch {idims:?}")));
    }
    let total = idims[1] + cfg.max_new_tokens;
    if total > model.max_positions() {
        return Err(ModelError::input(
            "max_new_tokens",
            format!(
                "prompt {} + {} new tokens exceeds n_positions {}",
                idims[1],
                cfg.max_new_tokens,
                model.max_positions()
            ),
        ));
    }
    let (ids, mask) = (host_ints(ids, "input_ids")?, host_ints(mask, "attention_mask")?);
    let vocab = model.vocab_size() as i64;
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= vocab) {
        return Err(ModelError::input("input_ids", format!("token id {bad} outside the model vocabulary 0..{vocab}")));
    }
    if mask.iter().any(|&m| m != 0 && m != 1) {
        return Err(ModelError::input("attention_mask", "values must be 0 or 1"));
    }
    Ok((ids, mask))
}

/// Pick the token of one row from its last-position logits.
fn choose<R: Rng + ?Sized>(
    logits: &[f32],
    step: usize,
    cfg: &GenerationConfig,
    eos: Option<u32>,
    forced: Option<u32>,
    rng: &mut R,
) -> (u32, f32, f32) {
    let (token, sampling_lp) = match forced {
        Some(t) => (t as usize, None),
        None => {
            let mut scores = logits.to_vec();
            let eos_masked = eos.filter(|_| step < cfg.min_length);
            if let Some(s) = eos_masked.and_then(|e| scores.get_mut(e as usize)) {
                *s = f32::NEG_INFINITY;
            }
            if cfg.do_sample {
                sampling::apply_temperature(&mut scores, cfg.temperature);
                sampling::apply_top_k(&mut scores, cfg.top_k);
                sampling::apply_top_p(&mut scores, cfg.top_p);
                let token = sampling::sample(&scores, rng);
                // Pure sampling draws from the model's own distribution: its log-prob is `lp`
                // (no second pass over the vocabulary).
                let warped = eos_masked.is_some()
                    || cfg.temperature != 1.0
                    || (cfg.top_k > 0 && cfg.top_k < scores.len())
                    || cfg.top_p < 1.0;
                (token, warped.then(|| sampling::log_softmax_at(&scores, token)))
            } else {
                (sampling::argmax(&scores), Some(0.0))
            }
        }
    };
    let lp = sampling::log_softmax_at(logits, token);
    (token as u32, lp, sampling_lp.unwrap_or(lp))
}

/// Generate continuations of left-padded prompts.
///
/// # Shapes
/// - input_ids, attention_mask: `[B, P]` (left-padded, mask 1 for real tokens)
/// - output: `[B, max_new_tokens]` tokens, log-probs and mask (see [`GenerationOutput`])
pub fn generate<B: Backend, R: Rng + ?Sized>(
    model: &impl LanguageModel<B>,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Tensor<B, 2, Int>,
    cfg: &GenerationConfig,
    special: SpecialTokens,
    rng: &mut R,
) -> Result<GenerationOutput> {
    generate_with_prefix(model, input_ids, attention_mask, cfg, special, None, rng)
}

/// [`generate`] where row `i` is forced to start with `forced[i]` (its model log-probs are
/// still returned): the roll-out of PPO++ / AggreVaTeD / LOLS continues a roll-in prefix.
/// With `num_beams > 1` this runs [`crate::beam::beam_search`]; forced prefixes are then refused.
pub fn generate_with_prefix<B: Backend, R: Rng + ?Sized>(
    model: &impl LanguageModel<B>,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Tensor<B, 2, Int>,
    cfg: &GenerationConfig,
    special: SpecialTokens,
    forced: Option<&[Vec<u32>]>,
    rng: &mut R,
) -> Result<GenerationOutput> {
    cfg.validate()?;
    let device = input_ids.device();
    let [b, p] = input_ids.dims();
    if cfg.num_beams > 1 {
        if forced.is_some() {
            return Err(ModelError::input(
                "forced",
                format!("forced prefixes are not supported with beam search (num_beams = {})", cfg.num_beams),
            ));
        }
        return crate::beam::beam_search(model, input_ids, attention_mask, cfg, special);
    }
    if forced.is_some_and(|f| f.len() != b) {
        return Err(ModelError::input(
            "forced",
            format!("{} prefixes for a batch of {b}", forced.map_or(0, |f| f.len())),
        ));
    }
    let (ids_host, mut mask_host) = check_prompt(model, input_ids.clone(), attention_mask.clone(), cfg)?;
    let n = cfg.max_new_tokens;
    let vocab = model.vocab_size();
    let mut out = GenerationOutput {
        tokens: vec![special.pad_token_id; b * n],
        logprobs: vec![0.0; b * n],
        sampling_logprobs: vec![0.0; b * n],
        mask: vec![0; b * n],
        batch: b,
        max_new_tokens: n,
    };
    let mut finished = vec![false; b];
    let mut seq = ids_host; // only grown without the cache
    let mut cache = cfg.use_cache.then(|| KvCache::with_capacity(model.n_layer(), p + n));
    let mut step_ids = input_ids;
    let mut width = p;
    for step in 0..n {
        let mask_t = int_tensor::<B>(mask_host.clone(), [b, width], &device);
        let logits =
            model.forward_with(LmInput::new(step_ids).with_mask(mask_t).last_logits_only(), cache.as_mut()).logits; // [B, 1, V]
        let logits = logits
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| ModelError::input("logits", format!("{e:?}")))?;
        let mut next = vec![special.pad_token_id as i64; b];
        for row in 0..b {
            if finished[row] {
                continue;
            }
            let f = forced.and_then(|f| f[row].get(step).copied());
            let (tok, lp, sampling_lp) =
                choose(&logits[row * vocab..(row + 1) * vocab], step, cfg, special.eos_token_id, f, rng);
            let k = row * n + step;
            (out.tokens[k], out.logprobs[k], out.sampling_logprobs[k], out.mask[k]) = (tok, lp, sampling_lp, 1);
            next[row] = tok as i64;
            finished[row] = Some(tok) == special.eos_token_id;
        }
        if step + 1 == n || finished.iter().all(|&f| f) {
            break;
        }
        // Append the new column (HF extends the mask with ones for every row).
        mask_host = append_column(&mask_host, b, width, &vec![1; b]);
        if cache.is_some() {
            step_ids = int_tensor::<B>(next, [b, 1], &device);
        } else {
            seq = append_column(&seq, b, width, &next);
            step_ids = int_tensor::<B>(seq.clone(), [b, width + 1], &device);
        }
        width += 1;
    }
    Ok(out)
}

fn append_column(m: &[i64], rows: usize, width: usize, col: &[i64]) -> Vec<i64> {
    let mut v = Vec::with_capacity(rows * (width + 1));
    for r in 0..rows {
        v.extend_from_slice(&m[r * width..(r + 1) * width]);
        v.push(col[r]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt2::Gpt2Config;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use tril_core::backend::CpuBackend;

    fn prompt(dev: &burn::tensor::Device<CpuBackend>) -> (Tensor<CpuBackend, 2, Int>, Tensor<CpuBackend, 2, Int>) {
        let ids = int_tensor::<CpuBackend>(vec![0, 0, 5, 6, 7, 8, 9, 10], [2, 4], dev);
        let mask = int_tensor::<CpuBackend>(vec![0, 0, 1, 1, 1, 1, 1, 1], [2, 4], dev);
        (ids, mask)
    }

    #[test]
    fn config_parses_tril_gen_kwargs() {
        let c: GenerationConfig = serde_json::from_str(
            r#"{"do_sample": true, "top_k": 0, "min_length": 5, "max_new_tokens": 20, "top_p": 0.92}"#,
        )
        .unwrap();
        assert_eq!((c.do_sample, c.top_k, c.min_length, c.max_new_tokens, c.temperature), (true, 0, 5, 20, 1.0));
        let c: GenerationConfig = serde_json::from_str(r#"{"min_new_tokens": 3}"#).unwrap();
        assert_eq!(c.min_length, 3);
        assert!(serde_json::from_str::<GenerationConfig>(r#"{"top_kk": 1}"#).is_err());
        GenerationConfig { num_beams: 5, ..Default::default() }.validate().unwrap();
        for bad in [
            GenerationConfig { num_beams: 5, do_sample: true, ..Default::default() },
            GenerationConfig { num_beams: 0, ..Default::default() },
        ] {
            assert!(bad.validate().unwrap_err().to_string().contains("num_beams"));
        }
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_min_length() {
        let dev = Default::default();
        let model = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        let (ids, mask) = prompt(&dev);
        let cfg = GenerationConfig {
            do_sample: true,
            top_k: 3,
            top_p: 0.9,
            temperature: 0.7,
            min_length: 6,
            max_new_tokens: 6,
            ..Default::default()
        };
        // Make EOS = the greedy choice so that it would be chosen without the min-length mask.
        let greedy = generate(
            &model,
            ids.clone(),
            mask.clone(),
            &GenerationConfig::greedy(1),
            SpecialTokens { eos_token_id: None, pad_token_id: 0 },
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
        let special = SpecialTokens { eos_token_id: Some(greedy.tokens[0]), pad_token_id: 0 };
        let a = generate(&model, ids.clone(), mask.clone(), &cfg, special, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        let b = generate(&model, ids, mask, &cfg, special, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        assert_eq!(a, b);
        assert!(a.row(0).iter().all(|&t| t != greedy.tokens[0]));
        assert!(a.mask.iter().all(|&m| m == 1));
        assert!(a.logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()), "{:?}", a.logprobs);
    }

    #[test]
    fn sampling_logprobs_are_those_of_the_distribution_drawn_from() {
        let dev = Default::default();
        let model = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        let (ids, mask) = prompt(&dev);
        let special = SpecialTokens { eos_token_id: None, pad_token_id: 0 };
        let run = |cfg: &GenerationConfig| {
            generate(&model, ids.clone(), mask.clone(), cfg, special, &mut ChaCha8Rng::seed_from_u64(3)).unwrap()
        };
        // Pure sampling: the distribution drawn from is the model's own, bit for bit.
        let pure = run(&GenerationConfig { do_sample: true, top_k: 0, max_new_tokens: 4, ..Default::default() });
        assert_eq!(pure.sampling_logprobs, pure.logprobs);
        // Greedy: certain.
        let greedy = run(&GenerationConfig::greedy(4));
        assert!(greedy.sampling_logprobs.iter().all(|&l| l == 0.0));
        // Top-3: the first token's log-prob renormalized over the 3 most likely tokens,
        // recomputed here from the model's logits in f64 (a second implementation).
        let k = 3;
        let top = run(&GenerationConfig { do_sample: true, top_k: k, max_new_tokens: 4, ..Default::default() });
        let logits =
            model.forward_with(LmInput::new(ids.clone()).with_mask(mask.clone()).last_logits_only(), None).logits;
        let [b, _, v] = logits.dims();
        let logits = logits.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        for row in 0..b {
            let l: Vec<f64> = logits[row * v..(row + 1) * v].iter().map(|&x| x as f64).collect();
            let mut sorted = l.clone();
            sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let kept = &sorted[..k];
            let token = top.tokens[row * 4] as usize;
            assert!(l[token] >= sorted[k - 1], "drawn outside the top {k}");
            let norm = kept.iter().map(|x| (x - kept[0]).exp()).sum::<f64>().ln() + kept[0];
            let want = l[token] - norm;
            let got = top.sampling_logprobs[row * 4] as f64;
            assert!((got - want).abs() < 1e-5, "row {row}: {got} vs {want}");
            // The unmodified log-prob normalizes over the whole vocabulary: never above the
            // renormalized one (equal in f32 when a fresh model puts all its mass on one token).
            let full = l.iter().map(|x| (x - sorted[0]).exp()).sum::<f64>().ln() + sorted[0];
            let want_full = l[token] - full;
            let got_full = top.logprobs[row * 4] as f64;
            assert!((got_full - want_full).abs() < 1e-5, "row {row}: {got_full} vs {want_full}");
            assert!(want_full <= want && got_full <= got, "row {row}: {got_full} > {got}");
        }
    }

    #[test]
    fn eos_stops_a_row_and_pads_it() {
        let dev = Default::default();
        let model = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        let (ids, mask) = prompt(&dev);
        let free = generate(
            &model,
            ids.clone(),
            mask.clone(),
            &GenerationConfig::greedy(5),
            SpecialTokens { eos_token_id: None, pad_token_id: 0 },
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
        let eos = free.row(0)[1];
        let out = generate(
            &model,
            ids,
            mask,
            &GenerationConfig::greedy(5),
            SpecialTokens { eos_token_id: Some(eos), pad_token_id: 511 },
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
        let first_eos = free.row(0).iter().position(|&t| t == eos).unwrap();
        assert_eq!(&out.row(0)[..=first_eos], &free.row(0)[..=first_eos]);
        assert!(out.row(0)[first_eos + 1..].iter().all(|&t| t == 511));
        assert_eq!(out.lengths()[0], first_eos + 1);
        assert!(out.logprobs[first_eos + 1..5].iter().all(|&l| l == 0.0));
    }

    #[test]
    fn forced_prefix_is_followed() {
        let dev = Default::default();
        let model = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        let (ids, mask) = prompt(&dev);
        let forced = vec![vec![42, 43], vec![]];
        let special = SpecialTokens { eos_token_id: None, pad_token_id: 0 };
        let out = generate_with_prefix(
            &model,
            ids,
            mask,
            &GenerationConfig::greedy(4),
            special,
            Some(&forced),
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
        assert_eq!(&out.row(0)[..2], &[42, 43]);
    }

    #[test]
    fn bad_prompts_are_errors() {
        let dev = Default::default();
        let model = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        let (ids, _) = prompt(&dev);
        let special = SpecialTokens { eos_token_id: None, pad_token_id: 0 };
        let rng = &mut ChaCha8Rng::seed_from_u64(0);
        let short_mask = int_tensor::<CpuBackend>(vec![1; 6], [2, 3], &dev);
        let err = generate(&model, ids.clone(), short_mask, &GenerationConfig::greedy(2), special, rng)
            .unwrap_err()
            .to_string();
        assert!(err.contains("attention_mask") && err.contains("[2, 3]"), "{err}");
        let big = int_tensor::<CpuBackend>(vec![600, 1], [1, 2], &dev);
        let err = generate(
            &model,
            big,
            int_tensor::<CpuBackend>(vec![1, 1], [1, 2], &dev),
            &GenerationConfig::greedy(2),
            special,
            rng,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("600"), "{err}");
        let err =
            generate(&model, ids.clone(), ids, &GenerationConfig::greedy(300), special, rng).unwrap_err().to_string();
        assert!(err.contains("n_positions"), "{err}");
    }
}
