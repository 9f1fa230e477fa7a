//! Perplexity with HF's strided sliding window (TRIL's `Perplexity` / `OutputPerplexity`):
//! texts are joined with `"\n\n"`, tokenized once, and scored in windows of the model's
//! `n_positions` tokens advancing by `stride`, each window predicting only the tokens
//! not scored by the previous one:
//!
//! ```tex
//! \mathrm{PPL} = \exp\Big(\frac{1}{N} \sum_w \mathrm{trg}_w \cdot \overline{\mathrm{NLL}}_w\Big)
//! ```
//! where `trg_w` is the number of new target tokens of window `w`, `NLL_w` the mean NLL of
//! its targets (the window's first token has no prediction), and `N` the last window end.
//!
//! `causal_output_perplexity` scores the generations under a fixed LM (`model_id`).
//! `causal_perplexity` scores the references under the *current policy*, which the
//! algorithm hands over through [`Metric::compute_with_policy`].
//!
//! Deviation: TRIL shards the texts over processes and averages the shard perplexities;
//! tril runs one process, so it scores all texts at once (TRIL's single-process value).

use crate::error::MetricError;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tril_core::backend::{infer, InferJob, Target};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::ops::gather_logprobs;
use tril_core::plugin::{BuildCtx, Metric, MetricOutput, MetricValue, PluginError, PolicyLm, TextBatch};
use tril_models::causal_lm::CausalLm;
use tril_models::tokenizer::TextTokenizer;

/// `(begin, end, trg_len)` of every window over `n` tokens (HF's loop).
pub fn windows(n: usize, max_length: usize, stride: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut prev_end = 0;
    let mut begin = 0;
    while begin < n {
        let end = (begin + max_length).min(n);
        out.push((begin, end, end - prev_end));
        prev_end = end;
        if end == n {
            break;
        }
        begin += stride.max(1);
    }
    out
}

/// Mean NLL of the last `trg_len` tokens of a window, from the log-probs of its tokens
/// `1..len` (the window's first token has no prediction). A `trg_len` of the whole window
/// or more (a stride above the context skips tokens) scores every predicted token, as HF's
/// `target_ids[:, :-trg_len] = -100` masks nothing then.
fn window_nll(logprobs: &[f64], trg_len: usize) -> f64 {
    let l = logprobs.len() + 1;
    let first_target = l.saturating_sub(trg_len).max(1); // token index of the first target
    let scored = &logprobs[first_target - 1..];
    -scored.iter().sum::<f64>() / scored.len().max(1) as f64
}

/// Strided perplexity of `ids` given a function returning each window's token log-probs
/// (see the module docs). `NaN` for fewer than two tokens.
pub fn strided_perplexity_with(
    ids: &[u32],
    max_length: usize,
    stride: usize,
    mut window_logprobs: impl FnMut(&[u32]) -> Result<Vec<f64>, PluginError>,
) -> Result<f64, PluginError> {
    if ids.len() < 2 {
        return Ok(f64::NAN);
    }
    let mut total = 0.0;
    let mut end = 0;
    for (begin, stop, trg_len) in windows(ids.len(), max_length, stride) {
        let window = &ids[begin..stop];
        if window.len() < 2 {
            break; // a last window of one token adds no prediction
        }
        total += window_nll(&window_logprobs(window)?, trg_len) * trg_len as f64;
        end = stop;
    }
    Ok((total / end as f64).exp())
}

/// `log p(ids[t] | ids[..t])`, `t = 1..len`, under `model`.
pub fn causal_logprobs<B: Backend>(model: &CausalLm<B>, ids: &[u32], device: &B::Device) -> Vec<f64> {
    let l = ids.len();
    let data: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    let input: Tensor<B, 2, Int> = Tensor::from_data(TensorData::new(data, [1, l]), device); // [1, L]
    let logits = model.forward(input.clone(), None).logits; // [1, L, V]
    let v = logits.dims()[2];
    let logits = logits.slice([0..1, 0..l - 1, 0..v]); // [1, L-1, V]: predicts tokens 1..L
    let targets = input.slice([0..1, 1..l]); // [1, L-1]
    let logprobs = gather_logprobs(logits, targets).into_data().convert::<f32>(); // [1, L-1]
    logprobs.to_vec::<f32>().unwrap_or_default().into_iter().map(f64::from).collect()
}

/// Strided perplexity of `ids` under `model` (see the module docs).
pub fn strided_perplexity<B: Backend>(
    model: &CausalLm<B>,
    ids: &[u32],
    max_length: usize,
    stride: usize,
    device: &B::Device,
) -> f64 {
    strided_perplexity_with(ids, max_length, stride, |w| Ok(causal_logprobs(model, w, device))).unwrap_or(f64::NAN)
}

/// Config of `causal_output_perplexity` (`eval_metrics[i].args`, TRIL's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputPerplexityConfig {
    /// Local HF-layout directory (or hub id) of the scoring GPT-2.
    pub model_id: String,
    /// Window stride in tokens (TRIL: 512).
    #[serde(default = "default_stride")]
    pub stride: usize,
    /// Only `causal` is supported.
    #[serde(default = "causal")]
    pub model_type: String,
}

impl Ranges for OutputPerplexityConfig {
    /// `stride` >= 1 token; a stride above the model's context is clamped to it at load
    /// time, with a warning.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("stride", self.stride, 1)
    }
}

fn default_stride() -> usize {
    512
}

fn causal() -> String {
    "causal".into()
}

/// `causal_output_perplexity`: perplexity of the generations under a fixed GPT-2.
#[derive(Debug)]
pub struct OutputPerplexity<B: Backend> {
    model: CausalLm<B>,
    tokenizer: TextTokenizer,
    max_length: usize,
    stride: usize,
    device: B::Device,
}

/// Loads `causal_output_perplexity` on the backend `target` names.
pub fn load_output_perplexity(
    config: &OutputPerplexityConfig,
    key: &str,
    target: Target,
) -> Result<Box<dyn Metric>, MetricError> {
    struct Load<'a>(&'a OutputPerplexityConfig, &'a str);
    impl InferJob for Load<'_> {
        type Output = Result<Box<dyn Metric>, MetricError>;
        fn run<B: Backend>(self, device: B::Device) -> Self::Output {
            Ok(Box::new(OutputPerplexity::<B>::load(self.0, self.1, &device)?))
        }
    }
    infer(target, Load(config, key))?
}

/// `stride` clamped to the model's context `max_length` (a window cannot advance further
/// than it spans without skipping tokens), with a warning naming `key.stride`.
pub fn clamp_stride(stride: usize, max_length: usize, key: &str) -> usize {
    if stride > max_length && max_length > 0 {
        tracing::warn!(
            "{key}.stride: {stride} exceeds the model's context of {max_length} positions; using a stride of \
             {max_length}"
        );
        return max_length;
    }
    stride
}

/// Refuses a `model_type` other than `causal`.
fn check_model_type(model_type: &str, key: &str) -> Result<(), MetricError> {
    if model_type != "causal" {
        return Err(MetricError::invalid(
            format!("{key}.model_type"),
            format!("`{model_type}`"),
            "`causal` (the only supported type)",
        ));
    }
    Ok(())
}

impl<B: Backend> OutputPerplexity<B> {
    /// Loads the scoring model onto `device`.
    pub fn load(config: &OutputPerplexityConfig, key: &str, device: &B::Device) -> Result<Self, MetricError> {
        check_model_type(&config.model_type, key)?;
        let dir = tril_models::resolve::model_dir(&config.model_id, &format!("{key}.model_id"))?;
        let loaded = tril_models::hf::load_lm::<B>(&dir, device)?;
        let tokenizer = TextTokenizer::from_dir(&dir)?;
        let max_length = loaded.config.max_positions();
        Ok(OutputPerplexity {
            model: loaded.model,
            tokenizer,
            max_length,
            stride: clamp_stride(config.stride, max_length, key),
            device: device.clone(),
        })
    }
}

impl<B: Backend> Metric for OutputPerplexity<B> {
    fn compute(&mut self, batch: TextBatch<'_>) -> Result<MetricOutput, PluginError> {
        batch.len()?;
        let ids = self.tokenizer.encode(&batch.generations.join("\n\n"), false)?;
        let ppl = strided_perplexity(&self.model, &ids, self.max_length, self.stride, &self.device);
        Ok(MetricOutput::from([(
            "fluency_metrics/output_perplexity".to_string(),
            MetricValue { per_sample: None, corpus: ppl },
        )]))
    }
}

fn build(section: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    Ok(load_output_perplexity(&section.extract()?, section.key(), ctx.target()?)?)
}

tril_core::register!(metric,
    id: "causal_output_perplexity",
    doc: "Perplexity of the generations under a fixed GPT-2 (key fluency_metrics/output_perplexity).",
    config: OutputPerplexityConfig,
    build: build);

/// Config of `causal_perplexity` (`eval_metrics[i].args`, TRIL's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerplexityConfig {
    /// Window stride in tokens (TRIL: 512).
    #[serde(default = "default_stride")]
    pub stride: usize,
    /// Tokenizer of the references (TRIL: `gpt2`): a local directory or a hub id in the
    /// HF cache. It must share the policy's vocabulary. Without it, the policy's own.
    #[serde(default)]
    pub tokenizer_id: Option<String>,
    /// Only `causal` is supported.
    #[serde(default = "causal")]
    pub model_type: String,
    /// TRIL's switch to score `meta_data["reference"]` instead; only `false` is supported.
    #[serde(default)]
    pub use_text_from_meta_data: bool,
}

impl Ranges for PerplexityConfig {
    /// `stride` >= 1 token; a stride above the policy's context is clamped to it, with a warning.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        c.at_least("stride", self.stride, 1)
    }
}

/// `causal_perplexity`: perplexity of the current policy on the reference texts.
#[derive(Debug)]
pub struct Perplexity {
    tokenizer: Option<TextTokenizer>,
    stride: usize,
    key: String,
    /// Whether the clamp of a stride above the policy's context was reported.
    warned: bool,
}

impl Perplexity {
    /// Checks the config and loads the tokenizer it names.
    pub fn load(config: &PerplexityConfig, key: &str) -> Result<Self, MetricError> {
        check_model_type(&config.model_type, key)?;
        if config.use_text_from_meta_data {
            return Err(MetricError::invalid(
                format!("{key}.use_text_from_meta_data"),
                true,
                "`false` (the only supported value: score the references)",
            ));
        }
        if config.stride == 0 {
            return Err(MetricError::invalid(format!("{key}.stride"), config.stride, "at least 1 token"));
        }
        let tokenizer = match &config.tokenizer_id {
            Some(id) => {
                let dir = tril_models::resolve::model_dir(id, &format!("{key}.tokenizer_id"))?;
                Some(TextTokenizer::from_dir(&dir)?)
            }
            None => None,
        };
        Ok(Perplexity { tokenizer, stride: config.stride, key: key.to_string(), warned: false })
    }
}

impl Metric for Perplexity {
    fn compute(&mut self, _batch: TextBatch<'_>) -> Result<MetricOutput, PluginError> {
        Err(MetricError::config(
            &self.key,
            "causal_perplexity scores the references with the policy under training, and this algorithm \
             does not hand its policy to metrics",
        )
        .into())
    }

    fn compute_with_policy(
        &mut self,
        batch: TextBatch<'_>,
        policy: &dyn PolicyLm,
    ) -> Result<MetricOutput, PluginError> {
        batch.len()?;
        let text = batch.references.iter().flatten().cloned().collect::<Vec<_>>().join("\n\n");
        let ids = match &self.tokenizer {
            Some(tok) => tok.encode(&text, false)?,
            None => policy.encode(&text)?,
        };
        let context = policy.context_len();
        if self.stride > context && !self.warned {
            self.warned = true;
            clamp_stride(self.stride, context, &self.key);
        }
        let stride = self.stride.min(context.max(1));
        let ppl = strided_perplexity_with(&ids, context, stride, |w| policy.token_logprobs(w))?;
        Ok(MetricOutput::from([(
            "fluency_metrics/perplexity".to_string(),
            MetricValue { per_sample: None, corpus: ppl },
        )]))
    }
}

fn build_policy_perplexity(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<dyn Metric>, PluginError> {
    Ok(Box::new(Perplexity::load(&section.extract()?, section.key())?))
}

tril_core::register!(metric,
    id: "causal_perplexity",
    doc: "Perplexity of the policy under training on the references (key fluency_metrics/perplexity).",
    config: PerplexityConfig,
    build: build_policy_perplexity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_hf() {
        assert_eq!(windows(10, 4, 4), vec![(0, 4, 4), (4, 8, 4), (8, 10, 2)]);
        assert_eq!(windows(10, 4, 2), vec![(0, 4, 4), (2, 6, 2), (4, 8, 2), (6, 10, 2)]);
        assert_eq!(windows(3, 8, 4), vec![(0, 3, 3)]);
    }

    /// A stride above the context (512 on 256 positions) gives windows whose `trg_len`
    /// exceeds their length: they score all their predicted tokens (HF), without the index
    /// underflow this used to panic with; the clamped stride scores every token once.
    #[test]
    fn a_stride_above_the_context_scores_whole_windows() {
        assert_eq!(window_nll(&[-1.0, -3.0], 5), 2.0);
        assert_eq!(window_nll(&[-1.0, -3.0], 3), 2.0);
        assert_eq!(window_nll(&[-1.0, -3.0], 1), 3.0);
        let ids: Vec<u32> = (0..600).collect();
        // Every predicted token has log-prob -1: the perplexity is e whatever the windows.
        let lp = |w: &[u32]| Ok(vec![-1.0; w.len() - 1]);
        let skipped = strided_perplexity_with(&ids, 256, 512, lp).unwrap();
        assert!(skipped.is_finite());
        let stride = clamp_stride(512, 256, "eval_metrics.0.args");
        assert_eq!(stride, 256);
        let clamped = strided_perplexity_with(&ids, 256, stride, lp).unwrap();
        assert!((clamped - std::f64::consts::E).abs() < 1e-12, "{clamped}");
        assert_eq!(clamp_stride(128, 256, "k"), 128);
    }

    #[test]
    fn matches_transformers_on_the_fixture_gpt2() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("perplexity.json")).unwrap()).unwrap();
        let config = OutputPerplexityConfig {
            model_id: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tril-models/tests/fixtures/gpt2")
                .display()
                .to_string(),
            stride: expected["stride"].as_u64().unwrap() as usize,
            model_type: "causal".into(),
        };
        let mut metric = load_output_perplexity(&config, "eval_metrics.0.args", Target::default()).unwrap();
        let gens: Vec<String> = serde_json::from_value(expected["texts"].clone()).unwrap();
        let n = gens.len();
        let (p, r) = (vec![String::new(); n], vec![vec![]; n]);
        let out = metric.compute(TextBatch { prompts: &p, generations: &gens, references: &r }).unwrap();
        let got = out["fluency_metrics/output_perplexity"].corpus;
        let want = expected["perplexity"].as_f64().unwrap();
        assert!((got - want).abs() / want < 1e-4, "{got} vs {want}");
    }

    /// The fixture GPT-2 as a policy.
    struct FixturePolicy {
        model: CausalLm<tril_core::backend::CpuBackend>,
        tokenizer: TextTokenizer,
        n_positions: usize,
    }

    impl PolicyLm for FixturePolicy {
        fn encode(&self, text: &str) -> Result<Vec<u32>, PluginError> {
            Ok(self.tokenizer.encode(text, false)?)
        }
        fn token_logprobs(&self, ids: &[u32]) -> Result<Vec<f64>, PluginError> {
            Ok(causal_logprobs(&self.model, ids, &Default::default()))
        }
        fn context_len(&self) -> usize {
            self.n_positions
        }
    }

    /// The references scored by the policy give transformers' perplexity of the same
    /// texts (the fixture's), to 1e-4 relative; without the policy the metric refuses.
    #[test]
    fn policy_perplexity_on_references_matches_transformers() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/perplexity.json")).unwrap())
                .unwrap();
        let dir = root.join("../tril-models/tests/fixtures/gpt2");
        let loaded = tril_models::hf::load_lm::<tril_core::backend::CpuBackend>(&dir, &Default::default()).unwrap();
        let policy = FixturePolicy {
            n_positions: loaded.config.max_positions(),
            model: loaded.model,
            tokenizer: TextTokenizer::from_dir(&dir).unwrap(),
        };
        let texts: Vec<String> = serde_json::from_value(expected["texts"].clone()).unwrap();
        let n = texts.len();
        let refs: Vec<Vec<String>> = texts.iter().map(|t| vec![t.clone()]).collect();
        let (p, g) = (vec![String::new(); n], vec![String::new(); n]);
        let batch = TextBatch { prompts: &p, generations: &g, references: &refs };
        let config = PerplexityConfig {
            stride: expected["stride"].as_u64().unwrap() as usize,
            tokenizer_id: Some(dir.display().to_string()),
            model_type: "causal".into(),
            use_text_from_meta_data: false,
        };
        let mut metric = Perplexity::load(&config, "eval_metrics.1.args").unwrap();
        let got = metric.compute_with_policy(batch, &policy).unwrap()["fluency_metrics/perplexity"].corpus;
        let want = expected["perplexity"].as_f64().unwrap();
        assert!((got - want).abs() / want < 1e-4, "{got} vs {want}");
        let err = metric.compute(batch).unwrap_err().to_string();
        assert!(err.contains("eval_metrics.1.args") && err.contains("policy"), "{err}");
    }
}
