//! Policy layouts (TRIL's `PolicyRegistry`), configured by `alg.policy: {id, args}` and
//! built into a [`PolicySpec`] that an algorithm loads models from.
//!
//! | id | layout |
//! |---|---|
//! | `actor_critic` | TRIL's `LMActorCritic`: the policy plus a separate full copy of the model with a value head ([`CriticLayout::Separate`]) |
//! | `actor_critic_shared` | one trunk carrying the LM head and a value head ([`CriticLayout::SharedTrunk`]); half the memory, and the value loss shapes the policy's features |
//! | `multi_actor_critic` | TRIL's `LMMultiActorCritic`: `actor_critic` plus a guide (the reference when `guide_model_name == model_name`, else a frozen model of its own) and, with `create_guide_critic`, a second critic for the guide's cost-to-go; read by the roll-in algorithms (`ppo_pp`, `aggrevated`, `lols`, `d2lols`) |
//!
//! All read [`ActorCriticArgs`], TRIL's `policy.args`; `multi_actor_critic` also reads
//! [`GuideArgs`] from the same section ([`actor_critic_args`] splits them).
//!
//! ```
//! use tril_algorithms::onpolicy::policies::ActorCriticArgs;
//! use tril_core::plugin::{CriticLayout, ModelType};
//! use tril_core::schema::{GenKwargs, Side};
//! let gen_kwargs = GenKwargs { do_sample: true, top_k: Some(0), top_p: None, temperature: None,
//!     min_length: Some(48), max_new_tokens: 48, num_beams: None };
//! let args = ActorCriticArgs { model_type: ModelType::Causal, model_name: "gpt2".into(),
//!     max_prompt_len: 64, max_gen_len: 48, create_reference: true, mlp_head: false,
//!     quantize_model: false, gen_kwargs, prompt_truncation_side: Side::Left };
//! let spec = args.spec(CriticLayout::Separate);
//! assert_eq!((spec.critic, spec.max_gen_len), (CriticLayout::Separate, 48));
//! ```

use crate::validate::{ensure, invalid};
use serde::{Deserialize, Serialize};
use tril_core::config::{Checker, Ranges, Section};
use tril_core::plugin::{BuildCtx, CriticLayout, ModelType, PluginError, PolicySpec};
use tril_core::schema::{GenKwargs, Side};
use tril_core::CoreError;

/// TRIL's `policy.args` for the actor-critic layouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorCriticArgs {
    /// `causal` (GPT-2 family) or `seq2seq` (T5 family).
    pub model_type: ModelType,
    /// Hub id or local directory of the policy weights, or a built-in preset.
    pub model_name: String,
    /// Prompt length in tokens (> 0).
    pub max_prompt_len: usize,
    /// Maximum generated tokens (> 0).
    pub max_gen_len: usize,
    /// Keep a frozen reference copy for the KL penalty.
    #[serde(default = "yes")]
    pub create_reference: bool,
    /// Value head `Linear(h, 2h) → ReLU → Linear(2h, 1)` instead of `Linear(h, 1)`.
    #[serde(default)]
    pub mlp_head: bool,
    /// TRIL's bitsandbytes 4-bit loading; tril refuses `true`.
    #[serde(default)]
    pub quantize_model: bool,
    /// Rollout generation settings (TRIL: `${sampling.train_generation_kwargs}`).
    pub gen_kwargs: GenKwargs,
    /// Which end of a too-long prompt is cut (TRIL default `left`).
    #[serde(default = "left")]
    pub prompt_truncation_side: Side,
}

impl Ranges for ActorCriticArgs {
    /// At least one prompt and one generated token; `gen_kwargs` as the root's.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        let token = "expected at least 1 token";
        c.satisfies(self.max_prompt_len > 0, "max_prompt_len", self.max_prompt_len, token)?;
        c.satisfies(self.max_gen_len > 0, "max_gen_len", self.max_gen_len, token)?;
        c.nested_ranges("gen_kwargs", &self.gen_kwargs)
    }
}

fn yes() -> bool {
    true
}

fn left() -> Side {
    Side::Left
}

impl ActorCriticArgs {
    /// The spec for these args with the given critic layout.
    pub fn spec(&self, critic: CriticLayout) -> PolicySpec {
        PolicySpec {
            model_type: self.model_type,
            model_name: self.model_name.clone(),
            create_reference: self.create_reference,
            critic,
            mlp_head: self.mlp_head,
            max_prompt_len: self.max_prompt_len,
            max_gen_len: self.max_gen_len,
        }
    }
}

/// The mixing probability of roll-in: one number, or one per mode (LOLS, D2LOLS).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Beta {
    /// The same probability in every mode.
    Scalar(f64),
    /// TRIL's `{aggrevate: .., ppo_pp: ..}`.
    PerMode {
        /// Used in AggreVaTeD iterations.
        aggrevate: f64,
        /// Used in PPO++ iterations.
        ppo_pp: f64,
    },
}

impl Beta {
    /// The probability for an iteration in `mode`.
    pub fn for_mode(&self, mode: crate::onpolicy::rollin::Mode) -> f64 {
        match (*self, mode) {
            (Beta::Scalar(b), _) => b,
            (Beta::PerMode { aggrevate, .. }, crate::onpolicy::rollin::Mode::Aggrevate) => aggrevate,
            (Beta::PerMode { ppo_pp, .. }, crate::onpolicy::rollin::Mode::PpoPp) => ppo_pp,
        }
    }

    fn values(&self) -> Vec<f64> {
        match *self {
            Beta::Scalar(b) => vec![b],
            Beta::PerMode { aggrevate, ppo_pp } => vec![aggrevate, ppo_pp],
        }
    }
}

/// The guide keys of `multi_actor_critic`'s `policy.args` (TRIL's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuideArgs {
    /// The guide's weights; equal to `model_name` means "the reference is the guide".
    pub guide_model_name: String,
    /// TRIL's mode tag: `ppo_pp`, `aggrevate`, `lols` or `d2lols`.
    pub alg_type: AlgType,
    /// Probability that a trajectory gets a roll-in prefix at all.
    pub beta: Beta,
    /// How the guide generates (its roll-in in PPO++, its roll-out in AggreVaTeD).
    pub guide_gen_kwargs: GenKwargs,
    /// A second critic estimating the guide's cost-to-go (LOLS, D2LOLS).
    #[serde(default)]
    pub create_guide_critic: bool,
}

impl Ranges for GuideArgs {
    /// `beta` (each per-mode value) is a probability in [0, 1]; `guide_gen_kwargs` as the root's.
    fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
        match self.beta {
            Beta::Scalar(b) => c.probability("beta", b)?,
            Beta::PerMode { aggrevate, ppo_pp } => {
                c.probability("beta.aggrevate", aggrevate)?;
                c.probability("beta.ppo_pp", ppo_pp)?;
            }
        }
        c.nested_ranges("guide_gen_kwargs", &self.guide_gen_kwargs)
    }
}

/// The roll-in algorithm a `multi_actor_critic` policy serves (TRIL's `alg_type` tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgType {
    /// PPO++ (`ppo_pp`).
    PpoPp,
    /// AggreVaTeD (`aggrevate`).
    Aggrevate,
    /// LOLS (`lols`).
    Lols,
    /// D2LOLS (`d2lols`).
    D2lols,
}

impl std::fmt::Display for AlgType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlgType::PpoPp => "ppo_pp",
            AlgType::Aggrevate => "aggrevate",
            AlgType::Lols => "lols",
            AlgType::D2lols => "d2lols",
        })
    }
}

/// The keys of [`GuideArgs`].
pub const GUIDE_KEYS: [&str; 5] = ["guide_model_name", "alg_type", "beta", "guide_gen_kwargs", "create_guide_critic"];

/// The actor-critic args at `key` (`alg.policy.args`) and, for `multi_actor_critic`, the
/// guide args beside them (`None` for the other layouts, which refuse guide keys).
pub fn actor_critic_args(
    config: &tril_core::config::Config,
    key: &str,
) -> Result<(ActorCriticArgs, Option<GuideArgs>), PluginError> {
    let parent = key.strip_suffix(".args").unwrap_or(key);
    let multi = config.section(parent)?.string("id").is_ok_and(|(id, _)| id == "multi_actor_critic");
    if !multi {
        return Ok((config.extract(key)?, None));
    }
    let (args, guide): (ActorCriticArgs, GuideArgs) = crate::trainer::extract_split(config, key, &GUIDE_KEYS)?;
    let section = config.section(key)?;
    ensure(
        guide.beta.values().iter().all(|b| (0.0..=1.0).contains(b)),
        &section,
        "beta",
        "expected probabilities in [0, 1]",
    )?;
    ensure(!guide.guide_model_name.trim().is_empty(), &section, "guide_model_name", "expected a model name")?;
    Ok((args, Some(guide)))
}

/// Extracts the args and checks what tril cannot honour.
fn extract(section: &Section<'_>) -> Result<ActorCriticArgs, CoreError> {
    check(section, section.extract()?)
}

/// The checks of [`extract`] on args already read from `section`.
fn check(section: &Section<'_>, args: ActorCriticArgs) -> Result<ActorCriticArgs, CoreError> {
    ensure(!args.model_name.trim().is_empty(), section, "model_name", "expected a model name")?;
    ensure(args.max_prompt_len > 0, section, "max_prompt_len", "expected at least 1 token")?;
    ensure(args.max_gen_len > 0, section, "max_gen_len", "expected at least 1 token")?;
    if args.quantize_model {
        let message = "4-bit quantization is not supported by tril; set alg.policy.args.quantize_model=false";
        return Err(invalid(section, "quantize_model", message));
    }
    Ok(args)
}

fn build_separate(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<PolicySpec>, PluginError> {
    Ok(Box::new(extract(section)?.spec(CriticLayout::Separate)))
}

tril_core::register!(policy,
    id: "actor_critic",
    doc: "Policy plus a separate full-model critic with a value head (TRIL's LMActorCritic).",
    config: ActorCriticArgs,
    build: build_separate);

fn build_shared(section: &Section<'_>, _ctx: &BuildCtx<'_>) -> Result<Box<PolicySpec>, PluginError> {
    Ok(Box::new(extract(section)?.spec(CriticLayout::SharedTrunk)))
}

tril_core::register!(policy,
    id: "actor_critic_shared",
    doc: "One trunk with an LM head and a value head (half the memory of actor_critic).",
    config: ActorCriticArgs,
    build: build_shared);

fn build_multi(section: &Section<'_>, ctx: &BuildCtx<'_>) -> Result<Box<PolicySpec>, PluginError> {
    let (args, _guide) = crate::trainer::split_section::<ActorCriticArgs, GuideArgs>(section, &GUIDE_KEYS)?;
    let _ = ctx;
    Ok(Box::new(check(section, args)?.spec(CriticLayout::Separate)))
}

tril_core::register!(policy,
    id: "multi_actor_critic",
    doc: "actor_critic plus a guide model (the reference when the names match) and an optional guide critic (TRIL's LMMultiActorCritic).",
    config: ActorCriticArgs,
    check: |s| crate::trainer::split_section::<ActorCriticArgs, GuideArgs>(s, &GUIDE_KEYS).map(|_| ()),
    build: build_multi);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tril_core::config::{parse_yaml, Config};
    use tril_core::registry::{build_policy, Kind};

    const ARGS: &str = "      model_type: causal
      model_name: rajkumarrrk/gpt2-fine-tuned-on-imdb-positive-reviews
      max_prompt_len: 64
      max_gen_len: 48
      gen_kwargs:
        do_sample: true
        top_k: 0
        min_length: 48
        max_new_tokens: 48
";

    /// Builds `alg.policy` with id `id` and args `ARGS` plus `extra` lines.
    fn build(id: &str, extra: &str) -> Result<Box<PolicySpec>, PluginError> {
        let yaml = format!("alg:\n  policy:\n    id: {id}\n    args:\n{ARGS}{extra}");
        let config = Config::new(parse_yaml(&yaml, Path::new("alg/ppo.yaml")).unwrap(), vec![]);
        build_policy(&config.section("alg.policy").unwrap(), &config)
    }

    #[test]
    fn tril_imdb_actor_critic() {
        let spec = build("actor_critic", "").unwrap();
        let want = PolicySpec {
            model_type: ModelType::Causal,
            model_name: "rajkumarrrk/gpt2-fine-tuned-on-imdb-positive-reviews".into(),
            create_reference: true,
            critic: CriticLayout::Separate,
            mlp_head: false,
            max_prompt_len: 64,
            max_gen_len: 48,
        };
        assert_eq!(*spec, want);
    }

    #[test]
    fn shared_trunk_and_overrides() {
        let spec = build("actor_critic_shared", "      mlp_head: true\n      create_reference: false\n").unwrap();
        assert_eq!(spec.critic, CriticLayout::SharedTrunk);
        assert!(spec.mlp_head && !spec.create_reference);
    }

    #[test]
    fn args_defaults_and_round_trip() {
        let yaml = format!("alg:\n  policy:\n    args:\n{ARGS}      prompt_truncation_side: right\n");
        let config = Config::new(parse_yaml(&yaml, Path::new("alg/ppo.yaml")).unwrap(), vec![]);
        let args: ActorCriticArgs = config.extract("alg.policy.args").unwrap();
        assert_eq!(args.prompt_truncation_side, Side::Right);
        assert_eq!((args.gen_kwargs.top_k, args.gen_kwargs.max_new_tokens), (Some(0), 48));
        let json = serde_json::to_string(&args).unwrap();
        assert_eq!(serde_json::from_str::<ActorCriticArgs>(&json).unwrap(), args);
    }

    #[test]
    fn quantization_is_refused() {
        let err = build("actor_critic", "      quantize_model: true\n").err().unwrap().to_string();
        assert!(err.contains("4-bit quantization is not supported by tril"), "{err}");
        assert!(err.contains("alg.policy.args.quantize_model") && err.contains("alg/ppo.yaml:14"), "{err}");
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases = [
            ("max_gen_len: 48", "max_gen_len: 0", "alg.policy.args.max_gen_len: expected at least 1 token"),
            ("max_prompt_len: 64", "max_prompt_len: -1", "alg.policy.args.max_prompt_len"),
            ("model_type: causal", "model_type: casual", "did you mean `causal`"),
            ("max_new_tokens: 48", "max_new_token: 48", "alg.policy.args.gen_kwargs.max_new_token: unknown key"),
        ];
        for (from, to, want) in cases {
            let yaml = format!("alg:\n  policy:\n    id: actor_critic\n    args:\n{}", ARGS.replace(from, to));
            let config = Config::new(parse_yaml(&yaml, Path::new("alg/ppo.yaml")).unwrap(), vec![]);
            let err = build_policy(&config.section("alg.policy").unwrap(), &config).err().unwrap().to_string();
            assert!(err.contains(want) && err.contains("alg/ppo.yaml:"), "{to}: {err}");
        }
        let err = build("actor_critic", "      lora: true\n").err().unwrap().to_string();
        assert!(err.contains("alg.policy.args.lora: unknown key"), "{err}");
        let err = build("actor_critc", "").err().unwrap().to_string();
        assert!(err.contains("did you mean `actor_critic`"), "{err}");
    }

    #[test]
    fn ids_are_registered() {
        let ids: Vec<&str> = Kind::Policy.list().iter().map(|l| l.id).collect();
        for id in ["actor_critic", "actor_critic_shared"] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
    }
}
