//! `tril sweep --launcher slurm`: one sbatch script per sub-experiment (and one for its
//! evaluation, `--dependency=afterok:<train job>`), written under the sweep root and
//! submitted with `sbatch --parsable` (`docs/sweeps.md`, "SLURM").
//!
//! Every value that reaches a script is quoted: in shell lines with single quotes (`'\''`
//! for a quote), in `#SBATCH` lines the way sbatch reads them (double quotes, `\` before
//! `"`, `\` and `#`). A value holding a newline, carriage return or NUL is refused.

use super::exec::{Entry, Status};
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tril_core::config::{parse_yaml, Node, Section, Value};

/// The launcher file under the config directory.
pub const LAUNCHER_FILE: &str = "launcher/slurm.yaml";

/// A scalar given as a string or a number (`time: 60`, `time: "1:00:00"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{}", tril_core::config::format_float(*x)),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `cfgs/launcher/slurm.yaml`: the sbatch options of every sub-experiment's job. Null
/// keys are left out of the script.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// `--job-name` (default: `<sweep root's name>.<sub-experiment name>`).
    pub job_name: Option<Scalar>,
    /// `--nodes`.
    pub nodes: Option<Scalar>,
    /// `--ntasks-per-node`.
    pub ntasks_per_node: Option<Scalar>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<Scalar>,
    /// `--gres` (e.g. `gpu:4`).
    pub gres: Option<Scalar>,
    /// `--gpus`.
    pub gpus: Option<Scalar>,
    /// `--time` (e.g. `1-00:00:00`, or minutes).
    pub time: Option<Scalar>,
    /// `--account`.
    pub account: Option<Scalar>,
    /// `--partition`.
    pub partition: Option<Scalar>,
    /// `--qos`.
    pub qos: Option<Scalar>,
    /// `--constraint`.
    pub constraint: Option<Scalar>,
    /// `module load X`, one line each, before the run.
    pub modules: Vec<Scalar>,
    /// Environment variables the job exports (e.g. `WANDB_PROJECT`).
    pub env: BTreeMap<String, Scalar>,
    /// More `#SBATCH` lines, each as written after `#SBATCH ` (e.g. `--mem=64G`).
    pub extra_sbatch: Vec<Scalar>,
    /// `#SBATCH --requeue`: a preempted or requeued job starts again and resumes.
    pub requeue: bool,
    /// `tril` arguments of an evaluation job run after the training job succeeds
    /// (`--dependency=afterok:<id>`); `{run_dir}` is the sub-run's directory.
    pub eval: Option<Vec<Scalar>>,
    /// The sbatch command (default `sbatch`).
    pub sbatch: Option<String>,
}

impl SlurmConfig {
    /// The sbatch command.
    pub fn sbatch_command(&self) -> &str {
        self.sbatch.as_deref().unwrap_or("sbatch")
    }
}

/// Splits `launcher.KEY=VALUE` arguments from the others.
pub fn split_launcher_overrides(args: &[String]) -> (Vec<String>, Vec<(String, String)>) {
    let mut rest = Vec::new();
    let mut launcher = Vec::new();
    for arg in args {
        match arg.strip_prefix("launcher.").and_then(|a| a.split_once('=')) {
            Some((key, value)) => launcher.push((key.trim().to_string(), value.to_string())),
            None => rest.push(arg.clone()),
        }
    }
    (rest, launcher)
}

/// Reads the launcher config: `text` (from `source`, or an empty map), then every
/// `launcher.KEY=VALUE` override (the value read as YAML).
pub fn load_config(text: Option<&str>, source: &Path, overrides: &[(String, String)]) -> anyhow::Result<SlurmConfig> {
    let mut root = match text {
        Some(text) => parse_yaml(text, source).map_err(|e| anyhow!(e))?,
        None => Node::empty_map(tril_core::config::Origin::Composer),
    };
    if matches!(root.value, Value::Null) {
        root = Node::empty_map(root.origin.clone());
    }
    if root.as_map().is_none() {
        bail!("{}: expected a map of launcher keys, found a {}", source.display(), root.value.type_name());
    }
    for (key, value) in overrides {
        if key.is_empty() || key.split('.').any(str::is_empty) {
            bail!("launcher.{key}: expected launcher.<key>=<value> with one of the keys of {LAUNCHER_FILE}");
        }
        let node = parse_yaml(value, Path::new(&format!("launcher.{key}")))
            .map_err(|e| anyhow!("launcher.{key}={value}: {e}"))?;
        root.set(key, node, true).map_err(|e| anyhow!("launcher.{key}: {e}"))?;
    }
    let config: SlurmConfig =
        Section::new("launcher", &root).extract().map_err(|e| anyhow!("{e} ({})", source.display()))?;
    Ok(config)
}

/// `text` in single quotes for a shell line (`'` written `'\''`); refuses a newline,
/// carriage return or NUL (named by `key`).
pub fn shell_quote(key: &str, text: &str) -> anyhow::Result<String> {
    refuse_line_breaks(key, text)?;
    Ok(format!("'{}'", text.replace('\'', r"'\''")))
}

/// `text` quoted for an `#SBATCH` line as sbatch parses it: double quotes, `\` before
/// `"`, `\` and `#`.
pub fn sbatch_quote(key: &str, text: &str) -> anyhow::Result<String> {
    refuse_line_breaks(key, text)?;
    let mut out = String::from("\"");
    for c in text.chars() {
        if matches!(c, '"' | '\\' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

fn refuse_line_breaks(key: &str, text: &str) -> anyhow::Result<()> {
    if let Some(c) = text.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
        bail!(
            "{key}: the value {text:?} holds a {}; refused (it would end the script line)",
            match c {
                '\n' => "newline",
                '\r' => "carriage return",
                _ => "NUL",
            }
        );
    }
    Ok(())
}

/// Whether `name` is a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What a script needs besides the launcher config.
pub struct ScriptInput<'a> {
    /// The sweep root (absolute).
    pub root: &'a Path,
    /// The tril binary (absolute).
    pub exe: &'a Path,
    /// `--config-dir` (absolute), if given.
    pub config_dir: Option<&'a Path>,
    /// The sub-experiment.
    pub entry: &'a Entry,
}

/// The marker a training job writes when its run exits 0: the sweep skips it on re-run.
pub fn done_marker(root: &Path, name: &str) -> PathBuf {
    root.join("slurm_logs").join(format!("{name}.done"))
}

/// The training script path and the eval script path of `name`.
pub fn script_paths(root: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = root.join("slurm_scripts");
    (dir.join(format!("{name}.sbatch")), dir.join(format!("{name}.eval.sbatch")))
}

fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str().map(str::to_string).ok_or_else(|| anyhow!("{}: not UTF-8", path.display()))
}

/// The `#SBATCH` header: job name, output files, the config's options.
fn header(config: &SlurmConfig, input: &ScriptInput, suffix: &str) -> anyhow::Result<String> {
    let name = &input.entry.name;
    let mut lines = vec!["#!/bin/bash".to_string()];
    let mut opt = |flag: &str, key: &str, value: &str| -> anyhow::Result<()> {
        lines.push(format!("#SBATCH --{flag}={}", sbatch_quote(&format!("launcher.{key}"), value)?));
        Ok(())
    };
    let sweep = input.root.file_name().and_then(|n| n.to_str()).unwrap_or("sweep");
    let job_name = match &config.job_name {
        Some(n) => format!("{n}{suffix}"),
        None => format!("{sweep}.{name}{suffix}"),
    };
    opt("job-name", "job_name", &job_name)?;
    let log = input.root.join("slurm_logs").join(format!("{name}{suffix}.%j.out"));
    opt("output", "output", &path_text(&log)?)?;
    opt("error", "output", &path_text(&log)?)?;
    let options = [
        ("nodes", "nodes", &config.nodes),
        ("ntasks-per-node", "ntasks_per_node", &config.ntasks_per_node),
        ("cpus-per-task", "cpus_per_task", &config.cpus_per_task),
        ("gres", "gres", &config.gres),
        ("gpus", "gpus", &config.gpus),
        ("time", "time", &config.time),
        ("account", "account", &config.account),
        ("partition", "partition", &config.partition),
        ("qos", "qos", &config.qos),
        ("constraint", "constraint", &config.constraint),
    ];
    for (flag, key, value) in options {
        if let Some(value) = value {
            opt(flag, key, &value.to_string())?;
        }
    }
    if config.requeue {
        lines.push("#SBATCH --requeue".into());
    }
    for (i, line) in config.extra_sbatch.iter().enumerate() {
        let line = line.to_string();
        refuse_line_breaks(&format!("launcher.extra_sbatch[{i}]"), &line)?;
        lines.push(format!("#SBATCH {line}"));
    }
    lines.push("set -uo pipefail".into());
    for (i, module) in config.modules.iter().enumerate() {
        lines.push(format!("module load {}", shell_quote(&format!("launcher.modules[{i}]"), &module.to_string())?));
    }
    for (key, value) in &config.env {
        if !valid_env_name(key) {
            bail!("launcher.env.{key}: not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
        }
        let quoted = shell_quote(&format!("launcher.env.{key}"), &value.to_string())?;
        lines.push(format!("export {key}={quoted}"));
    }
    lines.push(format!("echo \"tril-slurm: start $(date +%s.%N) job ${{SLURM_JOB_ID:-}}{suffix}\""));
    Ok(lines.join("\n") + "\n")
}

/// The training script: resume when the run directory holds a resolved config and a
/// checkpoint, else start afresh (a partial directory removed first); the done marker on
/// exit 0.
pub fn train_script(config: &SlurmConfig, input: &ScriptInput) -> anyhow::Result<String> {
    let mut text = header(config, input, "")?;
    let exe = shell_quote("the tril binary", &path_text(input.exe)?)?;
    let run_dir_text = path_text(&input.entry.run_dir)?;
    let run_dir = shell_quote("run_dir", &run_dir_text)?;
    let mut fresh = vec![exe.clone(), "--quiet".into(), "run".into()];
    if let Some(dir) = input.config_dir {
        fresh.extend(["--config-dir".into(), shell_quote("--config-dir", &path_text(dir)?)?]);
    }
    for o in &input.entry.overrides {
        fresh.push(shell_quote("override", o)?);
    }
    fresh.push(shell_quote("run_dir", &format!("run_dir={}", super::flow_str(&run_dir_text)))?);
    let done = shell_quote("marker", &path_text(&done_marker(input.root, &input.entry.name))?)?;
    text.push_str(&format!(
        "if [ -f {run_dir}/config.resolved.yaml ] && ls {run_dir}/checkpoints/*/trainer_state.json >/dev/null 2>&1; then\n  \
         echo \"tril-slurm: resuming\"\n  {exe} --quiet run --resume {run_dir}\nelse\n  rm -rf -- {run_dir}\n  {}\nfi\n\
         code=$?\necho \"tril-slurm: end $(date +%s.%N) exit $code\"\n\
         if [ \"$code\" -eq 0 ]; then date +%s.%N > {done}; fi\nexit \"$code\"\n",
        fresh.join(" ")
    ));
    Ok(text)
}

/// The evaluation script: `tril --quiet <eval args>` with `{run_dir}` replaced.
pub fn eval_script(config: &SlurmConfig, eval: &[Scalar], input: &ScriptInput) -> anyhow::Result<String> {
    let mut text = header(config, input, ".eval")?;
    let run_dir = path_text(&input.entry.run_dir)?;
    let mut argv = vec![shell_quote("the tril binary", &path_text(input.exe)?)?, "--quiet".into()];
    for (i, arg) in eval.iter().enumerate() {
        let arg = arg.to_string().replace("{run_dir}", &run_dir);
        argv.push(shell_quote(&format!("launcher.eval[{i}]"), &arg)?);
    }
    text.push_str(&format!(
        "{}\ncode=$?\necho \"tril-slurm: end $(date +%s.%N) exit $code\"\nexit \"$code\"\n",
        argv.join(" ")
    ));
    Ok(text)
}

/// One sub-experiment's scripts, built before anything is written.
pub struct Scripts {
    /// Index in the sweep.
    pub index: usize,
    /// Training script path and text.
    pub train: (PathBuf, String),
    /// Evaluation script path and text, when `eval` is set.
    pub eval: Option<(PathBuf, String)>,
}

/// Builds every pending sub-experiment's scripts (any refused value stops all of them).
pub fn build_scripts(
    config: &SlurmConfig,
    root: &Path,
    exe: &Path,
    config_dir: Option<&Path>,
    entries: &[Entry],
) -> anyhow::Result<Vec<Scripts>> {
    let mut out = Vec::new();
    for entry in entries {
        let input = ScriptInput { root, exe, config_dir, entry };
        let (train_path, eval_path) = script_paths(root, &entry.name);
        let train = (train_path, train_script(config, &input)?);
        let eval = match &config.eval {
            Some(args) => Some((eval_path, eval_script(config, args, &input)?)),
            None => None,
        };
        out.push(Scripts { index: entry.index, train, eval });
    }
    Ok(out)
}

/// Writes a script (mode 755).
pub fn write_script(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(())
}

/// `sbatch --parsable [--dependency=afterok:<id>] SCRIPT`: the job id.
pub fn submit(config: &SlurmConfig, script: &Path, after: Option<&str>) -> anyhow::Result<String> {
    let sbatch = config.sbatch_command();
    let mut command = std::process::Command::new(sbatch);
    command.arg("--parsable");
    if let Some(id) = after {
        command.arg(format!("--dependency=afterok:{id}"));
    }
    let output = command.arg(script).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("the sbatch command `{sbatch}` was not found (is Slurm installed? set launcher.sbatch=<path>)")
        } else {
            anyhow!("running `{sbatch}` (launcher.sbatch): {e}")
        }
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "`{sbatch} --parsable {}` failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let id = stdout.trim().split(';').next().unwrap_or("").trim().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        bail!("`{sbatch} --parsable {}` printed no job id: {stdout:?}", script.display());
    }
    Ok(id)
}

/// The status an entry has on a re-run: `done` when its marker exists.
pub fn refresh(entry: &mut Entry, root: &Path) {
    if done_marker(root, &entry.name).is_file() {
        entry.status = Status::Done;
    }
}

/// The `squeue` beside the sbatch command (`/opt/slurm/bin/sbatch` → `/opt/slurm/bin/squeue`).
fn squeue_command(config: &SlurmConfig) -> PathBuf {
    let sbatch = Path::new(config.sbatch_command());
    match sbatch.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join("squeue"),
        None => PathBuf::from("squeue"),
    }
}

/// Whether a submitted entry's training job is still in Slurm's queue (pending or
/// running): a re-run leaves it alone. `squeue` failing (a job id Slurm forgot, no
/// squeue) reads as not queued. (The eval job is not asked about: after a failed
/// training job it waits forever on `afterok`.)
pub fn still_queued(config: &SlurmConfig, entry: &Entry) -> bool {
    let Some(id) = entry.slurm_job_id.as_deref().filter(|_| entry.status == Status::Submitted) else {
        return false;
    };
    let out = std::process::Command::new(squeue_command(config))
        .args(["-h", "-o", "%i", "-j", id])
        .stderr(std::process::Stdio::null())
        .output();
    out.is_ok_and(|o| o.status.success() && !String::from_utf8_lossy(&o.stdout).trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &["a b", "it's", "\"q\"", "$(touch /tmp/pwned)", "`id`", "x;y"];

    fn entry(root: &Path) -> Entry {
        let overrides = vec!["task=synthetic".into(), "experiment_name='a b; $(id)'".into()];
        Entry::pending(0, "seed=0".into(), root.join("seed=0"), overrides, vec![])
    }

    fn config_with(overrides: &[(&str, &str)]) -> anyhow::Result<SlurmConfig> {
        let pairs: Vec<(String, String)> = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        load_config(Some("partition: debug\nrequeue: false\n"), Path::new("slurm.yaml"), &pairs)
    }

    /// The stdout of `bash -c SCRIPT`.
    fn bash(script: &str) -> String {
        let out = std::process::Command::new("bash").args(["-c", script]).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn slurm_quotes_every_hostile_value_and_refuses_line_breaks() {
        for value in HOSTILE {
            let quoted = shell_quote("k", value).unwrap();
            // bash reads the quoted word back as the value, executing nothing.
            assert_eq!(bash(&format!("printf %s {quoted}")), *value);
            let sb = sbatch_quote("k", value).unwrap();
            assert!(sb.starts_with('"') && sb.ends_with('"'), "{sb}");
        }
        assert_eq!(shell_quote("k", "it's").unwrap(), r"'it'\''s'");
        assert_eq!(sbatch_quote("k", "a \"b\" #c").unwrap(), r#""a \"b\" \#c""#);
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let err = shell_quote("launcher.env.X", bad).unwrap_err().to_string();
            assert!(err.contains("launcher.env.X") && err.contains("refused"), "{err}");
        }
    }

    #[test]
    fn slurm_script_holds_hostile_values_quoted() {
        let root = Path::new("/sweeps/it's here");
        let e = entry(root);
        let mut env = String::from("{");
        for (i, v) in HOSTILE.iter().enumerate() {
            env.push_str(&format!("V{i}: {}, ", tril_core::config::quote_yaml(v)));
        }
        env.push('}');
        let config =
            config_with(&[("env", &env), ("job_name", "\"a b;`id`\""), ("modules", "[\"cuda/12 $(id)\"]")]).unwrap();
        let input = ScriptInput { root, exe: Path::new("/opt/tril bin/tril"), config_dir: None, entry: &e };
        let text = train_script(&config, &input).unwrap();
        for (i, v) in HOSTILE.iter().enumerate() {
            let line = format!("export V{i}={}", shell_quote("k", v).unwrap());
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(text.contains("#SBATCH --job-name=\"a b;`id`\""), "{text}");
        assert!(text.contains("#SBATCH --partition=\"debug\""), "{text}");
        assert!(text.contains("module load 'cuda/12 $(id)'"), "{text}");
        assert!(text.contains("'/opt/tril bin/tril' --quiet run --resume '/sweeps/it'\\''s here/seed=0'"), "{text}");
        assert!(text.contains("'run_dir=\"/sweeps/it'\\''s here/seed=0\"'"), "{text}");
        assert!(text.contains("'experiment_name='\\''a b; $(id)'\\'''"), "{text}");
        assert!(!text.contains("--requeue"));
        // The export lines, run by bash, set each variable to the literal value.
        let exports: Vec<&str> = text.lines().filter(|l| l.starts_with("export ")).collect();
        for (i, v) in HOSTILE.iter().enumerate() {
            assert_eq!(bash(&format!("{}\nprintf %s \"$V{i}\"", exports.join("\n"))), *v);
        }
        assert_eq!(bash(&format!("bash -n <<'EOF'\n{text}EOF\necho ok")), "ok\n");

        let err = config_with(&[("env", "{BAD: \"a\\nb\"}")]).and_then(|c| train_script(&c, &input));
        let err = err.unwrap_err().to_string();
        assert!(err.contains("launcher.env.BAD") && err.contains("newline"), "{err}");
        let err = config_with(&[("gres", "\"gpu:4\\n#SBATCH --x\"")]).and_then(|c| train_script(&c, &input));
        assert!(err.unwrap_err().to_string().contains("launcher.gres"));
        let err = config_with(&[("env", "{\"A-B\": 1}")]).and_then(|c| train_script(&c, &input));
        assert!(err.unwrap_err().to_string().contains("launcher.env.A-B"));
        let nested = config_with(&[("env.WANDB_PROJECT", "tril x")]).unwrap();
        assert_eq!(nested.env["WANDB_PROJECT"], Scalar::Str("tril x".into()));
        let err = config_with(&[("bogus", "1")]).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn slurm_eval_script_fills_run_dir_and_requeue() {
        let root = Path::new("/s");
        let e = entry(root);
        let config = config_with(&[
            ("eval", "[gold-eval, \"{run_dir}\", --reward, increasing_numbers]"),
            ("requeue", "true"),
            ("time", "60"),
            ("gres", "gpu:4"),
            ("extra_sbatch", "[--mem=4G]"),
        ])
        .unwrap();
        let input = ScriptInput { root, exe: Path::new("/bin/tril"), config_dir: Some(Path::new("/c")), entry: &e };
        let train = train_script(&config, &input).unwrap();
        assert!(train.contains("#SBATCH --requeue\n") && train.contains("#SBATCH --time=\"60\""), "{train}");
        assert!(train.contains("#SBATCH --gres=\"gpu:4\"") && train.contains("#SBATCH --mem=4G\n"), "{train}");
        assert!(train.contains("--config-dir '/c' 'task=synthetic'"), "{train}");
        let eval = eval_script(&config, config.eval.as_ref().unwrap(), &input).unwrap();
        assert!(eval.contains("'/bin/tril' --quiet 'gold-eval' '/s/seed=0' '--reward' 'increasing_numbers'"), "{eval}");
        assert!(eval.contains("#SBATCH --output=\"/s/slurm_logs/seed=0.eval.%j.out\""), "{eval}");
        assert!(eval.contains("#SBATCH --job-name=\"s.seed=0.eval\""), "{eval}");
    }
}
