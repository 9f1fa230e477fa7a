//! Every trainer takes every model family through `model_name`: tiny random Llama, Qwen2,
//! Mistral (a sliding window shorter than the sequences) and GPT-NeoX models, saved in HF
//! layout with the numbers tokenizer, train with DPO, PPO and the reward-model objective
//! through the CLI, and their checkpoints come back in their own family's layout.

mod common;

use common::{lines, run_dir, tril};
use std::path::{Path, PathBuf};
use tril_core::backend::CpuBackend;
use tril_models::causal_lm::LmConfig;
use tril_models::llama::{LlamaConfig, LlamaFamily};
use tril_models::neox::NeoXConfig;

/// A tiny random model of `config`'s family in HF layout under `root/name`, with the numbers
/// tokenizer (vocab 21) beside it.
fn tiny_model(root: &Path, name: &str, config: LmConfig) -> PathBuf {
    let dir = root.join(name);
    let tokenizer = tril_algorithms::onpolicy::numbers_tokenizer().unwrap();
    let model = config.init::<CpuBackend>(&Default::default());
    tril_models::hf::save_lm(&model, &config, &dir, Some(&tokenizer)).unwrap();
    dir
}

fn families(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let llama = LlamaConfig::new(32, 32, 64, 2, 4).with_num_key_value_heads(Some(2)).with_max_position_embeddings(64);
    let neox = NeoXConfig::new(32, 32, 2, 4, 64).with_max_position_embeddings(64);
    vec![
        ("llama", tiny_model(root, "llama", llama.clone().with_tie_word_embeddings(true).into())),
        ("qwen2", tiny_model(root, "qwen2", llama.clone().with_family(LlamaFamily::Qwen2).into())),
        (
            "mistral",
            tiny_model(root, "mistral", llama.with_family(LlamaFamily::Mistral).with_sliding_window(Some(4)).into()),
        ),
        ("gpt_neox", tiny_model(root, "neox", neox.into())),
    ]
}

fn model_type(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["model_type"].as_str().unwrap_or_default().to_string()
}

/// DPO on the synthetic preference task, one epoch: the loss starts near ln 2 and falls, and
/// the policy checkpoint is written in the family's HF layout.
#[test]
fn dpo_trains_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, model) in families(tmp.path()) {
        let (dir, arg) = run_dir(&tmp, &format!("dpo-{family}"));
        let name = format!("alg.args.model_name={}", model.display());
        let (code, stderr) = tril(&[
            "task=synthetic_preference",
            "alg=dpo",
            &arg,
            &name,
            "alg.args.epochs=1",
            "alg.args.save_checkpoints=true",
            "alg.args.save_every=16",
            "alg.args.eval_every=16",
        ]);
        assert_eq!(code, 0, "{family}: {stderr}");
        let train = lines(&dir.join("training_info.jsonl"));
        let loss: Vec<f64> = train.iter().map(|l| l["loss"].as_f64().unwrap()).collect();
        assert!((loss[0] - std::f64::consts::LN_2).abs() < 0.05, "{family}: first loss {}", loss[0]);
        let tail = loss[loss.len() - 4..].iter().sum::<f64>() / 4.0;
        assert!(tail < loss[0], "{family}: loss {loss:?}");
        assert_eq!(model_type(&dir.join("checkpoints/iter_16/policy")), family, "{family}");
    }
}

/// PPO on the synthetic counting task, two iterations, policy and separate critic of each
/// family: runs, and the critic checkpoint keeps the family.
#[test]
fn ppo_runs_on_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, model) in families(tmp.path()) {
        let (dir, arg) = run_dir(&tmp, &format!("ppo-{family}"));
        let name = format!("alg.policy.args.model_name={}", model.display());
        let tokenizer = format!("alg.tokenizer.model_name={}", model.display());
        let (code, stderr) = tril(&[
            "task=synthetic",
            "alg=ppo",
            &arg,
            &name,
            &tokenizer,
            "alg.args.n_iters=2",
            "alg.args.save_every=2",
            "alg.args.eval_every=2",
        ]);
        assert_eq!(code, 0, "{family}: {stderr}");
        let rollouts = lines(&dir.join("rollout_info.jsonl"));
        assert_eq!(rollouts.len(), 2, "{family}");
        assert_eq!(model_type(&dir.join("checkpoints/iter_2/policy")), family, "{family}");
    }
}

/// A Llama-family reward model (HF `LlamaForSequenceClassification`) trains and loads in
/// `learned_reward`.
#[test]
fn reward_model_of_a_llama_loads_as_a_learned_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "llama", LlamaConfig::new(32, 32, 64, 2, 4).into());
    let (dir, arg) = run_dir(&tmp, "rm");
    let name = format!("alg.args.model_name={}", model.display());
    let (code, stderr) = tril(&[
        "task=synthetic_preference",
        "alg=reward_model",
        &arg,
        &name,
        "alg.args.epochs=1",
        "alg.args.save_checkpoints=true",
        "alg.args.save_every=8",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let saved = dir.join("checkpoints/iter_8/reward_model");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");
    let args = serde_json::json!({"model_name": saved, "label_ix": 1});
    let reward = tril_rewards::learned_reward::load_reward(
        serde_json::from_value(args).unwrap(),
        "reward_fn.args",
        tril_core::backend::Target::default(),
    );
    assert!(reward.is_ok(), "{:?}", reward.err());
}

/// Conversational preference rows (TRL's format: the prompt a list of messages, chosen and
/// rejected lists of assistant messages) train through the model's chat template; the same
/// rows with a tokenizer that has no template are refused naming the row.
#[test]
fn dpo_trains_on_conversations_through_the_chat_template() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "llama", LlamaConfig::new(32, 32, 64, 2, 4).into());
    let bare = tiny_model(tmp.path(), "bare", LlamaConfig::new(32, 32, 64, 2, 4).into());
    // A ChatML-like template over the numbers vocabulary: a user turn starts with 19, an
    // assistant turn (and the generation prompt) with 18, every turn ends with EOS.
    let template = "{% for m in messages %}{% if m.role == 'user' %}19 {% else %}18 {% endif %}{{ m.content }} \
                    <|endoftext|>{% endfor %}{% if add_generation_prompt %}18 {% endif %}";
    let config = serde_json::json!({"chat_template": template, "eos_token": "<|endoftext|>"});
    std::fs::write(model.join("tokenizer_config.json"), config.to_string()).unwrap();
    let data = tmp.path().join("chat.jsonl");
    let mut rows = String::new();
    for i in 0..48 {
        let (a, b) = (i % 10, i % 10 + 1);
        let message = |role: &str, content: String| serde_json::json!([{"role": role, "content": content}]);
        let row = serde_json::json!({
            "prompt": message("user", format!("{a} {b}")),
            "chosen": message("assistant", format!("{} {}", b + 1, b + 2)),
            "rejected": message("assistant", format!("{} {}", b + 2, b + 1)),
        });
        rows.push_str(&format!("{row}\n"));
    }
    std::fs::write(&data, rows).unwrap();
    let datasets = format!("task.args.datasets=[{{path: {}}}]", data.display());
    for (dir_model, ok) in [(&model, true), (&bare, false)] {
        let (dir, arg) = run_dir(&tmp, if ok { "chat" } else { "bare-run" });
        let name = format!("alg.args.model_name={}", dir_model.display());
        let tokenizer = format!("alg.tokenizer.model_name={}", dir_model.display());
        let args = [&arg, &name, &tokenizer, &datasets];
        let mut all = vec!["task=preference", "alg=dpo", "alg.args.epochs=1", "alg.args.max_length=16"];
        all.extend(args.iter().map(|s| s.as_str()));
        all.push("alg.args.max_prompt_length=8");
        let (code, stderr) = tril(&all);
        if ok {
            assert_eq!(code, 0, "{stderr}");
            assert!(!lines(&dir.join("training_info.jsonl")).is_empty());
        } else {
            assert_ne!(code, 0);
            assert!(stderr.contains("chat_template") && stderr.contains("row"), "{stderr}");
        }
    }
}

/// LoRA on a tiny Llama (GQA, untied head): DPO and PPO train adapters only and write PEFT
/// adapter files; the base weights in the run's trainer state are not what trains.
#[test]
fn dpo_and_ppo_with_lora_on_a_llama() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LlamaConfig::new(32, 32, 64, 2, 4).with_num_key_value_heads(Some(2)).with_max_position_embeddings(64);
    let model = tiny_model(tmp.path(), "llama", config.into());
    let lora = ["+alg.lora.peft_config.r=4", "+alg.lora.peft_config.lora_alpha=16"];
    let (dir, arg) = run_dir(&tmp, "dpo-lora");
    let name = format!("alg.args.model_name={}", model.display());
    let mut args = vec!["task=synthetic_preference", "alg=dpo", &arg, &name, "alg.args.epochs=1"];
    args.extend(["alg.args.save_checkpoints=true", "alg.args.save_every=16"]);
    args.extend(lora);
    let (code, stderr) = tril(&args);
    assert_eq!(code, 0, "{stderr}");
    let policy = dir.join("checkpoints/iter_16/policy");
    assert!(policy.join("adapter_model.safetensors").is_file(), "{}", policy.display());
    let adapter: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(policy.join("adapter_config.json")).unwrap()).unwrap();
    let mut targets: Vec<&str> =
        adapter["target_modules"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    targets.sort();
    assert_eq!(targets, ["q_proj", "v_proj"], "PEFT's default targets for llama");
    let loss = common::jsonl(&dir.join("training_info.jsonl"), "loss");
    assert!(loss.iter().all(|l| l.is_finite()) && loss.last() < loss.first(), "{loss:?}");

    let (dir, arg) = run_dir(&tmp, "ppo-lora");
    let name = format!("alg.policy.args.model_name={}", model.display());
    let tokenizer = format!("alg.tokenizer.model_name={}", model.display());
    let mut args = vec!["task=synthetic", "alg=ppo", &arg, &name, &tokenizer, "alg.args.n_iters=2"];
    args.extend(["alg.args.save_every=2", "alg.args.eval_every=2"]);
    args.extend(lora);
    let (code, stderr) = tril(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(dir.join("checkpoints/iter_2/policy/adapter_model.safetensors").is_file());
}
