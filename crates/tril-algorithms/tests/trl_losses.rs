//! DPO, KTO, GRPO (and its group advantages) and GSPO against TRL's own loss code.
//!
//! `tests/fixtures/trl_losses.json` is written by `tests/fixtures/make_trl_losses.py`, which
//! calls the unbound methods of trl 1.16.0 (`DPOTrainer._compute_loss`,
//! `KTOTrainer._compute_loss`, `GRPOTrainer._compute_loss`, and the advantage lines of
//! `GRPOTrainer._generate_and_score_completions`) with a lightweight `self` and a fake LM
//! returning fixed per-token log-probs, in float64. Cases marked `"source": "retyped"` are
//! variants TRL 1.16 no longer has (DPO cDPO smoothing and `reference_free`, GSPO-token);
//! their numbers are TRL v1.9's formulas re-typed in torch.
//!
//! Tolerance: every value (losses, rewards, clip ratios, KL, advantages) must satisfy
//! `|tril - TRL| <= 1e-6 * max(1, |TRL|)`: 1e-6 absolute for values of magnitude <= 1
//! (all inputs are exact in f32, so the gap is tril's f32 arithmetic only). Run with
//! `--nocapture` to see the largest difference per family.

mod common;

use burn::tensor::Tensor;
use common::{bools, close_all, close_v, fixture, floats, from_json, report, s, t1, t2, vals, Cpu};
use serde_json::Value;
use tril_algorithms::group::grpo::{group_advantages, grpo_loss, GrpoArgs, GrpoLoss, GrpoStats, RewardScaling};
use tril_algorithms::group::gspo::{gspo_loss, GspoArgs, GspoLevel};
use tril_algorithms::offline::dpo::{dpo_loss, sequence_logprobs, DpoArgs, DpoLoss, SequenceReduction};
use tril_algorithms::offline::kto::{kto_kl_reference_point, kto_loss, KtoArgs};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The clip ratios (and the KL when TRL logged it, i.e. `beta != 0`).
fn close_stats(family: &str, stats: GrpoStats<Cpu>, case: &Value, what: &str) {
    close_v(family, s(stats.clip_ratio_low), &case["clip_ratio_low"], &format!("{what} clip_ratio_low"));
    close_v(family, s(stats.clip_ratio_high), &case["clip_ratio_high"], &format!("{what} clip_ratio_high"));
    close_v(family, s(stats.clip_ratio_region), &case["clip_ratio_region"], &format!("{what} clip_ratio_region"));
    if !case["kl_mean"].is_null() {
        close_v(family, s(stats.kl_mean.expect("kl with a reference")), &case["kl_mean"], &format!("{what} kl"));
    }
}

#[test]
fn dpo_matches_trl_dpo_trainer() {
    let fx = fixture("trl_losses.json");
    let d = &fx["dpo"];
    let (mask_c, mask_r) = (t2(&d["mask_chosen"]), t2(&d["mask_rejected"]));
    let lengths = |mask: &Tensor<Cpu, 2>| {
        let b = mask.dims()[0];
        mask.clone().sum_dim(1).reshape([b])
    };
    for case in d["cases"].as_array().unwrap() {
        let loss_type: DpoLoss = from_json(&case["loss_type"]);
        let args = DpoArgs {
            loss_type,
            beta: f(&case["beta"]),
            label_smoothing: f(&case["label_smoothing"]),
            reference_free: case["reference_free"].as_bool().unwrap(),
            ..Default::default()
        };
        let seq =
            |key: &str, mask: &Tensor<Cpu, 2>| sequence_logprobs(t2(&d[key]), mask.clone(), loss_type.reduction());
        let (loss, stats) = dpo_loss(
            seq("policy_chosen", &mask_c),
            seq("policy_rejected", &mask_r),
            seq("ref_chosen", &mask_c),
            seq("ref_rejected", &mask_r),
            (loss_type.reduction() == SequenceReduction::Mean).then(|| (lengths(&mask_c), lengths(&mask_r))),
            &args,
        );
        let family = format!("dpo ({})", case["source"].as_str().unwrap());
        let what = format!("dpo {case}");
        close_v(&family, s(loss), &case["loss"], &what);
        let (chosen, rejected) = (vals(stats.rewards_chosen), vals(stats.rewards_rejected));
        close_all(&family, &chosen, &floats(&case["rewards_chosen"]), &format!("{what} rewards_chosen"));
        close_all(&family, &rejected, &floats(&case["rewards_rejected"]), &format!("{what} rewards_rejected"));
        close_v(&family, s(stats.reward_accuracy), &case["reward_accuracy"], &format!("{what} accuracy"));
        close_v(&family, s(stats.reward_margin), &case["reward_margin"], &format!("{what} margin"));
    }
    report();
}

#[test]
fn kto_matches_trl_kto_trainer() {
    let fx = fixture("trl_losses.json");
    let k = &fx["kto"];
    let sum = |key: &Value, mask: &str| sequence_logprobs(t2(key), t2(&k[mask]), SequenceReduction::Sum);
    for case in k["cases"].as_array().unwrap() {
        let args = KtoArgs {
            beta: f(&case["beta"]),
            desirable_weight: f(&case["desirable_weight"]),
            undesirable_weight: f(&case["undesirable_weight"]),
            ..Default::default()
        };
        let kl_ref = &k["kl_ref"][case["kl_ref"].as_str().unwrap()];
        let z0 = kto_kl_reference_point(sum(&k["kl_policy"], "kl_mask"), sum(kl_ref, "kl_mask"));
        let (loss, stats) = kto_loss(sum(&k["policy"], "mask"), sum(&k["ref"], "mask"), bools(&k["labels"]), z0, &args);
        let what = format!("kto {case}");
        close_v("kto", s(loss), &case["loss"], &what);
        close_v("kto", s(stats.kl), &case["kl"], &format!("{what} kl"));
        let chosen = s(stats.chosen_sum) / s(stats.chosen_count);
        let rejected = s(stats.rejected_sum) / s(stats.rejected_count);
        close_v("kto", chosen, &case["rewards_chosen"], &format!("{what} rewards/chosen"));
        close_v("kto", rejected, &case["rewards_rejected"], &format!("{what} rewards/rejected"));
        close_v("kto", chosen - rejected, &case["rewards_margins"], &format!("{what} rewards/margins"));
    }
    report();
}

#[test]
fn group_advantages_match_trl_grpo_trainer() {
    let fx = fixture("trl_losses.json");
    let g = &fx["grpo"];
    let group = g["num_generations"].as_u64().unwrap() as usize;
    for (scaling, key) in
        [(RewardScaling::Group, "group"), (RewardScaling::Batch, "batch"), (RewardScaling::None, "none")]
    {
        let adv = vals(group_advantages(t1(&g["rewards"]), group, scaling));
        close_all("grpo advantages", &adv, &floats(&g["advantages"][key]), &format!("advantages {key}"));
    }
    report();
}

#[test]
fn grpo_matches_trl_grpo_trainer() {
    let fx = fixture("trl_losses.json");
    let g = &fx["grpo"];
    for case in g["cases"].as_array().unwrap() {
        let beta = f(&case["beta"]);
        let args = GrpoArgs {
            loss_type: from_json::<GrpoLoss>(&case["loss_type"]),
            beta,
            epsilon: f(&case["epsilon"]),
            epsilon_high: case["epsilon_high"].as_f64(),
            max_completion_length: case["max_completion_length"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let items = case["num_items_in_batch"].as_f64();
        let what = format!("grpo {case}");
        let run = |reference: Option<Tensor<Cpu, 2>>| {
            grpo_loss(t2(&g["new"]), t2(&g["old"]), reference, t1(&g["advantages_in"]), t2(&g["mask"]), &args, items)
        };
        let (loss, stats) = run(Some(t2(&g["ref"])));
        close_v("grpo", s(loss), &case["loss"], &what);
        close_stats("grpo", stats, case, &what);
        if beta == 0.0 {
            // Without a reference the loss is the same and no KL is reported (TRL: no `kl` metric).
            let (plain, stats) = run(None);
            close_v("grpo", s(plain), &case["loss"], &what);
            assert!(stats.kl_mean.is_none());
        }
    }
    report();
}

#[test]
fn gspo_matches_trl_sequence_level_and_retyped_token_level() {
    let fx = fixture("trl_losses.json");
    let g = &fx["gspo"];
    for case in g["cases"].as_array().unwrap() {
        let args = GspoArgs {
            level: from_json::<GspoLevel>(&case["level"]),
            loss_type: from_json::<GrpoLoss>(&case["loss_type"]),
            beta: f(&case["beta"]),
            epsilon: f(&case["epsilon"]),
            epsilon_high: f(&case["epsilon_high"]),
            max_completion_length: case["max_completion_length"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let family = format!("gspo {} ({})", case["level"].as_str().unwrap(), case["source"].as_str().unwrap());
        let what = format!("gspo {case}");
        let (loss, stats) = gspo_loss(
            t2(&g["new"]),
            t2(&g["old"]),
            Some(t2(&g["ref"])),
            t1(&g["advantages_in"]),
            t2(&g["mask"]),
            &args,
            case["num_items_in_batch"].as_f64(),
        );
        close_v(&family, s(loss), &case["loss"], &what);
        close_stats(&family, stats, case, &what);
    }
    report();
}

/// The fixture really comes from TRL 1.16 and names the code it called.
#[test]
fn fixture_names_its_trl_sources() {
    let fx = fixture("trl_losses.json");
    assert!(fx["generator"].as_str().unwrap().contains("trl 1.16.0"));
    assert_eq!(fx["dpo"]["trl_source"], "trl/trainer/dpo_trainer.py:1285-1612");
    assert_eq!(fx["grpo"]["advantages_source"], "trl/trainer/grpo_trainer.py:2761-2810");
}
