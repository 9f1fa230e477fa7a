//! PPO's math against a PyTorch port of TRIL's own code (Cornell-RL/tril @ b9a4de9).
//!
//! `tests/fixtures/tril_ppo.json` is written by `tests/fixtures/make_tril_ppo.py`, a
//! line-by-line float64 port of TRIL's `generate_batch` reward placement and KL penalty
//! (`base_online.py` 324-346), `OnlineBuffer.compute_returns_and_advantage`
//! (`online_buffer.py` 155-164) and `PPO.train_step`'s loss terms and logged statistics
//! (`ppo.py` 53-201), on ragged masks (rows of 7, 3, 1, 5 and 2 real tokens).
//!
//! Tolerance: `|tril - TRIL| <= 1e-6 * max(1, |TRIL|)` for every entry: 1e-6 absolute for
//! values of magnitude <= 1 (the inputs are exact in f32; the gap is tril's f32
//! arithmetic, largest for GAE returns, whose magnitudes reach ~3). Run with
//! `--nocapture` to see the largest difference per family.
//!
//! One documented difference is not a numeric one: TRIL's `kl_rewards` / `total_rewards`
//! keep the penalty on padded entries (they are masked later, in GAE and in the
//! trajectory sums it logs); tril's [`token_rewards`] masks them at once, so the test
//! compares tril against TRIL's values times the mask.

mod common;

use burn::tensor::Tensor;
use common::{close_all, close_v, fixture, matrix, report, s, t1, t2, vals, Cpu};
use serde_json::{json, Value};
use tril_algorithms::onpolicy::ppo::{
    entropy_loss, policy_loss, target_loss, token_rewards, total_loss, value_loss, PpoArgs, PpoTerms,
};
use tril_core::ops::{gae, gae_loop};

fn flat(v: &Value) -> Vec<f64> {
    matrix(v).0
}

#[test]
fn token_rewards_match_tril_generate_batch() {
    let fx = fixture("tril_ppo.json");
    let mask = flat(&fx["masks"]);
    for case in fx["reward_cases"].as_array().unwrap() {
        let kl_coeff = case["kl_coeff"].as_f64().unwrap();
        let (rewards, kl_rewards, total) = token_rewards(
            t1(&fx["terminal"]),
            t2(&fx["masks"]),
            t2(&fx["log_probs"]),
            t2(&fx["ref_log_probs"]),
            kl_coeff,
        );
        let masked = |key: &str| flat(&case[key]).iter().zip(&mask).map(|(x, m)| x * m).collect::<Vec<_>>();
        let what = format!("kl_coeff {kl_coeff}");
        close_all("token rewards", &vals(rewards), &flat(&case["rewards"]), &format!("{what} rewards"));
        close_all("token rewards", &vals(kl_rewards), &masked("kl_rewards"), &format!("{what} kl_rewards"));
        close_all("token rewards", &vals(total), &masked("total_rewards"), &format!("{what} total_rewards"));
    }
    report();
}

#[test]
fn gae_matches_tril_online_buffer() {
    let fx = fixture("tril_ppo.json");
    let (rewards, b) = matrix(&fx["gae_rewards"]);
    let (values, masks) = (flat(&fx["old_values"]), flat(&fx["masks"]));
    let t = rewards.len() / b;
    for case in fx["gae_cases"].as_array().unwrap() {
        let (gamma, lambda) = (case["gamma"].as_f64().unwrap(), case["gae_lambda"].as_f64().unwrap());
        let what = format!("gamma {gamma} lambda {lambda}");
        let (adv, ret) = gae(t2(&fx["gae_rewards"]), t2(&fx["old_values"]), t2(&fx["masks"]), gamma, lambda);
        close_all("gae advantages", &vals(adv), &flat(&case["advantages"]), &format!("{what} advantages"));
        close_all("gae returns", &vals(ret), &flat(&case["returns"]), &format!("{what} returns"));
        // The host f64 loop (tril's second implementation) agrees to f64 precision.
        let looped = gae_loop(&rewards, &values, &masks, b, t, gamma, lambda);
        for (i, (l, w)) in looped.iter().zip(flat(&case["advantages"])).enumerate() {
            assert!((l - w).abs() < 1e-12, "{what} gae_loop[{i}]: {l} vs {w}");
        }
    }
    report();
}

fn ppo_args(case: &Value) -> PpoArgs {
    common::from_json(&json!({
        "seed": 0, "n_iters": 1, "batch_size": 5, "grad_accumulation": 1, "trajectories_per_update": 5,
        "n_epochs": 1, "gamma": 0.99, "gae_lambda": 0.95,
        "vf_coef": case["vf_coef"], "target_coef": case["target_coef"],
        "target_regularization": case["target_regularization"], "ent_coef": case["ent_coef"],
        "clip_range": case["clip_range"], "clip_range_vf": case["clip_range_vf"],
        "max_grad_norm": 1.0, "target_kl": null, "eval_batch_size": 5, "eval_every": 1, "save_every": 1,
        "eval_zero_shot": false, "save_checkpoints": false, "eval_splits": ["val"],
        "max_prompt_len": 4, "max_gen_len": 7
    }))
}

#[test]
fn losses_and_stats_match_tril_ppo_train_step() {
    let fx = fixture("tril_ppo.json");
    let m = || t2(&fx["masks"]);
    for case in fx["loss_cases"].as_array().unwrap() {
        let args = ppo_args(case);
        let what = format!("ppo {case}");
        let (pg, stats) =
            policy_loss(t2(&fx["new_log_probs"]), t2(&fx["log_probs"]), t2(&fx["advantages"]), m(), args.clip_range);
        let (vl, val_clip) =
            value_loss(t2(&fx["new_values"]), t2(&fx["old_values"]), t2(&fx["returns"]), m(), args.clip_range_vf);
        let ent = entropy_loss(t2(&fx["entropy"]), m());
        let target =
            args.target_regularization.then(|| target_loss(t2(&fx["target_log_probs"]), t2(&fx["target_masks"])));
        let got_target = target.clone().map_or(0.0, s);
        let terms = PpoTerms { policy: pg.clone(), value: vl.clone(), entropy: ent.clone(), target };
        let loss: Tensor<Cpu, 1> = total_loss(&terms, &args);
        for (key, got) in [
            ("policy_gradient_loss", s(pg)),
            ("value_loss", s(vl)),
            ("entropy_loss", s(ent)),
            ("target_loss", got_target),
            ("loss", s(loss)),
        ] {
            close_v("ppo losses", got, &case[key], &format!("{what} {key}"));
        }
        for (key, got) in [
            ("approx_kl", s(stats.approx_kl)),
            ("clip_fraction", s(stats.clip_fraction)),
            ("ratio", s(stats.ratio)),
            ("val_clip_fraction", s(val_clip)),
        ] {
            close_v("ppo stats", got, &case[key], &format!("{what} {key}"));
        }
    }
    report();
}

/// The fixture names the TRIL commit and lines it ports.
#[test]
fn fixture_cites_tril() {
    let fx = fixture("tril_ppo.json");
    assert_eq!(fx["tril_commit"], "b9a4de99f115af2bba3de9fddd8f27973552cf44");
    assert_eq!(fx["sources"]["gae"], "src/tril/buffers/online_buffer.py:155-164");
}
