//! `tril sweep --launcher slurm` against a real single-node Slurm (slurmctld + slurmd +
//! munge started here, once per test binary): a 2x2 grid of tiny PPO runs with an
//! evaluation job after each, hostile `launcher.env` values arriving literally in the job,
//! a newline refused before anything is submitted, and `--dry-run`.
//!
//! Without Slurm installed the real-Slurm tests skip (saying why); `REQUIRE_SLURM=1`
//! makes them fail instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tril_core::config::parse_yaml;

/// `tril --quiet sweep --config-dir <repo cfgs> --launcher slurm ARGS...` in `cwd`, with
/// the test cluster's SLURM_CONF when it runs: exit code, stdout, stderr.
fn sweep(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let cfgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tril"));
    command.args(["--quiet", "sweep", "--config-dir", cfgs.to_str().unwrap(), "--launcher", "slurm"]);
    if let Some(Some(conf)) = CONF.get() {
        command.env("SLURM_CONF", conf);
    }
    let out = command.args(args).current_dir(cwd).env_remove("TRIL_LOG").output().expect("run tril");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The test cluster's slurm.conf once started (`None`: Slurm not installed).
static CONF: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The directory of the test cluster's files (fixed, so a second run reuses its daemons).
const DIR: &str = "/tmp/tril-slurm-test";

/// `program ARGS` (with SLURM_CONF of the test cluster): its stdout if it exits 0.
fn run_ok(program: &str, args: &[&str]) -> Option<String> {
    let mut command = Command::new(program);
    command.env("SLURM_CONF", Path::new(DIR).join("slurm.conf"));
    let out = command.args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed(program: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].iter().any(|d| Path::new(d).join(program).is_file())
}

/// Starts the cluster once and exports SLURM_CONF; `None` (after saying why) when Slurm
/// is not installed and REQUIRE_SLURM is not 1.
fn slurm() -> Option<&'static Path> {
    CONF.get_or_init(|| {
        let missing: Vec<&str> = ["sbatch", "squeue", "sinfo", "slurmctld", "slurmd", "munged"]
            .into_iter()
            .filter(|p| !installed(p))
            .collect();
        if !missing.is_empty() {
            let why = format!("Slurm is not installed (missing: {})", missing.join(", "));
            assert!(std::env::var("REQUIRE_SLURM").as_deref() != Ok("1"), "REQUIRE_SLURM=1 but {why}");
            eprintln!("skipping the real-Slurm test: {why}");
            return None;
        }
        Some(start_cluster())
    })
    .as_deref()
}

fn start_cluster() -> PathBuf {
    let dir = Path::new(DIR);
    let conf = dir.join("slurm.conf");
    if conf.is_file() && node_idle() {
        return conf;
    }
    for sub in ["state", "spool", "log"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let host = run_ok("hostname", &["-s"]).expect("hostname -s").trim().to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let mib = kib / 1024 * 9 / 10;
    let d = dir.display();
    let text = format!(
        "ClusterName=tril\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\nAuthType=auth/munge\n\
         StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\nSlurmctldPidFile={d}/slurmctld.pid\n\
         SlurmdPidFile={d}/slurmd.pid\nSlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
         ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n\
         SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\nMpiDefault=none\n\
         SchedulerType=sched/backfill\nNodeName={host} CPUs={cpus} RealMemory={mib} State=UNKNOWN\n\
         PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n"
    );
    std::fs::write(&conf, text).unwrap();
    let key = Path::new("/etc/munge/munge.key");
    if !key.is_file() {
        std::fs::create_dir_all("/etc/munge").unwrap();
        let mut bytes = vec![0u8; 1024];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
        std::fs::write(key, bytes).unwrap();
        assert!(run_ok("chown", &["munge:munge", "/etc/munge/munge.key"]).is_some(), "chown munge.key");
        assert!(run_ok("chmod", &["400", "/etc/munge/munge.key"]).is_some(), "chmod munge.key");
    }
    if run_ok("pgrep", &["-x", "munged"]).is_none() {
        // munged's socket directory: made by the init system where one runs, not in a
        // container or on a machine where the package's service never started.
        let socket_dir = Path::new("/run/munge");
        if !socket_dir.is_dir() {
            std::fs::create_dir_all(socket_dir).unwrap();
            assert!(run_ok("chown", &["munge:munge", "/run/munge"]).is_some(), "chown /run/munge");
        }
        let out = Command::new("munged").arg("--force").output().expect("start munged");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "munged --force failed: {log}");
    }
    for daemon in ["slurmctld", "slurmd"] {
        let status = Command::new(daemon).env("SLURM_CONF", &conf).status().unwrap();
        assert!(status.success(), "{daemon} failed to start (logs in {d}/log)");
    }
    let start = Instant::now();
    while !node_idle() {
        assert!(start.elapsed() < Duration::from_secs(30), "the Slurm node is not idle after 30 s (logs in {d}/log)");
        std::thread::sleep(Duration::from_millis(300));
    }
    conf
}

fn node_idle() -> bool {
    run_ok("sinfo", &["-h", "-o", "%t"]).is_some_and(|s| s.lines().any(|l| l.trim() == "idle" || l.trim() == "mix"))
}

/// Waits until none of `ids` is in the queue (timeout `secs`).
fn wait_jobs(ids: &[String], secs: u64) {
    let start = Instant::now();
    loop {
        let queued = run_ok("squeue", &["-h", "-o", "%i", "-j", &ids.join(",")]).unwrap_or_default();
        if queued.trim().is_empty() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "jobs still queued after {secs} s: {queued}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn index(root: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root.join("sweep.json")).unwrap()).unwrap()
}

/// The `tril-slurm: <what> <unix time>` stamp of a job's log.
fn stamp(log: &str, what: &str) -> f64 {
    let prefix = format!("tril-slurm: {what} ");
    let line = log.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no `{prefix}` in {log}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

fn job_log(root: &Path, name: &str, id: &str) -> String {
    let path = root.join("slurm_logs").join(format!("{name}.{id}.out"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const PPO: &[&str] = &["task=synthetic", "alg=ppo", "alg.args.n_iters=2", "alg.args.eval_every=1"];

#[test]
fn slurm_runs_a_two_by_two_grid_with_eval_jobs_after_training() {
    let Some(_) = slurm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("grid");
    let mut args: Vec<&str> = PPO.to_vec();
    let root_arg = root.to_str().unwrap();
    args.extend([
        "alg.args.seed=0,1",
        "alg.optimizer.args.lr=1e-3,5e-4",
        "launcher.eval=[gold-eval, \"{run_dir}\", --reward, increasing_numbers]",
        "--root",
        root_arg,
    ]);
    let (code, stdout, stderr) = sweep(tmp.path(), &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let first = index(&root);
    let runs = first["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let mut ids = Vec::new();
    for run in runs {
        assert_eq!(run["status"], "submitted", "{run}");
        ids.push(run["slurm_job_id"].as_str().unwrap().to_string());
        ids.push(run["slurm_eval_job_id"].as_str().unwrap().to_string());
    }
    // A re-run while the jobs are queued or running submits nothing (each is done or
    // still in the queue).
    let (code, stdout, stderr) = sweep(tmp.path(), &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("(0 to submit to Slurm"), "{stdout}");
    for (a, b) in runs.iter().zip(index(&root)["runs"].as_array().unwrap()) {
        for key in ["slurm_job_id", "slurm_eval_job_id", "attempts"] {
            assert_eq!(a[key], b[key], "a re-run while queued changed {key}");
        }
    }
    wait_jobs(&ids, 150);
    for run in runs {
        let name = run["name"].as_str().unwrap();
        let dir = PathBuf::from(run["run_dir"].as_str().unwrap());
        assert!(dir.join("config.resolved.yaml").is_file() && dir.join("training_info.jsonl").is_file(), "{name}");
        let checkpoints: Vec<_> = std::fs::read_dir(dir.join("checkpoints")).unwrap().flatten().collect();
        assert!(!checkpoints.is_empty(), "{name}: no checkpoint");
        assert!(dir.join("gold_eval.jsonl").is_file(), "{name}: the eval job wrote no gold_eval.jsonl");
        let train = job_log(&root, name, run["slurm_job_id"].as_str().unwrap());
        let eval = job_log(&root, &format!("{name}.eval"), run["slurm_eval_job_id"].as_str().unwrap());
        assert!(train.contains(" exit 0"), "{train}");
        assert!(eval.contains(" exit 0"), "{eval}");
        let (ended, eval_started) = (stamp(&train, "end"), stamp(&eval, "start"));
        assert!(eval_started >= ended, "{name}: eval started at {eval_started}, before training ended at {ended}");
    }
    // A re-run skips the finished ones and submits nothing.
    let (code, stdout, stderr) = sweep(tmp.path(), &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("0 to submit to Slurm, 4 done already skipped, 0 still queued"), "{stdout}");
    let second = index(&root);
    for (a, b) in runs.iter().zip(second["runs"].as_array().unwrap()) {
        assert_eq!(b["status"], "done");
        assert_eq!(a["slurm_job_id"], b["slurm_job_id"]);
    }
}

#[test]
fn slurm_env_values_arrive_literally() {
    let Some(_) = slurm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("env");
    let pwned = tmp.path().join("pwned");
    let hostile = format!("$(touch {}); `id` it's \"q\" x;y a  b", pwned.display());
    // TRIL_EXPERIMENT_NAME sets experiment_name: the run's resolved config shows what the
    // job's environment held.
    let yaml = format!("launcher.env={{TRIL_EXPERIMENT_NAME: \"{}\"}}", hostile.replace('"', "\\\""));
    let mut args: Vec<&str> = vec!["task=synthetic", "alg=ppo", "alg.args.n_iters=1", "alg.args.eval_every=0"];
    args.extend([yaml.as_str(), "--root", root.to_str().unwrap()]);
    let (code, stdout, stderr) = sweep(tmp.path(), &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let run = &index(&root)["runs"][0];
    let id = run["slurm_job_id"].as_str().unwrap().to_string();
    wait_jobs(std::slice::from_ref(&id), 90);
    let log = job_log(&root, run["name"].as_str().unwrap(), &id);
    assert!(log.contains(" exit 0"), "{log}");
    let file = PathBuf::from(run["run_dir"].as_str().unwrap()).join("config.resolved.yaml");
    let config = parse_yaml(&std::fs::read_to_string(&file).unwrap(), &file).unwrap();
    let name = config.get("experiment_name").and_then(|n| n.as_str()).map(str::to_string);
    assert_eq!(name.as_deref(), Some(hostile.as_str()), "{log}");
    assert!(!pwned.exists(), "a value was executed");
}

#[test]
fn slurm_refuses_a_newline_before_submitting() {
    // No Slurm needed: the refusal comes before any sbatch call.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("bad");
    let args =
        ["task=synthetic", "alg.args.seed=0,1", "launcher.env={BAD: \"a\\nb\"}", "--root", root.to_str().unwrap()];
    let (code, stdout, stderr) = sweep(tmp.path(), &args);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("launcher.env.BAD") && stderr.contains("newline"), "{stderr}");
    assert!(!root.join("sweep.json").exists() && !root.join("slurm_scripts").exists());
    let (code, _, stderr) = sweep(tmp.path(), &["launcher.nope=1", "--root", root.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
}

#[test]
fn slurm_dry_run_writes_scripts_and_submits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("dry");
    let mut args: Vec<&str> = PPO.to_vec();
    args.extend([
        "alg.args.seed=0,1",
        "launcher.eval=[gold-eval, \"{run_dir}\", --reward, increasing_numbers]",
        "launcher.requeue=true",
        "launcher.sbatch=/nonexistent/sbatch",
        "--dry-run",
        "--root",
        root.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = sweep(tmp.path(), &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("/nonexistent/sbatch --parsable").count(), 4, "{stdout}");
    let index = index(&root);
    for run in index["runs"].as_array().unwrap() {
        assert_eq!(run["status"], "pending");
        assert!(run.get("slurm_job_id").is_none(), "{run}");
        let name = run["name"].as_str().unwrap();
        let script = std::fs::read_to_string(root.join(format!("slurm_scripts/{name}.sbatch"))).unwrap();
        assert!(script.contains("#SBATCH --requeue") && script.contains(env!("CARGO_BIN_EXE_tril")), "{script}");
        assert!(script.contains("'alg.args.n_iters=2'"), "{script}");
        assert!(root.join(format!("slurm_scripts/{name}.eval.sbatch")).is_file());
    }
    assert_eq!(std::fs::read_dir(root.join("slurm_logs")).unwrap().count(), 0);
    // Without --dry-run the missing sbatch is a clear error naming it and launcher.sbatch.
    let no_dry: Vec<&str> = args.iter().copied().filter(|a| *a != "--dry-run").collect();
    let (code, _, stderr) = sweep(tmp.path(), &no_dry);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/sbatch") && stderr.contains("launcher.sbatch"), "{stderr}");
}
