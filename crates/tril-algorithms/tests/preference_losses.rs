//! DPO (4 variants), KTO, GRPO (4 aggregations, with and without KL) and GSPO (both
//! levels) against PyTorch: `tests/fixtures/preference_losses.json` is written by
//! `tests/fixtures/make_preference_losses.py` (plain torch re-typing TRL's formulas, f64).
//! Inputs go through f32 tensors here; every value must agree within 1e-5.

use burn::tensor::{Bool, Tensor, TensorData};
use serde_json::Value;
use tril_algorithms::group::grpo::{group_advantages, grpo_loss, GrpoArgs, GrpoLoss, GrpoStats, RewardScaling};
use tril_algorithms::group::gspo::{gspo_loss, GspoArgs, GspoLevel};
use tril_algorithms::offline::dpo::{dpo_loss, sequence_logprobs, DpoArgs, DpoLoss};
use tril_algorithms::offline::kto::{kto_kl_reference_point, kto_loss, KtoArgs};

type Cpu = tril_core::backend::CpuBackend;
const TOL: f64 = 1e-5;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/preference_losses.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect(path)).expect("valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn t1(v: &Value) -> Tensor<Cpu, 1> {
    let data: Vec<f32> = floats(v).into_iter().map(|x| x as f32).collect();
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), &Default::default())
}

fn t2(v: &Value) -> Tensor<Cpu, 2> {
    let rows = v.as_array().expect("rows");
    let data: Vec<f32> = rows.iter().flat_map(floats).map(|x| x as f32).collect();
    let n = rows.len();
    Tensor::from_data(TensorData::new(data.clone(), [n, data.len() / n]), &Default::default())
}

fn s(x: Tensor<Cpu, 1>) -> f64 {
    x.into_scalar() as f64
}

fn close(got: f64, want: &Value, what: &str) {
    let want = want.as_f64().expect(what);
    assert!((got - want).abs() <= TOL, "{what}: got {got}, torch {want}");
}

fn close_all(got: Tensor<Cpu, 1>, want: &Value, what: &str) {
    let got = got.into_data().to_vec::<f32>().unwrap();
    assert_eq!(got.len(), floats(want).len(), "{what}: length");
    for (g, w) in got.iter().zip(floats(want)) {
        assert!((f64::from(*g) - w).abs() <= TOL, "{what}: got {got:?}, torch {want}");
    }
}

fn close_stats(stats: GrpoStats<Cpu>, case: &Value, what: &str) {
    close(s(stats.clip_ratio_low), &case["clip_ratio_low"], &format!("{what} clip_ratio_low"));
    close(s(stats.clip_ratio_high), &case["clip_ratio_high"], &format!("{what} clip_ratio_high"));
    close(s(stats.clip_ratio_region), &case["clip_ratio_region"], &format!("{what} clip_ratio_region"));
    close(s(stats.kl_mean.expect("kl with a reference")), &case["kl_mean"], &format!("{what} kl_mean"));
}

fn from_json<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).expect("enum name")
}

#[test]
fn dpo_variants_match_torch() {
    let f = fixture();
    let d = &f["dpo"];
    let (mask_c, mask_r) = (t2(&d["mask_chosen"]), t2(&d["mask_rejected"]));
    for case in d["cases"].as_array().unwrap() {
        let loss_type: DpoLoss = from_json(&case["loss_type"]);
        let args = DpoArgs {
            loss_type,
            beta: case["beta"].as_f64().unwrap(),
            label_smoothing: case["label_smoothing"].as_f64().unwrap(),
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
            &args,
        );
        let what = format!("dpo {case}");
        close(s(loss), &case["loss"], &what);
        close_all(stats.rewards_chosen, &case["rewards_chosen"], &what);
        close_all(stats.rewards_rejected, &case["rewards_rejected"], &what);
        close(s(stats.reward_accuracy), &case["reward_accuracy"], &what);
        close(s(stats.reward_margin), &case["reward_margin"], &what);
    }
}

#[test]
fn kto_matches_torch() {
    let f = fixture();
    let k = &f["kto"];
    let labels: Vec<bool> = k["labels"].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect();
    let n = labels.len();
    for case in k["cases"].as_array().unwrap() {
        let args = KtoArgs {
            beta: case["beta"].as_f64().unwrap(),
            desirable_weight: case["desirable_weight"].as_f64().unwrap(),
            undesirable_weight: case["undesirable_weight"].as_f64().unwrap(),
            ..Default::default()
        };
        let z0 = kto_kl_reference_point(t1(&k["kl_policy"]), t1(&case["kl_ref"]));
        let desirable = Tensor::<Cpu, 1, Bool>::from_data(TensorData::new(labels.clone(), [n]), &Default::default());
        let (loss, stats) = kto_loss(t1(&k["policy"]), t1(&k["ref"]), desirable, z0, &args);
        let what = format!("kto beta={} weights=({}, {})", args.beta, args.desirable_weight, args.undesirable_weight);
        close(s(loss), &case["loss"], &what);
        close(s(stats.kl), &case["kl"], &what);
        close_all(stats.rewards, &case["rewards"], &what);
        close(s(stats.chosen_sum), &case["chosen_sum"], &what);
        close(s(stats.rejected_sum), &case["rejected_sum"], &what);
    }
}

#[test]
fn group_advantages_match_torch() {
    let f = fixture();
    let g = &f["grpo"];
    let group = g["num_generations"].as_u64().unwrap() as usize;
    for (scaling, key) in
        [(RewardScaling::Group, "group"), (RewardScaling::Batch, "batch"), (RewardScaling::None, "none")]
    {
        let adv = group_advantages(t1(&g["rewards"]), group, scaling);
        close_all(adv, &g["advantages"][key], &format!("advantages {key}"));
    }
}

#[test]
fn grpo_aggregations_match_torch() {
    let f = fixture();
    let g = &f["grpo"];
    for case in g["cases"].as_array().unwrap() {
        let beta = case["beta"].as_f64().unwrap();
        let args = GrpoArgs {
            loss_type: from_json::<GrpoLoss>(&case["loss_type"]),
            beta,
            epsilon: case["epsilon"].as_f64().unwrap(),
            epsilon_high: case["epsilon_high"].as_f64(),
            max_completion_length: case["max_completion_length"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let what = format!("grpo {case}");
        let (loss, stats) = grpo_loss(
            t2(&g["new"]),
            t2(&g["old"]),
            Some(t2(&g["ref"])),
            t1(&g["advantages_in"]),
            t2(&g["mask"]),
            &args,
            case["num_items_in_batch"].as_f64(),
        );
        close(s(loss), &case["loss"], &what);
        close_stats(stats, case, &what);
        if beta == 0.0 {
            // Without a reference the loss is the same (beta = 0) and no KL is reported.
            let (plain, stats) =
                grpo_loss(t2(&g["new"]), t2(&g["old"]), None, t1(&g["advantages_in"]), t2(&g["mask"]), &args, None);
            close(s(plain), &case["loss"], &what);
            assert!(stats.kl_mean.is_none());
        }
    }
}

#[test]
fn gspo_matches_torch() {
    let f = fixture();
    let g = &f["gspo"];
    for case in g["cases"].as_array().unwrap() {
        let args = GspoArgs {
            level: from_json::<GspoLevel>(&case["level"]),
            loss_type: from_json::<GrpoLoss>(&case["loss_type"]),
            beta: case["beta"].as_f64().unwrap(),
            epsilon: case["epsilon"].as_f64().unwrap(),
            epsilon_high: case["epsilon_high"].as_f64().unwrap(),
            max_completion_length: 7,
            ..Default::default()
        };
        let what = format!("gspo {case}");
        let (loss, stats) = gspo_loss(
            t2(&g["new"]),
            t2(&g["old"]),
            Some(t2(&g["ref"])),
            t1(&g["advantages_in"]),
            t2(&g["mask"]),
            &args,
            None,
        );
        close(s(loss), &case["loss"], &what);
        close_stats(stats, case, &what);
    }
}
