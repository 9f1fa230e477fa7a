//! Ensemble objectives and the best-of-n estimator against
//! `tests/fixtures/ensemble/make_ensemble.py` (numpy np.mean/np.min/np.var/np.std; best-of-n
//! by brute-force enumeration of all n-subsets for N <= 10 and by exact-binomial closed form
//! for N = 200).
//!
//! Tolerance: `|got - want| <= 1e-9 * max(1, |want|)`, i.e. absolute 1e-9 for values of
//! magnitude <= 1 and relative 1e-9 above.

use serde_json::Value;
use tril_rewards::best_of_n::{best_of_n, best_of_n_mean, kl_bon};
use tril_rewards::ensemble::{combine, mean, spread, uwo, variance, wco, EnsembleConfig, EnsembleObjective};

const TOL: f64 = 1e-9;

fn expected() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ensemble/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn vec1(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn vec2(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(vec1).collect()
}

/// Scaled error `|got - want| / max(1, |want|)`, maximized over the slice.
fn max_err(got: &[f64], want: &[f64], what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max)
}

fn check(got: &[f64], want: &[f64], what: &str, worst: &mut f64) {
    let err = max_err(got, want, what);
    assert!(err <= TOL, "{what}: scaled error {err:e}\n got {got:?}\nwant {want:?}");
    *worst = worst.max(err);
}

#[test]
fn ensemble_objectives_match_numpy() {
    let mut worst = 0.0f64;
    for case in expected()["ensemble"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let scores = vec2(&case["scores"]); // [K, N]
        check(&mean(&scores).unwrap(), &vec1(&case["mean"]), &format!("{name} mean"), &mut worst);
        check(&wco(&scores).unwrap(), &vec1(&case["wco"]), &format!("{name} wco"), &mut worst);
        check(&variance(&scores).unwrap(), &vec1(&case["var"]), &format!("{name} var"), &mut worst);
        let sp = spread(&scores).unwrap();
        check(&[sp], &[case["spread"].as_f64().unwrap()], &format!("{name} spread"), &mut worst);
        for u in case["uwo"].as_array().unwrap() {
            let w = u["weight"].as_f64().unwrap();
            let want = vec1(&u["values"]);
            let what = format!("{name} uwo({w})");
            check(&uwo(&scores, w).unwrap(), &want, &what, &mut worst);
            let cfg = EnsembleConfig { objective: EnsembleObjective::Uwo, uwo_weight: w };
            let (combined, stats) = combine(&scores, &cfg).unwrap();
            check(&combined, &want, &what, &mut worst);
            assert_eq!(stats.spread, sp);
        }
    }
    println!("ensemble: max scaled error {worst:e}");
}

#[test]
fn best_of_n_matches_enumeration_and_closed_form() {
    let mut worst = 0.0f64;
    for case in expected()["bon"].as_array().unwrap() {
        let name = format!("{} ({})", case["name"].as_str().unwrap(), case["method"]);
        let curve = best_of_n(&vec1(&case["proxy"]), &vec1(&case["gold"])).unwrap();
        let ns: Vec<usize> = curve.iter().map(|p| p.n).collect();
        assert_eq!(ns, (1..=curve.len()).collect::<Vec<_>>(), "{name}: n = 1..=N");
        let proxy: Vec<f64> = curve.iter().map(|p| p.proxy).collect();
        let gold: Vec<f64> = curve.iter().map(|p| p.gold).collect();
        check(&proxy, &vec1(&case["expected_proxy"]), &format!("{name} proxy"), &mut worst);
        check(&gold, &vec1(&case["expected_gold"]), &format!("{name} gold"), &mut worst);
        assert!(curve.iter().all(|p| p.kl == kl_bon(p.n)));
    }
    println!("best-of-n: max scaled error {worst:e}");
}

#[test]
fn best_of_n_mean_over_prompts_matches() {
    let case = &expected()["bon_mean"];
    let curve = best_of_n_mean(&vec2(&case["proxy"]), &vec2(&case["gold"])).unwrap();
    let proxy: Vec<f64> = curve.iter().map(|p| p.proxy).collect();
    let gold: Vec<f64> = curve.iter().map(|p| p.gold).collect();
    let mut worst = 0.0f64;
    check(&proxy, &vec1(&case["expected_proxy"]), "mean proxy", &mut worst);
    check(&gold, &vec1(&case["expected_gold"]), "mean gold", &mut worst);
    println!("best-of-n mean over prompts: max scaled error {worst:e}");
}

#[test]
fn kl_bon_matches_numpy() {
    let mut worst = 0.0f64;
    for case in expected()["kl_bon"].as_array().unwrap() {
        let n = case["n"].as_u64().unwrap() as usize;
        check(&[kl_bon(n)], &[case["kl"].as_f64().unwrap()], &format!("kl_bon({n})"), &mut worst);
    }
    println!("kl_bon: max scaled error {worst:e}");
}
