//! The one place that names a concrete Burn backend.
//!
//! Everything else in tril (models, losses, loops, optimizers, checkpoints, rewards and
//! metrics) is generic over `B: Backend` or `B: AutodiffBackend`. The root config's
//! `device` and `precision` keys parse into a [`Target`]; [`train`] and [`infer`] map it
//! to a backend type and call the job's generic `run::<B>()`:
//!
//! | `device` | backend | cargo feature | precisions |
//! |---|---|---|---|
//! | `cpu` | the faster CPU backend of this build ([`CPU_BACKEND`]) | – | that backend's |
//! | `ndarray` | `burn::backend::NdArray` | – (always built) | f32 |
//! | `flex` | `burn::backend::Flex` (pure Rust, multithreaded) | `flex` | f32, bf16, f16 |
//! | `cuda`, `cuda:N` | `burn::backend::Cuda` (CubeCL, NVRTC at run time) | `cuda` | f32, bf16, f16 |
//! | `wgpu`, `wgpu:N`, `vulkan`, `vulkan:N` | `burn::backend::Wgpu` (CubeCL, SPIR-V on Vulkan) | `wgpu` | f32, f16 where the adapter has it |
//!
//! Burn 0.21 keeps one default float type per device: [`train`] and [`infer`] set it from
//! `precision` before the job creates a tensor (`burn::tensor::set_default_dtypes`). Parameters,
//! activations, gradients and optimizer moments then live in that dtype; log-softmax,
//! log-probs, KL, advantages and losses are computed in f32 ([`crate::ops::to_f32`]).
//!
//! ```
//! use tril_core::backend::{Device, Precision, Target};
//! let target = Target::new("ndarray".parse().unwrap(), Precision::F32).unwrap();
//! assert_eq!(target.device, Device::NdArray);
//! let err = Target::new(Device::NdArray, Precision::Bf16).unwrap_err().to_string();
//! assert!(err.contains("precision: `bf16`"), "{err}");
//! ```

use crate::error::CoreError;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, IntDType};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The `ndarray` backend (always compiled in; f32).
pub type NdArrayBackend = burn::backend::NdArray<f32>;
/// The `flex` backend (feature `flex`).
#[cfg(feature = "flex")]
pub type FlexBackend = burn::backend::Flex;
/// The `cuda` backend (feature `cuda`).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32, i32>;
/// The `wgpu` / `vulkan` backend (feature `wgpu`).
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Wgpu<f32, i32>;

/// The backend `device: cpu` selects: flex where this build has it (measured faster than
/// ndarray on tril's workloads, see DESIGN.md "Backends"), else ndarray. Tests and examples
/// that need one concrete backend use this alias.
#[cfg(feature = "flex")]
pub type CpuBackend = FlexBackend;
/// The backend `device: cpu` selects: flex where this build has it, else ndarray.
#[cfg(not(feature = "flex"))]
pub type CpuBackend = NdArrayBackend;
/// [`CpuBackend`] with autodiff.
pub type CpuAutodiff = burn::backend::Autodiff<CpuBackend>;

/// The backend fresh parameters are drawn on, whatever device trains (ndarray: its seeded
/// host generator is the one ndarray and flex share, so every device starts from the same
/// weights for a seed; see `tril_algorithms::onpolicy::drawn_on_host`).
pub type HostBackend = NdArrayBackend;
/// The device of [`HostBackend`].
pub const HOST: burn::backend::ndarray::NdArrayDevice = burn::backend::ndarray::NdArrayDevice::Cpu;

/// The name of the backend `device: cpu` selects in this build.
pub const CPU_BACKEND: &str = if cfg!(feature = "flex") { "flex" } else { "ndarray" };

/// Where a run computes: the root config's `device` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The faster CPU backend of this build ([`CPU_BACKEND`]).
    Cpu,
    /// Burn's ndarray backend.
    NdArray,
    /// Burn's flex backend (feature `flex`).
    Flex,
    /// CUDA GPU `N` (feature `cuda`); `cuda` is `cuda:0`.
    Cuda(usize),
    /// A wgpu adapter through Vulkan (feature `wgpu`): `wgpu`/`vulkan` is the default
    /// adapter, `wgpu:N`/`vulkan:N` the N-th discrete GPU.
    Wgpu(Option<usize>),
}

/// The backends this binary carries, each with the `device` values that select it.
pub fn compiled_backends() -> Vec<(&'static str, &'static str)> {
    let mut out = vec![("ndarray", "ndarray")];
    if cfg!(feature = "flex") {
        out.push(("flex", "flex"));
    }
    if cfg!(feature = "cuda") {
        out.push(("cuda", "cuda, cuda:N"));
    }
    if cfg!(feature = "wgpu") {
        out.push(("wgpu", "wgpu, wgpu:N, vulkan, vulkan:N"));
    }
    out
}

fn compiled_names() -> String {
    compiled_backends().iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

impl Device {
    /// The cargo feature that compiles this device's backend in, if any.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Device::Cpu | Device::NdArray => None,
            Device::Flex => Some("flex"),
            Device::Cuda(_) => Some("cuda"),
            Device::Wgpu(_) => Some("wgpu"),
        }
    }

    /// Whether this binary carries the device's backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Device::Cpu | Device::NdArray => true,
            Device::Flex => cfg!(feature = "flex"),
            Device::Cuda(_) => cfg!(feature = "cuda"),
            Device::Wgpu(_) => cfg!(feature = "wgpu"),
        }
    }

    /// `cpu` resolved to the backend it stands for in this build.
    pub fn resolved(self) -> Device {
        match self {
            Device::Cpu if cfg!(feature = "flex") => Device::Flex,
            Device::Cpu => Device::NdArray,
            other => other,
        }
    }

    /// The precisions the backend can do at all (a GPU adapter may still lack one; that
    /// is checked when the run starts).
    pub fn precisions(self) -> &'static [Precision] {
        match self.resolved() {
            Device::NdArray | Device::Cpu => &[Precision::F32],
            Device::Wgpu(_) => &[Precision::F32, Precision::F16],
            Device::Flex | Device::Cuda(_) => &[Precision::F32, Precision::Bf16, Precision::F16],
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::NdArray => f.write_str("ndarray"),
            Device::Flex => f.write_str("flex"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Wgpu(None) => f.write_str("wgpu"),
            Device::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
        }
    }
}

/// Why a `device` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceParseError {
    /// Not a device name at all.
    #[error("expected one of cpu, ndarray, flex, cuda, cuda:N, wgpu, wgpu:N, vulkan, vulkan:N")]
    Unknown,
    /// A device whose backend this binary was built without.
    #[error(
        "this tril was built without the `{feature}` backend; rebuild with `cargo build --release -p tril --features {feature}` (this binary carries: {carried})"
    )]
    NotCompiled {
        /// The cargo feature that adds it.
        feature: &'static str,
        /// The backends this binary has.
        carried: String,
    },
}

impl FromStr for Device {
    type Err = DeviceParseError;

    /// Parses `cpu`, `ndarray`, `flex`, `cuda[:N]`, `wgpu[:N]` or `vulkan[:N]` (case
    /// and surrounding spaces ignored) and refuses a backend this build lacks.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let (name, index) = match s.split_once(':') {
            Some((name, n)) => (name, Some(n.parse::<usize>().map_err(|_| DeviceParseError::Unknown)?)),
            None => (s.as_str(), None),
        };
        let device = match (name, index) {
            ("cpu", None) => Device::Cpu,
            ("ndarray", None) => Device::NdArray,
            ("flex", None) => Device::Flex,
            ("cuda", n) => Device::Cuda(n.unwrap_or(0)),
            ("wgpu" | "vulkan", n) => Device::Wgpu(n),
            _ => return Err(DeviceParseError::Unknown),
        };
        if !device.is_compiled() {
            return Err(DeviceParseError::NotCompiled {
                feature: device.feature().unwrap_or_default(),
                carried: compiled_names(),
            });
        }
        Ok(device)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: DeviceParseError| serde::de::Error::custom(format!("`{s}`: {e}")))
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The float type of parameters and activations: the root config's `precision` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// bfloat16 parameters, activations, gradients and optimizer moments; losses in f32.
    Bf16,
    /// IEEE half parameters, activations, gradients and optimizer moments; losses in f32.
    F16,
}

impl Precision {
    /// The Burn float dtype.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
            Precision::F16 => FloatDType::F16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

/// A checked (device, precision) pair: what [`train`] and [`infer`] dispatch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// Where to compute.
    pub device: Device,
    /// The float type of parameters and activations.
    pub precision: Precision,
}

impl Default for Target {
    fn default() -> Self {
        Target { device: Device::Cpu, precision: Precision::F32 }
    }
}

impl Target {
    /// Checks that `device`'s backend can do `precision` at all.
    pub fn new(device: Device, precision: Precision) -> Result<Target, CoreError> {
        let allowed = device.precisions();
        if !allowed.contains(&precision) {
            let names: Vec<String> = allowed.iter().map(|p| p.to_string()).collect();
            let backend = device.resolved();
            return Err(CoreError::Backend {
                key: "precision".into(),
                message: format!(
                    "`{precision}` is not supported by device `{device}` (backend {backend}); it supports: {}",
                    names.join(", ")
                ),
            });
        }
        Ok(Target { device, precision })
    }
}

/// A computation with gradients, generic over the backend: a training loop.
pub trait TrainJob {
    /// What the job returns.
    type Output;
    /// Runs the job on autodiff backend `B`, on `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// A computation without gradients, generic over the backend: a reward model, a metric's
/// model, a log-prob cache.
pub trait InferJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B`, on `device`.
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Sets `device`'s default float type to `precision` before any tensor exists on it, or
/// checks that an earlier run in this process set the same.
fn configure<B: Backend>(device: &B::Device, target: Target) -> Result<(), CoreError> {
    let fail = |message: String| CoreError::Backend { key: "precision".into(), message };
    let dtype: DType = target.precision.dtype().into();
    // The first query initialises the device; CubeCL panics when no adapter exists (no GPU,
    // no Vulkan driver): turn that into an error naming the device.
    let query = std::panic::AssertUnwindSafe(|| B::supports_dtype(device, dtype));
    let supported = std::panic::catch_unwind(query).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the backend panicked");
        CoreError::Backend {
            key: "device".into(),
            message: format!("`{}` cannot be used on this machine: {why}", target.device),
        }
    })?;
    if !supported {
        return Err(fail(format!(
            "`{}` is not supported by device `{}` ({device:?}); use precision=f32",
            target.precision, target.device
        )));
    }
    if burn::tensor::set_default_dtypes::<B>(device, target.precision.dtype(), IntDType::I32).is_err() {
        let current = burn::tensor::get_device_settings::<B>(device).float_dtype;
        if current != target.precision.dtype() {
            return Err(fail(format!(
                "device `{}` already computes in {current:?} in this process; one process uses one precision per device",
                target.device
            )));
        }
    }
    Ok(())
}

macro_rules! dispatch {
    ($target:expr, $job:expr, $wrap:ident) => {{
        let target: Target = $target;
        match target.device.resolved() {
            Device::Cpu | Device::NdArray => {
                let device = burn::backend::ndarray::NdArrayDevice::Cpu;
                configure::<NdArrayBackend>(&device, target)?;
                Ok($job.run::<$wrap!(NdArrayBackend)>(device))
            }
            #[cfg(feature = "flex")]
            Device::Flex => {
                let device = burn::backend::flex::FlexDevice;
                configure::<FlexBackend>(&device, target)?;
                Ok($job.run::<$wrap!(FlexBackend)>(device))
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(index) => {
                // Data-parallel replicas take consecutive GPUs from `cuda:index`.
                let device = burn::backend::cuda::CudaDevice::new(index + crate::parallel::local_rank());
                configure::<CudaBackend>(&device, target)?;
                Ok($job.run::<$wrap!(CudaBackend)>(device))
            }
            #[cfg(feature = "wgpu")]
            Device::Wgpu(index) => {
                let device = match index {
                    Some(n) => burn::backend::wgpu::WgpuDevice::DiscreteGpu(n + crate::parallel::local_rank()),
                    None => burn::backend::wgpu::WgpuDevice::DefaultDevice,
                };
                configure::<WgpuBackend>(&device, target)?;
                Ok($job.run::<$wrap!(WgpuBackend)>(device))
            }
            #[allow(unreachable_patterns)]
            other => Err(CoreError::Backend {
                key: "device".into(),
                message: format!(
                    "`{other}`: this tril was built without its backend (feature `{}`); it carries: {}",
                    other.feature().unwrap_or_default(),
                    compiled_names()
                ),
            }),
        }
    }};
}

macro_rules! autodiff {
    ($b:ty) => {
        burn::backend::Autodiff<$b>
    };
}

macro_rules! plain {
    ($b:ty) => {
        $b
    };
}

/// Runs a training job on the backend `target` names (with autodiff).
pub fn train<J: TrainJob>(target: Target, job: J) -> Result<J::Output, CoreError> {
    dispatch!(target, job, autodiff)
}

/// Runs an inference job on the backend `target` names (no autodiff).
pub fn infer<J: InferJob>(target: Target, job: J) -> Result<J::Output, CoreError> {
    dispatch!(target, job, plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{ElementConversion, Tensor};

    #[test]
    fn devices_parse_and_print() {
        for (text, device) in [("cpu", Device::Cpu), ("ndarray", Device::NdArray), (" CPU ", Device::Cpu)] {
            assert_eq!(text.parse::<Device>().unwrap(), device);
        }
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        assert_eq!(Device::Wgpu(None).to_string(), "wgpu");
        for bad in ["gpu", "cuda:x", "cpu:1", "", "tpu:0"] {
            assert_eq!(bad.parse::<Device>().unwrap_err(), DeviceParseError::Unknown, "{bad}");
        }
    }

    #[test]
    fn a_device_without_its_feature_names_the_feature() {
        for (text, device) in [
            ("cuda", Device::Cuda(0)),
            ("cuda:1", Device::Cuda(1)),
            ("vulkan", Device::Wgpu(None)),
            ("flex", Device::Flex),
        ] {
            match text.parse::<Device>() {
                Ok(parsed) => assert!(device.is_compiled() && parsed == device, "{text}"),
                Err(e) => {
                    assert!(!device.is_compiled(), "{text}");
                    let msg = e.to_string();
                    let feature = device.feature().unwrap();
                    assert!(msg.contains(&format!("--features {feature}")), "{msg}");
                    assert!(msg.contains("ndarray"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn precision_is_checked_against_the_backend() {
        assert!(Target::new(Device::NdArray, Precision::F32).is_ok());
        let err = Target::new(Device::NdArray, Precision::F16).unwrap_err().to_string();
        assert!(err.starts_with("precision: `f16` is not supported by device `ndarray`"), "{err}");
        assert!(Target::new(Device::Cuda(0), Precision::Bf16).is_ok());
        assert!(Target::new(Device::Wgpu(None), Precision::Bf16).is_err());
    }

    struct Sum(Vec<f32>);

    impl InferJob for Sum {
        type Output = f32;
        fn run<B: Backend>(self, device: B::Device) -> f32 {
            let n = self.0.len();
            Tensor::<B, 1>::from_data(burn::tensor::TensorData::new(self.0, [n]), &device).sum().into_scalar().elem()
        }
    }

    #[test]
    fn dispatch_runs_the_job_on_every_compiled_cpu_backend() {
        assert_eq!(infer(Target::new(Device::NdArray, Precision::F32).unwrap(), Sum(vec![1.0, 2.5])).unwrap(), 3.5);
        assert_eq!(infer(Target::default(), Sum(vec![1.0, 2.5])).unwrap(), 3.5);
    }
}
