//! The plugin binary lists and uses the plugin's reward through the real CLI.
use std::path::Path;
use std::process::Command;

fn cli(args: &[&str]) -> (i32, String, String) {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    let out = Command::new(env!("CARGO_BIN_EXE_custom-reward"))
        .arg("--quiet")
        .args(args.iter().take(1))
        .arg("--config-dir")
        .arg(&cfgs)
        .args(args.iter().skip(1))
        .output()
        .expect("run custom-reward");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn plugin_id_is_listed() {
    let out = Command::new(env!("CARGO_BIN_EXE_custom-reward")).args(["list", "reward_fn"]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(stdout.contains("length_penalty") && stdout.contains("[custom-reward]"), "{stdout}");
}

#[test]
fn plugin_reward_is_usable_from_a_config() {
    let (code, stdout, stderr) =
        cli(&["config", "task=imdb", "alg=ppo", "reward_fn.id=length_penalty", "reward_fn.args={target_words: 30}"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("id: length_penalty") && stdout.contains("target_words: 30"), "{stdout}");
    assert!(!stderr.contains("reward_fn"), "the plugin reward must validate: {stderr}");
}

#[test]
fn plugin_config_errors_name_key_and_source() {
    let (code, _, stderr) =
        cli(&["config", "task=imdb", "alg=ppo", "reward_fn.id=length_penalty", "reward_fn.args={target_wrds: 30}"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("reward_fn.args.target_wrds: unknown key; did you mean `target_words`?"), "{stderr}");
    assert!(stderr.contains("command line"), "{stderr}");
}
