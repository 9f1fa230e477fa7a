//! One PPO update of tril against a PyTorch port of TRIL's update, from the same weights.
//!
//! `tests/fixtures/ppo_update/` holds what tril exported (`export_inputs` below, run with
//! `cargo test -p tril-algorithms --test ppo_update -- --ignored export_inputs`): a tiny
//! GPT-2 policy and critic in HF layout (`policy/`, `critic/`) and one rollout batch
//! (`batch.json`: prompt + generation ids with left-padded prompts and generations that stop
//! at EOS, attention masks, rollout log-probs, reference log-probs, values, terminal
//! rewards, target-regularization ids). `make_ppo_update.py` (PyTorch + transformers) loads
//! them into `GPT2LMHeadModel`s and runs TRIL's math on them, line by line from TRIL's source
//! (reward placement, KL penalty and GAE, then `PPO.train_step`: losses, backward with
//! gradient accumulation, `clip_grad_norm_`, AdamW with TRIL's parameter groups), in float64,
//! for each case of `expected.json`; the new weights go to `expected/<case>/`.
//!
//! Here tril recomputes everything from the same inputs with its own code (the action mask,
//! [`token_rewards`], [`gae`], [`minibatch_gradients`], [`clip_gradients`], the optimizer)
//! and must agree: advantages and returns within 1e-5, every logged loss term, statistic and
//! the gradient norm within 1e-4, and every parameter of the policy and the critic within
//! 1e-4 after the step (the step moves some by more than 1e-3, so this is not vacuous).

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tril_algorithms::onpolicy::ppo::{token_rewards, PpoArgs};
use tril_algorithms::onpolicy::ppo_run::{clip_gradients, minibatch_gradients, Minibatch, RolloutBuffer};
use tril_algorithms::onpolicy::rollin::ValueFn;
use tril_algorithms::onpolicy::{action_mask, rollout_attention, ActorCritic};
use tril_algorithms::trainer::Optim;
use tril_core::backend::CpuBackend;
use tril_core::ops::gae;
use tril_core::plugin::{OptimizerKind, OptimizerSpec};
use tril_models::generate::GenerationOutput;
use tril_models::hf::Checkpoint;

type Train = Autodiff<CpuBackend>;
type Inner = <Train as AutodiffBackend>::InnerBackend;

/// Rows, prompt width and generation width of the exported batch.
const B: usize = 6;
const P: usize = 5;
const N: usize = 6;
/// EOS and padding (GPT-2 style: the pad token is the EOS token).
const EOS: u32 = 0;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ppo_update")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().flat_map(floats_or_one).collect()
}

fn floats_or_one(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(_) => floats(v),
        other => vec![other.as_f64().expect("number") as f32],
    }
}

fn ints(v: &Value) -> Vec<i64> {
    floats(v).into_iter().map(|x| x as i64).collect()
}

fn matrix(v: Vec<f32>, rows: usize) -> Tensor<Inner, 2> {
    let cols = v.len() / rows;
    Tensor::from_data(TensorData::new(v, [rows, cols]), &Default::default())
}

fn int_matrix(v: Vec<i64>, rows: usize) -> Tensor<Inner, 2, Int> {
    let cols = v.len() / rows;
    Tensor::from_data(TensorData::new(v, [rows, cols]), &Default::default())
}

fn host(t: Tensor<Inner, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32")
}

/// The generation part of the batch as tril's generator returns it: tokens, and the mask
/// of generated tokens with the stopping EOS included.
fn generation(ids: &[i64], gen_attention: &[i64]) -> GenerationOutput {
    let mut tokens = Vec::new();
    let mut mask = Vec::new();
    for row in 0..B {
        for t in 0..N {
            tokens.push(ids[row * (P + N) + P + t] as u32);
            mask.push(gen_attention[row * (P + N) + P + t] as u32);
        }
    }
    GenerationOutput {
        tokens,
        logprobs: vec![0.0; B * N],
        sampling_logprobs: vec![0.0; B * N],
        mask,
        batch: B,
        max_new_tokens: N,
    }
}

fn load_models() -> ActorCritic<Train> {
    let device = Default::default();
    let policy = tril_models::hf::load_lm::<Train>(&dir().join("policy"), &device).expect("policy").model;
    let critic = tril_models::hf::load_value_model::<Train>(&dir().join("critic"), false, &device).expect("critic");
    ActorCritic { policy, critic: Some(critic.model), shared_head: None, guide_critic: None }
}

fn ppo_args(case: &Value) -> PpoArgs {
    let c = &case["args"];
    serde_json::from_value(json!({
        "seed": 0, "n_iters": 1, "batch_size": B, "grad_accumulation": c["grad_accumulation"],
        "trajectories_per_update": B, "n_epochs": 1, "gamma": c["gamma"], "gae_lambda": c["gae_lambda"],
        "vf_coef": c["vf_coef"], "target_coef": c["target_coef"], "target_regularization": true,
        "ent_coef": c["ent_coef"], "clip_range": c["clip_range"], "clip_range_vf": c["clip_range_vf"],
        "max_grad_norm": c["max_grad_norm"], "target_kl": null, "eval_batch_size": 1, "eval_every": 1,
        "save_every": 1, "eval_zero_shot": false, "save_checkpoints": false, "eval_splits": [],
        "max_prompt_len": P, "max_gen_len": N, "train_eos": c["train_eos"], "grad_clip": c["grad_clip"],
    }))
    .expect("PpoArgs")
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol, "{what}: tril {got}, torch {want} (|diff| {:.3e} > {tol})", (got - want).abs());
}

fn close_all(got: &[f32], want: &[f32], tol: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (f64::from(*g) - f64::from(*w)).abs();
        assert!(d <= tol, "{what}[{i}]: tril {g}, torch {w} (|diff| {d:.3e} > {tol})");
        worst = worst.max(d);
    }
    worst
}

/// Every tensor of a saved model directory, by HF name.
fn tensors(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let mut ckpt = Checkpoint::open(dir).expect("checkpoint");
    let names: Vec<String> = ckpt.names().map(str::to_string).collect();
    names.into_iter().map(|n| (n.clone(), ckpt.read_f32(&n).expect("tensor").0)).collect()
}

#[test]
fn one_ppo_update_matches_a_pytorch_port_of_tril() {
    let batch = read_json(&dir().join("batch.json"));
    let expected = read_json(&dir().join("expected.json"));
    let ids = ints(&batch["ids"]);
    let attention = ints(&batch["attention_mask"]);
    let output = generation(&ids, &attention);
    let scratch = std::env::temp_dir().join(format!("tril-ppo-update-{}", std::process::id()));
    for case in expected["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let args = ppo_args(case);
        let a = &case["args"];

        // The rollout: tril's action mask, per-token rewards and GAE from the raw batch.
        let actions = matrix(action_mask(&output, Some(EOS), args.train_eos), B); // [B, N]
        let terminal = Tensor::<Inner, 1>::from_data(
            TensorData::new(floats(&batch["terminal_rewards"]), [B]),
            &Default::default(),
        );
        let (logprobs, ref_lp) = (matrix(floats(&batch["old_logprobs"]), B), matrix(floats(&batch["ref_logprobs"]), B));
        let values = matrix(floats(&batch["old_values"]), B);
        let kl_coeff = a["kl_coeff"].as_f64().unwrap();
        let (_, _, total) = token_rewards(terminal, actions.clone(), logprobs.clone(), ref_lp, kl_coeff);
        let (advantages, returns) = gae(total, values.clone(), actions.clone(), args.gamma, args.gae_lambda);
        close_all(&host(actions.clone()), &floats(&case["masks"]), 0.0, &format!("{name} masks"));
        close_all(&host(advantages.clone()), &floats(&case["advantages"]), 1e-5, &format!("{name} advantages"));
        close_all(&host(returns.clone()), &floats(&case["returns"]), 1e-5, &format!("{name} returns"));

        // One optimizer step over the whole batch (one minibatch of grad_accumulation micro-batches).
        let buf = RolloutBuffer::<Train> {
            ids: int_matrix(ids.clone(), B),
            mask: rollout_attention(int_matrix(attention.clone(), B), actions.clone(), args.train_eos),
            update_mask: actions.clone(),
            value_mask: actions,
            value_fn: ValueFn::Policy,
            logprobs,
            values,
            advantages,
            returns,
            target_ids: int_matrix(ints(&batch["target_ids"]), B),
            target_mask: matrix(floats(&batch["target_mask"]), B),
        };
        let model = load_models();
        let rows: Vec<usize> = (0..B).collect();
        let micro = B / args.grad_accumulation;
        let Minibatch::Gradients { grads, mut stats, diagnostics } =
            minibatch_gradients(&model, &buf, &rows, &args, micro)
        else {
            panic!("{name}: no target_kl, so no early stop");
        };
        let (grads, norm) = clip_gradients(&model, grads, &args, ValueFn::Policy, &mut stats).unwrap();
        close(norm, case["grad_norm"].as_f64().unwrap(), 1e-4, &format!("{name} grad_norm"));
        let mut by_key: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (k, v) in stats.into_iter().chain(diagnostics) {
            by_key.entry(k).or_default().push(v);
        }
        for (key, want) in case["stats"].as_object().expect("stats") {
            let got = by_key.get(key.as_str()).unwrap_or_else(|| panic!("{name}: tril logs no {key}"));
            let mean = got.iter().sum::<f64>() / got.len() as f64;
            close(mean, want.as_f64().unwrap(), 1e-4, &format!("{name} {key}"));
        }
        let spec = OptimizerSpec {
            kind: OptimizerKind::AdamW,
            lr: a["lr"].as_f64().unwrap(),
            betas: (0.9, 0.999),
            eps: a["eps"].as_f64().unwrap(),
            weight_decay: a["weight_decay"].as_f64().unwrap(),
            no_decay: tril_algorithms::optimizers::NO_DECAY.iter().map(|s| s.to_string()).collect(),
        };
        let mut optim = Optim::for_module(&spec, &model);
        let updated = optim.step(spec.lr, model, grads);

        // The new weights, compared by HF name.
        let out = scratch.join(name);
        let config = tril_models::hf::read_lm_config(&dir().join("policy")).expect("config");
        tril_models::hf::save_lm(&updated.policy, &config, &out.join("policy"), None).expect("save policy");
        let critic = updated.critic.as_ref().expect("critic");
        tril_models::hf::save_value_model(critic, &config, &out.join("critic"), None).expect("save critic");
        let (mut moved, mut worst) = (0.0f64, 0.0f64);
        for part in ["policy", "critic"] {
            let before = tensors(&dir().join(part));
            let got = tensors(&out.join(part));
            let want = tensors(&dir().join("expected").join(name).join(part));
            assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{name} {part}: names");
            for (tensor, values) in &got {
                worst = worst.max(close_all(values, &want[tensor], 1e-4, &format!("{name} {part} {tensor}")));
                let delta = values.iter().zip(&before[tensor]).map(|(a, b)| f64::from((a - b).abs()));
                moved = moved.max(delta.fold(0.0, f64::max));
            }
        }
        eprintln!("{name}: max |tril - torch| over the new weights {worst:.2e}; largest weight change {moved:.2e}");
        assert!(
            moved > 1e-3,
            "{name}: the step moved no weight by more than 1e-3 ({moved:.2e}); the test would be vacuous"
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Writes the fixture inputs: a tiny random GPT-2 policy and critic, and one rollout batch
/// scored by them. Run by hand (see the module docs); `make_ppo_update.py` then writes the
/// expected outputs.
#[test]
#[ignore = "writes the fixture inputs; run by hand before make_ppo_update.py"]
fn export_inputs() {
    use burn::tensor::backend::Backend;
    use rand::{Rng, SeedableRng};
    use tril_models::gpt2::Gpt2Config;
    use tril_models::heads::{ValueHeadConfig, ValueModel};

    let device = Default::default();
    Inner::seed(&device, 14);
    let config = tril_models::causal_lm::LmConfig::from(
        Gpt2Config::new(96, 32, 32, 2, 2).with_eos_token_id(Some(EOS)).with_bos_token_id(Some(EOS)),
    );
    let policy = config.init::<Inner>(&device);
    let critic =
        ValueModel { transformer: config.init::<Inner>(&device), v_head: ValueHeadConfig::new(32).init(&device) };
    tril_models::hf::save_lm(&policy, &config, &dir().join("policy"), None).expect("save policy");
    tril_models::hf::save_value_model(&critic, &config, &dir().join("critic"), None).expect("save critic");

    // Left-padded prompts; generations that run to the end, stop early at EOS (then pad),
    // or are an EOS alone.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
    let prompt_pads = [0usize, 1, 2, 0, 1, 0];
    let stops: [Option<usize>; B] = [None, Some(3), Some(0), Some(5), Some(2), None];
    let reference_lengths = [6usize, 4, 5, 2, 6, 3];
    let (mut ids, mut attention, mut target_ids, mut target_mask) = (vec![], vec![], vec![], vec![]);
    for row in 0..B {
        let mut prompt = vec![];
        for t in 0..P {
            let real = t >= prompt_pads[row];
            let token: i64 = if real { rng.random_range(1..96) } else { i64::from(EOS) };
            prompt.push((token, i64::from(real)));
        }
        ids.extend(prompt.iter().map(|p| p.0));
        attention.extend(prompt.iter().map(|p| p.1));
        target_ids.extend(prompt.iter().map(|p| p.0));
        for t in 0..N {
            let (token, m) = match stops[row] {
                Some(s) if t == s => (i64::from(EOS), 1),
                Some(s) if t > s => (i64::from(EOS), 0),
                _ => (rng.random_range(1..96), 1),
            };
            ids.push(token);
            attention.push(m);
            let real = t < reference_lengths[row];
            target_ids.push(if real { rng.random_range(1..96) } else { i64::from(EOS) });
            target_mask.push(if real { 1.0f32 } else { 0.0 });
        }
    }
    // Scored by the models as saved (Burn initialises parameters lazily, so the in-memory
    // ones could still differ from what was written).
    let policy = tril_models::hf::load_lm::<Inner>(&dir().join("policy"), &device).expect("policy").model;
    let critic =
        tril_models::hf::load_value_model::<Inner>(&dir().join("critic"), false, &device).expect("critic").model;
    let model = ActorCritic { policy, critic: Some(critic), shared_head: None, guide_critic: None };
    let scored =
        model.score_with(int_matrix(ids.clone(), B), int_matrix(attention.clone(), B), N, ValueFn::Policy, true);
    let mut noise = |x: Vec<f32>, scale: f32| -> Vec<f32> {
        x.into_iter().map(|v| v + scale * (rng.random::<f32>() * 2.0 - 1.0)).collect()
    };
    // The rollout policy, the reference and the rollout critic differ from the current
    // models, so ratios clip and values clip.
    let current = host(scored.logprobs);
    let old_logprobs = noise(current.clone(), 0.3);
    let ref_logprobs = noise(current, 0.2);
    let old_values = noise(host(scored.values), 0.3);
    let terminal_rewards = noise(vec![0.0; B], 1.0);
    let rows = |v: &[f32], width: usize| -> Vec<Vec<f32>> { v.chunks(width).map(<[f32]>::to_vec).collect() };
    let irows = |v: &[i64], width: usize| -> Vec<Vec<i64>> { v.chunks(width).map(<[i64]>::to_vec).collect() };
    let batch = json!({
        "about": "written by crates/tril-algorithms/tests/ppo_update.rs export_inputs; EOS = pad = 0",
        "prompt_len": P, "gen_len": N, "eos_token_id": EOS,
        "ids": irows(&ids, P + N),
        "attention_mask": irows(&attention, P + N),
        "target_ids": irows(&target_ids, P + N),
        "target_mask": rows(&target_mask, N),
        "old_logprobs": rows(&old_logprobs, N),
        "ref_logprobs": rows(&ref_logprobs, N),
        "old_values": rows(&old_values, N),
        "terminal_rewards": terminal_rewards,
    });
    std::fs::write(dir().join("batch.json"), serde_json::to_string_pretty(&batch).unwrap() + "\n").expect("write");
}
