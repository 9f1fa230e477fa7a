//! `tril sweep`: a grid of sub-experiments from Hydra multirun overrides
//! (`alg=dpo,kto`, `alg.optimizer.args.lr=5e-6,1e-5`) and a `--sweep-file` map of
//! `key: [alternative, ...]`, run one `tril run` child process each (`docs/sweeps.md`).
//!
//! This file holds the pure part: splitting an override's value into alternatives,
//! reading a sweep file, the cartesian product (first axis slowest) and the sub-run
//! names. Running the grid into a sweep root is [`exec`].

mod exec;
pub mod slurm;

use anyhow::{anyhow, bail, Context};
use std::path::{Path, PathBuf};
use tril_core::config::{format_float, parse_yaml, plain_scalar, quote_yaml, Node, Value};

pub use exec::run;

/// `tril sweep`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// `task=X alg=Y` and `[+|~]a.b[=v]` overrides; a value with commas outside `[...]`,
    /// `{...}` and quotes is a sweep axis (`alg=dpo,kto`, `alg.optimizer.args.lr=5e-6,1e-5`).
    #[arg(value_name = "OVERRIDES")]
    pub overrides: Vec<String>,
    /// A YAML map `{override_key: [alternative, ...]}` of more axes (after the command line's).
    #[arg(long, value_name = "FILE")]
    pub sweep_file: Option<PathBuf>,
    /// Print the grid and check every sub-experiment's config; run nothing, write nothing.
    #[arg(long)]
    pub plan: bool,
    /// How many sub-experiments run at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: u32,
    /// The sweep root (default: outputs/sweeps/<experiment_name>/<timestamp>); a root that
    /// holds the same sweep continues it.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Config directory (default: TRIL_CONFIG_DIR, else ./cfgs, else the embedded cfgs/).
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Where the sub-experiments run: `local` (child processes here) or `slurm` (one sbatch
    /// job each; `launcher.KEY=VALUE` overrides the launcher file).
    #[arg(long, value_enum, default_value_t = Launcher::Local)]
    pub launcher: Launcher,
    /// The Slurm launcher config (default: launcher/slurm.yaml in the config directory).
    #[arg(long, value_name = "FILE")]
    pub launcher_file: Option<PathBuf>,
    /// With `--launcher slurm`: write the scripts and sweep.json, print the sbatch commands,
    /// submit nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where `tril sweep` runs its sub-experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// Child processes on this machine.
    Local,
    /// One Slurm job per sub-experiment (`docs/sweeps.md`, "SLURM").
    Slurm,
}

/// The Slurm launcher config: `--launcher-file`, else `launcher/slurm.yaml` of the config
/// directory (none: all defaults), then the `launcher.KEY=VALUE` overrides.
fn slurm_config(args: &SweepArgs, overrides: &[(String, String)]) -> anyhow::Result<slurm::SlurmConfig> {
    if let Some(file) = &args.launcher_file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading --launcher-file {}", file.display()))?;
        return slurm::load_config(Some(&text), file, overrides);
    }
    let store = crate::store::select(args.config_dir.as_deref());
    let text = store.read(slurm::LAUNCHER_FILE).map_err(|e| anyhow!(e))?;
    slurm::load_config(text.as_deref(), &store.display(slurm::LAUNCHER_FILE), overrides)
}

/// One sweep axis: an override key (`alg`, `alg.args.beta`, `+alg.args.new`) and its
/// alternative values in the override grammar.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The key as written, with a leading `+` when it adds a key.
    pub key: String,
    /// The values, in order.
    pub values: Vec<String>,
}

/// The expanded grid: plain overrides every sub-experiment gets, and the axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Overrides passed to every sub-experiment (after the default `task=`/`alg=`).
    pub plain: Vec<String>,
    /// The axes, first one slowest.
    pub axes: Vec<Axis>,
}

/// One point of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct SubExperiment {
    /// Position in the grid, from 0.
    pub index: usize,
    /// The sub-run directory's name (unique in the grid).
    pub name: String,
    /// Every override of the `tril run` it is (plain ones first, then one per axis).
    pub overrides: Vec<String>,
    /// `(key, value)` of the axes with more than one value.
    pub varying: Vec<(String, String)>,
}

/// Splits `text` at the commas that are outside `[...]`, `{...}` and quotes.
pub fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            (None, ',') if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

/// Reads the command line: an override `key=a,b,c` (not `~key`) is an axis, every other
/// argument is plain.
pub fn parse_overrides(args: &[String]) -> anyhow::Result<Grid> {
    let mut grid = Grid { plain: Vec::new(), axes: Vec::new() };
    for arg in args {
        let split = arg.split_once('=').filter(|_| !arg.starts_with('~'));
        let Some((key, value)) = split else {
            grid.plain.push(arg.clone());
            continue;
        };
        let values = split_top_level(value);
        if values.len() == 1 {
            grid.plain.push(arg.clone());
            continue;
        }
        let values: Vec<String> = values.iter().map(|v| v.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            bail!("`{arg}`: an empty alternative (a stray comma?); quote a value that holds commas: {key}='a,b'");
        }
        grid.axes.push(Axis { key: key.trim().to_string(), values });
    }
    Ok(grid)
}

/// Reads a sweep file: a YAML map whose every entry is a list of alternatives.
pub fn read_sweep_file(path: &Path) -> anyhow::Result<Vec<Axis>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading sweep file {}", path.display()))?;
    parse_sweep_file(&text, path)
}

/// [`read_sweep_file`] on text already read (`path` names it in errors).
pub fn parse_sweep_file(text: &str, path: &Path) -> anyhow::Result<Vec<Axis>> {
    let root = parse_yaml(text, path).map_err(|e| anyhow!(e))?;
    let map = match &root.value {
        Value::Map(map) => map,
        Value::Null => bail!("{}: the sweep file is empty; expected `key: [alternative, ...]` entries", path.display()),
        other => {
            bail!("{}: expected a map of `key: [alternative, ...]`, found a {}", path.display(), other.type_name())
        }
    };
    let mut axes = Vec::new();
    for (key, node) in map {
        let Value::Seq(items) = &node.value else {
            bail!(
                "{key}: expected a list of alternatives, found a {} ({}); a list-valued alternative is a list \
                 inside the list: `{key}: [[a, b]]`",
                node.value.type_name(),
                path.display()
            );
        };
        if items.is_empty() {
            bail!("{key}: the list of alternatives is empty ({})", path.display());
        }
        axes.push(Axis { key: key.clone(), values: items.iter().map(flow).collect() });
    }
    Ok(axes)
}

/// A value in YAML flow form, as an override's value: `5e-6`, `dpo`, `[val, test]`,
/// `{k: v}`, `"a, b"`.
pub fn flow(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) => format_float(*x),
        Value::Str(s) => flow_str(s),
        Value::Seq(items) => format!("[{}]", items.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Map(map) => {
            let entries: Vec<String> = map.iter().map(|(k, v)| format!("{}: {}", flow_str(k), flow(v))).collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// A string plain when it reads back as the same string and holds nothing YAML's flow
/// syntax gives a meaning, else double-quoted.
fn flow_str(s: &str) -> String {
    let plain_chars = s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@+".contains(c));
    let starts_ok = s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '.');
    if plain_chars && starts_ok && plain_scalar(s) == Value::Str(s.to_string()) && !s.ends_with(':') {
        return s.to_string();
    }
    quote_yaml(s)
}

/// The key an override addresses, without a leading `+`.
fn bare_key(key: &str) -> &str {
    key.trim_start_matches('+')
}

/// The key of a plain override (`a.b=v`, `+a.b=v`, `~a.b`, `group=x`), if it has one.
fn plain_key(arg: &str) -> Option<&str> {
    let key = arg.strip_prefix('~').unwrap_or(arg);
    let key = key.split_once('=').map_or(key, |(k, _)| k);
    (!key.is_empty()).then(|| bare_key(key.trim()))
}

/// Joins the command line's axes and the sweep file's, refuses a key given twice (as two
/// axes, or as an axis and a plain override) and a repeated alternative, and adds the
/// default `task=synthetic alg=ppo` when neither group is chosen (as `tril run` does).
pub fn build_grid(mut grid: Grid, file_axes: Vec<Axis>) -> anyhow::Result<Grid> {
    grid.axes.extend(file_axes);
    let keys = grid.plain.iter().filter_map(|p| plain_key(p)).chain(grid.axes.iter().map(|a| bare_key(&a.key)));
    for key in keys {
        if key == "run_dir" || key == "hydra.run.dir" {
            bail!("{key}: the sweep sets each sub-run's directory (<root>/<name>); choose the root with --root");
        }
    }
    for (i, axis) in grid.axes.iter().enumerate() {
        let key = bare_key(&axis.key);
        if grid.axes[..i].iter().any(|a| bare_key(&a.key) == key) {
            bail!("{key}: given as a sweep axis twice (on the command line and/or in the sweep file)");
        }
        if grid.plain.iter().any(|p| plain_key(p) == Some(key)) {
            bail!("{key}: both a sweep axis and a plain override; give it once");
        }
        for (j, value) in axis.values.iter().enumerate() {
            if axis.values[..j].contains(value) {
                bail!("{key}: the alternative `{value}` appears twice");
            }
        }
    }
    let chooses = |group: &str| {
        grid.plain.iter().any(|p| p.starts_with(&format!("{group}="))) || grid.axes.iter().any(|a| a.key == group)
    };
    if !chooses("task") && !chooses("alg") {
        let mut plain: Vec<String> = crate::commands::EMBEDDED_DEFAULT.iter().map(|s| s.to_string()).collect();
        plain.append(&mut grid.plain);
        grid.plain = plain;
    }
    Ok(grid)
}

/// Every point of the grid, first axis slowest, with unique sub-run names.
pub fn expand(grid: &Grid) -> Vec<SubExperiment> {
    let total: usize = grid.axes.iter().map(|a| a.values.len()).product();
    let mut subs = Vec::with_capacity(total);
    for index in 0..total {
        let mut rest = index;
        let mut picks = vec![0usize; grid.axes.len()];
        for (pick, axis) in picks.iter_mut().zip(&grid.axes).rev() {
            *pick = rest % axis.values.len();
            rest /= axis.values.len();
        }
        let mut overrides = grid.plain.clone();
        let mut varying = Vec::new();
        for (axis, &pick) in grid.axes.iter().zip(&picks) {
            let value = &axis.values[pick];
            overrides.push(format!("{}={value}", axis.key));
            if axis.values.len() > 1 {
                varying.push((bare_key(&axis.key).to_string(), value.clone()));
            }
        }
        subs.push(SubExperiment { index, name: String::new(), overrides, varying });
    }
    let names = unique_names(&subs);
    for (sub, name) in subs.iter_mut().zip(names) {
        sub.name = name;
    }
    subs
}

/// The longest sub-run name before it is cut and given a hash.
const MAX_NAME: usize = 80;

/// Keeps `[A-Za-z0-9._=-]`, writes every other run of characters (`/`, `:`, spaces,
/// brackets) as one `-`.
pub fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || "._=-".contains(c) { c } else { '-' };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out
}

/// The name of a sub-experiment from its varying values: `alg=dpo_lr=5e-6_beta=0.1`
/// (each key's last part), `run` when nothing varies.
pub fn base_name(varying: &[(String, String)]) -> String {
    if varying.is_empty() {
        return "run".into();
    }
    let parts: Vec<String> = varying
        .iter()
        .map(|(key, value)| {
            let short = key.rsplit('.').next().unwrap_or(key);
            format!("{}={}", sanitize(short), sanitize(value).trim_matches('-'))
        })
        .collect();
    let name = parts.join("_");
    // Never `.`/`..`-like or hidden.
    name.trim_start_matches('.').to_string()
}

/// FNV-1a, 64 bits: a hash that stays the same across builds and platforms.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `name` cut to fit [`MAX_NAME`] with `-` and 8 hex digits of `key`'s hash.
fn hashed(name: &str, key: &str) -> String {
    let cut: String = name.chars().take(MAX_NAME - 9).collect();
    format!("{cut}-{:08x}", fnv1a(key) as u32)
}

/// Names for every sub-experiment: the base name, or when it is too long or shared (case
/// aside, for case-insensitive file systems) the base name with a hash of its overrides;
/// the index breaks any tie left.
pub fn unique_names(subs: &[SubExperiment]) -> Vec<String> {
    let bases: Vec<String> = subs.iter().map(|s| base_name(&s.varying)).collect();
    let mut names: Vec<String> = bases
        .iter()
        .zip(subs)
        .map(|(base, sub)| {
            let shared = bases.iter().filter(|b| b.eq_ignore_ascii_case(base)).count() > 1;
            if shared || base.len() > MAX_NAME {
                hashed(base, &sub.overrides.join(" "))
            } else {
                base.clone()
            }
        })
        .collect();
    for i in 0..names.len() {
        if names[..i].iter().any(|n| n.eq_ignore_ascii_case(&names[i])) {
            names[i] = format!("{}-{i}", names[i]);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sweep_splits_only_top_level_commas() {
        assert_eq!(split_top_level("dpo,kto"), ["dpo", "kto"]);
        assert_eq!(split_top_level("5e-6,1e-5,1e-6"), ["5e-6", "1e-5", "1e-6"]);
        assert_eq!(split_top_level("[val,test]"), ["[val,test]"]);
        assert_eq!(split_top_level("{a: 1, b: [2, 3]}"), ["{a: 1, b: [2, 3]}"]);
        assert_eq!(split_top_level("'a,b'"), ["'a,b'"]);
        assert_eq!(split_top_level("\"a,b\",c"), ["\"a,b\"", "c"]);
        assert_eq!(split_top_level("[val],[val,test]"), ["[val]", "[val,test]"]);
        assert_eq!(split_top_level("plain"), ["plain"]);
    }

    #[test]
    fn sweep_overrides_become_axes_or_plain() {
        let grid = parse_overrides(&strings(&[
            "alg=dpo,kto",
            "task=synthetic_preference",
            "alg.args.eval_splits=[val,test]",
            "~alg.args.x",
            "alg.optimizer.args.lr=5e-6,1e-5,1e-6",
        ]))
        .unwrap();
        assert_eq!(grid.plain, ["task=synthetic_preference", "alg.args.eval_splits=[val,test]", "~alg.args.x"]);
        assert_eq!(grid.axes.len(), 2);
        assert_eq!(grid.axes[0], Axis { key: "alg".into(), values: strings(&["dpo", "kto"]) });
        assert_eq!(grid.axes[1].values, ["5e-6", "1e-5", "1e-6"]);
        let err = parse_overrides(&strings(&["alg.args.beta=0.1,"])).unwrap_err().to_string();
        assert!(err.contains("empty alternative"), "{err}");
    }

    #[test]
    fn sweep_product_is_first_axis_slowest() {
        let grid = Grid {
            plain: strings(&["task=t"]),
            axes: vec![
                Axis { key: "a".into(), values: strings(&["1", "2"]) },
                Axis { key: "b".into(), values: strings(&["x", "y", "z"]) },
                Axis { key: "c".into(), values: strings(&["only"]) },
            ],
        };
        let subs = expand(&grid);
        assert_eq!(subs.len(), 6);
        let pairs: Vec<String> = subs.iter().map(|s| format!("{}{}", s.varying[0].1, s.varying[1].1)).collect();
        assert_eq!(pairs, ["1x", "1y", "1z", "2x", "2y", "2z"]);
        assert_eq!(subs[4].overrides, ["task=t", "a=2", "b=y", "c=only"]);
        assert_eq!(subs[4].name, "a=2_b=y");
        assert!(subs.iter().enumerate().all(|(i, s)| s.index == i));
        // No axes at all: one sub-experiment of the plain overrides.
        let one = expand(&Grid { plain: strings(&["alg=dpo"]), axes: vec![] });
        assert_eq!((one.len(), one[0].name.as_str()), (1, "run"));
    }

    #[test]
    fn sweep_names_are_sanitized_unique_and_short() {
        assert_eq!(sanitize("builtin:tiny-gpt2"), "builtin-tiny-gpt2");
        assert_eq!(sanitize("models/a b//c"), "models-a-b-c");
        assert_eq!(base_name(&[("alg.args.eval_splits".into(), "[val, test]".into())]), "eval_splits=val-test");
        // Values equal after sanitizing (case aside): the names get hashes.
        let grid = Grid {
            plain: vec![],
            axes: vec![Axis { key: "alg.args.model_name".into(), values: strings(&["a/b", "a:b", "A/B"]) }],
        };
        let names: Vec<String> = expand(&grid).into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().all(|n| n.starts_with("model_name=a-b-") || n.starts_with("model_name=A-B-")),
            "{names:?}"
        );
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].iter().any(|m| m.eq_ignore_ascii_case(n)), "{names:?}");
            assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || "._=-".contains(c)), "{n}");
        }
        let long =
            Grid { plain: vec![], axes: vec![Axis { key: "k".into(), values: vec!["x".repeat(200), "y".into()] }] };
        let names: Vec<String> = expand(&long).into_iter().map(|s| s.name).collect();
        assert_eq!(names[0].len(), MAX_NAME);
        assert_eq!(names[1], "k=y");
    }

    #[test]
    fn sweep_file_values_are_override_values() {
        let text = "alg: [dpo, kto]\nalg.optimizer.args.lr: [5e-6, 1e-5]\nalg.args.eval_splits: [[val], [val, test]]\n\
                    alg.args.model_name: ['a, b', builtin:tiny-gpt2, 'true']\nx: [{k: 1}, null]\n";
        let axes = parse_sweep_file(text, Path::new("s.yaml")).unwrap();
        assert_eq!(axes[0].values, ["dpo", "kto"]);
        assert_eq!(axes[2].values, ["[val]", "[val, test]"]);
        assert_eq!(axes[3].values, ["\"a, b\"", "builtin:tiny-gpt2", "\"true\""]);
        assert_eq!(axes[4].values, ["{k: 1}", "null"]);
        // Every value reads back, through the override grammar's YAML, as what the file said.
        let file = parse_yaml(text, Path::new("s.yaml")).unwrap();
        for axis in &axes {
            // A dotted key is one key of the file's map, not a path.
            let Value::Seq(originals) = &file.as_map().unwrap()[&axis.key].value else { unreachable!() };
            for (value, original) in axis.values.iter().zip(originals) {
                let back = parse_yaml(value, Path::new("<override>")).unwrap();
                assert_eq!(flow(&back), flow(original), "{value}");
                assert_eq!(back.value.type_name(), original.value.type_name(), "{value}");
            }
        }
        let lr = parse_yaml(&axes[1].values[0], Path::new("<override>")).unwrap();
        assert!(matches!(lr.value, Value::Float(x) if (x - 5e-6).abs() < 1e-18), "{:?}", lr.value);
    }

    #[test]
    fn sweep_file_errors_name_the_key_and_file() {
        let err = parse_sweep_file("alg: [dpo]\nalg.args.beta: 0.1\n", Path::new("grid.yaml")).unwrap_err().to_string();
        assert!(err.contains("alg.args.beta") && err.contains("grid.yaml") && err.contains("list"), "{err}");
        let err = parse_sweep_file("alg: []\n", Path::new("grid.yaml")).unwrap_err().to_string();
        assert!(err.contains("alg") && err.contains("empty") && err.contains("grid.yaml"), "{err}");
        let err = parse_sweep_file("[a, b]\n", Path::new("grid.yaml")).unwrap_err().to_string();
        assert!(err.contains("grid.yaml") && err.contains("map"), "{err}");
        let err = read_sweep_file(Path::new("/nonexistent/grid.yaml")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/grid.yaml"), "{err:#}");
    }

    #[test]
    fn sweep_grid_refuses_repeats_and_adds_the_default() {
        let cli = parse_overrides(&strings(&["alg.args.beta=0.1,0.2"])).unwrap();
        let file = vec![Axis { key: "alg.args.beta".into(), values: strings(&["0.3"]) }];
        assert!(build_grid(cli.clone(), file).unwrap_err().to_string().contains("twice"));
        let both = parse_overrides(&strings(&["alg.args.beta=0.1,0.2", "alg.args.beta=0.3"])).unwrap();
        assert!(build_grid(both, vec![]).unwrap_err().to_string().contains("plain override"));
        let repeated = parse_overrides(&strings(&["alg.args.beta=0.1,0.1"])).unwrap();
        assert!(build_grid(repeated, vec![]).unwrap_err().to_string().contains("appears twice"));
        let run_dir = parse_overrides(&strings(&["run_dir=/tmp/x"])).unwrap();
        assert!(build_grid(run_dir, vec![]).unwrap_err().to_string().contains("--root"));
        let grid = build_grid(cli, vec![]).unwrap();
        assert_eq!(grid.plain, ["task=synthetic", "alg=ppo"]);
        let chosen = build_grid(parse_overrides(&strings(&["alg=dpo,kto"])).unwrap(), vec![]).unwrap();
        assert!(chosen.plain.is_empty());
    }

    #[test]
    fn sweep_seed_example_has_twelve_points() {
        let cli = parse_overrides(&strings(&[
            "alg=dpo,kto",
            "task=synthetic_preference",
            "alg.optimizer.args.lr=5e-6,1e-5,1e-6",
        ]))
        .unwrap();
        let file = parse_sweep_file("alg.args.beta: [0.1, 0.2]\n", Path::new("s.yaml")).unwrap();
        let subs = expand(&build_grid(cli, file).unwrap());
        assert_eq!(subs.len(), 12);
        let keys: Vec<&str> = subs[0].varying.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["alg", "alg.optimizer.args.lr", "alg.args.beta"]);
        assert_eq!(subs[0].name, "alg=dpo_lr=5e-6_beta=0.1");
        assert_eq!(subs[11].name, "alg=kto_lr=1e-6_beta=0.2");
    }
}
