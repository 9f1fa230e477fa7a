//! Training that never fails silently, through the CLI as a user meets it: non-finite
//! guards, signals, checkpoint integrity and retention, a full disk, the run lock.

mod common;

use common::{logs_without_time, resume, run_dir, tril};
use std::path::Path;
use std::process::Command;

/// The embedded default (PPO on the synthetic task), short.
const PPO: &[&str] = &["task=synthetic", "alg=ppo", "alg.args.n_iters=6", "alg.args.eval_every=2"];

fn checkpoints(dir: &Path) -> Vec<usize> {
    let mut out: Vec<usize> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.strip_prefix("iter_")?.parse().ok()).collect())
        .unwrap_or_default();
    out.sort_unstable();
    out
}

fn policy_weights(dir: &Path, n: usize) -> Vec<u8> {
    std::fs::read(dir.join(format!("checkpoints/iter_{n}/policy/model.safetensors"))).unwrap()
}

#[test]
fn a_huge_learning_rate_stops_at_the_first_bad_step_without_a_nan_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, arg) = run_dir(&tmp, "lr");
    let (code, stderr) = tril(&[PPO, &["alg.optimizer.args.lr=1e4", "alg.args.save_every=1", &arg]].concat());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("error: ppo: iteration "), "names the iteration: {stderr}");
    let nonfinite = stderr.contains(" is inf;") || stderr.contains(" is NaN;");
    assert!(stderr.contains(", update step ") && nonfinite, "names the step and the bad value: {stderr}");
    assert!(stderr.contains("the update was not applied and the run stops"), "{stderr}");
    // Every checkpoint that was written holds finite weights (the guard refuses others).
    for n in checkpoints(&dir) {
        let bytes = policy_weights(&dir, n);
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in tensors.tensors() {
            let finite = view.data().chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
            assert!(finite, "iteration {n}: {name} is not finite");
        }
    }
    // With a budget, the bad steps are skipped with a warning, then the run stops.
    let (_, arg) = run_dir(&tmp, "lr-skip");
    let (code, stderr) = tril(&[PPO, &["alg.optimizer.args.lr=1e4", "guard.skip_nonfinite=2", &arg]].concat());
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.matches("the update is skipped (").count(), 2, "{stderr}");
    assert!(stderr.contains("(2 bad steps skipped, guard.skip_nonfinite = 2)"), "{stderr}");
}

#[test]
fn an_infinite_entropy_coefficient_never_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, arg) = run_dir(&tmp, "ent");
    let (code, stderr) = tril(&[PPO, &["alg.args.ent_coef=.inf", &arg]].concat());
    assert_eq!(code, 2, "refused at config time: {stderr}");
    assert!(stderr.contains("alg.args.ent_coef: expected a finite number, found .inf (command line"), "{stderr}");
    assert!(!dir.exists(), "no run directory for a refused config");
}

#[test]
fn divergence_bounds_stop_the_run_naming_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, arg) = run_dir(&tmp, "kl");
    let (code, stderr) = tril(&[PPO, &["guard.max_kl=1e-9", &arg]].concat());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("rollout_buffer/kl_div = ") && stderr.contains("exceeds guard.max_kl = 0.000000001"),
        "{stderr}"
    );
    let (code, stderr) = tril(&[PPO, &["guard.max_kl=-1"]].concat());
    assert_eq!(code, 2, "a bad bound is a config error: {stderr}");
    assert!(stderr.contains("guard.max_kl: expected a finite bound > 0"), "{stderr}");
}

#[test]
fn sigterm_and_sigint_checkpoint_stop_and_resume_to_the_uninterrupted_run() {
    let args = ["task=synthetic", "alg=ppo", "alg.args.n_iters=40", "alg.args.eval_every=10", "alg.args.save_every=2"];
    let tmp = tempfile::tempdir().unwrap();
    let (full, arg) = run_dir(&tmp, "full");
    let (code, stderr) = tril(&[&args[..], &[arg.as_str()]].concat());
    assert_eq!(code, 0, "{stderr}");
    for (signal, expected) in [("-TERM", 143), ("-INT", 130)] {
        let cut = tmp.path().join(format!("cut{signal}"));
        let (code, stderr) = common::stop_with(&args, &cut, signal);
        assert_eq!(code, expected, "{stderr}");
        assert!(stderr.contains("continue with `tril run --resume"), "{stderr}");
        let stopped = *checkpoints(&cut).last().unwrap();
        assert!(stopped < 40, "stopped before the end");
        assert!(stderr.contains(&format!("after iteration {stopped}")), "the stop's checkpoint is the last: {stderr}");
        let (code, stderr) = resume(&cut);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(logs_without_time(&cut), logs_without_time(&full), "resumed logs differ ({signal})");
        assert!(policy_weights(&cut, 40) == policy_weights(&full, 40), "final weights differ ({signal})");
    }
}

#[test]
fn a_damaged_newest_checkpoint_is_detected_and_resume_falls_back() {
    let args = [PPO, &["alg.args.save_every=1"]].concat();
    let tmp = tempfile::tempdir().unwrap();
    let (full, arg) = run_dir(&tmp, "full");
    let (code, stderr) = tril(&[&args[..], &[arg.as_str()]].concat());
    assert_eq!(code, 0, "{stderr}");
    // A copy of the run stopped after iteration 4, whose iteration-4 checkpoint then loses
    // its tail (a copy cut short) and whose iteration-3 optimizer state flips a bit.
    let (cut, _) = run_dir(&tmp, "cut");
    copy_dir(&full, &cut);
    for n in [5, 6] {
        std::fs::remove_dir_all(cut.join(format!("checkpoints/iter_{n}"))).unwrap();
    }
    let weights = cut.join("checkpoints/iter_4/policy/model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&weights).unwrap().set_len(len / 2).unwrap();
    let optimizer = cut.join("checkpoints/iter_3/trainer/optimizer.bin");
    let mut bytes = std::fs::read(&optimizer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&optimizer, bytes).unwrap();
    let (code, stderr) = resume(&cut);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("iter_4 is damaged") && stderr.contains("truncated"), "{stderr}");
    assert!(stderr.contains("resuming from") && stderr.contains("iter_2"), "{stderr}");
    assert_eq!(logs_without_time(&cut), logs_without_time(&full));
    assert!(policy_weights(&cut, 6) == policy_weights(&full, 6), "the resumed run ends where the first did");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn save_total_limit_keeps_the_newest_and_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, arg) = run_dir(&tmp, "limit");
    let metric = "checkpoint.best_metric=val/synthetic/increasing_numbers";
    let keep = ["alg.args.save_every=1", "checkpoint.save_total_limit=2", metric];
    let (code, stderr) = tril(&[PPO, &keep, &[arg.as_str()]].concat());
    assert_eq!(code, 0, "{stderr}");
    // Evaluations at 0, 2, 4, 6; checkpoint n carries the latest evaluation at or before n,
    // and the first checkpoint carrying the highest value is the best.
    let scores = common::eval_series(&dir, "synthetic/increasing_numbers");
    let at = |n: usize| scores[n / 2];
    let best = (1..=6).fold(1, |b, n| if at(n) > at(b) { n } else { b });
    let mut expected = vec![best, 5, 6];
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(checkpoints(&dir), expected, "scores at 0, 2, 4, 6: {scores:?}");
    let (code, stderr) = tril(&[PPO, &["checkpoint.save_total_limit=0"]].concat());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("checkpoint.save_total_limit: expected at least 1 checkpoint"), "{stderr}");
}

#[test]
fn two_processes_cannot_write_one_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = run_dir(&tmp, "locked");
    let args = ["task=synthetic", "alg=ppo", "alg.args.n_iters=200"];
    let mut first = common::spawn(&args, &dir, std::process::Stdio::null());
    let started = std::time::Instant::now();
    while !dir.join("config.resolved.yaml").is_file() {
        assert!(started.elapsed().as_secs() < 120, "the first run did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, stderr) = resume(&dir);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is being written by another tril process (pid "), "{stderr}");
}

/// A run directory on a tmpfs too small for its second checkpoint: the write fails with
/// a clear error, the first checkpoint stays intact and resumable, and no temporary
/// directory is left behind. Needs `mount` (root); skipped with a message otherwise.
#[test]
fn a_full_disk_fails_the_write_and_keeps_the_previous_checkpoint() {
    let args = [PPO, &["alg.args.save_every=1", "alg.args.eval_zero_shot=false"]].concat();
    let tmp = tempfile::tempdir().unwrap();
    // The size of a run directory after one checkpoint, measured on a normal disk.
    let (probe, arg) = run_dir(&tmp, "probe");
    let (code, stderr) = tril(&[&args[..], &["alg.args.n_iters=1", arg.as_str()]].concat());
    assert_eq!(code, 0, "{stderr}");
    let used = du(&probe);
    let checkpoint = du(&probe.join("checkpoints/iter_1"));
    let mount = tmp.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let size = format!("size={}k", (used + checkpoint / 2) / 1024 + 64);
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs", mount.to_str().unwrap()]).output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED a_full_disk_fails_the_write...: cannot mount a tmpfs here ({mounted:?})");
        return;
    }
    let dir = mount.join("run");
    let (code, stderr) = tril(&[&args[..], &[&format!("run_dir={}", dir.display())]].concat());
    let kept = checkpoints(&dir);
    let leftovers: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    let _ = Command::new("umount").arg(&mount).status();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("could not be written") && stderr.contains("previous checkpoints are intact"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!kept.is_empty() && kept.len() < 6, "{kept:?}");
    assert!(leftovers.is_empty(), "temporary directories left: {leftovers:?}");
}

/// Bytes used by the files below `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { du(&entry.path()) } else { meta.len().div_ceil(4096) * 4096 };
    }
    total
}
