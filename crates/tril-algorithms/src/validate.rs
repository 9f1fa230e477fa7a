//! Range checks on typed configs, reported as [`tril_core::CoreError::InvalidValue`] so that
//! a bad value names its dotted key, the value as written and the file:line it came from.
//! The one implementation lives in [`tril_core::config`] ([`tril_core::config::Checker`]).

pub(crate) use tril_core::config::{ensure, invalid};

#[cfg(test)]
mod tests {
    use std::path::Path;
    use tril_core::config::{compose, ComposeRequest, Config, DirStore};
    use tril_core::registry::check_config_sections;

    /// `cfgs/` composed with `args`, as `tril config` does.
    fn config(args: &[&str]) -> Config {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfgs");
        let req = ComposeRequest { args: args.iter().map(|a| a.to_string()).collect(), env: vec![] };
        compose(&DirStore::new(dir), &req).unwrap()
    }

    /// The errors of the registry checks (what `tril config` reports), one per line.
    fn errors(args: &[&str]) -> String {
        let config = config(args);
        let mut all: Vec<String> = config.non_finite().iter().map(|e| e.to_string()).collect();
        let root = config.section("").and_then(|s| s.extract_checked::<tril_core::schema::RootConfig>());
        all.extend(root.err().map(|e| e.to_string()));
        all.extend(check_config_sections(&config).iter().map(|e| e.to_string()));
        all.join("\n")
    }

    #[test]
    fn shipped_configs_are_in_range() {
        for (task, alg) in [
            ("synthetic", "ppo"),
            ("synthetic", "grpo"),
            ("synthetic", "lols"),
            ("synthetic_preference", "dpo"),
            ("imdb", "gail"),
        ] {
            let (t, a) = (format!("task={task}"), format!("alg={alg}"));
            let errors = errors(&[&t, &a]);
            assert!(errors.is_empty() || errors.contains("unknown"), "{task} x {alg}: {errors}");
        }
    }

    /// Each case: an override, then what the error must say (key, range, value, origin).
    #[test]
    fn out_of_range_values_name_key_value_and_origin() {
        let cases: &[(&str, &str, &str)] = &[
            ("synthetic", "ppo", "alg.args.gamma=2"),
            ("synthetic", "ppo", "alg.args.gae_lambda=-0.1"),
            ("synthetic", "ppo", "alg.args.clip_range=0"),
            ("synthetic", "ppo", "alg.args.clip_range_vf=-1"),
            ("synthetic", "ppo", "alg.args.ent_coef=-0.5"),
            ("synthetic", "ppo", "alg.args.vf_coef=-1"),
            ("synthetic", "ppo", "alg.args.n_epochs=0"),
            ("synthetic", "ppo", "alg.args.target_kl=0"),
            ("synthetic", "ppo", "alg.args.trajectories_per_update=33"),
            ("synthetic", "ppo", "alg.args.max_grad_norm=0"),
            ("synthetic", "ppo", "alg.optimizer.args.lr=0"),
            ("synthetic", "ppo", "alg.optimizer.args.eps=0"),
            ("synthetic", "ppo", "alg.optimizer.args.weight_decay=-1"),
            ("synthetic", "ppo", "alg.kl_div.coeff=-1"),
            ("synthetic", "ppo", "sampling.max_gen_len=0"),
            ("synthetic", "ppo", "+sampling.train_generation_kwargs.top_p=0"),
            ("synthetic", "ppo", "+sampling.eval_generation_kwargs.temperature=0"),
            ("synthetic", "lols", "alg.args.tau=1.5"),
            ("synthetic", "grpo", "alg.args.num_generations=1"),
            ("synthetic", "grpo", "alg.args.epsilon=1"),
            ("synthetic_preference", "dpo", "alg.args.beta=0"),
            ("synthetic_preference", "dpo", "alg.args.label_smoothing=0.5"),
            ("synthetic_preference", "kto", "alg.args.desirable_weight=0"),
        ];
        for (task, alg, arg) in cases {
            let (t, a) = (format!("task={task}"), format!("alg={alg}"));
            let errors = errors(&[&t, &a, arg]);
            let (key, value) = arg.trim_start_matches('+').split_once('=').unwrap();
            assert!(errors.contains(&format!("{key}: expected")), "{arg}: {errors}");
            assert!(errors.contains(&format!("found {value} (command line `{arg}`)")), "{arg}: {errors}");
        }
    }

    #[test]
    fn non_finite_values_are_refused_anywhere() {
        for arg in ["alg.args.ent_coef=.inf", "alg.args.gamma=.nan", "alg.optimizer.args.lr=-.inf", "+extra.x=.inf"] {
            let errors = errors(&["task=synthetic", "alg=ppo", arg]);
            let (key, value) = arg.trim_start_matches('+').split_once('=').unwrap();
            let want = format!("{key}: expected a finite number, found {value} (command line `{arg}`)");
            assert!(errors.contains(&want), "{arg}: {errors}");
        }
    }
}
