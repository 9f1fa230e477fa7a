//! BERTScore (Zhang et al. 2020, <https://arxiv.org/abs/1904.09675>), as the `bert_score`
//! package (0.3.12/0.3.13) computes it through HF `evaluate` for TRIL's `BERTScoreMetric`
//! (`semantic/bert_score`: per-sample F1 and their mean) and `BERTScoreRewardFunction`
//! (per-sample F1), reference/tril.md §2.3-2.4: `idf=False`, no baseline rescaling.
//!
//! 1. tokenize each stripped sentence with the special tokens (`[CLS] … [SEP]`,
//!    `<s> … </s>`), with a prefix space for RoBERTa's byte-level BPE (bert_score's
//!    `sent_encode`), truncated to the model's maximum length;
//! 2. embed with the first `num_layers` encoder layers and L2-normalise each token;
//! 3. greedy matching ([`pair_score`]); a sample with several references takes the max of
//!    P, of R and of F over them, each separately ([`max_over_references`]).
//!
//! `language: en` uses `roberta-large` at layer 17 (bert_score's `lang2model` /
//! `model2layers`); the model must be in the local HF cache or given as a directory.
//! Models load on first use and are shared by every metric and reward of the process.
//!
//! # Deviations from bert_score
//! - `language: en-sci` (SciBERT, fetched by bert_score with wget) is refused.
//! - bert_score strips with Python's `str.strip`, tril with Rust's `str::trim` (both strip
//!   Unicode white space; Python also strips the ASCII separators `\x1c`-`\x1f`).
//! - A sample without references is an error (bert_score fails on it too, with a torch error).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::MetricError;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use tril_core::backend::{infer, InferJob, Target};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, Metric, MetricOutput, MetricValue, PluginError, RewardFn, TextBatch};
use tril_models::bert::{Encoder, EncoderKind};
use tril_models::tokenizer::{Encoded, PaddingSide, TextTokenizer, TokenizerOptions, TruncationSide};

/// bert_score's `lang2model` and the layer of each model (`model2layers`).
const LANGUAGES: [(&str, &str, usize); 3] =
    [("en", "roberta-large", 17), ("zh", "bert-base-chinese", 8), ("tr", "dbmdz/bert-base-turkish-cased", 10)];
/// bert_score's model for every other language.
const MULTILINGUAL: (&str, usize) = ("bert-base-multilingual-cased", 9);
/// bert_score's `model2layers` for the BERT / RoBERTa / DistilBERT models tril can load.
const MODEL_LAYERS: [(&str, usize); 12] = [
    ("bert-base-uncased", 9),
    ("bert-large-uncased", 18),
    ("bert-base-multilingual-cased", 9),
    ("bert-base-chinese", 8),
    ("roberta-base", 10),
    ("roberta-large", 17),
    ("roberta-large-mnli", 19),
    ("distilroberta-base", 5),
    ("distilbert-base-uncased", 5),
    ("distilbert-base-multilingual-cased", 5),
    ("dbmdz/bert-base-turkish-cased", 10),
    ("dbmdz/distilbert-base-turkish-cased", 4),
];

/// Config of the `bert_score` metric and reward (`args`; TRIL's key is `language`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BertScoreConfig {
    /// Language (TRIL's key): `en` -> `roberta-large` layer 17, `zh` -> `bert-base-chinese`
    /// layer 8, `tr` -> `dbmdz/bert-base-turkish-cased` layer 10, any other ->
    /// `bert-base-multilingual-cased` layer 9 (bert_score's table). Ignored with `model_name`.
    pub language: String,
    /// Scoring model instead of the language's: a local HF-layout directory or a hub id in
    /// the HF cache (BERT, RoBERTa or DistilBERT).
    pub model_name: Option<String>,
    /// Layers kept (bert_score's `num_layers`); required for a `model_name` that is not in
    /// bert_score's table.
    pub num_layers: Option<usize>,
    /// Sentences per encoder forward pass and pairs per matching batch (bert_score's
    /// `batch_size`, 64).
    pub batch_size: usize,
}

impl Ranges for BertScoreConfig {
    /// `batch_size` >= 1; `num_layers` >= 1 when set (the layer whose embeddings are scored).
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("batch_size", self.batch_size, 1)?;
        if let Some(layers) = self.num_layers {
            c.at_least("num_layers", layers, 1)?;
        }
        Ok(())
    }
}

impl Default for BertScoreConfig {
    fn default() -> Self {
        BertScoreConfig { language: "en".into(), model_name: None, num_layers: None, batch_size: 64 }
    }
}

impl BertScoreConfig {
    /// `(model id, num_layers)` this config scores with; `key` names the config section in errors.
    pub fn model(&self, key: &str) -> Result<(String, usize), MetricError> {
        if self.batch_size == 0 {
            return Err(MetricError::invalid(format!("{key}.batch_size"), self.batch_size, "at least 1"));
        }
        let known = |id: &str| MODEL_LAYERS.iter().find(|(m, _)| *m == id).map(|&(_, n)| n);
        if let Some(id) = &self.model_name {
            let layers = self.num_layers.or_else(|| known(id)).ok_or_else(|| {
                MetricError::config(
                    format!("{key}.num_layers"),
                    format!("required with model_name `{id}` (bert_score's table has no layer for it)"),
                )
            })?;
            return Ok((id.clone(), layers));
        }
        let lang = self.language.to_lowercase();
        if lang == "en-sci" {
            return Err(MetricError::config(
                format!("{key}.language"),
                format!("`en-sci` (SciBERT) is not supported; set {key}.model_name and {key}.num_layers"),
            ));
        }
        let (id, layers) =
            LANGUAGES.iter().find(|(l, _, _)| *l == lang).map(|&(_, m, n)| (m, n)).unwrap_or(MULTILINGUAL);
        Ok((id.to_string(), self.num_layers.unwrap_or(layers)))
    }
}

/// Precision, recall and F1 of one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertScore {
    /// P.
    pub precision: f64,
    /// R.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

/// One sentence: L2-normalised token embeddings and token weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// `[T, D]` row-major, each row of unit norm.
    pub emb: Vec<f32>,
    /// `[T]`: 0 for `[CLS]`/`[SEP]` (`<s>`/`</s>`) ids, 1 otherwise (bert_score, `idf=False`).
    pub weights: Vec<f32>,
}

impl Embedded {
    /// Number of tokens (special tokens included).
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether the sentence has no tokens at all.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

/// L2-normalise each row of `x` (`[T, D]`), as `x / ‖x‖` (a zero row gives NaN, as in torch).
pub fn normalize_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
}

/// BERTScore of one (candidate `h`, reference `r`) pair, bert_score's `greedy_cos_idf`:
///
/// ```tex
/// s_{ij} = \hat h_i^\top \hat r_j, \quad
/// P = \frac{\sum_i w_i \max_j s_{ij}}{\sum_i w_i}, \quad
/// R = \frac{\sum_j v_j \max_i s_{ij}}{\sum_j v_j}, \quad
/// F = \frac{2PR}{P + R}
/// ```
/// with `w`, `v` the token weights (0 for the special tokens, which still take part in the
/// max). bert_score pads a batch of pairs and multiplies the similarities by the mask, so
/// a padded reference (`ref_padded`: shorter than the longest reference of its batch)
/// adds a similarity of 0 to every candidate token's max, and likewise a padded candidate
/// (`hyp_padded`) to every reference token's max. A sentence of 2 tokens (only the special
/// tokens: empty) gives P = R = 0; a NaN F (0/0) gives 0.
///
/// # Shapes
/// - h.emb: `[Th, D]`, r.emb: `[Tr, D]`, h.weights: `[Th]`, r.weights: `[Tr]`
pub fn pair_score(h: &Embedded, r: &Embedded, dim: usize, hyp_padded: bool, ref_padded: bool) -> BertScore {
    let (th, tr) = (h.len(), r.len());
    fn row(e: &Embedded, i: usize, dim: usize) -> &[f32] {
        &e.emb[i * dim..(i + 1) * dim]
    }
    let sim: Vec<f32> = (0..th)
        .flat_map(|i| (0..tr).map(move |j| (i, j)))
        .map(|(i, j)| row(h, i, dim).iter().zip(row(r, j, dim)).map(|(a, b)| a * b).sum::<f32>())
        .collect(); // [Th, Tr]
    let floor = |padded: bool| if padded { 0.0 } else { f32::NEG_INFINITY };
    let word_precision = (0..th).map(|i| sim[i * tr..(i + 1) * tr].iter().fold(floor(ref_padded), |m, &s| m.max(s))); // [Th]
    let word_recall = (0..tr).map(|j| (0..th).map(|i| sim[i * tr + j]).fold(floor(hyp_padded), f32::max)); // [Tr]
    let weighted = |scores: &mut dyn Iterator<Item = f32>, w: &[f32]| {
        let total: f64 = w.iter().map(|&x| f64::from(x)).sum();
        scores.zip(w).map(|(s, &x)| f64::from(s) * f64::from(x) / total).sum::<f64>()
    };
    let (mut p, mut r_) = (weighted(&mut { word_precision }, &h.weights), weighted(&mut { word_recall }, &r.weights));
    let mut f = 2.0 * p * r_ / (p + r_);
    if th == 2 || tr == 2 {
        (p, r_) = (0.0, 0.0);
    }
    if f.is_nan() {
        f = 0.0;
    }
    BertScore { precision: p, recall: r_, f1: f }
}

/// Scores of the `(candidate, reference)` sentence-index pairs, `batch_size` pairs at a time
/// as bert_score batches them (the padding flags of [`pair_score`] depend on the batch).
pub fn batched_pair_scores(
    pairs: &[(usize, usize)],
    sentences: &[Embedded],
    dim: usize,
    batch_size: usize,
) -> Vec<BertScore> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let max_h = chunk.iter().map(|&(h, _)| sentences[h].len()).max().unwrap_or(0);
        let max_r = chunk.iter().map(|&(_, r)| sentences[r].len()).max().unwrap_or(0);
        for &(h, r) in chunk {
            let (h, r) = (&sentences[h], &sentences[r]);
            out.push(pair_score(h, r, dim, h.len() < max_h, r.len() < max_r));
        }
    }
    out
}

/// Per sample, the max of P, of R and of F over its references (bert_score's
/// `all_preds[beg:end].max(dim=0)`: each maximised separately). `scores` holds the pairs of
/// all samples in order, `counts[s]` of them for sample `s`.
pub fn max_over_references(scores: &[BertScore], counts: &[usize]) -> Vec<BertScore> {
    let mut out = Vec::with_capacity(counts.len());
    let mut start = 0;
    for &n in counts {
        let group = &scores[start.min(scores.len())..(start + n).min(scores.len())];
        let max = |f: fn(&BertScore) -> f64| group.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        out.push(BertScore { precision: max(|s| s.precision), recall: max(|s| s.recall), f1: max(|s| s.f1) });
        start += n;
    }
    out
}

/// A loaded scoring model with its tokenizer, on backend `B`.
pub struct BertScorer<B: Backend> {
    encoder: Encoder<B>,
    device: B::Device,
    tokenizer: TextTokenizer,
    cls: Option<u32>,
    sep: Option<u32>,
    /// Add `cls`/`sep` around the ids: the tokenizer.json has no post-processor (HF's
    /// BERT/RoBERTa tokenizer classes add them regardless).
    wrap: bool,
    prefix_space: bool,
    dim: usize,
}

impl<B: Backend> std::fmt::Debug for BertScorer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertScorer").field("layers", &self.encoder.layers.len()).field("dim", &self.dim).finish()
    }
}

/// A token named in `tokenizer_config.json` (`"[CLS]"` or `{"content": "[CLS]"}`).
fn config_token(cfg: Option<&serde_json::Value>, key: &str) -> Option<String> {
    let v = cfg?.get(key)?;
    v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str())).map(str::to_string)
}

impl<B: Backend> BertScorer<B> {
    /// Loads the first `num_layers` layers of the encoder in `dir` and its tokenizer onto
    /// `device`.
    pub fn load(dir: &Path, num_layers: usize, device: &B::Device) -> Result<Self, MetricError> {
        let loaded = tril_models::hf::encoder::load_encoder::<B>(dir, Some(num_layers), device)?;
        let tok_cfg_path = dir.join("tokenizer_config.json");
        let tok_cfg = if tok_cfg_path.is_file() { Some(tril_models::hf::read_json(&tok_cfg_path)?) } else { None };
        let raw = TextTokenizer::from_dir(dir)?;
        let id = |key: &str, names: [&str; 2]| {
            config_token(tok_cfg.as_ref(), key)
                .and_then(|t| raw.token_to_id(&t))
                .or_else(|| names.iter().find_map(|n| raw.token_to_id(n)))
        };
        let (cls, sep) = (id("cls_token", ["[CLS]", "<s>"]), id("sep_token", ["[SEP]", "</s>"]));
        // HF's model_max_length, when the tokenizer config sets a real one (not the 1e30 sentinel).
        let model_max = tok_cfg
            .as_ref()
            .and_then(|c| c.get("model_max_length"))
            .and_then(|v| v.as_f64())
            .filter(|v| (1.0..1e12).contains(v))
            .map(|v| v as usize);
        let max_length = model_max.unwrap_or(usize::MAX).min(loaded.config.max_input_len());
        let wrap = raw.inner().get_post_processor().is_none() && cls.is_some() && sep.is_some();
        let options = TokenizerOptions {
            padding_side: PaddingSide::Right,
            truncation_side: TruncationSide::Right,
            max_length: Some(if wrap { max_length.saturating_sub(2).max(1) } else { max_length }),
            ..TokenizerOptions::default()
        };
        Ok(BertScorer {
            prefix_space: loaded.config.kind == EncoderKind::Roberta,
            dim: loaded.config.hidden_size,
            encoder: loaded.model,
            device: device.clone(),
            tokenizer: raw.with_options(options),
            cls,
            sep,
            wrap,
        })
    }

    /// bert_score's `sent_encode` text: stripped, with a leading space for RoBERTa's
    /// byte-level BPE (`add_prefix_space=True`) unless empty.
    fn prepare(&self, sentence: &str) -> String {
        let s = sentence.trim();
        if self.prefix_space && !s.is_empty() {
            format!(" {s}")
        } else {
            s.to_string()
        }
    }

    /// Token ids of `sentence` as bert_score's `sent_encode` gives them: an empty (or blank)
    /// sentence is `[cls, sep]` (`build_inputs_with_special_tokens([])`).
    pub fn encode(&self, sentence: &str) -> Result<Vec<u32>, MetricError> {
        let text = self.prepare(sentence);
        if text.is_empty() {
            return Ok(self.cls.into_iter().chain(self.sep).collect());
        }
        let enc = self.tokenizer.encode_batch(&[text])?;
        let ids = &enc.ids[..enc.attention_mask.iter().filter(|&&m| m == 1).count()];
        Ok(match (self.wrap, self.cls, self.sep) {
            (true, Some(cls), Some(sep)) => std::iter::once(cls).chain(ids.iter().copied()).chain([sep]).collect(),
            _ => ids.to_vec(),
        })
    }

    /// Normalised embeddings and weights of each sentence, `batch_size` per forward pass.
    pub fn embed(&self, sentences: &[String], batch_size: usize) -> Result<Vec<Embedded>, MetricError> {
        let mut out = Vec::with_capacity(sentences.len());
        let pad = self.tokenizer.pad_token_id().unwrap_or(0);
        for chunk in sentences.chunks(batch_size.max(1)) {
            let rows = chunk.iter().map(|s| self.encode(s)).collect::<Result<Vec<_>, _>>()?;
            let (b, t, d) = (rows.len(), rows.iter().map(Vec::len).max().unwrap_or(0).max(1), self.dim);
            let mut enc = Encoded { ids: vec![pad; b * t], attention_mask: vec![0; b * t], batch: b, seq_len: t };
            for (i, row) in rows.iter().enumerate() {
                enc.ids[i * t..i * t + row.len()].copy_from_slice(row);
                enc.attention_mask[i * t..i * t + row.len()].iter_mut().for_each(|m| *m = 1);
            }
            let (ids, mask) = enc.to_tensors::<B>(&self.device); // [b, T]
            let hidden = self.encoder.forward(ids, Some(mask), None); // [b, T, D]
            let values = hidden
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| MetricError::context("bert_score: reading the encoder's hidden states", e))?;
            for (i, row) in rows.iter().enumerate() {
                let mut emb = values[i * t * d..(i * t + row.len()) * d].to_vec(); // [len, D]
                normalize_rows(&mut emb, d);
                let special = |id: &u32| Some(*id) == self.cls || Some(*id) == self.sep;
                let weights = row.iter().map(|id| if special(id) { 0.0 } else { 1.0 }).collect();
                out.push(Embedded { emb, weights });
            }
        }
        Ok(out)
    }

    /// BERTScore of each candidate against its references (max over references).
    pub fn score<'a>(
        &self,
        candidates: &'a [String],
        references: &'a [Vec<String>],
        batch_size: usize,
    ) -> Result<Vec<BertScore>, MetricError> {
        if candidates.len() != references.len() {
            return Err(MetricError::BatchMismatch {
                metric: "bert_score",
                candidates: candidates.len(),
                references: references.len(),
            });
        }
        if let Some(i) = references.iter().position(Vec::is_empty) {
            return Err(MetricError::MissingReference { metric: "bert_score", sample: i });
        }
        // 1. unique sentences, embedded once (bert_score's dedup)
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut unique: Vec<String> = Vec::new();
        let mut pairs = Vec::new();
        for (c, refs) in candidates.iter().zip(references) {
            for r in refs {
                let mut id_of = |s: &'a str| {
                    *index.entry(s).or_insert_with(|| {
                        unique.push(s.to_string());
                        unique.len() - 1
                    })
                };
                pairs.push((id_of(c), id_of(r)));
            }
        }
        let embedded = self.embed(&unique, batch_size)?;
        // 2. greedy matching per pair, 3. max over each sample's references
        let scores = batched_pair_scores(&pairs, &embedded, self.dim, batch_size);
        let counts: Vec<usize> = references.iter().map(Vec::len).collect();
        Ok(max_over_references(&scores, &counts))
    }
}

/// A [`BertScorer`] on any backend.
pub trait Scorer: Send + Sync + std::fmt::Debug {
    /// See [`BertScorer::score`].
    fn score(
        &self,
        candidates: &[String],
        references: &[Vec<String>],
        batch_size: usize,
    ) -> Result<Vec<BertScore>, MetricError>;
}

impl<B: Backend> Scorer for BertScorer<B> {
    fn score(
        &self,
        candidates: &[String],
        references: &[Vec<String>],
        batch_size: usize,
    ) -> Result<Vec<BertScore>, MetricError> {
        BertScorer::score(self, candidates, references, batch_size)
    }
}

/// Loads a [`BertScorer`] on the backend `target` names.
pub fn load_scorer(dir: &Path, num_layers: usize, target: Target) -> Result<Arc<dyn Scorer>, MetricError> {
    struct Load<'a>(&'a Path, usize);
    impl InferJob for Load<'_> {
        type Output = Result<Arc<dyn Scorer>, MetricError>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            Ok(Arc::new(BertScorer::<B>::load(self.0, self.1, &device)?))
        }
    }
    infer(target, Load(dir, num_layers))?
}

/// Loaded scorers by (directory, layers, target), shared by every `bert_score` metric and reward.
type Cache = Mutex<HashMap<(PathBuf, usize, Target), Arc<dyn Scorer>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The scorer of a `bert_score` config: the model directory is resolved when built (a
/// missing model is an error at run start), the weights load on first use.
#[derive(Debug)]
pub struct BertScoreFn {
    dir: PathBuf,
    num_layers: usize,
    batch_size: usize,
    key: String,
    target: Target,
    scorer: Option<Arc<dyn Scorer>>,
}

impl BertScoreFn {
    /// Checks `config` and finds its model; `key` names the config section in errors.
    pub fn new(config: &BertScoreConfig, key: &str, target: Target) -> Result<Self, MetricError> {
        let (id, num_layers) = config.model(key)?;
        let dir = tril_models::resolve::resolve_model(&id).map_err(|source| {
            let field = if config.model_name.is_some() { "model_name" } else { "language" };
            MetricError::ModelUnavailable {
                key: format!("{key}.{field}"),
                what: "BERTScore",
                id: id.clone(),
                detail: format!("layer {num_layers}"),
                hint: format!(
                    "Get it with `huggingface-cli download {id} --include config.json model.safetensors \
                     tokenizer.json tokenizer_config.json`, or set {key}.model_name to a local HF-layout \
                     directory (with {key}.num_layers)"
                ),
                source,
            }
        })?;
        Ok(BertScoreFn { dir, num_layers, batch_size: config.batch_size, key: key.to_string(), target, scorer: None })
    }

    fn scorer(&mut self) -> Result<Arc<dyn Scorer>, MetricError> {
        if let Some(s) = &self.scorer {
            return Ok(s.clone());
        }
        // A panic while another thread held the lock leaves the map whole (entries are
        // inserted only after a successful load), so a poisoned cache is still usable.
        let mut cache = cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = (self.dir.clone(), self.num_layers, self.target);
        let scorer = match cache.get(&entry) {
            Some(s) => s.clone(),
            None => {
                let s = load_scorer(&self.dir, self.num_layers, self.target)
                    .map_err(|e| e.loading(&self.key, &self.dir))?;
                cache.insert(entry, s.clone());
                s
            }
        };
        self.scorer = Some(scorer.clone());
        Ok(scorer)
    }

    /// BERTScore of each generation against its references.
    pub fn scores(&mut self, batch: TextBatch<'_>) -> Result<Vec<BertScore>, PluginError> {
        batch.len()?;
        let batch_size = self.batch_size;
        Ok(self.scorer()?.score(batch.generations, batch.references, batch_size)?)
    }
}

impl Metric for BertScoreFn {
    fn compute(&mut self, batch: TextBatch<'_>) -> Result<MetricOutput, PluginError> {
        let f1: Vec<f64> = self.scores(batch)?.iter().map(|s| s.f1).collect();
        let corpus = if f1.is_empty() { 0.0 } else { f1.iter().sum::<f64>() / f1.len() as f64 };
        Ok(MetricOutput::from([("semantic/bert_score".to_string(), MetricValue { per_sample: Some(f1), corpus })]))
    }
}

impl RewardFn for BertScoreFn {
    fn score(&mut self, batch: TextBatch<'_>) -> Result<Vec<f64>, PluginError> {
        Ok(self.scores(batch)?.iter().map(|s| s.f1).collect())
    }
}

fn build_metric(section: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    Ok(Box::new(BertScoreFn::new(&section.extract()?, section.key(), ctx.target()?)?))
}

tril_core::register!(metric,
    id: "bert_score",
    doc: "BERTScore F1 per sample and mean (bert_score, idf off; en: roberta-large L17; key semantic/bert_score).",
    config: BertScoreConfig,
    build: build_metric);

fn build_reward(section: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn RewardFn>, PluginError> {
    Ok(Box::new(BertScoreFn::new(&section.extract()?, section.key(), ctx.target()?)?))
}

tril_core::register!(reward_fn,
    id: "bert_score",
    doc: "Per-sample BERTScore F1 against the references (bert_score, idf off; en: roberta-large L17).",
    config: BertScoreConfig,
    build: build_reward);

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(rows: &[[f32; 2]], weights: &[f32]) -> Embedded {
        let mut emb: Vec<f32> = rows.iter().flatten().copied().collect();
        normalize_rows(&mut emb, 2);
        Embedded { emb, weights: weights.to_vec() }
    }

    /// Hand-computed: candidate tokens [CLS] a b [SEP], reference [CLS] a [SEP].
    #[test]
    fn pair_score_by_hand() {
        let cls = [1.0, 0.0];
        let h = sentence(&[cls, [0.0, 1.0], [1.0, 1.0], cls], &[0.0, 1.0, 1.0, 0.0]);
        let r = sentence(&[cls, [0.0, 1.0], cls], &[0.0, 1.0, 0.0]);
        let s = pair_score(&h, &r, 2, false, false);
        let half = std::f64::consts::FRAC_1_SQRT_2;
        // P: a matches a (1), b = (1,1)/√2 matches either at 1/√2; R: a matches a (1).
        assert!((s.precision - (1.0 + half) / 2.0).abs() < 1e-6, "{s:?}");
        assert!((s.recall - 1.0).abs() < 1e-6, "{s:?}");
        let f = 2.0 * s.precision * s.recall / (s.precision + s.recall);
        assert!((s.f1 - f).abs() < 1e-12);
        // identical sentences score 1
        let same = pair_score(&h, &h, 2, false, false);
        assert!((same.f1 - 1.0).abs() < 1e-6);
    }

    /// An empty side (only the 2 special tokens) gives 0, 0, 0; padding floors the max at 0.
    #[test]
    fn empty_and_padding() {
        let cls = [1.0, 0.0];
        let empty = sentence(&[cls, cls], &[0.0, 0.0]);
        let h = sentence(&[cls, [-1.0, 0.1], cls], &[0.0, 1.0, 0.0]);
        for (a, b) in [(&empty, &h), (&h, &empty)] {
            let s = pair_score(a, b, 2, false, false);
            assert_eq!((s.precision, s.recall, s.f1), (0.0, 0.0, 0.0));
        }
        // the token (-1, 0.1) has negative similarity with both reference tokens
        let r = sentence(&[cls, [1.0, 0.0], cls], &[0.0, 1.0, 0.0]);
        assert!(pair_score(&h, &r, 2, false, false).precision < 0.0);
        assert_eq!(pair_score(&h, &r, 2, false, true).precision, 0.0);
        let long = sentence(&[cls, [0.0, 1.0], [1.0, 1.0], cls], &[0.0, 1.0, 1.0, 0.0]);
        let scores = batched_pair_scores(&[(0, 1), (0, 2)], &[h.clone(), r.clone(), long], 2, 64);
        assert_eq!(scores[0].precision, 0.0, "reference padded to the batch's longest");
        assert!(batched_pair_scores(&[(0, 1)], &[h, r], 2, 64)[0].precision < 0.0);
    }

    #[test]
    fn max_is_taken_per_column() {
        let s = |p, r, f| BertScore { precision: p, recall: r, f1: f };
        let out = max_over_references(&[s(0.9, 0.1, 0.2), s(0.2, 0.8, 0.3), s(0.5, 0.5, 0.5)], &[2, 1]);
        assert_eq!(out, vec![s(0.9, 0.8, 0.3), s(0.5, 0.5, 0.5)]);
    }

    #[test]
    fn config_picks_bert_scores_models() {
        let c = BertScoreConfig::default();
        assert_eq!(c.model("m").unwrap(), ("roberta-large".to_string(), 17));
        let c = BertScoreConfig { language: "de".into(), ..Default::default() };
        assert_eq!(c.model("m").unwrap(), ("bert-base-multilingual-cased".to_string(), 9));
        let c = BertScoreConfig { model_name: Some("/x".into()), ..Default::default() };
        assert!(c.model("m").unwrap_err().to_string().contains("m.num_layers: required"));
        let c = BertScoreConfig { language: "en-sci".into(), ..Default::default() };
        assert!(c.model("m").is_err());
    }
}
