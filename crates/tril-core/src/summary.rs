//! The one-line summary of an evaluation that the [`crate::tracker::Tracker`] logs at INFO
//! (every key stays in `{split}_split_metrics.jsonl` and in a DEBUG line).
//!
//! The rule ([`headline`]): at most [`MAX_KEYS`] keys, taken tier by tier, each tier in key
//! order:
//!
//! 1. rewards: a last segment ending in `reward` (`over_optimization/proxy_reward`,
//!    `.../gold_reward`), the learned reward (`semantic/learned_automodel_metric`) and
//!    `rewards/margins`;
//! 2. task metrics: the `synthetic/`, `lexical/`, `semantic/`, `fluency_metrics/` and
//!    `supervised/` namespaces;
//! 3. accuracy, loss and NLL: a last segment containing `accurac`, `loss` or `nll`;
//! 4. KL: a last segment `kl`;
//! 5. diversity: `diversity_metrics/distinct-2` and `diversity_metrics/mean_pred_length`
//!    only;
//! 6. any other key, except the rest of `diversity_metrics/` and the proxy reward's
//!    diagnostics (`over_optimization/proxy_<name>`), which never appear.
//!
//! Keys are shown by their last segment (the full key where two shown keys share it;
//! `learned_automodel_metric` as `learned_reward`), values with 4 significant digits.
//!
//! ```
//! use tril_core::summary::eval_line;
//! let line = eval_line("val", 40, &[("diversity_metrics/distinct-1", 0.5), ("synthetic/increasing_numbers", 0.123456)]);
//! assert_eq!(line, "eval val @40: increasing_numbers=0.1235 (+1 more in val_split_metrics.jsonl)");
//! ```

/// The most keys a summary line shows.
pub const MAX_KEYS: usize = 6;

/// The tier of `key` in the summary rule (lower first), or `None` when it is never shown.
pub(crate) fn tier(key: &str) -> Option<u8> {
    let last = key.rsplit('/').next().unwrap_or(key);
    let namespace = key.split_once('/').map_or("", |(ns, _)| ns);
    if last.ends_with("reward") || key == "semantic/learned_automodel_metric" || key == "rewards/margins" {
        Some(1)
    } else if ["synthetic", "lexical", "semantic", "fluency_metrics", "supervised"].contains(&namespace) {
        Some(2)
    } else if namespace == "diversity_metrics" {
        matches!(last, "distinct-2" | "mean_pred_length").then_some(5)
    } else if namespace == "over_optimization" && last.starts_with("proxy_") {
        None
    } else if last.contains("accurac") || last.contains("loss") || last.contains("nll") {
        Some(3)
    } else if last == "kl" {
        Some(4)
    } else {
        Some(6)
    }
}

/// The keys of `keys` a summary shows, in the order shown (see the module docs).
pub fn headline<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ranked: Vec<(u8, &str)> = keys.into_iter().filter_map(|k| tier(k).map(|t| (t, k))).collect();
    ranked.sort();
    ranked.into_iter().take(MAX_KEYS).map(|(_, k)| k).collect()
}

/// `x` with 4 significant digits, trailing zeros dropped (`0.1235`, `123.5`, `1.235e-5`,
/// `12350`, `nan`).
pub fn sig4(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}").to_lowercase();
    }
    if x == 0.0 {
        return "0".into();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        let text = format!("{x:.3e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        return format!("{}e{exponent}", trim_zeros(mantissa));
    }
    let decimals = (3 - magnitude).max(0) as usize;
    trim_zeros(&format!("{x:.decimals$}")).to_string()
}

fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// The short name of `key` among the shown `keys`: its last segment, unless another shown
/// key has the same one.
fn short<'a>(key: &'a str, keys: &[&str]) -> &'a str {
    let last = key.rsplit('/').next().unwrap_or(key);
    let clash = keys.iter().filter(|k| k.rsplit('/').next() == Some(last)).count() > 1;
    match (clash, last) {
        (true, _) => key,
        (false, "learned_automodel_metric") => "learned_reward",
        (false, _) => last,
    }
}

/// The INFO line of an evaluation of `split` at `step`:
/// `eval <split> @<step>: k=v ... (+n more in <split>_split_metrics.jsonl)`.
pub fn eval_line(split: &str, step: usize, values: &[(&str, f64)]) -> String {
    let shown = headline(values.iter().map(|(k, _)| *k));
    let mut line = format!("eval {split} @{step}:");
    for key in &shown {
        let value = values.iter().find(|(k, _)| k == key).map_or(f64::NAN, |(_, v)| *v);
        line.push_str(&format!(" {}={}", short(key, &shown), sig4(value)));
    }
    let more = values.len() - shown.len();
    if more > 0 {
        line.push_str(&format!(" (+{more} more in {split}_split_metrics.jsonl)"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_significant_digits() {
        assert_eq!(sig4(0.123456), "0.1235");
        assert_eq!(sig4(123.456), "123.5");
        assert_eq!(sig4(-2.0), "-2");
        assert_eq!(sig4(0.5), "0.5");
        assert_eq!(sig4(12345.6), "12346");
        assert_eq!(sig4(1234567.0), "1.235e6");
        assert_eq!(sig4(0.0000123456), "1.235e-5");
        assert_eq!(sig4(0.0), "0");
        assert_eq!(sig4(f64::NAN), "nan");
        assert_eq!(sig4(f64::NEG_INFINITY), "-inf");
    }

    /// A PPO evaluation with proxy and gold rewards, a task metric and all of diversity.
    #[test]
    fn rewards_and_task_metrics_first_diversity_reduced() {
        let diversity = [
            "distinct-1",
            "distinct-2",
            "distinct-3",
            "unique-1",
            "unique-2",
            "unique-3",
            "vocab_size-1",
            "vocab_size-2",
            "vocab_size-3",
            "msttr-100",
            "mean_pred_length",
            "std_pred_length",
        ]
        .map(|k| format!("diversity_metrics/{k}"));
        let mut keys: Vec<&str> = diversity.iter().map(String::as_str).collect();
        keys.extend([
            "over_optimization/gold_reward",
            "over_optimization/kl",
            "over_optimization/proxy_reward",
            "over_optimization/proxy_std",
            "semantic/learned_automodel_metric",
            "synthetic/increasing_numbers",
        ]);
        keys.sort();
        assert_eq!(
            headline(keys.iter().copied()),
            [
                "over_optimization/gold_reward",
                "over_optimization/proxy_reward",
                "semantic/learned_automodel_metric",
                "synthetic/increasing_numbers",
                "over_optimization/kl",
                "diversity_metrics/distinct-2",
            ]
        );
        let values: Vec<(&str, f64)> = keys.iter().map(|k| (*k, 0.25)).collect();
        let line = eval_line("val", 7, &values);
        assert_eq!(
            line,
            "eval val @7: gold_reward=0.25 proxy_reward=0.25 learned_reward=0.25 increasing_numbers=0.25 \
             kl=0.25 distinct-2=0.25 (+12 more in val_split_metrics.jsonl)"
        );
        assert!(line.len() < 200);
    }

    /// The reward model and DPO log offline statistics; clashing last segments keep the key.
    #[test]
    fn offline_statistics() {
        let rm = [("accuracy", 0.75), ("loss", 0.6532), ("rewards/chosen", 0.1), ("rewards/margins", 0.2)];
        assert_eq!(eval_line("val", 3, &rm), "eval val @3: margins=0.2 accuracy=0.75 loss=0.6532 chosen=0.1");
        let dpo = [
            ("logps/chosen", -12.0),
            ("logps/rejected", -13.0),
            ("loss", 0.69),
            ("rewards/accuracies", 0.5),
            ("rewards/chosen", 0.01),
            ("rewards/margins", 0.02),
            ("rewards/rejected", -0.01),
        ];
        assert_eq!(
            eval_line("test", 10, &dpo),
            "eval test @10: margins=0.02 loss=0.69 accuracies=0.5 logps/chosen=-12 rejected=-13 \
             rewards/chosen=0.01 (+1 more in test_split_metrics.jsonl)"
        );
    }
}
