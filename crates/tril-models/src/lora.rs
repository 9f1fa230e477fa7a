//! LoRA adapters (Hu et al. 2021, <https://arxiv.org/abs/2106.09685>) on the projections of
//! every causal LM family, with PEFT's names and semantics so that adapters move between
//! tril and `peft` ([`crate::hf::peft`] reads and writes PEFT's files).
//!
//! - [`LoraConfig`]: PEFT's `LoraConfig` keys (`r`, `lora_alpha`, `lora_dropout`,
//!   `target_modules`, `bias`, `use_rslora`, `init_lora_weights`), checked by
//!   [`LoraConfig::check`] with errors naming the key.
//! - [`LoraLinear`]: a projection `base` plus an optional [`LoraAdapter`]; every
//!   projection of GPT-2 and GPT-NeoX is one (with `lora: None` they compute exactly the
//!   plain [`Linear`]).
//! - [`LoraTargets`]: each family lists its projections under their HF module paths
//!   (`transformer.h.0.attn.c_attn`, `gpt_neox.layers.0.attention.query_key_value`); on top
//!   of it [`add_lora`], [`without_lora`] and [`merge_lora`] work for any family.
//!
//! ```tex
//! h = W_0 x + \frac{\alpha}{r} B A x \qquad (\text{rsLoRA: } \frac{\alpha}{\sqrt r})
//! ```
//!
//! [`add_lora`] freezes every parameter of the model (`require_grad = false`) and then adds
//! adapters, which alone require gradients: on an autodiff backend only they get gradients,
//! so only they move under the optimizer. [`without_lora`] drops the adapters and shares
//! the frozen base tensors (the reference model of a LoRA run, as TRL does with peft's
//! `disable_adapter`): no second copy of the weights.
//!
//! # Deviations from PEFT
//! - `target_modules` is a list of module-name suffixes (PEFT's list form: a module matches
//!   when its path equals an entry or ends with `.` + entry); PEFT's regex string form is
//!   not supported.
//! - `bias` must be `none`.
//! - `lora_dropout` uses Burn's [`Dropout`] on the adapter input, which is active only on an
//!   autodiff backend (training forwards) and draws from the backend's seeded generator:
//!   runs are reproducible from their seed, but a resumed run does not replay the masks
//!   of the run it continues.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::error::{ModelError, Result};

/// PEFT's `LoraConfig` (the keys that change the computation), with PEFT's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of the update (≥ 1).
    pub r: usize,
    /// Scale numerator (> 0): the update is scaled by `lora_alpha / r`.
    pub lora_alpha: f64,
    /// Dropout probability on the adapter input during training, in [0, 1).
    pub lora_dropout: f64,
    /// Module-name suffixes that get adapters; `None` = PEFT's default of the architecture
    /// ([`default_target_modules`]).
    pub target_modules: Option<Vec<String>>,
    /// Which biases train; only `none` (PEFT's default) is supported.
    pub bias: String,
    /// rsLoRA: scale by `lora_alpha / sqrt(r)`.
    pub use_rslora: bool,
    /// `true`: A Kaiming-uniform (torch's `Linear` init, `a = sqrt(5)`), B zeros, so a new
    /// adapter changes nothing; `false`: both Kaiming-uniform (PEFT's random init).
    pub init_lora_weights: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: None,
            bias: "none".into(),
            use_rslora: false,
            init_lora_weights: true,
        }
    }
}

/// PEFT's default `target_modules` of an HF `model_type`
/// (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`).
pub fn default_target_modules(model_type: &str) -> Option<&'static [&'static str]> {
    match model_type {
        "gpt2" => Some(&["c_attn"]),
        "gpt_neox" => Some(&["query_key_value"]),
        "llama" | "qwen2" | "mistral" => Some(&["q_proj", "v_proj"]),
        _ => None,
    }
}

impl LoraConfig {
    fn invalid(key: &str, value: impl ToString, reason: &str) -> ModelError {
        ModelError::InvalidConfigValue {
            file: PathBuf::from("<lora config>"),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Checks every key's range; errors name the key and the value.
    pub fn check(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Self::invalid("r", self.r, "expected at least 1"));
        }
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return Err(Self::invalid("lora_alpha", self.lora_alpha, "expected a finite number > 0"));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(Self::invalid("lora_dropout", self.lora_dropout, "expected a number in [0, 1)"));
        }
        if self.bias != "none" {
            return Err(Self::invalid(
                "bias",
                &self.bias,
                "only `none` is supported (biases stay frozen; `all` and `lora_only` are not implemented)",
            ));
        }
        if let Some(t) = &self.target_modules {
            if t.is_empty() || t.iter().any(|s| s.is_empty()) {
                return Err(Self::invalid("target_modules", format!("{t:?}"), "expected non-empty module names"));
            }
        }
        Ok(())
    }

    /// The factor of the update: `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// The target suffixes for `model_type`: the configured ones, else PEFT's default.
    pub fn targets(&self, model_type: &str) -> Result<Vec<String>> {
        match (&self.target_modules, default_target_modules(model_type)) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(d)) => Ok(d.iter().map(|s| s.to_string()).collect()),
            (None, None) => Err(Self::invalid(
                "target_modules",
                "null",
                &format!("PEFT has no default for model_type `{model_type}`: list the modules"),
            )),
        }
    }
}

/// PEFT's list matching: `path` equals a target or ends with `.` + target.
pub fn matches_target(path: &str, targets: &[String]) -> bool {
    targets.iter().any(|t| path == t || path.strip_suffix(t.as_str()).is_some_and(|head| head.ends_with('.')))
}

/// The low-rank update of one projection: `scaling * B(A(dropout(x)))`.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `A`: in -> r, no bias (Burn layout `[in, r]`; PEFT's `lora_A.weight` is `[r, in]`).
    pub lora_a: Linear<B>,
    /// `B`: r -> out, no bias (Burn layout `[r, out]`; PEFT's `lora_B.weight` is `[out, r]`).
    pub lora_b: Linear<B>,
    /// Dropout on the adapter input (active on autodiff backends only).
    pub dropout: Dropout,
    /// `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA).
    pub scaling: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter for a `d_in -> d_out` projection (see [`LoraConfig::init_lora_weights`]).
    pub fn new(d_in: usize, d_out: usize, config: &LoraConfig, device: &B::Device) -> Self {
        // torch's Linear init, kaiming_uniform(a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        // which is Burn's default KaimingUniform (gain 1/sqrt(3)) with fan_in = d_in.
        let lora_a = LinearConfig::new(d_in, config.r).with_bias(false).init(device);
        let b = LinearConfig::new(config.r, d_out).with_bias(false);
        let lora_b = if config.init_lora_weights { b.with_initializer(Initializer::Zeros) } else { b }.init(device);
        // Draw now: a clone of a lazy parameter would draw values of its own.
        let _ = (lora_a.weight.val(), lora_b.weight.val());
        LoraAdapter {
            lora_a,
            lora_b,
            dropout: DropoutConfig::new(config.lora_dropout).init(),
            scaling: config.scaling(),
        }
    }

    /// The update `scaling * B A`, `[in, out]` (Burn's layout).
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.lora_a.weight.val().matmul(self.lora_b.weight.val()).mul_scalar(self.scaling)
    }

    /// # Shapes
    /// - x: `[N, in]` -> `[N, out]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.lora_b.forward(self.lora_a.forward(self.dropout.forward(x))).mul_scalar(self.scaling)
    }
}

/// A projection with an optional LoRA adapter: `base(x) + scaling * B(A(x))`.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The (pretrained) projection.
    pub base: Linear<B>,
    /// The adapter, if any.
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> From<Linear<B>> for LoraLinear<B> {
    fn from(base: Linear<B>) -> Self {
        LoraLinear { base, lora: None }
    }
}

impl<B: Backend> LoraLinear<B> {
    /// Input and output widths of the base projection.
    pub fn dims(&self) -> [usize; 2] {
        self.base.weight.lazy_shape().dims::<2>()
    }

    /// # Shapes
    /// - x: `[N, in]` -> `[N, out]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.lora {
            None => self.base.forward(x),
            Some(lora) => self.base.forward(x.clone()) + lora.forward(x),
        }
    }

    /// [`LoraLinear::forward`] on `[B, T, D]` as one 2-D product over `B * T` rows (what
    /// [`crate::lm::linear3`] does for a plain [`Linear`]).
    ///
    /// # Shapes
    /// - x: `[B, T, in]` -> `[B, T, out]`
    pub fn forward3(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let y = self.forward(x.reshape([b * t, d]));
        let o = y.dims()[1];
        y.reshape([b, t, o])
    }

    /// Folds the adapter into the base weight (`W + scaling * A B`) and drops it.
    pub fn merge(&mut self) {
        if let Some(lora) = self.lora.take() {
            let w = &mut self.base.weight;
            let require_grad = w.val().is_require_grad();
            let merged = (w.val().detach() + lora.delta_weight().detach()).set_require_grad(require_grad);
            *w = Param::initialized(w.id, merged);
        }
    }
}

/// The projections of a model family under their HF module paths (the paths PEFT names
/// adapters by, from the root of the `*ForCausalLM` model). Implemented by each family and by
/// [`crate::causal_lm::CausalLm`]; a new family implements it with one line per projection.
pub trait LoraTargets<B: Backend>: Module<B> {
    /// HF `model_type` (for PEFT's default `target_modules`).
    fn lora_model_type(&self) -> &'static str;

    /// Whether the HF projections are `Conv1D` (`[in, out]`, PEFT's `fan_in_fan_out: true`).
    fn fan_in_fan_out(&self) -> bool;

    /// Every projection with its HF module path, in model order.
    fn projections(&self) -> Vec<(String, &LoraLinear<B>)>;

    /// Every projection with its HF module path, mutably, in model order.
    fn projections_mut(&mut self) -> Vec<(String, &mut LoraLinear<B>)>;
}

/// Freezes every parameter of `model` and adds a fresh adapter to each projection that
/// `config.target_modules` (or PEFT's default for the family) matches. Errors name the
/// config key; a model that already has adapters, or where no module matches, is an error.
pub fn add_lora<B: Backend, M: LoraTargets<B>>(model: M, config: &LoraConfig, device: &B::Device) -> Result<M> {
    config.check()?;
    let targets = config.targets(model.lora_model_type())?;
    let mut model = model.no_grad();
    let mut matched = 0;
    for (path, lin) in model.projections_mut() {
        if !matches_target(&path, &targets) {
            continue;
        }
        if lin.lora.is_some() {
            return Err(LoraConfig::invalid("target_modules", &path, "this module already has an adapter"));
        }
        let [d_in, d_out] = lin.dims();
        lin.lora = Some(LoraAdapter::new(d_in, d_out, config, device));
        matched += 1;
    }
    if matched == 0 {
        let names: Vec<String> = model.projections().into_iter().map(|(p, _)| p).take(4).collect();
        let reason = format!(
            "no module of this `{}` model matches (modules: {}, ...)",
            model.lora_model_type(),
            names.join(", ")
        );
        return Err(LoraConfig::invalid("target_modules", format!("{targets:?}"), &reason));
    }
    Ok(model)
}

/// `model` without its adapters: the frozen base, sharing its tensors with `model`.
pub fn without_lora<B: Backend, M: LoraTargets<B> + Clone>(model: &M) -> M {
    let mut base = model.clone();
    for (_, lin) in base.projections_mut() {
        lin.lora = None;
    }
    base
}

/// `model` with every adapter folded into its base weight (PEFT's `merge_and_unload`).
pub fn merge_lora<B: Backend, M: LoraTargets<B>>(mut model: M) -> M {
    for (_, lin) in model.projections_mut() {
        lin.merge();
    }
    model
}

/// The HF module paths of the projections that carry an adapter.
pub fn adapted_modules<B: Backend, M: LoraTargets<B>>(model: &M) -> Vec<String> {
    model.projections().into_iter().filter(|(_, l)| l.lora.is_some()).map(|(p, _)| p).collect()
}

/// Number of adapter parameters (what trains under LoRA).
pub fn lora_param_count<B: Backend, M: LoraTargets<B>>(model: &M) -> usize {
    model
        .projections()
        .into_iter()
        .filter_map(|(_, l)| {
            l.lora.as_ref().map(|a| a.lora_a.weight.shape().num_elements() + a.lora_b.weight.shape().num_elements())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt2::Gpt2Config;
    use crate::lm::LanguageModel;
    use crate::neox::NeoXConfig;
    use burn::tensor::{Int, TensorData};
    use tril_core::backend::CpuBackend;

    #[test]
    fn config_ranges_name_the_key() {
        let err = |c: LoraConfig| c.check().unwrap_err().to_string();
        assert!(err(LoraConfig { r: 0, ..Default::default() }).contains("`r` = 0"));
        assert!(err(LoraConfig { lora_alpha: -1.0, ..Default::default() }).contains("`lora_alpha` = -1"));
        assert!(err(LoraConfig { lora_dropout: 1.0, ..Default::default() }).contains("`lora_dropout` = 1"));
        assert!(err(LoraConfig { bias: "all".into(), ..Default::default() }).contains("`bias` = all"));
        let e = err(LoraConfig { target_modules: Some(vec![]), ..Default::default() });
        assert!(e.contains("`target_modules`"), "{e}");
        let json = r#"{"r": 4, "lora_alpha": 16, "rank": 2}"#;
        let e = serde_json::from_str::<LoraConfig>(json).unwrap_err().to_string();
        assert!(e.contains("unknown field `rank`"), "{e}");
        let c: LoraConfig = serde_json::from_str(r#"{"r": 4, "lora_alpha": 16}"#).unwrap();
        assert_eq!((c.scaling(), LoraConfig { use_rslora: true, ..c.clone() }.scaling()), (4.0, 8.0));
        assert_eq!(c.targets("gpt_neox").unwrap(), vec!["query_key_value"]);
        assert!(c.targets("t5").unwrap_err().to_string().contains("target_modules"));
    }

    #[test]
    fn suffix_matching_is_peft_s() {
        let t = vec!["c_attn".to_string(), "mlp.c_proj".to_string()];
        assert!(matches_target("transformer.h.0.attn.c_attn", &t));
        assert!(matches_target("transformer.h.1.mlp.c_proj", &t));
        assert!(!matches_target("transformer.h.1.attn.c_proj", &t));
        assert!(!matches_target("transformer.h.0.attn.xc_attn", &t));
        assert!(matches_target("c_attn", &t));
    }

    fn ids() -> Tensor<CpuBackend, 2, Int> {
        Tensor::from_data(TensorData::new(vec![1i64, 5, 9, 3, 2, 7], [2, 3]), &Default::default())
    }

    /// A fresh adapter (B = 0) changes nothing; a random one does, and merging it gives
    /// the same logits; without_lora gives the base back.
    fn identity_and_merge<M: LoraTargets<CpuBackend> + Clone>(model: M, forward: impl Fn(&M) -> Tensor<CpuBackend, 3>) {
        let dev = Default::default();
        let base = forward(&model);
        let cfg = LoraConfig { r: 2, lora_alpha: 4.0, ..Default::default() };
        let fresh = add_lora(model.clone(), &cfg, &dev).unwrap();
        assert_eq!(adapted_modules(&fresh).len(), 2, "{:?}", adapted_modules(&fresh));
        assert_eq!(forward(&fresh).into_data(), base.clone().into_data());
        let all = Some(vec!["c_attn".into(), "c_proj".into(), "c_fc".into(), "query_key_value".into(), "dense".into()]);
        let random = LoraConfig { init_lora_weights: false, target_modules: all, ..cfg };
        let tuned = add_lora(model.clone(), &random, &dev).unwrap();
        let adapted = forward(&tuned);
        assert!((adapted.clone() - base.clone()).abs().max().into_scalar() > 1e-3);
        let merged = forward(&merge_lora(tuned.clone()));
        let diff = (merged - adapted).abs().max().into_scalar();
        assert!(diff < 1e-4, "merge: max |diff| {diff}"); // f32 sums in another order
        assert_eq!(forward(&without_lora(&tuned)).into_data(), base.into_data());
    }

    #[test]
    fn fresh_adapter_is_identity_and_merge_equals_adapter() {
        let dev = Default::default();
        let gpt2 = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        identity_and_merge(gpt2, |m| m.forward(ids(), None).logits);
        let neox = NeoXConfig::new(64, 32, 2, 4, 64).init::<CpuBackend>(&dev);
        identity_and_merge(neox, |m| m.forward(ids(), None).logits);
    }

    #[test]
    fn unmatched_targets_and_double_adapters_are_errors() {
        let dev = Default::default();
        let model = Gpt2Config::tiny().init::<CpuBackend>(&dev);
        let cfg = LoraConfig { target_modules: Some(vec!["q_proj".into()]), ..Default::default() };
        let err = add_lora(model.clone(), &cfg, &dev).unwrap_err().to_string();
        assert!(err.contains("`target_modules`") && err.contains("transformer.h.0.attn.c_attn"), "{err}");
        let once = add_lora(model, &LoraConfig::default(), &dev).unwrap();
        let err = add_lora(once, &LoraConfig::default(), &dev).unwrap_err().to_string();
        assert!(err.contains("already has an adapter"), "{err}");
    }

    /// Only adapters get gradients: after an optimizer step every base parameter is
    /// bit-identical and every adapter matrix moved.
    #[test]
    fn only_adapters_train() {
        use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
        use tril_core::backend::CpuAutodiff;
        let dev = Default::default();
        let model = crate::causal_lm::CausalLm::from(Gpt2Config::tiny().init::<CpuAutodiff>(&dev));
        let cfg = LoraConfig { r: 2, init_lora_weights: false, ..Default::default() };
        let model = model.add_lora(&cfg, &dev).unwrap();
        let ids = Tensor::<CpuAutodiff, 2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 3], [1, 4]), &dev);
        let loss = model.forward(ids, None).logits.powf_scalar(2.0).mean(); // initialises the lazy parameters
        let before = model.without_lora().into_record();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(grads.len(), 4, "two matrices per adapter, one adapter per block");
        let mut optim = AdamWConfig::new().with_weight_decay(0.1).init();
        let stepped = optim.step(1e-2, model.clone(), grads);
        let params = |m: &crate::causal_lm::CausalLm<CpuAutodiff>| {
            let mut v = Vec::new();
            for a in m.projections().into_iter().filter_map(|(_, l)| l.lora.as_ref()) {
                v.push((a.lora_a.weight.val().into_data(), a.lora_b.weight.val().into_data()));
            }
            v
        };
        for ((a0, b0), (a1, b1)) in params(&model).into_iter().zip(params(&stepped)) {
            assert_ne!(a0, a1);
            assert_ne!(b0, b1);
        }
        let after = stepped.without_lora();
        let base = crate::causal_lm::CausalLm::<CpuAutodiff>::from(Gpt2Config::tiny().init(&dev)).load_record(before);
        let flat = |m: &crate::causal_lm::CausalLm<CpuAutodiff>| {
            let mut v = Vec::new();
            struct Collect<'a>(&'a mut Vec<TensorData>);
            impl<B: Backend> burn::module::ModuleVisitor<B> for Collect<'_> {
                fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                    self.0.push(p.val().into_data());
                }
            }
            m.visit(&mut Collect(&mut v));
            v
        };
        let (want, got) = (flat(&base), flat(&after));
        assert_eq!(want.len(), got.len());
        assert!(want.iter().zip(&got).all(|(a, b)| a == b), "a base parameter changed");
    }
}
