//! What every training loop shares, whatever its algorithm: the CPU autodiff backend,
//! the optimizer built from an [`OptimizerSpec`], the device check, and saving and
//! restoring a module's and an optimizer's exact state for `--resume`.
//!
//! Module and optimizer state are written with Burn's binary recorder at full precision,
//! so a restored run continues bit for bit: a module record keeps each parameter's
//! [`burn::module::ParamId`], which is what the optimizer's moment estimates are keyed by.
//! (The HF model directories a checkpoint also holds are for users and other tools; they
//! do not carry parameter ids.)

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tril_core::config::{Config, Section};
use tril_core::plugin::{OptimizerKind, OptimizerSpec, PluginError};
use tril_core::schema::RootConfig;
use tril_models::CpuBackend;

/// The training backend: the CPU backend with autodiff.
pub type Ad = Autodiff<CpuBackend>;

/// The CPU device.
pub type CpuDevice = burn::backend::ndarray::NdArrayDevice;

type Bin = BinFileRecorder<FullPrecisionSettings>;

/// A required section of the config, with the config's own error when absent.
pub fn section<'a>(config: &'a Config, key: &str) -> Result<Section<'a>, PluginError> {
    Ok(config.section(key)?)
}

/// The device a run trains on; this build trains on the CPU only.
pub fn training_device(root: &RootConfig) -> Result<CpuDevice, PluginError> {
    if root.device != "cpu" {
        return Err(format!("device: `{}` needs the CUDA build of tril; this build runs on `cpu`", root.device).into());
    }
    Ok(Default::default())
}

/// An optimizer of either family (they are different Burn types) for module `M`.
pub enum Optim<M: AutodiffModule<Ad>> {
    /// torch `Adam` (L2 decay added to the gradient).
    Adam(OptimizerAdaptor<Adam, M, Ad>),
    /// torch `AdamW` (decoupled decay).
    AdamW(OptimizerAdaptor<AdamW, M, Ad>),
}

impl<M: AutodiffModule<Ad>> Optim<M> {
    /// Builds the optimizer a spec names. Weight decay applies to every parameter: Burn's
    /// optimizers have no parameter groups, so `spec.no_decay` is not honoured (a
    /// documented deviation from TRIL, which exempts biases and LayerNorm weights).
    pub fn new(spec: &OptimizerSpec) -> Self {
        let (b1, b2, eps) = (spec.betas.0 as f32, spec.betas.1 as f32, spec.eps as f32);
        match spec.kind {
            OptimizerKind::AdamW => Optim::AdamW(
                AdamWConfig::new()
                    .with_beta_1(b1)
                    .with_beta_2(b2)
                    .with_epsilon(eps)
                    .with_weight_decay(spec.weight_decay as f32)
                    .init(),
            ),
            OptimizerKind::Adam => {
                let decay = (spec.weight_decay > 0.0)
                    .then(|| burn::optim::decay::WeightDecayConfig::new(spec.weight_decay as f32));
                Optim::Adam(
                    AdamConfig::new().with_beta_1(b1).with_beta_2(b2).with_epsilon(eps).with_weight_decay(decay).init(),
                )
            }
        }
    }

    /// One optimizer step at learning rate `lr`.
    pub fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            Optim::Adam(o) => o.step(lr, model, grads),
            Optim::AdamW(o) => o.step(lr, model, grads),
        }
    }

    /// Writes the optimizer state (moment estimates keyed by parameter id) to `path`
    /// (Burn appends `.bin`).
    pub fn save(&self, path: &Path) -> Result<(), PluginError> {
        let failed = |e| format!("writing optimizer state {}: {e}", path.display());
        match self {
            Optim::Adam(o) => Bin::new().record(o.to_record(), path.to_path_buf()).map_err(failed)?,
            Optim::AdamW(o) => Bin::new().record(o.to_record(), path.to_path_buf()).map_err(failed)?,
        }
        Ok(())
    }

    /// Restores the state [`Optim::save`] wrote.
    pub fn load(self, path: &Path, device: &CpuDevice) -> Result<Self, PluginError> {
        let failed = |e| format!("reading optimizer state {}: {e}", path.display());
        Ok(match self {
            Optim::Adam(o) => Optim::Adam(o.load_record(Bin::new().load(path.to_path_buf(), device).map_err(failed)?)),
            Optim::AdamW(o) => {
                Optim::AdamW(o.load_record(Bin::new().load(path.to_path_buf(), device).map_err(failed)?))
            }
        })
    }
}

/// Writes a module's exact state (parameters with their ids) to `path` (`.bin` appended).
pub fn save_module<M: burn::module::Module<Ad>>(module: &M, path: &Path) -> Result<(), PluginError> {
    Bin::new()
        .record(module.clone().into_record(), path.to_path_buf())
        .map_err(|e| format!("writing model state {}: {e}", path.display()).into())
}

/// Loads the state [`save_module`] wrote into a module of the same structure.
pub fn load_module<M: burn::module::Module<Ad>>(module: M, path: &Path, device: &CpuDevice) -> Result<M, PluginError> {
    let record = Bin::new()
        .load(path.to_path_buf(), device)
        .map_err(|e| format!("reading model state {}: {e}", path.display()))?;
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

/// The checkpoint `--resume RUN_DIR` continues from: the `checkpoints/iter_<n>` with the
/// largest `n` that holds a `trainer_state.json` (a directory appears only once complete,
/// because checkpoints are written to a temporary directory and renamed).
pub fn latest_checkpoint(run_dir: &Path) -> Result<(usize, std::path::PathBuf), PluginError> {
    let dir = run_dir.join("checkpoints");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        format!("--resume {}: no checkpoints to resume from ({}: {e})", run_dir.display(), dir.display())
    })?;
    let mut best: Option<(usize, std::path::PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix("iter_").and_then(|n| n.parse::<usize>().ok()) else { continue };
        if entry.path().join("trainer_state.json").is_file() && best.as_ref().is_none_or(|(b, _)| n > *b) {
            best = Some((n, entry.path()));
        }
    }
    best.ok_or_else(|| format!("--resume {}: {} holds no complete checkpoint", run_dir.display(), dir.display()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

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

    #[test]
    fn latest_checkpoint_skips_incomplete_directories() {
        let dir = std::env::temp_dir().join(format!("tril-latest-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (n, complete) in [(2, true), (4, true), (6, false)] {
            let d = dir.join(format!("checkpoints/iter_{n}"));
            std::fs::create_dir_all(&d).unwrap();
            if complete {
                std::fs::write(d.join("trainer_state.json"), "{}").unwrap();
            }
        }
        let (n, path) = latest_checkpoint(&dir).unwrap();
        assert_eq!(n, 4);
        assert!(path.ends_with("checkpoints/iter_4"));
        let err = latest_checkpoint(&dir.join("nothing")).unwrap_err().to_string();
        assert!(err.contains("no checkpoints to resume from"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
