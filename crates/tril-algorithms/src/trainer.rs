//! What every training loop shares, whatever its algorithm and backend: the optimizer
//! built from an [`OptimizerSpec`], and saving and restoring a module's and an
//! optimizer's exact state for `--resume`. Everything is generic over
//! `B: AutodiffBackend`; `tril_core::backend::train` picks the backend.
//!
//! Module and optimizer state are written with Burn's binary recorder at full precision,
//! so a restored run continues bit for bit: a module record keeps each parameter's
//! [`burn::module::ParamId`], which is what the optimizer's moment estimates are keyed by.
//! (The HF model directories a checkpoint also holds are for users and other tools; they
//! do not carry parameter ids.)

use crate::AlgorithmError;
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use tril_core::backend::TrainJob;
use tril_core::config::{Config, Ranges, Section};
use tril_core::plugin::{OptimizerKind, OptimizerSpec, PluginError, RunCtx};

type Bin = BinFileRecorder<FullPrecisionSettings>;

/// A training loop's body, run once the backend is known: what an [`Algorithm`]'s `run`
/// hands to [`run_on_target`].
///
/// [`Algorithm`]: tril_core::plugin::Algorithm
pub trait Run {
    /// Trains on autodiff backend `B`, on `device`.
    fn run<B: AutodiffBackend>(self, ctx: &RunCtx<'_>, device: B::Device) -> Result<(), PluginError>;
}

/// Runs `body` on the backend the config's `device` and `precision` name (the dispatch
/// point, `tril_core::backend::train`, is the one place that names a backend).
pub fn run_on_target<R: Run>(ctx: &RunCtx<'_>, body: R) -> Result<(), PluginError> {
    struct Job<'a, 'b, R>(R, &'a RunCtx<'b>);
    impl<R: Run> TrainJob for Job<'_, '_, R> {
        type Output = Result<(), PluginError>;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
            // Data-parallel: join the replicas' collective (a no-op on a single device).
            tril_core::parallel::register::<B::InnerBackend>(&device)?;
            let out = self.0.run::<B>(self.1, device);
            tril_core::parallel::unregister();
            out
        }
    }
    let target = tril_core::plugin::target_of(ctx.config)?;
    tril_core::backend::train(target, Job(body, ctx))?
}

/// The metrics of `eval_metrics`, built in order (what every generating loop evaluates with).
pub fn eval_metrics(config: &Config) -> Result<Vec<Box<dyn tril_core::plugin::Metric>>, PluginError> {
    let listed = config.optional_section("eval_metrics").map(|s| s.extract::<Vec<tril_core::schema::Component>>());
    let n = listed.transpose()?.map_or(0, |v| v.len());
    (0..n).map(|i| tril_core::registry::build_metric(&section(config, &format!("eval_metrics.{i}"))?, config)).collect()
}

/// The learning-rate schedule of `alg.scheduler`, constant when the section is absent.
pub fn lr_schedule(config: &Config) -> Result<Box<dyn tril_core::plugin::LrSchedule>, PluginError> {
    Ok(match config.optional_section("alg.scheduler") {
        Some(s) => tril_core::registry::build_scheduler(&s, config)?,
        None => Box::new(crate::schedulers::Constant),
    })
}

/// A required section of the config, with the config's own error when absent.
pub fn section<'a>(config: &'a Config, key: &str) -> Result<Section<'a>, PluginError> {
    Ok(config.section(key)?)
}

/// Extracts the section at `key` as two typed structs: `E` from the `extra` keys and `A`
/// from the rest. For sections holding an inherited struct's keys plus a derived
/// algorithm's (PPO's `alg.args` plus LOLS's `tau`): both keep `deny_unknown_fields`, so a
/// misspelt key is still refused, naming the key and its file:line.
pub fn extract_split<A: serde::de::DeserializeOwned + Ranges, E: serde::de::DeserializeOwned + Ranges>(
    config: &Config,
    key: &str,
    extra: &[&str],
) -> Result<(A, E), PluginError> {
    Ok(split_section(&config.section(key)?, extra)?)
}

/// [`extract_split`] on a section (what a registry `check` receives); both parts are
/// range-checked ([`tril_core::config::Ranges`]).
pub fn split_section<A: serde::de::DeserializeOwned + Ranges, E: serde::de::DeserializeOwned + Ranges>(
    section: &Section<'_>,
    extra: &[&str],
) -> Result<(A, E), tril_core::CoreError> {
    let mut rest = section.node().clone();
    let mut moved = tril_core::config::Node::empty_map(rest.origin.clone());
    if let (Some(from), Some(to)) = (rest.as_map_mut(), moved.as_map_mut()) {
        for k in extra {
            if let Some(v) = from.shift_remove(*k) {
                to.insert((*k).to_string(), v);
            }
        }
    }
    let a = Section::new(section.key(), &rest).extract_checked()?;
    let e = Section::new(section.key(), &moved).extract_checked()?;
    Ok((a, e))
}

/// One Burn optimizer of either family (they are different Burn types) for module `M`.
enum Family<B: AutodiffBackend, M: AutodiffModule<B>> {
    Adam(OptimizerAdaptor<Adam, M, B>),
    AdamW(OptimizerAdaptor<AdamW, M, B>),
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Family<B, M> {
    fn new(spec: &OptimizerSpec, weight_decay: f64) -> Self {
        let (b1, b2, eps) = (spec.betas.0 as f32, spec.betas.1 as f32, spec.eps as f32);
        match spec.kind {
            OptimizerKind::AdamW => Family::AdamW(
                AdamWConfig::new()
                    .with_beta_1(b1)
                    .with_beta_2(b2)
                    .with_epsilon(eps)
                    .with_weight_decay(weight_decay as f32)
                    .init(),
            ),
            OptimizerKind::Adam => {
                let decay =
                    (weight_decay > 0.0).then(|| burn::optim::decay::WeightDecayConfig::new(weight_decay as f32));
                Family::Adam(
                    AdamConfig::new().with_beta_1(b1).with_beta_2(b2).with_epsilon(eps).with_weight_decay(decay).init(),
                )
            }
        }
    }

    fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            Family::Adam(o) => o.step(lr, model, grads),
            Family::AdamW(o) => o.step(lr, model, grads),
        }
    }

    fn save(&self, path: &Path) -> Result<(), PluginError> {
        let failed = |e| AlgorithmError::io("writing optimizer state", path, e);
        match self {
            Family::Adam(o) => Bin::new().record(o.to_record(), path.to_path_buf()).map_err(failed)?,
            Family::AdamW(o) => Bin::new().record(o.to_record(), path.to_path_buf()).map_err(failed)?,
        }
        Ok(())
    }

    fn load(self, path: &Path, device: &B::Device) -> Result<Self, PluginError> {
        let failed = |e| AlgorithmError::io("reading optimizer state", path, e);
        Ok(match self {
            Family::Adam(o) => {
                Family::Adam(o.load_record(Bin::new().load(path.to_path_buf(), device).map_err(failed)?))
            }
            Family::AdamW(o) => {
                Family::AdamW(o.load_record(Bin::new().load(path.to_path_buf(), device).map_err(failed)?))
            }
        })
    }
}

/// The optimizer an [`OptimizerSpec`] names, for module `M`, with TRIL's two parameter
/// groups: parameters whose path (e.g. `policy.h.0.attn.c_attn.bias`) contains one of
/// `spec.no_decay` get no weight decay. Burn's optimizers have no parameter groups, so
/// the exempt parameters get a second optimizer of the same family without decay; each
/// keeps the moments of its own parameters (Adam's state is per parameter, so this is
/// exactly torch's two groups).
pub struct Optim<B: AutodiffBackend, M: AutodiffModule<B>> {
    decayed: Family<B, M>,
    exempt: Option<(Family<B, M>, HashSet<ParamId>)>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Optim<B, M> {
    /// Weight decay on every parameter (no groups).
    pub fn new(spec: &OptimizerSpec) -> Self {
        Optim { decayed: Family::new(spec, spec.weight_decay), exempt: None }
    }

    /// TRIL's groups over `module`'s parameter paths (see the type's docs); the same as
    /// [`Optim::new`] when there is no weight decay or no exempt parameter.
    pub fn for_module(spec: &OptimizerSpec, module: &M) -> Self {
        let mut names = ParamPaths { stack: Vec::new(), params: Vec::new() };
        module.visit(&mut names);
        let exempt: HashSet<ParamId> = names
            .params
            .into_iter()
            .filter(|(path, _)| spec.no_decay.iter().any(|pat| path.contains(pat.as_str())))
            .map(|(_, id)| id)
            .collect();
        if spec.weight_decay == 0.0 || exempt.is_empty() {
            return Optim::new(spec);
        }
        Optim { decayed: Family::new(spec, spec.weight_decay), exempt: Some((Family::new(spec, 0.0), exempt)) }
    }

    /// Number of parameters exempt from weight decay.
    pub fn n_exempt(&self) -> usize {
        self.exempt.as_ref().map_or(0, |(_, ids)| ids.len())
    }

    /// One optimizer step at learning rate `lr`.
    pub fn step(&mut self, lr: f64, model: M, mut grads: GradientsParams) -> M {
        let Some((plain, ids)) = &mut self.exempt else {
            return self.decayed.step(lr, model, grads);
        };
        let mut split =
            SplitGrads::<B> { ids, from: &mut grads, to: GradientsParams::new(), _b: std::marker::PhantomData };
        model.visit(&mut split);
        let exempt_grads = split.to;
        let model = self.decayed.step(lr, model, grads);
        plain.step(lr, model, exempt_grads)
    }

    /// Writes the optimizer state (moment estimates keyed by parameter id) to `path`
    /// (Burn appends `.bin`; the exempt group goes to `<path>_no_decay.bin`).
    pub fn save(&self, path: &Path) -> Result<(), PluginError> {
        self.decayed.save(path)?;
        if let Some((plain, _)) = &self.exempt {
            plain.save(&no_decay_path(path))?;
        }
        Ok(())
    }

    /// Restores the state [`Optim::save`] wrote. Build `self` with [`Optim::for_module`]
    /// over the *restored* module: parameter ids differ between processes until a module
    /// record restores them, and the groups are keyed by them.
    pub fn load(self, path: &Path, device: &B::Device) -> Result<Self, PluginError> {
        let decayed = self.decayed.load(path, device)?;
        let exempt = match self.exempt {
            Some((plain, ids)) => Some((plain.load(&no_decay_path(path), device)?, ids)),
            None => None,
        };
        Ok(Optim { decayed, exempt })
    }
}

fn no_decay_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push("_no_decay");
    path.with_file_name(name)
}

/// Collects every float parameter's dotted path and id.
struct ParamPaths {
    stack: Vec<String>,
    params: Vec<(String, ParamId)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ParamPaths {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.params.push((self.stack.join("."), param.id));
    }
}

/// Moves the gradients of the parameters in `ids` from `from` to `to`.
struct SplitGrads<'a, B> {
    ids: &'a HashSet<ParamId>,
    from: &'a mut GradientsParams,
    to: GradientsParams,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SplitGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id) {
            if let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id) {
                self.to.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
}

/// Writes a module's exact state (parameters with their ids) to `path` (`.bin` appended).
pub fn save_module<B: AutodiffBackend, M: burn::module::Module<B>>(module: &M, path: &Path) -> Result<(), PluginError> {
    Bin::new()
        .record(module.clone().into_record(), path.to_path_buf())
        .map_err(|e| AlgorithmError::io("writing model state", path, e).into())
}

/// Loads the state [`save_module`] wrote into a module of the same structure.
pub fn load_module<B: AutodiffBackend, M: burn::module::Module<B>>(
    module: M,
    path: &Path,
    device: &B::Device,
) -> Result<M, PluginError> {
    let record =
        Bin::new().load(path.to_path_buf(), device).map_err(|e| AlgorithmError::io("reading model state", path, e))?;
    Ok(module.load_record(record))
}

/// The position of a seeded ChaCha8 stream, enough to continue it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The word position, as a decimal string (a `u128` does not fit JSON numbers).
    #[serde(with = "u128_string")]
    pub word_pos: u128,
}

impl RngState {
    /// Captures the state of `rng`.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        RngState { seed: rng.get_seed(), stream: rng.get_stream(), word_pos: rng.get_word_pos() }
    }

    /// A generator continuing exactly where the captured one was.
    pub fn restore(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;
    use tril_core::backend::CpuAutodiff as Ad;

    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    fn spec(weight_decay: f64) -> OptimizerSpec {
        OptimizerSpec {
            kind: OptimizerKind::AdamW,
            lr: 0.1,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
            no_decay: vec!["bias".into()],
        }
    }

    /// Zero gradients: AdamW's step is then decay alone, `w <- w (1 - lr wd)`.
    fn zero_grads(model: &Linear<Ad>) -> GradientsParams {
        let x = Tensor::<Ad, 2>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2]), &Default::default());
        let loss = (model.forward(x) * 0.0).sum();
        GradientsParams::from_grads(loss.backward(), model)
    }

    fn values(t: Tensor<Ad, 1>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn no_decay_parameters_keep_their_values_under_weight_decay() {
        let model: Linear<Ad> = LinearConfig::new(2, 3).init(&Default::default());
        let (w0, b0) = (values(model.weight.val().flatten(0, 1)), values(model.bias.as_ref().unwrap().val()));
        let mut optim = Optim::for_module(&spec(0.5), &model);
        assert_eq!(optim.n_exempt(), 1, "the bias");
        let grads = zero_grads(&model);
        let model = optim.step(0.1, model, grads);
        let (w1, b1) = (values(model.weight.val().flatten(0, 1)), values(model.bias.as_ref().unwrap().val()));
        for (a, b) in w0.iter().zip(&w1) {
            assert!((b - a * 0.95).abs() < 1e-6, "weight decayed by lr x wd: {a} -> {b}");
        }
        assert_eq!(b0, b1, "the bias is exempt");
        // Without groups, the bias decays too.
        let mut all = Optim::new(&spec(0.5));
        let grads = zero_grads(&model);
        let model = all.step(0.1, model, grads);
        let b2 = values(model.bias.as_ref().unwrap().val());
        assert!(b1.iter().zip(&b2).all(|(a, b)| (b - a * 0.95).abs() < 1e-6));
    }

    #[test]
    fn optimizer_state_round_trips_with_both_groups() {
        let dir = tempfile_dir("optim-state");
        let device = Default::default();
        let model: Linear<Ad> = LinearConfig::new(2, 3).init(&device);
        let step_with = |optim: &mut Optim<Ad, Linear<Ad>>, model: Linear<Ad>| {
            let x = Tensor::<Ad, 2>::from_data(TensorData::new(vec![1.0f32, -2.0], [1, 2]), &device);
            let loss = model.forward(x).powf_scalar(2.0).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            optim.step(0.01, model, grads)
        };
        let mut optim = Optim::for_module(&spec(0.1), &model);
        let model = step_with(&mut optim, model);
        optim.save(&dir.join("optimizer")).unwrap();
        save_module(&model, &dir.join("model")).unwrap();
        let restored_model = load_module(LinearConfig::new(2, 3).init(&device), &dir.join("model"), &device).unwrap();
        let mut restored =
            Optim::for_module(&spec(0.1), &restored_model).load(&dir.join("optimizer"), &device).unwrap();
        let a = step_with(&mut optim, model);
        let b = step_with(&mut restored, restored_model);
        assert_eq!(values(a.weight.val().flatten(0, 1)), values(b.weight.val().flatten(0, 1)));
        assert_eq!(values(a.bias.unwrap().val()), values(b.bias.unwrap().val()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tril-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rng_state_round_trips_through_json_mid_stream() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..13 {
            rng.next_u32();
        }
        let json = serde_json::to_string(&RngState::of(&rng)).unwrap();
        let mut restored = serde_json::from_str::<RngState>(&json).unwrap().restore();
        let a: Vec<u32> = (0..50).map(|_| rng.next_u32()).collect();
        let b: Vec<u32> = (0..50).map(|_| restored.next_u32()).collect();
        assert_eq!(a, b);
    }
}
