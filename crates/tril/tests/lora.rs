//! `alg.lora` through the real CLI: DPO with `alg.lora.peft_config.r=4` on a saved tiny GPT-2
//! (`synthetic_preference`, CPU, seeded) trains the adapters only, writes PEFT's adapter files
//! as the checkpoint's policy, and leaves every base weight bit-identical; bad LoRA keys are
//! refused with the key.

mod common;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use common::*;
use std::path::Path;
use tril_core::backend::{CpuAutodiff, CpuBackend};
use tril_models::causal_lm::{CausalLm, LmConfig};
use tril_models::gpt2::Gpt2Config;
use tril_models::hf::peft::{load_lora, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use tril_models::lora::LoraTargets;

/// Every float parameter of a module, in visiting order.
fn floats<B: burn::tensor::backend::Backend, M: Module<B>>(m: &M) -> Vec<TensorData> {
    struct Collect(Vec<TensorData>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push(p.val().into_data());
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// A tiny GPT-2 over the `builtin:numbers` vocabulary, saved in HF layout.
fn base_model(dir: &Path) -> LmConfig {
    let vocab = tril_algorithms::onpolicy::numbers_tokenizer().unwrap().vocab_size();
    let config = LmConfig::from(Gpt2Config::new(vocab, 64, 32, 2, 4));
    let model = tril_algorithms::onpolicy::fresh_lm::<CpuBackend>(&config, &Default::default());
    tril_models::hf::save_lm(&model, &config, dir, None).unwrap();
    config
}

#[test]
fn dpo_with_lora_trains_adapters_only_and_writes_peft_files() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    base_model(&base);
    let (dir, arg) = run_dir(&tmp, "dpo_lora");
    let model_arg = format!("alg.args.model_name={}", base.display());
    let (code, stderr) = tril(&[
        "task=synthetic_preference",
        "alg=dpo",
        &arg,
        &model_arg,
        "alg.args.epochs=1",
        "+alg.lora.peft_config.r=4",
        "+alg.lora.peft_config.lora_alpha=16",
        "+alg.lora.peft_config.task_type=CAUSAL_LM",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // It trains: finite losses, and the held-out margin grows from 0.
    let train = lines(&dir.join("training_info.jsonl"));
    assert_eq!(train.len(), 16);
    assert!(train.iter().all(|l| l["loss"].as_f64().is_some_and(f64::is_finite)));
    let margins = eval_series(&dir, "rewards/margins");
    assert!(margins[0].abs() < 1e-4 && *margins.last().unwrap() > 0.01, "{margins:?}");
    // The checkpoint's policy is a PEFT adapter.
    let policy = dir.join("checkpoints/iter_16/policy");
    for file in [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, "tokenizer.json"] {
        assert!(policy.join(file).is_file(), "missing policy/{file}");
    }
    assert!(!policy.join("model.safetensors").exists(), "the base is not written again");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(policy.join(ADAPTER_CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!((cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()), (Some(4), Some(16.0)));
    assert_eq!((cfg["peft_type"].as_str(), cfg["task_type"].as_str()), (Some("LORA"), Some("CAUSAL_LM")));
    assert_eq!(cfg["target_modules"], serde_json::json!(["c_attn"]));
    assert_eq!(cfg["base_model_name_or_path"].as_str(), Some(base.to_str().unwrap()));
    // The adapters trained (PEFT starts B at zero) ...
    let dev = Default::default();
    let loaded = tril_models::hf::load_lm::<CpuAutodiff>(&base, &dev).unwrap().model;
    let (tuned, _) = load_lora(loaded.clone(), &policy, &dev).unwrap();
    let adapters: Vec<_> = tuned.projections().into_iter().filter_map(|(_, l)| l.lora.as_ref()).collect();
    assert_eq!(adapters.len(), 2);
    for a in &adapters {
        assert!(a.lora_b.weight.val().abs().max().into_scalar() > 0.0, "an adapter did not train");
    }
    // ... and the exact resume state holds the same adapters on the untouched base.
    let state: CausalLm<CpuAutodiff> =
        tril_algorithms::trainer::load_module(tuned.clone(), &dir.join("checkpoints/iter_16/trainer/model"), &dev)
            .unwrap();
    assert!(floats(&state.without_lora()) == floats(&loaded), "a base weight changed");
    assert!(floats(&state) == floats(&tuned), "the resume state's adapters differ from the PEFT files");
    // `tril merge-lora` writes the merged model: the adapted model's logits from one HF directory.
    let merged = tmp.path().join("merged");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tril"))
        .args(["--quiet", "merge-lora"])
        .arg(&policy)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids =
        Tensor::<CpuAutodiff, 2, burn::tensor::Int>::from_data(TensorData::new(vec![3i64, 4, 5, 6], [1, 4]), &dev);
    let want = tuned.forward(ids.clone(), None).logits;
    let got = tril_models::hf::load_lm::<CpuAutodiff>(&merged, &dev).unwrap().model.forward(ids, None).logits;
    let diff = (want - got).abs().max().into_scalar();
    assert!(diff < 1e-4, "merged model: max |diff| {diff}"); // f32 sums in another order
    assert!(merged.join("tokenizer.json").is_file() || !base.join("tokenizer.json").is_file());
}

#[test]
fn bad_lora_keys_are_refused_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, arg) = run_dir(&tmp, "bad");
    let (code, stderr) = tril(&["task=synthetic_preference", "alg=dpo", &arg, "+alg.lora.peft_config.r=0"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("alg.lora.peft_config.r"), "{stderr}");
    let (code, stderr) = tril(&["task=synthetic_preference", "alg=dpo", &arg, "+alg.lora.peft_config.rank=4"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("rank"), "{stderr}");
    let (code, stderr) = tril(&["task=synthetic_preference", "alg=dpo", &arg, "+alg.lora.peft_config.bias=all"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("alg.lora.peft_config.bias"), "{stderr}");
}

/// A killed and resumed DPO run with LoRA logs and saves exactly what the uninterrupted run does
/// (the resume state holds the adapters).
#[test]
fn killed_and_resumed_lora_run_matches_the_uninterrupted_one() {
    let args = [
        "task=synthetic_preference",
        "alg=dpo",
        "alg.args.eval_zero_shot=false",
        "alg.args.save_checkpoints=true",
        "alg.args.save_every=2",
        "+alg.lora.peft_config.r=4",
    ];
    assert_kill_and_resume_matches(&args, 32, 32 + 4);
}

/// PPO (shared-trunk critic) and GRPO with LoRA run through the CLI and checkpoint the policy as
/// PEFT's adapter (PPO's critic whole, adapters merged).
#[test]
fn ppo_and_grpo_with_lora_write_adapters() {
    for (alg, critic) in [("ppo", true), ("grpo", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, arg) = run_dir(&tmp, alg);
        let alg_arg = format!("alg={alg}");
        let args = ["task=synthetic", &alg_arg, &arg, "alg.args.n_iters=2", "alg.args.save_every=2"];
        let (code, stderr) =
            tril(&[&args[..], &["+alg.lora.peft_config.r=2", "+alg.lora.peft_config.lora_dropout=0.1"]].concat());
        assert_eq!(code, 0, "{alg}: {stderr}");
        let iter = dir.join("checkpoints/iter_2");
        for file in [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, "tokenizer.json"] {
            assert!(iter.join("policy").join(file).is_file(), "{alg}: missing policy/{file}");
        }
        assert_eq!(iter.join("critic/model.safetensors").is_file(), critic, "{alg}: critic");
        let losses = jsonl(&dir.join("training_info.jsonl"), &format!("{alg}/loss"));
        assert!(losses.len() == 2 && losses.iter().all(|l| l.is_finite()), "{alg}: {losses:?}");
    }
}
