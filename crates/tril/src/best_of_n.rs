//! `tril best-of-n`: the best-of-n curve of a policy under a proxy reward and, when the
//! config has one, a gold reward (reward-model over-optimization, Gao et al. 2022; Coste
//! et al. 2024). N completions per prompt are sampled with the task's rollout settings and
//! scored with both rewards; for n = 1..=N the expected proxy and gold score of the proxy's
//! best-of-n choice come from the unbiased estimator over the N samples
//! ([`tril_rewards::best_of_n`]), averaged over prompts, against
//! `KL_bon(n) = ln n - (n - 1)/n`. Sampling is [`tril_algorithms::best_of_n`]; this file is
//! the command line, the scoring and the outputs (`docs/best-of-n.md`).

use crate::cli::ConfigArgs;
use crate::commands::{self, Failure};
use anyhow::{anyhow, Context};
use burn::tensor::backend::Backend;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use tril_algorithms::best_of_n::{load_policy, sample_completions, BonSampling, Completions};
use tril_core::backend::{infer, InferJob};
use tril_core::config::Config;
use tril_core::plot::{plot_panels, Panel, Series};
use tril_core::plugin::{PolicySpec, RewardFn, Sample, Split, TextBatch};
use tril_core::registry;
use tril_core::schema::RootConfig;
use tril_models::tokenizer::TextTokenizer;
use tril_rewards::best_of_n::{best_of_n, BonPoint};

/// Arguments of `tril best-of-n`.
#[derive(Debug, clap::Args)]
pub struct BestOfNArgs {
    /// Config source and overrides, as `tril run` (no task=/alg=: task=synthetic alg=ppo).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Completions sampled per prompt (N); the curve covers n = 1..=N.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub n: u64,
    /// The task split whose prompts are sampled.
    #[arg(long, default_value_t = Split::Val)]
    pub split: Split,
    /// Only the first K prompts of the split.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_prompts: Option<u64>,
    /// The policy: an HF directory (e.g. a run's checkpoints/iter_N/policy), a cached hub
    /// id or builtin:tiny-gpt2 (default: alg.policy.args.model_name).
    #[arg(long, value_name = "MODEL_OR_DIR")]
    pub policy: Option<String>,
    /// The output directory (default: the config's run_dir).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed of the sampling stream and of builtin:tiny-gpt2's weights (default: alg.args.seed, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Rows (prompt copies) per generate call and per reward call (default:
    /// sampling.batch_size_per_process).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// A progress line every this many batches (0: none).
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
}

/// One line of `best_of_n.jsonl`: the curve at n, averaged over prompts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BonRow {
    /// Subset size n.
    pub n: usize,
    /// `ln n - (n - 1)/n`, nats.
    pub kl_bon: f64,
    /// Mean over prompts of the expected proxy score of the best-of-n choice.
    pub proxy_mean: f64,
    /// Its standard error over prompts (null with one prompt).
    pub proxy_sem: Option<f64>,
    /// Mean over prompts of the expected gold score of the proxy's best-of-n choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold_mean: Option<f64>,
    /// Its standard error over prompts (null with one prompt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold_sem: Option<Option<f64>>,
}

/// One line of `samples.jsonl`.
#[derive(Debug, serde::Serialize)]
struct SampleLine<'a> {
    id: &'a str,
    prompt: &'a str,
    completions: &'a [String],
    proxy: &'a [f64],
    #[serde(skip_serializing_if = "Option::is_none")]
    gold: Option<&'a [f64]>,
}

/// Mean and standard error of the mean (sample standard deviation / sqrt(P); `None` for P < 2).
fn mean_sem(xs: &[f64]) -> (f64, Option<f64>) {
    let p = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / p;
    if xs.len() < 2 {
        return (mean, None);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (p - 1.0);
    (mean, Some((var / p).sqrt()))
}

/// The curve averaged over prompts from each prompt's curve (`curves`: `[P][N]`, P >= 1);
/// the gold columns only `with_gold`.
pub fn summarize(curves: &[Vec<BonPoint>], with_gold: bool) -> Vec<BonRow> {
    let big_n = curves.first().map_or(0, Vec::len);
    (0..big_n)
        .map(|k| {
            let proxy: Vec<f64> = curves.iter().map(|c| c[k].proxy).collect();
            let gold: Vec<f64> = curves.iter().map(|c| c[k].gold).collect();
            let (proxy_mean, proxy_sem) = mean_sem(&proxy);
            let (gold_mean, gold_sem) = mean_sem(&gold);
            BonRow {
                n: curves[0][k].n,
                kl_bon: curves[0][k].kl,
                proxy_mean,
                proxy_sem,
                gold_mean: with_gold.then_some(gold_mean),
                gold_sem: with_gold.then_some(gold_sem),
            }
        })
        .collect()
}

/// The policy's prompts sampled on the backend the config's `device` names.
struct SampleJob<'a> {
    spec: &'a PolicySpec,
    vocab_size: usize,
    prompt_tok: &'a TextTokenizer,
    samples: &'a [Sample],
    opts: &'a BonSampling,
}

impl InferJob for SampleJob<'_> {
    type Output = Result<Vec<Completions>, Failure>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let lm = load_policy::<B>(self.spec, self.vocab_size, self.opts.seed, &device)
            .map_err(|e| Failure::Config(anyhow!(e)))?;
        sample_completions(&lm, self.prompt_tok, self.samples, self.opts, &device)
            .map_err(|e| Failure::Runtime(anyhow!(e)))
    }
}

/// The config `tril run` would compose from these arguments (the embedded default without
/// task=/alg=), with `--policy` as the override `alg.policy.args.model_name`, checked.
fn compose(args: &BestOfNArgs) -> Result<Config, Failure> {
    let chooses = |group: &str| args.config.overrides.iter().any(|o| o.starts_with(&format!("{group}=")));
    let mut overrides: Vec<String> = Vec::new();
    if args.config.config.is_none() && !chooses("task") && !chooses("alg") {
        overrides.extend(commands::EMBEDDED_DEFAULT.iter().map(|s| s.to_string()));
    }
    overrides.extend(args.config.overrides.iter().cloned());
    if let Some(policy) = &args.policy {
        // A JSON string is a YAML scalar that stays a string whatever it holds.
        let quoted = serde_json::to_string(policy).map_err(|e| Failure::Config(e.into()))?;
        overrides.push(format!("alg.policy.args.model_name={quoted}"));
    }
    let config_args =
        ConfigArgs { config_dir: args.config.config_dir.clone(), config: args.config.config.clone(), overrides };
    let config = commands::load_config(&config_args)?;
    let unknown = commands::check(&config)?;
    if !unknown.is_empty() {
        let all: Vec<String> = unknown.iter().map(|e| format!("  {e}")).collect();
        return Err(Failure::Config(anyhow!(
            "this build of tril cannot run this config (see `tril list`):\n{}",
            all.join("\n")
        )));
    }
    Ok(config)
}

/// Scores every completion with `reward` in batches of `batch` rows; `key` names the reward
/// in errors. Returns `[P][N]`.
fn score(reward: &mut dyn RewardFn, all: &[Completions], batch: usize, key: &str) -> Result<Vec<Vec<f64>>, Failure> {
    let rows: Vec<(usize, usize)> =
        all.iter().enumerate().flat_map(|(p, c)| (0..c.texts.len()).map(move |j| (p, j))).collect();
    let mut scores: Vec<Vec<f64>> = all.iter().map(|c| Vec::with_capacity(c.texts.len())).collect();
    let bar = tril_core::progress::bar(rows.len() as u64, key);
    for chunk in rows.chunks(batch) {
        let prompts: Vec<String> = chunk.iter().map(|&(p, _)| all[p].prompt.clone()).collect();
        let generations: Vec<String> = chunk.iter().map(|&(p, j)| all[p].texts[j].clone()).collect();
        let references: Vec<Vec<String>> = chunk.iter().map(|&(p, _)| all[p].references.clone()).collect();
        let batch = TextBatch { prompts: &prompts, generations: &generations, references: &references };
        let got = reward.score(batch).map_err(|e| Failure::Runtime(anyhow!("{key}: {e}")))?;
        if got.len() != chunk.len() {
            return Err(Failure::Runtime(anyhow!("{key}: gave {} scores for {} completions", got.len(), chunk.len())));
        }
        for (&(p, j), s) in chunk.iter().zip(got) {
            if !s.is_finite() {
                let (id, text) = (&all[p].id, &all[p].texts[j]);
                return Err(Failure::Runtime(anyhow!("{key}: score {s} for completion {j} of `{id}`: {text:?}")));
            }
            scores[p].push(s);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(scores)
}

/// Everything resolved before any sampling: a config problem stops here, exit 2.
struct Setup {
    root: RootConfig,
    spec: PolicySpec,
    opts: BonSampling,
    tok: TextTokenizer,
    prompt_tok: TextTokenizer,
    proxy: Box<dyn RewardFn>,
    gold: Option<Box<dyn RewardFn>>,
    samples: Vec<Sample>,
}

fn setup(args: &BestOfNArgs, config: &Config) -> Result<Setup, Failure> {
    let cfg = |e: tril_core::plugin::PluginError| Failure::Config(anyhow!(e));
    let root: RootConfig = config.extract("")?;
    // 1. rewards: the proxy is required, the gold optional
    let proxy_section = config.optional_section("reward_fn").filter(|_| root.reward_fn.is_some()).ok_or_else(|| {
        Failure::Config(anyhow!(
            "reward_fn: best-of-n picks by the proxy reward `reward_fn`, which is null; set reward_fn={{id: ..., args: ...}}"
        ))
    })?;
    let proxy = registry::build_reward_fn(&proxy_section, config).map_err(cfg)?;
    let gold = match config.optional_section("gold_reward_fn").filter(|_| root.gold_reward_fn.is_some()) {
        Some(section) => Some(registry::build_reward_fn(&section, config).map_err(cfg)?),
        None => None,
    };
    // 2. the policy and how it samples
    let seed = match (args.seed, config.optional_section("alg.args.seed")) {
        (Some(seed), _) => seed,
        (None, Some(section)) => section.extract::<u64>()?,
        (None, None) => 0,
    };
    let batch = args.batch_size.map_or(root.sampling.batch_size_per_process, |b| b as usize);
    let opts = BonSampling::from_config(config, args.n as usize, batch, seed, args.log_every).map_err(cfg)?;
    let spec = *registry::build_policy(&config.section("alg.policy")?, config).map_err(cfg)?;
    if !spec.model_name.starts_with("builtin:") {
        // A missing model is a config error found before the output directory is made.
        let key = if args.policy.is_some() { "--policy" } else { "alg.policy.args.model_name" };
        tril_models::resolve::resolve_model(&spec.model_name).map_err(|e| Failure::Config(anyhow!("{key}: {e}")))?;
    }
    let tokenizer = root.alg.tokenizer.clone().ok_or_else(|| {
        Failure::Config(anyhow!("alg.tokenizer: best-of-n needs the policy's tokenizer section (model_name, ...)"))
    })?;
    let (tok, prompt_tok) =
        tril_algorithms::onpolicy::run_tokenizers(&tokenizer, &root.sampling, opts.truncation).map_err(cfg)?;
    // 3. the prompts
    let split = args.split;
    let task = registry::build_task(&config.section("task")?, config).map_err(cfg)?;
    let mut samples = task.samples(split).map_err(cfg)?;
    if let Some(k) = args.max_prompts {
        samples.truncate(k as usize);
    }
    if samples.is_empty() {
        return Err(Failure::Config(anyhow!(
            "--split {}: task `{}` has no {} prompts; choose another split (--split train|val|test)",
            split.name(),
            root.task.id,
            split.name()
        )));
    }
    Ok(Setup { root, spec, opts, tok, prompt_tok, proxy, gold, samples })
}

/// Runs `tril best-of-n`.
pub fn run(args: &BestOfNArgs) -> Result<(), Failure> {
    // 1. config, rewards, policy settings and prompts (config errors: exit 2)
    let config = compose(args)?;
    let mut s = setup(args, &config)?;
    // 2. the run directory
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(&s.root.run_dir));
    let run = tril_core::run_dir::RunDir::open(&out)
        .with_context(|| format!("creating output directory {}", out.display()))
        .map_err(Failure::Runtime)?;
    let _lock = run.lock().map_err(|e| Failure::Runtime(anyhow!(e)))?;
    commands::create_run_dir(&out, &config).map_err(Failure::Runtime)?;
    crate::set_log_file(&out.join("log.txt"))
        .map_err(|e| Failure::Runtime(anyhow!("opening {}: {e}", out.join("log.txt").display())))?;
    tracing::info!(
        out = %out.display(),
        policy = %s.spec.model_name,
        split = args.split.name(),
        prompts = s.samples.len(),
        n = s.opts.n,
        seed = s.opts.seed,
        gold = s.gold.is_some(),
        "best-of-n: sampling {} completions",
        s.samples.len() * s.opts.n
    );
    // 3. sample on the config's device
    let target = tril_core::plugin::target_of(&config)?;
    let job = SampleJob {
        spec: &s.spec,
        vocab_size: s.tok.vocab_size(),
        prompt_tok: &s.prompt_tok,
        samples: &s.samples,
        opts: &s.opts,
    };
    let completions = infer(target, job)??;
    // 4. score with the proxy and the gold
    let proxy = score(s.proxy.as_mut(), &completions, s.opts.batch_size, "reward_fn")?;
    let gold = match s.gold.as_mut() {
        Some(g) => Some(score(g.as_mut(), &completions, s.opts.batch_size, "gold_reward_fn")?),
        None => None,
    };
    // 5. the estimator per prompt, averaged over prompts
    let curves = proxy
        .iter()
        .enumerate()
        .map(|(p, pr)| best_of_n(pr, gold.as_ref().map_or(pr, |g| &g[p])))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Runtime(anyhow!(e)))?;
    let rows = summarize(&curves, gold.is_some());
    write_outputs(&run, &completions, &proxy, gold.as_deref(), &rows).map_err(Failure::Runtime)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(table(&rows).as_bytes()).and_then(|()| stdout.flush()).map_err(|e| Failure::Runtime(e.into()))?;
    tracing::info!(out = %out.display(), "best-of-n: wrote best_of_n.jsonl, samples.jsonl, plots/best_of_n.png");
    Ok(())
}

/// `best_of_n.jsonl`, `samples.jsonl` and `plots/best_of_n.png`.
fn write_outputs(
    run: &tril_core::run_dir::RunDir,
    all: &[Completions],
    proxy: &[Vec<f64>],
    gold: Option<&[Vec<f64>]>,
    rows: &[BonRow],
) -> anyhow::Result<()> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&serde_json::to_string(row)?);
        text.push('\n');
    }
    run.write_atomic("best_of_n.jsonl", text.as_bytes())?;
    let mut text = String::new();
    for (p, c) in all.iter().enumerate() {
        let line = SampleLine {
            id: &c.id,
            prompt: &c.prompt,
            completions: &c.texts,
            proxy: &proxy[p],
            gold: gold.map(|g| g[p].as_slice()),
        };
        text.push_str(&serde_json::to_string(&line)?);
        text.push('\n');
    }
    run.write_atomic("samples.jsonl", text.as_bytes())?;
    std::fs::create_dir_all(run.join("plots"))?;
    plot_panels(&run.join("plots/best_of_n.png"), &panels(rows))?;
    Ok(())
}

/// Two charts: the expected scores against `KL_bon` (what over-optimization studies plot)
/// and against n.
fn panels(rows: &[BonRow]) -> Vec<Panel> {
    let n_max = rows.last().map_or(0, |r| r.n);
    let series = |x: &dyn Fn(&BonRow) -> f64| {
        let mut out =
            vec![Series { label: "proxy".into(), points: rows.iter().map(|r| (x(r), r.proxy_mean)).collect() }];
        if rows.iter().all(|r| r.gold_mean.is_some()) {
            let points = rows.iter().filter_map(|r| Some((x(r), r.gold_mean?))).collect();
            out.push(Series { label: "gold".into(), points });
        }
        out
    };
    vec![
        Panel {
            title: format!("best-of-n, n = 1..{n_max}: expected score vs KL_bon = ln n - (n-1)/n"),
            x_label: "KL_bon (nats)".into(),
            series: series(&|r| r.kl_bon),
        },
        Panel { title: "best-of-n: expected score vs n".into(), x_label: "n".into(), series: series(&|r| r.n as f64) },
    ]
}

/// The table printed on stdout: n, KL_bon, proxy (± sem), gold (± sem).
fn table(rows: &[BonRow]) -> String {
    let with_gold = rows.iter().any(|r| r.gold_mean.is_some());
    let pm = |mean: f64, sem: Option<f64>| match sem {
        Some(s) => format!("{mean:.4} ± {s:.4}"),
        None => format!("{mean:.4}"),
    };
    let mut out = format!("{:>5}  {:>8}  {:>18}", "n", "KL_bon", "proxy");
    if with_gold {
        let _ = write!(out, "  {:>18}", "gold");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(out, "{:>5}  {:>8.4}  {:>18}", r.n, r.kl_bon, pm(r.proxy_mean, r.proxy_sem));
        if let (Some(mean), Some(sem)) = (r.gold_mean, r.gold_sem) {
            let _ = write!(out, "  {:>18}", pm(mean, sem));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_averages_prompts_with_standard_errors() {
        // two prompts, N = 2; by hand: prompt 0 curve proxy (1.5, 2), gold (2, 1) (the proxy's
        // best has gold 1); prompt 1 proxy (0.5, 1), gold (0.5, 0)
        let a = best_of_n(&[1.0, 2.0], &[3.0, 1.0]).unwrap();
        let b = best_of_n(&[1.0, 0.0], &[0.0, 1.0]).unwrap();
        let rows = summarize(&[a, b], true);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].n, rows[1].n), (1, 2));
        assert!((rows[0].proxy_mean - 1.0).abs() < 1e-12);
        assert!((rows[1].proxy_mean - 1.5).abs() < 1e-12);
        assert!((rows[0].gold_mean.unwrap() - 1.25).abs() < 1e-12);
        assert!((rows[1].gold_mean.unwrap() - 0.5).abs() < 1e-12);
        // sem of (1.5, 0.5): sd 0.7071, / sqrt 2 = 0.5
        assert!((rows[0].proxy_sem.unwrap() - 0.5).abs() < 1e-12);
        assert!((rows[1].kl_bon - (2f64.ln() - 0.5)).abs() < 1e-15);
        let json = serde_json::to_string(&rows[1]).unwrap();
        assert!(json.contains("\"gold_mean\"") && json.contains("\"gold_sem\""), "{json}");
    }

    #[test]
    fn without_gold_the_gold_columns_are_absent_and_one_prompt_has_no_sem() {
        let a = best_of_n(&[1.0, 2.0, 2.0], &[1.0, 2.0, 2.0]).unwrap();
        let rows = summarize(&[a], false);
        assert!(rows.iter().all(|r| r.gold_mean.is_none() && r.proxy_sem.is_none()));
        let json = serde_json::to_string(&rows[0]).unwrap();
        assert!(!json.contains("gold"), "{json}");
        assert!(json.contains("\"proxy_sem\":null"), "{json}");
        let text = table(&rows);
        assert!(!text.contains("gold") && text.lines().count() == 4, "{text}");
    }
}
