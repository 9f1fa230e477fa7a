//! Per-token log-probs of a response given its prompt, and the uid-keyed cache of
//! reference log-probs that `tril logp` writes and `offline_ips` (and later DPO) reads.
//!
//! This is the log-prob precompute of the offline IPS pipeline (systems.md §2.4, "Log-prob
//! precompute"): for every data row, the masked per-token log-probs of the response tokens
//! under the reference model, keyed by the row's `uid`.
//!
//! # Data rows
//! A row has a `uid` (unique; when the column is absent but `qid` and `sample_id` are
//! present, `uid = qid-sample_id` as in the seed), a prompt, a response and optionally a
//! reward (column names configurable). A prompt is used as is; a JSON list of strings (the
//! seed's `prompt_pretokenized` is `[user, assistant-prefix]`) is joined with newlines; a
//! JSON list of `{role, content}` messages is rendered by the tokenizer's chat template
//! (TRL's prompt rendering: a generation prompt after a user turn, the assistant turn
//! continued after an assistant prefix; see `docs/chat-templates.md`), and is an error
//! naming the row when the tokenizer has no template.
//!
//! # Tokens
//! `prompt tokens ++ response tokens ++ [EOS]` (the seed's target is `response + eos`),
//! without special tokens otherwise, truncated on the right to `max_length`. A row whose
//! prompt leaves no room for a response token ([`Overflow`]) is skipped (default) or has
//! its prompt cut from the left (`truncate-left`, keeping the prompt's end, next to the
//! response); a row whose prompt has no token is skipped. Skipped rows are counted and
//! reported with the first few named ([`RowPolicy`]); with `strict` the first one is an
//! error naming the row instead. Rows are right-padded in a batch, so positions are
//! `0..len` as in an unpadded forward.
//!
//! # Cache file (`.safetensors`)
//! Flat rather than one tensor per uid, so a million rows make a small header:
//! - `logp`: F32 `[total]`, every row's response log-probs one after another;
//! - `offsets`: I64 `[n + 1]`, row `i` is `logp[offsets[i]..offsets[i + 1]]`;
//! - metadata `format = tril-logp-v1`, `uids` (JSON list, aligned with `offsets`), and the
//!   `model`, `tokenizer`, `seed`, `max_length` and `data` it was computed with.
//!
//! # Deviations from the seed
//! - One safetensors file instead of one pickle per rank (never pickle: loading a pickle
//!   runs code). A duplicate uid is an error when writing and when reading.
//! - Lists of plain strings are joined with newlines (the seed renders them with its model's
//!   template; a list of strings carries no roles to render).

use crate::AlgorithmError;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tril_core::ops::gather_logprobs;
use tril_core::plugin::{CriticLayout, ModelType, PluginError, PolicySpec};
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::chat_template::{render_prompt_cell, ChatTemplate};
use tril_models::tokenizer::TextTokenizer;
use tril_tasks::table::Table;

/// What to do with a row that does not fit `max_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// A row whose prompt leaves no room for a response token is left out (counted and
    /// reported; an error with `strict`); other long rows lose the response's end.
    #[default]
    Skip,
    /// Whenever prompt + response + EOS exceed `max_length`, drop prompt tokens from the
    /// left until the whole response fits (at least one prompt token stays; a response
    /// longer than that is still cut on the right).
    TruncateLeft,
}

impl Overflow {
    /// The name used in configs, flags and cache metadata.
    pub fn name(self) -> &'static str {
        match self {
            Overflow::Skip => "skip",
            Overflow::TruncateLeft => "truncate-left",
        }
    }
}

impl std::str::FromStr for Overflow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Overflow::Skip),
            "truncate-left" => Ok(Overflow::TruncateLeft),
            other => Err(format!("expected skip or truncate-left, found `{other}`")),
        }
    }
}

/// How rows with a problem are handled: the [`Overflow`] rule, and whether any problem
/// stops everything (`strict`) rather than skipping the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowPolicy {
    /// Rows whose prompt leaves no room for a response.
    pub overflow: Overflow,
    /// The first problem row is an error (instead of skipped, counted and reported).
    pub strict: bool,
}

/// The rows left out of a pass over a dataset: how many, and the first few with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Skipped {
    /// Rows left out.
    pub count: usize,
    /// The first [`Skipped::NAMED`] of them, as `row N (uid `u`): why`.
    pub first: Vec<String>,
}

impl Skipped {
    /// How many skipped rows a report names.
    pub const NAMED: usize = 5;

    /// Records a skipped row.
    pub fn add(&mut self, problem: &AlgorithmError) {
        self.count += 1;
        if self.first.len() < Self::NAMED {
            self.first.push(problem.to_string());
        }
    }

    /// One warning line saying what was skipped (nothing when no row was).
    pub fn report(&self, what: &str, total: usize) {
        if self.count > 0 {
            tracing::warn!(
                "{what}: skipped {} of {total} rows (first: {}); strict mode makes the first one an error",
                self.count,
                self.first.join("; ")
            );
        }
    }
}

/// The `format` metadata value of a cache file.
pub const CACHE_FORMAT: &str = "tril-logp-v1";

/// A data column and the config key or flag that names it (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column name in the file.
    pub name: String,
    /// The key or flag that chose it (`alg.args.uid_key`, `--uid-key`).
    pub key: String,
}

impl Column {
    /// A column `name` chosen by `key`.
    pub fn new(name: &str, key: &str) -> Self {
        Column { name: name.into(), key: key.into() }
    }
}

/// The columns a response dataset is read with.
#[derive(Debug, Clone)]
pub struct Columns {
    /// Unique id of the row.
    pub uid: Column,
    /// The prompt (plain text or a JSON list of messages).
    pub prompt: Column,
    /// The response scored.
    pub response: Column,
    /// The reward, when the reader needs one.
    pub reward: Option<Column>,
}

/// One row of a response dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Unique id.
    pub uid: String,
    /// 1-based data row in its file.
    pub row: usize,
    /// The prompt cell as read ([`prompt_text`] turns it into text).
    pub prompt: String,
    /// Response text.
    pub response: String,
    /// Reward, when a reward column was asked for.
    pub reward: Option<f64>,
}

/// The prompt text of a raw cell (see the module docs): plain text as is, a JSON list of
/// strings joined with newlines, a list of messages rendered by `template`. `row` names the
/// row in errors (a message list without a template).
pub fn prompt_text(raw: &str, template: Option<&ChatTemplate>, row: &str) -> Result<String, PluginError> {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('[') {
        if let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(trimmed) {
            let texts: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
            if let Some(texts) = texts {
                return Ok(texts.join("\n"));
            }
        }
    }
    match super::is_conversation(raw) {
        true => Ok(render_prompt_cell(template, raw, row)?),
        false => Ok(raw.to_string()),
    }
}

/// Reads a response dataset (`.parquet`, `.csv` or `.jsonl`): every row, in file order.
/// Errors name the file and, for a bad cell or a repeated uid, the row(s).
pub fn read_records(path: &Path, columns: &Columns) -> Result<Vec<Record>, PluginError> {
    let data =
        |row: Option<usize>, message: String| AlgorithmError::Data { file: path.display().to_string(), row, message };
    let table = Table::read(path)?;
    if table.is_empty() {
        return Err(data(None, "the file has no data rows".into()).into());
    }
    let uids = if !table.has_column(&columns.uid.name) && table.has_column("qid") && table.has_column("sample_id") {
        let q = table.column("qid", &columns.uid.key)?;
        let s = table.column("sample_id", &columns.uid.key)?;
        q.into_iter().zip(s).map(|(q, s)| format!("{q}-{s}")).collect()
    } else {
        table.column(&columns.uid.name, &columns.uid.key)?
    };
    let prompts = table.column(&columns.prompt.name, &columns.prompt.key)?;
    let responses = table.column(&columns.response.name, &columns.response.key)?;
    let rewards = match &columns.reward {
        Some(c) => table.numbers(&c.name, &c.key)?.into_iter().map(Some).collect(),
        None => vec![None; table.len()],
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, uid) in uids.iter().enumerate() {
        if let Some(first) = seen.insert(uid, i + 1) {
            let message =
                format!("uid `{uid}` repeats row {first} (column `{}`); uids must be unique", columns.uid.name);
            return Err(data(Some(i + 1), message).into());
        }
    }
    if let Some(i) = rewards.iter().position(|r| r.is_some_and(|r: f64| !r.is_finite())) {
        return Err(data(Some(i + 1), "the reward is not finite".into()).into());
    }
    Ok(uids
        .into_iter()
        .zip(prompts)
        .zip(responses)
        .zip(rewards)
        .enumerate()
        .map(|(i, (((uid, prompt), response), reward))| Record { uid, row: i + 1, prompt, response, reward })
        .collect())
}

/// A tokenized row: `prompt ++ response ++ [EOS]` and where the response starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Number of prompt tokens (>= 1); the response is `ids[prompt_len..]`.
    pub prompt_len: usize,
}

impl Encoded {
    /// Number of response tokens scored.
    pub fn response_len(&self) -> usize {
        self.ids.len() - self.prompt_len
    }
}

/// Tokenizes one record (see the module docs); errors name the uid and row.
pub fn encode(tok: &TextTokenizer, record: &Record, max_length: usize) -> Result<Encoded, PluginError> {
    encode_with(tok, record, max_length, Overflow::Skip)?.map_err(PluginError::from)
}

/// [`encode`] with an [`Overflow`] rule: the encoded row, or (inner `Err`) the problem
/// that leaves it out. The outer `Err` is a tokenizer failure.
pub fn encode_with(
    tok: &TextTokenizer,
    record: &Record,
    max_length: usize,
    overflow: Overflow,
) -> Result<Result<Encoded, AlgorithmError>, PluginError> {
    let row = format!("row {} (uid `{}`)", record.row, record.uid);
    let mut prompt = tok.encode(&prompt_text(&record.prompt, tok.chat_template(), &row)?, false)?;
    let refused = |message: String| AlgorithmError::Record { row: record.row, uid: record.uid.clone(), message };
    if prompt.is_empty() {
        return Ok(Err(refused("the prompt has no tokens".into())));
    }
    let mut response = tok.encode(&record.response, false)?;
    response.extend(tok.eos_token_id());
    match overflow {
        Overflow::Skip if prompt.len() >= max_length => {
            let message = format!(
                "the prompt alone has {} tokens, so no response token fits in max_length {max_length}",
                prompt.len()
            );
            return Ok(Err(refused(message)));
        }
        Overflow::TruncateLeft if prompt.len() + response.len() > max_length => {
            let budget = max_length.saturating_sub(response.len()).max(1);
            prompt.drain(..prompt.len().saturating_sub(budget));
        }
        _ => {}
    }
    let prompt_len = prompt.len();
    let mut ids = prompt;
    ids.extend(response);
    ids.truncate(max_length);
    Ok(Ok(Encoded { ids, prompt_len }))
}

/// Every record encoded under `policy`, each with its index in `records`; the rows left
/// out are reported (or, with `strict`, the first is the error). `what` names the data.
pub fn encode_all(
    tok: &TextTokenizer,
    records: &[Record],
    max_length: usize,
    policy: RowPolicy,
    what: &str,
) -> Result<(Vec<(usize, Encoded)>, Skipped), PluginError> {
    let mut out = Vec::with_capacity(records.len());
    let mut skipped = Skipped::default();
    for (i, record) in records.iter().enumerate() {
        match encode_with(tok, record, max_length, policy.overflow)? {
            Ok(encoded) => out.push((i, encoded)),
            Err(problem) if policy.strict => return Err(problem.into()),
            Err(problem) => skipped.add(&problem),
        }
    }
    skipped.report(what, records.len());
    Ok((out, skipped))
}

/// A right-padded batch of encoded rows.
#[derive(Debug, Clone)]
pub struct TokenBatch<B: Backend> {
    /// Ids, `[B, L]`.
    pub ids: Tensor<B, 2, Int>,
    /// Attention mask, `[B, L]`.
    pub mask: Tensor<B, 2, Int>,
    /// 1 where position `t` predicts a response token `t + 1`, `[B, L - 1]`.
    pub response_mask: Tensor<B, 2>,
}

/// Pads `rows` on the right with `pad` into one batch.
///
/// # Shapes
/// -> ids, mask `[B, L]`, response_mask `[B, L - 1]` with `L` the longest row (>= 2)
pub fn token_batch<B: Backend>(rows: &[&Encoded], pad: u32, device: &B::Device) -> TokenBatch<B> {
    let b = rows.len();
    let l = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0).max(2);
    let mut ids = vec![i64::from(pad); b * l];
    let mut mask = vec![0i64; b * l];
    let mut response = vec![0f32; b * (l - 1)];
    for (i, r) in rows.iter().enumerate() {
        for (j, &t) in r.ids.iter().enumerate() {
            ids[i * l + j] = i64::from(t);
            mask[i * l + j] = 1;
        }
        for t in r.prompt_len - 1..r.ids.len() - 1 {
            response[i * (l - 1) + t] = 1.0;
        }
    }
    TokenBatch {
        ids: Tensor::from_data(TensorData::new(ids, [b, l]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, l]), device),
        response_mask: Tensor::from_data(TensorData::new(response, [b, l - 1]), (device, burn::tensor::DType::F32)),
    }
}

/// Log-prob of every next token, masked to the response: entry `t` is
/// `log p(ids[t + 1] | ids[..=t])` where `t + 1` is a response token, else 0.
///
/// # Shapes
/// -> `[B, L - 1]`
pub fn response_logprobs<B: Backend>(lm: &CausalLm<B>, batch: &TokenBatch<B>) -> Tensor<B, 2> {
    let [b, l] = batch.ids.dims();
    let logits = lm.span_logits(batch.ids.clone(), Some(batch.mask.clone()), 0, l - 1); // [B, L - 1, V]
    let next = batch.ids.clone().slice([0..b, 1..l]); // [B, L - 1]
    gather_logprobs(logits, next) * batch.response_mask.clone()
}

/// The response entries of a `[B, L - 1]` host matrix, one vector per row.
pub fn response_values(values: &[f32], rows: &[&Encoded]) -> Vec<Vec<f32>> {
    let width = values.len() / rows.len().max(1);
    rows.iter()
        .enumerate()
        .map(|(i, r)| values[i * width + r.prompt_len - 1..i * width + r.ids.len() - 1].to_vec())
        .collect()
}

/// The language model a name denotes: `builtin:tiny-gpt2` (2 layers, 64 wide, initialized
/// from `seed` exactly as `alg=ppo` builds it for a prompt of `max_length` tokens), or a
/// GPT-2 family HF directory or hub id in the cache.
pub fn load_lm<B: Backend>(
    name: &str,
    vocab_size: usize,
    seed: u64,
    max_length: usize,
    device: &B::Device,
) -> Result<(CausalLm<B>, LmConfig), PluginError> {
    let spec = PolicySpec {
        model_type: ModelType::Causal,
        model_name: name.into(),
        create_reference: false,
        critic: CriticLayout::SharedTrunk,
        mlp_head: false,
        max_prompt_len: max_length,
        max_gen_len: 0,
    };
    let (model, _, config) = crate::onpolicy::build_models::<B>(&spec, "model_name", vocab_size, seed, device)?;
    Ok((model.policy, config))
}

/// The tokenizer a model comes with: `builtin:numbers` for `builtin:tiny-gpt2`, else the
/// model's own directory.
pub fn default_tokenizer(model: &str) -> &str {
    if model == "builtin:tiny-gpt2" {
        "builtin:numbers"
    } else {
        model
    }
}

/// Reference log-probs of response tokens keyed by uid (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogpCache {
    uids: Vec<String>,
    offsets: Vec<usize>,
    values: Vec<f32>,
    index: HashMap<String, usize>,
    /// Provenance written into the file's metadata (`model`, `data`, ...).
    pub meta: BTreeMap<String, String>,
}

impl LogpCache {
    /// An empty cache carrying `meta`.
    pub fn new(meta: BTreeMap<String, String>) -> Self {
        LogpCache { offsets: vec![0], meta, ..Default::default() }
    }

    /// Adds one row; a uid already present is an error.
    pub fn push(&mut self, uid: &str, values: &[f32]) -> Result<(), PluginError> {
        if self.index.contains_key(uid) {
            return Err(AlgorithmError::DuplicateUid { uid: uid.to_string() }.into());
        }
        self.index.insert(uid.into(), self.uids.len());
        self.uids.push(uid.into());
        self.values.extend_from_slice(values);
        self.offsets.push(self.values.len());
        Ok(())
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.uids.len()
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
    }

    /// The uids, in insertion order.
    pub fn uids(&self) -> &[String] {
        &self.uids
    }

    /// The log-probs of `uid`'s response tokens.
    pub fn get(&self, uid: &str) -> Option<&[f32]> {
        self.index.get(uid).map(|&i| &self.values[self.offsets[i]..self.offsets[i + 1]])
    }

    /// Writes the cache to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), PluginError> {
        use safetensors::tensor::{Dtype, TensorView};
        let values: Vec<u8> = self.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let offsets: Vec<u8> = self.offsets.iter().flat_map(|&o| (o as i64).to_le_bytes()).collect();
        let failed = |e: safetensors::SafeTensorError| AlgorithmError::io("writing", path, e);
        let tensors = vec![
            ("logp", TensorView::new(Dtype::F32, vec![self.values.len()], &values).map_err(failed)?),
            ("offsets", TensorView::new(Dtype::I64, vec![self.offsets.len()], &offsets).map_err(failed)?),
        ];
        let mut meta: HashMap<String, String> = self.meta.clone().into_iter().collect();
        meta.insert("format".into(), CACHE_FORMAT.into());
        meta.insert("uids".into(), serde_json::to_string(&self.uids)?);
        let bytes = safetensors::tensor::serialize(tensors, Some(meta)).map_err(failed)?;
        tril_core::run_dir::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Reads a cache [`LogpCache::save`] wrote; errors name the file.
    pub fn load(path: &Path) -> Result<Self, PluginError> {
        let bad = |message: String| -> PluginError {
            AlgorithmError::Cache { path: path.display().to_string(), message }.into()
        };
        let bytes = std::fs::read(path).map_err(|e| AlgorithmError::file(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        if meta.get("format").map(String::as_str) != Some(CACHE_FORMAT) {
            return Err(bad(format!("metadata `format` is {:?}, expected `{CACHE_FORMAT}`", meta.get("format"))));
        }
        let uids: Vec<String> = serde_json::from_str(meta.get("uids").map_or("", String::as_str))
            .map_err(|e| bad(format!("metadata `uids` is not a JSON list of strings: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let tensor = |name: &str, dtype: safetensors::Dtype| {
            let t = st.tensor(name).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != dtype || t.shape().len() != 1 {
                return Err(bad(format!("tensor `{name}` is {:?} {:?}, expected 1-D {dtype:?}", t.dtype(), t.shape())));
            }
            Ok(t.data().to_vec())
        };
        let values: Vec<f32> = tensor("logp", safetensors::Dtype::F32)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let offsets: Vec<i64> = tensor("offsets", safetensors::Dtype::I64)?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let monotone = offsets.first() == Some(&0) && offsets.windows(2).all(|w| w[0] <= w[1]);
        if offsets.len() != uids.len() + 1 || !monotone || offsets.last().copied() != Some(values.len() as i64) {
            return Err(bad(format!(
                "{} offsets for {} uids and {} values (expected n + 1 increasing offsets from 0 to the value count)",
                offsets.len(),
                uids.len(),
                values.len()
            )));
        }
        let mut meta = meta;
        meta.remove("uids");
        meta.remove("format");
        let mut cache = LogpCache::new(meta);
        for (i, uid) in uids.iter().enumerate() {
            let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
            cache.push(uid, &values[a..b]).map_err(|e| bad(e.to_string()))?;
        }
        Ok(cache)
    }
}

/// Settings of [`compute_cache`].
#[derive(Debug, Clone)]
pub struct LogpOptions {
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Tokens per row at most (prompt + response + EOS).
    pub max_length: usize,
    /// A progress line every this many batches (0: none).
    pub log_every: usize,
    /// Rows that do not fit: skipped and reported, cut from the left, or an error.
    pub rows: RowPolicy,
}

/// Computes the response log-probs of every record under `lm` (on the backend `B`,
/// without gradients) into a cache carrying `meta` (plus the `overflow` rule). Rows that
/// do not fit are handled by `opts.rows` (see the module docs): left out of the cache
/// and reported, or the error.
pub fn compute_cache<B: Backend>(
    lm: &CausalLm<B>,
    tok: &TextTokenizer,
    records: &[Record],
    opts: &LogpOptions,
    meta: BTreeMap<String, String>,
    device: &B::Device,
) -> Result<LogpCache, PluginError> {
    let (encoded, _) = encode_all(tok, records, opts.max_length, opts.rows, "logp")?;
    cache_of_encoded(lm, tok, records, &encoded, opts, meta, device)
}

/// [`compute_cache`] of rows already encoded by [`encode_all`] (each with its index in
/// `records`).
pub fn cache_of_encoded<B: Backend>(
    lm: &CausalLm<B>,
    tok: &TextTokenizer,
    records: &[Record],
    encoded: &[(usize, Encoded)],
    opts: &LogpOptions,
    mut meta: BTreeMap<String, String>,
    device: &B::Device,
) -> Result<LogpCache, PluginError> {
    meta.insert("overflow".into(), opts.rows.overflow.name().into());
    let pad = tok.pad_token_id().or(tok.eos_token_id()).unwrap_or(0);
    let mut cache = LogpCache::new(meta);
    let batches = encoded.len().div_ceil(opts.batch_size.max(1));
    let started = std::time::Instant::now();
    for (k, chunk) in encoded.chunks(opts.batch_size.max(1)).enumerate() {
        let rows: Vec<&Encoded> = chunk.iter().map(|(_, e)| e).collect();
        let batch = token_batch::<B>(&rows, pad, device);
        let lp =
            response_logprobs(lm, &batch).into_data().convert::<f32>().to_vec::<f32>().map_err(|e| {
                AlgorithmError::TensorData { what: "response log-probs".into(), message: format!("{e:?}") }
            })?;
        for ((i, _), values) in chunk.iter().zip(response_values(&lp, &rows)) {
            cache.push(&records[*i].uid, &values)?;
        }
        if opts.log_every > 0 && ((k + 1) % opts.log_every == 0 || k + 1 == batches) {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(batch = k + 1, batches, rows = cache.len(), secs = format!("{secs:.1}"), "logp");
        }
    }
    Ok(cache)
}

/// The default output path of `tril logp`: `<data stem>.logp.safetensors` beside the data.
pub fn default_cache_path(data: &Path) -> PathBuf {
    let stem = data.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    data.with_file_name(format!("{stem}.logp.safetensors"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tril_core::backend::CpuBackend;

    fn record(row: usize, prompt: &str, response: &str) -> Record {
        Record { uid: format!("u{row}"), row, prompt: prompt.into(), response: response.into(), reward: None }
    }

    #[test]
    fn rows_that_do_not_fit_are_skipped_reported_or_cut_from_the_left() {
        let tok = crate::onpolicy::numbers_tokenizer().unwrap();
        let long = (1..=9).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        let records = [record(1, "1 2", "3 4"), record(2, &long, "5 6"), record(3, "", "7"), record(4, "8", "9")];
        let lax = RowPolicy::default();
        let (kept, skipped) = encode_all(&tok, &records, 8, lax, "d.parquet").unwrap();
        assert_eq!(kept.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 3]);
        assert_eq!(skipped.count, 2);
        assert_eq!(
            skipped.first[0],
            "row 2 (uid `u2`): the prompt alone has 9 tokens, so no response token fits in max_length 8"
        );
        assert_eq!(skipped.first[1], "row 3 (uid `u3`): the prompt has no tokens");
        let strict = RowPolicy { strict: true, ..lax };
        let err = encode_all(&tok, &records, 8, strict, "d.parquet").unwrap_err().to_string();
        assert!(err.starts_with("row 2 (uid `u2`)"), "{err}");
        // truncate-left keeps the prompt's end and the whole response: 8 - (2 + EOS) = 5.
        let left = RowPolicy { overflow: Overflow::TruncateLeft, strict: false };
        let (kept, skipped) = encode_all(&tok, &records, 8, left, "d.parquet").unwrap();
        assert_eq!(skipped.count, 1, "only the empty prompt");
        let (_, row) = &kept[1];
        assert_eq!(row.prompt_len, 5);
        assert_eq!(row.ids, [tok.encode("5 6 7 8 9 5 6", false).unwrap(), vec![0]].concat());
        assert_eq!(row.response_len(), 3);
        // Rows that fit are encoded alike under both rules.
        assert_eq!(encode(&tok, &records[0], 8).unwrap(), kept[0].1);
    }

    #[test]
    fn list_prompts_join_their_texts() {
        let text = |raw: &str| prompt_text(raw, None, "row 1").unwrap();
        assert_eq!(text(r#"["write a sort", "def sort("]"#), "write a sort\ndef sort(");
        assert_eq!(text("[not json"), "[not json");
        assert_eq!(text("plain"), "plain");
        let messages = r#"[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]"#;
        let err = prompt_text(messages, None, "row 7").unwrap_err().to_string();
        assert!(err.contains("row 7") && err.contains("chat_template"), "{err}");
        let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let template = ChatTemplate::new(chatml, None, None).unwrap();
        let user = r#"[{"role": "user", "content": "hi"}]"#;
        assert_eq!(
            prompt_text(user, Some(&template), "r").unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn cache_round_trips_and_rejects_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.logp.safetensors");
        let mut cache = LogpCache::new(BTreeMap::from([("model".to_string(), "m".to_string())]));
        cache.push("a", &[-1.0, -2.5]).unwrap();
        cache.push("b", &[]).unwrap();
        cache.push("c", &[-0.25]).unwrap();
        assert!(cache.push("a", &[0.0]).unwrap_err().to_string().contains("uid `a` appears twice"));
        cache.save(&path).unwrap();
        let back = LogpCache::load(&path).unwrap();
        assert_eq!(back, cache);
        assert_eq!(back.get("a"), Some(&[-1.0f32, -2.5][..]));
        assert_eq!(back.get("b"), Some(&[][..]));
        assert_eq!(back.get("z"), None);
        std::fs::write(&path, b"junk").unwrap();
        let err = LogpCache::load(&path).unwrap_err().to_string();
        assert!(err.contains("c.logp.safetensors: not a tril log-prob cache"), "{err}");
    }

    /// The batched, padded, masked log-probs equal a per-row unpadded forward summed by
    /// hand from the full softmax (tolerance 1e-5).
    #[test]
    fn padded_batch_matches_unpadded_rows() {
        let device = Default::default();
        let tok = crate::onpolicy::numbers_tokenizer().unwrap();
        let (lm, _) = load_lm::<CpuBackend>("builtin:tiny-gpt2", tok.vocab_size(), 3, 32, &device).unwrap();
        let rec = |uid: &str, prompt: &str, response: &str| Record {
            uid: uid.into(),
            row: 1,
            prompt: prompt.into(),
            response: response.into(),
            reward: None,
        };
        let records = [rec("a", "1 2 3", "4 5"), rec("b", "7", "8 9 10 11 12")];
        let encoded: Vec<Encoded> = records.iter().map(|r| encode(&tok, r, 32).unwrap()).collect();
        assert_eq!(encoded[0].ids, vec![2, 3, 4, 5, 6, 0]); // "1 2 3" + "4 5" + EOS
        let rows: Vec<&Encoded> = encoded.iter().collect();
        let batch = token_batch::<CpuBackend>(&rows, 0, &device);
        let lp = response_logprobs(&lm, &batch).into_data().to_vec::<f32>().unwrap();
        let got = response_values(&lp, &rows);
        for (e, got) in encoded.iter().zip(&got) {
            let n = e.ids.len();
            let ids = Tensor::<CpuBackend, 2, Int>::from_data(
                TensorData::new(e.ids.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [1, n]),
                &device,
            );
            let logits = lm.forward(ids, None).logits.into_data().to_vec::<f32>().unwrap(); // [1, n, V]
            let v = logits.len() / n;
            let want: Vec<f32> = (e.prompt_len..n)
                .map(|t| {
                    let row = &logits[(t - 1) * v..t * v];
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
                    row[e.ids[t] as usize] - lse
                })
                .collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn truncation_that_leaves_no_response_names_the_row() {
        let tok = crate::onpolicy::numbers_tokenizer().unwrap();
        let r = Record { uid: "q-1".into(), row: 4, prompt: "1 2 3".into(), response: "4".into(), reward: None };
        assert_eq!(encode(&tok, &r, 4).unwrap().response_len(), 1);
        let err = encode(&tok, &r, 3).unwrap_err().to_string();
        assert!(err.contains("row 4 (uid `q-1`)") && err.contains("max_length 3"), "{err}");
    }
}
