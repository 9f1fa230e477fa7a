//! Hugging Face checkpoints in and out: safetensors (single file or sharded), config.json.
//!
//! Each architecture has one load function and one save function, driven by one table that
//! pairs every HF tensor name with a parameter of the Burn module ([`gpt2`], [`encoder`]).
//! Loading checks every shape, fails on the first missing tensor (naming it), and reports the
//! tensors the architecture does not use with `tracing::warn` and in the [`LoadReport`].

pub mod causal;
pub mod encoder;
pub mod gpt2;
pub mod llama;
pub mod neox;
pub mod peft;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorInfo};

use crate::error::{ModelError, Result};

pub use causal::{
    load_lm, load_lm_classifier, load_value_model, read_lm_config, save_lm, save_lm_classifier, save_value_model,
};
pub use encoder::{load_encoder_classifier, save_encoder_classifier};
pub use gpt2::{load_gpt2, save_gpt2, Loaded};
pub use llama::{load_llama, load_llama_classifier, save_llama, save_llama_classifier};

/// File name of a single-file safetensors checkpoint.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// File name of the index of a sharded safetensors checkpoint.
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";
/// File name of the model config.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// What loading a checkpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of tensors copied into the model.
    pub loaded: usize,
    /// Checkpoint tensors that the architecture does not use (known buffers such as GPT-2's
    /// `attn.bias` and the tied `lm_head.weight` are not listed).
    pub unused: Vec<String>,
}

struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    infos: HashMap<String, TensorInfo>,
}

impl SafetensorsFile {
    fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|source| ModelError::Safetensors { file: path.to_path_buf(), source })?;
        let infos = meta.tensors().into_iter().map(|(k, v)| (k, v.clone())).collect();
        Ok(Self { path: path.to_path_buf(), bytes, data_start: 8 + n, infos })
    }
}

/// An opened checkpoint: one or more safetensors files, tensors looked up by HF name.
pub struct Checkpoint {
    location: PathBuf,
    files: Vec<SafetensorsFile>,
    /// Tensor name (after [`Checkpoint::rename`]) -> (index into `files`, name in that file).
    index: BTreeMap<String, (usize, String)>,
    used: BTreeSet<String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint").field("location", &self.location).field("tensors", &self.index.len()).finish()
    }
}

impl Checkpoint {
    /// Open a checkpoint: a `.safetensors` file, or a directory holding `model.safetensors`
    /// or `model.safetensors.index.json` (sharded).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() {
            return Self::from_files(path.to_path_buf(), vec![path.to_path_buf()]);
        }
        let single = path.join(SAFETENSORS_FILE);
        if single.is_file() {
            return Self::from_files(single.clone(), vec![single]);
        }
        let index = path.join(SAFETENSORS_INDEX_FILE);
        if index.is_file() {
            return Self::from_index(&index);
        }
        let hint = if path.join("pytorch_model.bin").exists() {
            " (only pytorch_model.bin found: convert it, e.g. with transformers \
             `save_pretrained(dir, safe_serialization=True)`)"
        } else {
            ""
        };
        Err(ModelError::MissingCheckpoint { dir: path.to_path_buf(), hint: hint.to_string() })
    }

    fn from_index(index_path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index_path).map_err(|e| ModelError::io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|source| ModelError::Json { path: index_path.to_path_buf(), source })?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::ShardIndex {
            file: index_path.to_path_buf(),
            reason: "no `weight_map` object".into(),
        })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shards: BTreeSet<PathBuf> = BTreeSet::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| ModelError::ShardIndex {
                file: index_path.to_path_buf(),
                reason: format!("weight_map[`{name}`] is not a file name"),
            })?;
            shards.insert(dir.join(file));
        }
        let ckpt = Self::from_files(dir.to_path_buf(), shards.into_iter().collect())?;
        if let Some(name) = map.keys().find(|n| !ckpt.index.contains_key(*n)) {
            return Err(ModelError::ShardIndex {
                file: index_path.to_path_buf(),
                reason: format!("tensor `{name}` is listed but not in its shard {}", map[name]),
            });
        }
        Ok(ckpt)
    }

    fn from_files(location: PathBuf, paths: Vec<PathBuf>) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = BTreeMap::new();
        for path in paths {
            let file = SafetensorsFile::open(&path)?;
            for name in file.infos.keys() {
                index.insert(name.clone(), (files.len(), name.clone()));
            }
            files.push(file);
        }
        Ok(Self { location, files, index, used: BTreeSet::new() })
    }

    /// Where the checkpoint was opened from.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|(i, orig)| self.files[*i].infos[orig].shape.as_slice())
    }

    /// Rename tensors: `f` maps a stored name to the name the architecture table uses (e.g.
    /// legacy `LayerNorm.gamma` -> `LayerNorm.weight`); `None` keeps the name.
    pub fn rename(&mut self, f: impl Fn(&str) -> Option<String>) {
        let old = std::mem::take(&mut self.index);
        self.index = old.into_iter().map(|(k, v)| (f(&k).unwrap_or(k), v)).collect();
    }

    /// Raw bytes and info of a tensor; marks it used.
    fn raw(&mut self, name: &str) -> Result<(&SafetensorsFile, &TensorInfo, &[u8])> {
        let (i, orig) = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.to_string(), location: self.location.clone() })?;
        self.used.insert(name.to_string());
        let file = &self.files[*i];
        let info = &file.infos[orig];
        let (start, end) = info.data_offsets;
        Ok((file, info, &file.bytes[file.data_start + start..file.data_start + end]))
    }

    /// Read a tensor as `f32` (F32, F16, BF16 and F64 are converted) and mark it used.
    pub fn read_f32(&mut self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (file, info, raw) = self.raw(name)?;
        let values = match info.dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F64 => {
                raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect()
            }
            other => {
                return Err(ModelError::UnsupportedDtype {
                    name: name.to_string(),
                    location: file.path.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok((values, info.shape.clone()))
    }

    /// Read an integer tensor (I64 or I32) as `i64` (used by test fixtures).
    pub fn read_i64(&mut self, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let (file, info, raw) = self.raw(name)?;
        let values = match info.dtype {
            Dtype::I64 => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
            Dtype::I32 => raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    name: name.to_string(),
                    location: file.path.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok((values, info.shape.clone()))
    }

    /// Read a tensor, check its shape, and make a Burn tensor on `device`.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let (values, shape) = self.read_f32(name)?;
        if shape != expected {
            return Err(self.shape_error(name, expected.to_vec(), shape));
        }
        Ok(Tensor::from_data(TensorData::new(values, expected), device))
    }

    fn shape_error(&self, name: &str, expected: Vec<usize>, got: Vec<usize>) -> ModelError {
        let location = self.index.get(name).map_or_else(|| self.location.clone(), |(i, _)| self.files[*i].path.clone());
        ModelError::ShapeMismatch { name: name.to_string(), location, expected, got }
    }

    /// Checks, before a model is built from `config_file`, that the sizes it gives fit this
    /// checkpoint, so that an absurd `n_layer` or `n_embd` (a corrupt or hostile config.json)
    /// is an error naming the file and key, not a huge allocation: every layer has tensors of
    /// its own, and the parameters the sizes imply (`params`, counted in f64 so that it cannot
    /// overflow) must not be more than twice what the checkpoint holds (near misses are left
    /// to the shape checks, whose errors name the tensor). `layers` and `width` are (key, value).
    pub(crate) fn check_config_fits(
        &self,
        config_file: &Path,
        layers: (&str, usize),
        width: (&str, usize),
        params: f64,
    ) -> Result<()> {
        let invalid = |(key, value): (&str, usize), reason: String| ModelError::InvalidConfigValue {
            file: config_file.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        let tensors = self.index.len();
        if layers.1 > tensors {
            let reason = format!("more layers than the {tensors} tensors of {}", self.location.display());
            return Err(invalid(layers, reason));
        }
        let held: f64 = self
            .files
            .iter()
            .flat_map(|f| f.infos.values())
            .map(|info| info.shape.iter().map(|&d| d as f64).product::<f64>())
            .sum();
        if params > 2.0 * held {
            let location = self.location.display();
            let reason = format!("the sizes imply {params:.3e} parameters, the checkpoint {location} holds {held}");
            return Err(invalid(width, reason));
        }
        Ok(())
    }

    /// Tensors never read, minus those matching `ignore` (known buffers), sorted.
    pub fn unused(&self, ignore: impl Fn(&str) -> bool) -> Vec<String> {
        self.index.keys().filter(|n| !self.used.contains(*n) && !ignore(n)).cloned().collect()
    }
}

/// Where a checkpoint tensor goes in a Burn module, and how it is laid out.
pub(crate) enum Slot<'a, B: Backend> {
    /// A 1-D parameter (bias, LayerNorm gamma/beta).
    Vector(&'a mut Param<Tensor<B, 1>>),
    /// A 2-D parameter stored in Burn's layout (embeddings `[V, D]`, HF `Conv1D` `[in, out]`).
    Matrix(&'a mut Param<Tensor<B, 2>>),
    /// A 2-D parameter stored as torch `nn.Linear` `[out, in]`: transposed on load and save.
    Transposed(&'a mut Param<Tensor<B, 2>>),
}

/// One row of an architecture's rename table: HF tensor name -> Burn parameter.
pub(crate) struct Entry<'a, B: Backend> {
    pub name: String,
    pub slot: Slot<'a, B>,
}

/// Builders for rename tables.
pub(crate) struct Table<'a, B: Backend>(pub Vec<Entry<'a, B>>);

impl<'a, B: Backend> Table<'a, B> {
    pub fn new() -> Self {
        Table(Vec::new())
    }

    fn push(&mut self, name: String, slot: Slot<'a, B>) {
        self.0.push(Entry { name, slot });
    }

    /// `{prefix}.weight` as stored (HF `Conv1D`), `{prefix}.bias`.
    pub fn conv1d(&mut self, prefix: &str, l: &'a mut Linear<B>) {
        self.push(format!("{prefix}.weight"), Slot::Matrix(&mut l.weight));
        if let Some(b) = l.bias.as_mut() {
            self.push(format!("{prefix}.bias"), Slot::Vector(b));
        }
    }

    /// `{prefix}.weight` transposed (torch `nn.Linear`), `{prefix}.bias`.
    pub fn linear(&mut self, prefix: &str, l: &'a mut Linear<B>) {
        self.push(format!("{prefix}.weight"), Slot::Transposed(&mut l.weight));
        if let Some(b) = l.bias.as_mut() {
            self.push(format!("{prefix}.bias"), Slot::Vector(b));
        }
    }

    /// `{prefix}.weight` -> gamma, `{prefix}.bias` -> beta.
    pub fn layer_norm(&mut self, prefix: &str, ln: &'a mut LayerNorm<B>) {
        self.push(format!("{prefix}.weight"), Slot::Vector(&mut ln.gamma));
        if let Some(b) = ln.beta.as_mut() {
            self.push(format!("{prefix}.bias"), Slot::Vector(b));
        }
    }

    /// `{name}` -> embedding table `[n, d]`.
    pub fn embedding(&mut self, name: &str, e: &'a mut Embedding<B>) {
        self.push(name.to_string(), Slot::Matrix(&mut e.weight));
    }

    /// Copy every tensor of the table from the checkpoint into the module.
    pub fn load(self, ckpt: &mut Checkpoint, device: &B::Device) -> Result<usize> {
        let n = self.0.len();
        for Entry { name, slot } in self.0 {
            match slot {
                Slot::Vector(p) => {
                    let shape = p.lazy_shape().dims::<1>();
                    let t = ckpt.tensor::<B, 1>(&name, shape, device)?;
                    *p = Param::initialized(p.id, t.require_grad());
                }
                Slot::Matrix(p) => {
                    let shape = p.lazy_shape().dims::<2>();
                    let t = ckpt.tensor::<B, 2>(&name, shape, device)?;
                    *p = Param::initialized(p.id, t.require_grad());
                }
                Slot::Transposed(p) => {
                    let [i, o] = p.lazy_shape().dims::<2>();
                    let t = ckpt.tensor::<B, 2>(&name, [o, i], device)?.transpose();
                    *p = Param::initialized(p.id, t.require_grad());
                }
            }
        }
        Ok(n)
    }

    /// Read every parameter of the table as `(name, f32 values, HF shape)`.
    pub fn export(self) -> Vec<(String, Vec<f32>, Vec<usize>)> {
        self.0
            .into_iter()
            .map(|Entry { name, slot }| {
                let data = match slot {
                    Slot::Vector(p) => p.val().into_data(),
                    Slot::Matrix(p) => p.val().into_data(),
                    Slot::Transposed(p) => p.val().transpose().into_data(),
                };
                let shape = data.shape.clone();
                let values = data.convert::<f32>().into_vec::<f32>().unwrap_or_default();
                (name, values, shape.to_vec())
            })
            .collect()
    }
}

struct F32View<'a> {
    shape: Vec<usize>,
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Write f32 tensors to a safetensors file with metadata `{"format": "pt"}` (what
/// transformers expects).
pub fn write_safetensors(path: &Path, tensors: Vec<(String, Vec<f32>, Vec<usize>)>) -> Result<()> {
    let views: Vec<(String, F32View<'_>)> = tensors
        .into_iter()
        .map(|(name, values, shape)| {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, F32View { shape, bytes: bytes.into() })
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path)
        .map_err(|source| ModelError::Safetensors { file: path.to_path_buf(), source })
}

/// Write an HF model directory: `config.json`, `model.safetensors` and, if given,
/// `tokenizer.json` (with its chat template beside it).
pub(crate) fn write_model_dir(
    dir: &Path,
    config: serde_json::Value,
    tensors: Vec<(String, Vec<f32>, Vec<usize>)>,
    tokenizer: Option<&crate::tokenizer::TextTokenizer>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    write_json(&dir.join(CONFIG_FILE), &config)?;
    write_safetensors(&dir.join(SAFETENSORS_FILE), tensors)?;
    if let Some(tok) = tokenizer {
        tok.save(&dir.join(TOKENIZER_FILE))?;
    }
    Ok(())
}

/// Read and parse a JSON file.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })
}

/// Write pretty JSON to a file.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })?;
    std::fs::write(path, text + "\n").map_err(|e| ModelError::io(path, e))
}

/// Typed access to the keys of a parsed `config.json`, with errors naming file and key.
pub(crate) struct JsonConfig<'a> {
    pub file: &'a Path,
    pub json: &'a serde_json::Value,
}

impl JsonConfig<'_> {
    /// The first present key among `keys` (aliases), as usize.
    pub fn usize(&self, keys: &[&str]) -> Result<usize> {
        self.opt_usize(keys)?
            .ok_or_else(|| ModelError::MissingConfigKey { file: self.file.to_path_buf(), key: keys.join(" or ") })
    }

    /// The first present key among `keys`, as usize below 2^32 (no model size, id or count
    /// is larger; the bound keeps sums and products of sizes far from overflowing).
    pub fn opt_usize(&self, keys: &[&str]) -> Result<Option<usize>> {
        match self.find(keys) {
            None => Ok(None),
            Some((_, serde_json::Value::Null)) => Ok(None),
            Some((k, v)) => v
                .as_u64()
                .filter(|&x| x <= u64::from(u32::MAX))
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.invalid(k, v, "expected a non-negative integer below 2^32")),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.invalid(key, v, "expected a number")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.invalid(key, v, "expected a string")),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.invalid(key, v, "expected true or false")),
        }
    }

    /// A token id: an integer, or the first of a list (HF allows `eos_token_id: [a, b]`).
    pub fn opt_token_id(&self, key: &str) -> Result<Option<u32>> {
        match self.json.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Array(a)) if !a.is_empty() => {
                Self::id(&a[0]).map(Some).ok_or_else(|| self.invalid(key, &a[0], "expected a token id"))
            }
            Some(v) => Self::id(v).map(Some).ok_or_else(|| self.invalid(key, v, "expected a token id")),
        }
    }

    /// A token id: an integer that fits in u32 (a larger one is an error, not truncated).
    fn id(v: &serde_json::Value) -> Option<u32> {
        v.as_u64().and_then(|x| u32::try_from(x).ok())
    }

    fn find<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &serde_json::Value)> {
        keys.iter().find_map(|k| self.json.get(*k).map(|v| (*k, v)))
    }

    pub fn invalid(&self, key: &str, value: &serde_json::Value, reason: &str) -> ModelError {
        ModelError::InvalidConfigValue {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, vec![("a".into(), vec![1.0, 2.0, 3.0], vec![3])]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors") && err.contains("invalid safetensors"), "{err}");
    }

    #[test]
    fn reads_back_what_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        write_safetensors(&path, vec![("w".into(), vec![1.0, -2.5, 3.0, 4.0], vec![2, 2])]).unwrap();
        let mut ck = Checkpoint::open(&path).unwrap();
        assert_eq!(ck.read_f32("w").unwrap(), (vec![1.0, -2.5, 3.0, 4.0], vec![2, 2]));
        let err = ck.read_f32("v").unwrap_err().to_string();
        assert!(err.contains("missing tensor `v`"), "{err}");
    }
}
