//! `tril bench`: tril and PyTorch doing the same work, side by side.
//!
//! Each row runs here on random weights (no download), then `bench/torch_bench.py` runs the
//! same row (same shapes, dtype, threads, random weights; one untimed warm-up; the median
//! of `--repeats` timed runs) and one table compares them. The rows and their shapes are
//! defined once, in [`Size`] and the row functions below, and mirrored by the script
//! (`bench/README.md`):
//!
//! | row | work |
//! |---|---|
//! | `forward` | GPT-2 forward + next-token log-probs, no gradients |
//! | `train` | GPT-2 forward, mean next-token NLL, backward, AdamW step |
//! | `train_tiny` | the same on a tiny GPT-2 (width 64, 2 layers, vocab 512), batch 8 x 128 |
//! | `generate` | KV-cache top-k 50 sampling, no early stop (PyTorch: HF `generate` and a hand-written KV loop) |
//! | `ppo` | one PPO iteration on TRIL's IMDB shapes, by phase: generate, reward (DistilBERT classifier), reference/values, update |
//! | `dpo` | one DPO step: chosen + rejected in one forward, summed completion log-probs, sigmoid loss against precomputed reference log-probs, backward, AdamW |
//!
//! GPT-2 rows use GPT-2 small's width (768, 12 heads, vocab 50257) with 12 layers at
//! `--size full` and 2 at `--size small` (with smaller batches, so the CPU run takes minutes).
//! The PPO row runs the training loop's own functions ([`minibatch_gradients`],
//! [`clip_gradients`], the optimizer), so it times what `tril run alg=ppo` does.

use crate::commands::Failure;
use anyhow::{anyhow, bail, Context, Result};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tril_algorithms::offline::dpo::{dpo_loss, sequence_logprobs, DpoArgs, SequenceReduction};
use tril_algorithms::onpolicy::ppo::{token_rewards, PpoArgs};
use tril_algorithms::onpolicy::ppo_run::{clip_gradients, minibatch_gradients, Minibatch, RolloutBuffer};
use tril_algorithms::onpolicy::rollin::ValueFn;
use tril_algorithms::onpolicy::{lm_logprobs, ActorCritic};
use tril_algorithms::trainer::Optim;
use tril_core::backend::{Device, Precision, Target, TrainJob};
use tril_core::ops::{gae, gather_logprobs};
use tril_core::plugin::{OptimizerKind, OptimizerSpec};
use tril_models::bert::EncoderConfig;
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::generate::{generate, GenerationConfig, SpecialTokens};
use tril_models::gpt2::Gpt2Config;
use tril_models::heads::{ValueHeadConfig, ValueModel};

/// The rows, in table order.
pub const ROWS: [&str; 6] = ["forward", "train", "train_tiny", "generate", "ppo", "dpo"];

/// The PyTorch side, compiled in so that `tril bench` works from any directory.
const TORCH_SCRIPT: &str = include_str!("../../../bench/torch_bench.py");

/// `tril bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Rows to run, comma-separated (forward, train, train_tiny, generate, ppo, dpo).
    #[arg(long, value_delimiter = ',', default_value = "forward,train,train_tiny,generate,ppo,dpo")]
    pub rows: Vec<String>,
    /// `small` (2 layers, smaller batches: minutes on a CPU) or `full` (GPT-2 small, the
    /// issue's shapes).
    #[arg(long, default_value = "small")]
    pub size: String,
    /// Where tril computes (`cpu`, `ndarray`, `flex`, `cuda[:N]`, `wgpu[:N]`); PyTorch gets
    /// `cpu` or `cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Float type of parameters and activations (`f32`, `bf16`, `f16`); losses are f32.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// CPU threads for both sides (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs per row (the median is reported), after one untimed warm-up.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// The Python with torch and transformers (default: TRIL_PYTHON, else python3).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// The PyTorch side's script (default: `bench/torch_bench.py` when the current
    /// directory is a checkout, else the copy compiled into this binary).
    #[arg(long, value_name = "FILE")]
    pub torch_script: Option<PathBuf>,
    /// Measure tril only.
    #[arg(long)]
    pub no_torch: bool,
    /// Also write every measurement as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The shapes of every row at one size.
#[derive(Debug, Clone, Copy)]
struct Size {
    layers: usize,
    forward: (usize, usize),
    generate: (usize, usize, usize),
    dpo_pairs: usize,
    dpo_len: usize,
    ppo: PpoShape,
    classifier_layers: usize,
}

/// TRIL's IMDB PPO shapes (or their small version).
#[derive(Debug, Clone, Copy)]
struct PpoShape {
    trajectories: usize,
    prompt: usize,
    new_tokens: usize,
    epochs: usize,
    minibatch: usize,
}

impl Size {
    fn parse(name: &str) -> Result<Size> {
        match name {
            "full" => Ok(Size {
                layers: 12,
                forward: (8, 512),
                generate: (32, 64, 128),
                dpo_pairs: 8,
                dpo_len: 512,
                ppo: PpoShape { trajectories: 112, prompt: 64, new_tokens: 48, epochs: 5, minibatch: 28 },
                classifier_layers: 6,
            }),
            "small" => Ok(Size {
                layers: 2,
                forward: (4, 256),
                generate: (8, 64, 32),
                dpo_pairs: 4,
                dpo_len: 256,
                ppo: PpoShape { trajectories: 28, prompt: 32, new_tokens: 16, epochs: 1, minibatch: 14 },
                classifier_layers: 2,
            }),
            other => bail!("--size: expected `small` or `full`, found `{other}`"),
        }
    }

    fn gpt2(&self) -> LmConfig {
        LmConfig::from(Gpt2Config::new(50257, 1024, 768, self.layers, 12))
    }
}

/// One measurement: a row by one implementation, in seconds (the median), with its phases.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    /// The row.
    pub row: String,
    /// `tril`, or the PyTorch side's name (`torch`, `hf_generate`, `kv_loop`, `trl_ppo`).
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Median seconds of the timed runs.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Median seconds per phase.
    #[serde(default)]
    pub phases: BTreeMap<String, f64>,
    /// Why the row could not be measured.
    #[serde(default)]
    pub error: Option<String>,
}

/// `tril bench`: bad arguments exit 2, a failure while measuring exits 1 (a row that fails
/// is reported in the table and the others still run).
pub fn run(args: &BenchArgs) -> Result<(), Failure> {
    let (size, target) = check(args).map_err(Failure::Config)?;
    measure(args, size, target).map_err(Failure::Runtime)
}

fn check(args: &BenchArgs) -> Result<(Size, Target)> {
    let size = Size::parse(&args.size)?;
    for row in &args.rows {
        if !ROWS.contains(&row.as_str()) {
            bail!("--rows: unknown row `{row}`; the rows are {}", ROWS.join(", "));
        }
    }
    if args.repeats == 0 {
        bail!("--repeats: expected at least 1");
    }
    if args.threads == Some(0) {
        bail!("--threads: expected at least 1");
    }
    if let Some(path) = args.torch_script.as_ref().filter(|p| !p.is_file()) {
        bail!("--torch-script: no file {}", path.display());
    }
    let device: Device = args.device.parse().map_err(|e| anyhow!("--device: {e}"))?;
    let precision = match args.precision.as_str() {
        "f32" => Precision::F32,
        "bf16" => Precision::Bf16,
        "f16" => Precision::F16,
        other => bail!("--precision: expected f32, bf16 or f16, found `{other}`"),
    };
    Ok((size, Target::new(device, precision)?))
}

fn measure(args: &BenchArgs, size: Size, target: Target) -> Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow!("--threads: the thread pool was already started: {e}"))?;
    }
    let mut all = Vec::new();
    for row in &args.rows {
        eprintln!("tril: {row} ...");
        let job = RowJob { row: row.clone(), size, repeats: args.repeats };
        let m = tril_core::backend::train(target, job)?;
        let m = m.unwrap_or_else(|e| Measurement {
            row: row.clone(),
            implementation: "tril".into(),
            seconds: None,
            phases: BTreeMap::new(),
            error: Some(format!("{e:#}")),
        });
        all.push(m);
    }
    if !args.no_torch {
        all.extend(torch_side(args, matches!(target.device, Device::Cuda(_)))?);
    }
    if let Some(path) = &args.json {
        let mut out = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        for m in &all {
            writeln!(out, "{}", serde_json::to_string(m)?)?;
        }
    }
    print!("{}", table(&all, args, target));
    Ok(())
}

struct RowJob {
    row: String,
    size: Size,
    repeats: usize,
}

impl TrainJob for RowJob {
    type Output = Result<Measurement>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let s = self.size;
        let (seconds, phases) = match self.row.as_str() {
            "forward" => (forward::<B::InnerBackend>(&s, self.repeats, &device, &mut rng)?, BTreeMap::new()),
            "train" => (train::<B>(&s.gpt2(), s.forward, self.repeats, &device, &mut rng)?, BTreeMap::new()),
            "train_tiny" => {
                let tiny = LmConfig::from(Gpt2Config::new(512, 256, 64, 2, 4));
                (train::<B>(&tiny, (8, 128), self.repeats, &device, &mut rng)?, BTreeMap::new())
            }
            "generate" => (generation::<B::InnerBackend>(&s, self.repeats, &device, &mut rng)?, BTreeMap::new()),
            "ppo" => {
                let phases = ppo::<B>(&s, self.repeats, &device, &mut rng)?;
                (phases.values().sum(), phases)
            }
            "dpo" => (dpo::<B>(&s, self.repeats, &device, &mut rng)?, BTreeMap::new()),
            other => bail!("unknown row {other}"),
        };
        Ok(Measurement { row: self.row, implementation: "tril".into(), seconds: Some(seconds), phases, error: None })
    }
}

/// Waits for the device's queued work (a no-op on CPU backends).
fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow!("device sync failed: {e:?}"))
}

/// One untimed warm-up run of `work`, then the median of `repeats` timed runs.
fn median_time<B: Backend>(repeats: usize, device: &B::Device, mut work: impl FnMut() -> Result<()>) -> Result<f64> {
    work()?;
    sync::<B>(device)?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        work()?;
        sync::<B>(device)?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn random_ids<B: Backend>(
    rows: usize,
    cols: usize,
    vocab: usize,
    device: &B::Device,
    rng: &mut ChaCha8Rng,
) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..rows * cols).map(|_| rng.random_range(0..vocab as i64)).collect();
    Tensor::from_data(TensorData::new(ids, [rows, cols]), device)
}

/// Next-token log-probs of every position but the last: `[B, T - 1]`.
fn next_token_logprobs<B: Backend>(model: &CausalLm<B>, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [b, t] = ids.dims();
    let logits = model.span_logits(ids.clone(), None, 0, t - 1); // [B, T-1, V]
    gather_logprobs(logits, ids.slice([0..b, 1..t]))
}

fn adamw() -> OptimizerSpec {
    OptimizerSpec {
        kind: OptimizerKind::AdamW,
        lr: 1e-5,
        betas: (0.9, 0.999),
        eps: 1e-5,
        weight_decay: 0.0,
        no_decay: Vec::new(),
    }
}

fn forward<B: Backend>(s: &Size, repeats: usize, device: &B::Device, rng: &mut ChaCha8Rng) -> Result<f64> {
    let model = s.gpt2().init::<B>(device);
    let (b, t) = s.forward;
    let ids = random_ids::<B>(b, t, 50257, device, rng);
    median_time::<B>(repeats, device, || {
        let _ = next_token_logprobs(&model, ids.clone()).sum().into_data();
        Ok(())
    })
}

fn train<B: AutodiffBackend>(
    config: &LmConfig,
    (b, t): (usize, usize),
    repeats: usize,
    device: &B::Device,
    rng: &mut ChaCha8Rng,
) -> Result<f64> {
    let mut model = config.init::<B>(device);
    let ids = random_ids::<B>(b, t, config.vocab_size(), device, rng);
    let mut optim = Optim::<B, CausalLm<B>>::new(&adamw());
    median_time::<B>(repeats, device, || {
        let loss = next_token_logprobs(&model, ids.clone()).mean().neg(); // [1]
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-5, model.clone(), grads);
        Ok(())
    })
}

fn sampling(new_tokens: usize) -> GenerationConfig {
    GenerationConfig { do_sample: true, top_k: 50, max_new_tokens: new_tokens, ..Default::default() }
}

const NO_EOS: SpecialTokens = SpecialTokens { eos_token_id: None, pad_token_id: 0 };

fn generation<B: Backend>(s: &Size, repeats: usize, device: &B::Device, rng: &mut ChaCha8Rng) -> Result<f64> {
    let model = s.gpt2().init::<B>(device);
    let (b, p, n) = s.generate;
    let ids = random_ids::<B>(b, p, 50257, device, rng);
    let mask = Tensor::<B, 2, Int>::ones([b, p], device);
    let mut sample_rng = ChaCha8Rng::seed_from_u64(1);
    median_time::<B>(repeats, device, || {
        generate(&model, ids.clone(), mask.clone(), &sampling(n), NO_EOS, &mut sample_rng)?;
        Ok(())
    })
}

fn dpo<B: AutodiffBackend>(s: &Size, repeats: usize, device: &B::Device, rng: &mut ChaCha8Rng) -> Result<f64> {
    let mut model = s.gpt2().init::<B>(device);
    let (pairs, t) = (s.dpo_pairs, s.dpo_len);
    let ids = random_ids::<B>(2 * pairs, t, 50257, device, rng); // chosen rows, then rejected rows
    let half: Vec<f32> = (0..t - 1).map(|i| if i + 1 >= t / 2 { 1.0 } else { 0.0 }).collect();
    let mask =
        Tensor::<B, 1>::from_data(TensorData::new(half, [t - 1]), device).reshape([1, t - 1]).repeat_dim(0, 2 * pairs); // [2P, T - 1]: the completion is the second half
    let reference: Vec<f32> = (0..2 * pairs).map(|_| -rng.random_range(100.0..200.0f32)).collect();
    let reference = Tensor::<B, 1>::from_data(TensorData::new(reference, [2 * pairs]), device);
    let args = DpoArgs::default();
    let mut optim = Optim::<B, CausalLm<B>>::new(&adamw());
    median_time::<B>(repeats, device, || {
        let logps = sequence_logprobs(next_token_logprobs(&model, ids.clone()), mask.clone(), SequenceReduction::Sum);
        let (chosen, rejected) = (logps.clone().narrow(0, 0, pairs), logps.narrow(0, pairs, pairs));
        let (ref_c, ref_r) = (reference.clone().narrow(0, 0, pairs), reference.clone().narrow(0, pairs, pairs));
        let (loss, _) = dpo_loss(chosen, rejected, ref_c, ref_r, None, &args);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-5, model.clone(), grads);
        Ok(())
    })
}

/// PPO's `alg.args` for the benchmark shapes (TRIL's IMDB values otherwise).
fn ppo_args(shape: &PpoShape) -> Result<PpoArgs> {
    let args = serde_json::json!({
        "seed": 0, "n_iters": 1, "batch_size": shape.minibatch, "grad_accumulation": 1,
        "trajectories_per_update": shape.trajectories, "n_epochs": shape.epochs, "gamma": 0.99,
        "gae_lambda": 0.95, "vf_coef": 0.5, "target_coef": 0.1, "target_regularization": false,
        "ent_coef": 0.0, "clip_range": 0.2, "clip_range_vf": 0.2, "max_grad_norm": 1.0, "target_kl": null,
        "eval_batch_size": 1, "eval_every": 1, "save_every": 1, "eval_zero_shot": false,
        "save_checkpoints": false, "eval_splits": [], "max_prompt_len": shape.prompt,
        "max_gen_len": shape.new_tokens,
    });
    Ok(serde_json::from_value(args)?)
}

/// One PPO iteration by phase; the median of each phase over the repeats.
fn ppo<B: AutodiffBackend>(
    s: &Size,
    repeats: usize,
    device: &B::Device,
    rng: &mut ChaCha8Rng,
) -> Result<BTreeMap<String, f64>> {
    let shape = s.ppo;
    let args = ppo_args(&shape)?;
    let config = s.gpt2();
    let critic = ValueModel { transformer: config.init::<B>(device), v_head: ValueHeadConfig::new(768).init(device) };
    let mut model =
        ActorCritic { policy: config.init::<B>(device), critic: Some(critic), shared_head: None, guide_critic: None };
    let reference = model.policy.valid();
    let mut classifier_config = EncoderConfig::distilbert_base();
    classifier_config.num_layers = s.classifier_layers;
    let classifier = classifier_config.init::<B::InnerBackend>(device);
    let mut optim = Optim::<B, ActorCritic<B>>::new(&adamw());
    let (n_traj, p, n) = (shape.trajectories, shape.prompt, shape.new_tokens);
    let prompts = random_ids::<B::InnerBackend>(n_traj, p, 50257, device, rng);
    let prompt_mask = Tensor::<B::InnerBackend, 2, Int>::ones([n_traj, p], device);
    let mut sample_rng = ChaCha8Rng::seed_from_u64(1);
    let mut shuffle_rng = ChaCha8Rng::seed_from_u64(2);
    let mut phases: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for run in 0..=repeats {
        let mut clock = Clock::<B::InnerBackend>::new(device);
        // generate: the policy samples every trajectory in one batch (TRIL's batch_size_per_process 112)
        let policy = model.policy.valid();
        let out = generate(&policy, prompts.clone(), prompt_mask.clone(), &sampling(n), NO_EOS, &mut sample_rng)?;
        let (tokens, _, gen_mask) = out.to_tensors::<B::InnerBackend>(device);
        let ids = Tensor::cat(vec![prompts.clone(), tokens], 1); // [N, P + n]
        let mask = Tensor::cat(vec![prompt_mask.clone(), gen_mask.clone().int()], 1);
        let generate_s = clock.lap()?;
        // reward: the classifier on prompt + generation (ids mapped into its vocabulary)
        let probs = softmax(classifier.forward(ids.clone().remainder_scalar(30522), Some(mask.clone())), 1); // [N, 2]
        let terminal = probs.slice([0..n_traj, 1..2]).reshape([n_traj]);
        let _ = terminal.clone().into_data();
        let reward_s = clock.lap()?;
        // reference/values: policy log-probs + entropy, reference log-probs, critic values
        let scored = model.valid().score_with(ids.clone(), mask.clone(), n, ValueFn::Policy, false);
        let ref_lp = lm_logprobs(&reference, ids.clone(), mask.clone(), n);
        let _ = scored.values.clone().sum().into_data();
        let reference_s = clock.lap()?;
        // update: rewards, GAE, n_epochs x minibatches of PPO steps
        let (_, _, total) = token_rewards(terminal, gen_mask.clone(), scored.logprobs.clone(), ref_lp, 0.001);
        let (advantages, returns) = gae(total, scored.values.clone(), gen_mask.clone(), args.gamma, args.gae_lambda);
        let buf = RolloutBuffer::<B> {
            ids: ids.clone(),
            mask,
            update_mask: gen_mask.clone(),
            value_mask: gen_mask,
            value_fn: ValueFn::Policy,
            logprobs: scored.logprobs,
            values: scored.values,
            advantages,
            returns,
            target_ids: ids,
            target_mask: Tensor::zeros([n_traj, n], device),
        };
        let mut order: Vec<usize> = (0..n_traj).collect();
        for _ in 0..shape.epochs {
            rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut shuffle_rng);
            for rows in order.chunks(shape.minibatch) {
                let Minibatch::Gradients { grads, mut stats, .. } =
                    minibatch_gradients(&model, &buf, rows, &args, rows.len())
                else {
                    bail!("no target_kl is set, so there is no early stop");
                };
                let (grads, _) = clip_gradients(&model, grads, &args, ValueFn::Policy, &mut stats)?;
                model = optim.step(1e-5, model.clone(), grads);
            }
        }
        let update_s = clock.lap()?;
        if run > 0 {
            for (k, v) in [
                ("generate", generate_s),
                ("reward", reward_s),
                ("reference_values", reference_s),
                ("update", update_s),
            ] {
                phases.entry(k).or_default().push(v);
            }
        }
    }
    Ok(phases.into_iter().map(|(k, v)| (k.to_string(), median(v))).collect())
}

/// Seconds between laps, each lap ending when the device is done.
struct Clock<'a, B: Backend> {
    device: &'a B::Device,
    last: Instant,
}

impl<'a, B: Backend> Clock<'a, B> {
    fn new(device: &'a B::Device) -> Self {
        Clock { device, last: Instant::now() }
    }

    fn lap(&mut self) -> Result<f64> {
        sync::<B>(self.device)?;
        let now = Instant::now();
        let seconds = (now - self.last).as_secs_f64();
        self.last = now;
        Ok(seconds)
    }
}

/// Runs `bench/torch_bench.py` (the copy compiled into this binary) with the same rows,
/// size, threads, device and precision, and reads its JSON lines.
fn torch_side(args: &BenchArgs, cuda: bool) -> Result<Vec<Measurement>> {
    let python = args
        .python
        .clone()
        .or_else(|| std::env::var_os("TRIL_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let dir = std::env::temp_dir().join(format!("tril-bench-{}", std::process::id()));
    let checkout = PathBuf::from("bench/torch_bench.py");
    let script = match &args.torch_script {
        Some(path) => path.clone(),
        None if checkout.is_file() => checkout,
        None => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let script = dir.join("torch_bench.py");
            std::fs::write(&script, TORCH_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
            script
        }
    };
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(&script)
        .args(["--rows", &args.rows.join(","), "--size", &args.size, "--precision", &args.precision])
        .args(["--device", if cuda { "cuda" } else { "cpu" }, "--repeats", &args.repeats.to_string()])
        .stderr(std::process::Stdio::inherit());
    if let Some(n) = args.threads {
        cmd.args(["--threads", &n.to_string()]);
    }
    eprintln!("pytorch: {} {} ...", python.display(), script.display());
    let output = cmd.output();
    let _ = std::fs::remove_dir_all(&dir);
    let output = output.with_context(|| {
        format!("running {} (set --python or TRIL_PYTHON to a Python with torch, or pass --no-torch)", python.display())
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut measured: Vec<Measurement> = Vec::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        match serde_json::from_str(line) {
            Ok(m) => measured.push(m),
            Err(e) => eprintln!("warning: ignoring a line of the PyTorch side that is not a measurement ({e}): {line}"),
        }
    }
    if !output.status.success() && measured.is_empty() {
        bail!(
            "the PyTorch side failed ({}) without a measurement; is torch installed for {}? (--no-torch skips it)",
            output.status,
            python.display()
        );
    }
    Ok(measured)
}

/// The table: one line per row and PyTorch implementation, `ratio = tril / PyTorch`
/// (below 1: tril is faster), then the phases of the PPO row.
fn table(all: &[Measurement], args: &BenchArgs, target: Target) -> String {
    let threads = args.threads.map_or_else(|| "all".to_string(), |n| n.to_string());
    let mut out = format!(
        "\ntril bench --size {} (device {}, precision {}, threads {threads}, median of {})\n\n",
        args.size, target.device, target.precision, args.repeats
    );
    out += &format!("{:<12} {:<12} {:>10} {:>12} {:>7}\n", "row", "pytorch", "tril s", "pytorch s", "ratio");
    let secs = |m: Option<&Measurement>| m.and_then(|m| m.seconds);
    let show = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |s| format!("{s:.3}"));
    for row in ROWS.iter().filter(|r| args.rows.iter().any(|a| a == *r)) {
        let ours = all.iter().find(|m| m.row == *row && m.implementation == "tril");
        let theirs: Vec<&Measurement> = all.iter().filter(|m| m.row == *row && m.implementation != "tril").collect();
        let ratio = |t: Option<f64>| match (secs(ours), t) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_string(),
        };
        if theirs.is_empty() {
            out += &format!("{row:<12} {:<12} {:>10} {:>12} {:>7}\n", "-", show(secs(ours)), "-", "-");
        }
        for t in &theirs {
            out += &format!(
                "{row:<12} {:<12} {:>10} {:>12} {:>7}\n",
                t.implementation,
                show(secs(ours)),
                show(t.seconds),
                ratio(t.seconds)
            );
        }
        for m in ours.into_iter().chain(theirs.iter().copied()) {
            if let Some(e) = &m.error {
                out += &format!("  {} {row}: {e}\n", m.implementation);
            }
        }
    }
    let ppo: Vec<&Measurement> = all.iter().filter(|m| m.row == "ppo" && !m.phases.is_empty()).collect();
    if !ppo.is_empty() {
        out += "\nppo phases (s):\n";
        let names: Vec<&String> = ppo[0].phases.keys().collect();
        out += &format!("{:<12}", "impl");
        for name in &names {
            out += &format!(" {name:>16}");
        }
        out += "\n";
        for m in ppo {
            out += &format!("{:<12}", m.implementation);
            for name in &names {
                out += &format!(" {:>16}", show(m.phases.get(*name).copied()));
            }
            out += "\n";
        }
    }
    out
}
