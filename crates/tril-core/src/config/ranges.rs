//! Value ranges of typed configs, checked at config time.
//!
//! Every typed config that a registry entry reads implements [`Ranges`]: after the
//! section deserializes, [`Ranges::check_ranges`] states the range of each numeric key
//! through a [`Checker`] bound to the section, so that a value out of range is refused by
//! `tril config` and `tril run` before anything is built, with a
//! [`CoreError::InvalidValue`] naming the dotted key, the value as written and its
//! file:line (or command line / environment variable):
//!
//! ```text
//! alg.args.gamma: expected a number in [0, 1], found 2 (command line `alg.args.gamma=2`)
//! ```
//!
//! Ranges are written as Rust ranges: `0.0..=1.0` is `[0, 1]`, `0.0..0.5` is `[0, 0.5)`,
//! and `(Bound::Excluded(0.0), Bound::Included(1.0))` is `(0, 1]`. Every float check also
//! requires a finite value; independently of the typed configs, [`Config::non_finite`]
//! refuses `.inf`, `-.inf` and `.nan` anywhere in a composed config (`tril config` and
//! `tril run` run it before any section is read).
//!
//! ```
//! use tril_core::config::{parse_yaml, Checker, Config, Ranges};
//! use std::path::Path;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Args { gamma: f64, n_epochs: usize }
//!
//! impl Ranges for Args {
//!     fn check_ranges(&self, c: &Checker<'_>) -> tril_core::Result<()> {
//!         c.in_range("gamma", self.gamma, 0.0..=1.0)?;
//!         c.at_least("n_epochs", self.n_epochs, 1)
//!     }
//! }
//!
//! let root = parse_yaml("alg:\n  args:\n    gamma: 2\n    n_epochs: 1\n", Path::new("alg/ppo.yaml")).unwrap();
//! let config = Config::new(root, vec![]);
//! let err = config.section("alg.args").unwrap().extract_checked::<Args>().err().unwrap().to_string();
//! assert_eq!(err, "alg.args.gamma: expected a number in [0, 1], found 2 (alg/ppo.yaml:3)");
//! ```

use super::node::{format_float, join_path, Node, Value};
use super::typed::{Config, Section};
use crate::error::{CoreError, Result};
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::ops::{Bound, RangeBounds};

/// The value ranges of a typed config: implemented beside each struct that a registry
/// entry (or the root schema) deserializes.
///
/// The registry's default check ([`crate::registry::check_config`]) extracts the struct
/// and then calls [`Ranges::check_ranges`], so every registered config states its ranges.
/// A config without numeric keys implements it by returning `Ok(())`.
pub trait Ranges {
    /// Checks every numeric key against its range; `c` is bound to the section the value
    /// was read from, so errors name the key, the value as written and its origin.
    fn check_ranges(&self, c: &Checker<'_>) -> Result<()>;
}

impl<T: Ranges> Ranges for Option<T> {
    fn check_ranges(&self, c: &Checker<'_>) -> Result<()> {
        self.as_ref().map_or(Ok(()), |v| v.check_ranges(c))
    }
}

/// A value that is deserialized but not read (a section validated elsewhere) has no range.
impl Ranges for serde::de::IgnoredAny {
    fn check_ranges(&self, _: &Checker<'_>) -> Result<()> {
        Ok(())
    }
}

/// Range checks bound to a config [`Section`]: each failure is a
/// [`CoreError::InvalidValue`] with the dotted key, the value as written in the config
/// (or the value in effect, marked `(default)`, when the key is absent) and its origin.
#[derive(Debug, Clone)]
pub struct Checker<'a> {
    section: Section<'a>,
}

impl<'a> Checker<'a> {
    /// A checker over `section`.
    pub fn new(section: Section<'a>) -> Self {
        Checker { section }
    }

    /// The section checked.
    pub fn section(&self) -> &Section<'a> {
        &self.section
    }

    /// A checker over the sub-map at `field` (a nested typed config, such as GAIL's
    /// discriminator `args`); an absent field checks against a null node pointing at this
    /// section's origin.
    pub fn nested(&self, field: &str) -> Checker<'a> {
        let key = join_path(self.section.key(), field);
        match self.section.node().get(field) {
            Some(node) => Checker::new(Section::new(key, node)),
            None => Checker::new(Section::absent(key, self.section.origin().clone())),
        }
    }

    /// An error about `field`: `message` says what was expected. The value is the one
    /// written in the config; an absent field reads `null`.
    pub fn invalid(&self, field: &str, message: impl Into<String>) -> CoreError {
        invalid(&self.section, field, message)
    }

    /// An error about `field` whose value in effect is `value`: the value as written when
    /// the field is present, else `value (default)`.
    pub fn invalid_value(&self, field: &str, value: impl Display, message: impl Into<String>) -> CoreError {
        let node = self.section.node();
        let (value, origin) = match node.get(field) {
            Some(n) => (n.value.to_string(), n.origin.clone()),
            None => (format!("{value} (default)"), self.section.origin().clone()),
        };
        CoreError::InvalidValue { key: join_path(self.section.key(), field), value, message: message.into(), origin }
    }

    /// Fails unless `ok`, with [`Checker::invalid`]'s error.
    pub fn ensure(&self, ok: bool, field: &str, message: impl Into<String>) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.invalid(field, message))
        }
    }

    /// `value` must be finite.
    pub fn finite(&self, field: &str, value: f64) -> Result<()> {
        self.satisfies(value.is_finite(), field, Float(value), "expected a finite number")
    }

    /// `value` must be finite and `> 0`.
    pub fn positive(&self, field: &str, value: f64) -> Result<()> {
        self.satisfies(value.is_finite() && value > 0.0, field, Float(value), "expected a finite number > 0")
    }

    /// `value` must be finite and `>= 0`.
    pub fn non_negative(&self, field: &str, value: f64) -> Result<()> {
        self.satisfies(value.is_finite() && value >= 0.0, field, Float(value), "expected a finite number >= 0")
    }

    /// `value` must be a probability: in `[0, 1]`.
    pub fn probability(&self, field: &str, value: f64) -> Result<()> {
        self.in_range(field, value, 0.0..=1.0)
    }

    /// `value` must be finite and in `range` (`a..=b` is `[a, b]`, `a..b` is `[a, b)`,
    /// `(Bound::Excluded(a), Bound::Included(b))` is `(a, b]`, `a..` is `>= a`).
    pub fn in_range(&self, field: &str, value: f64, range: impl RangeBounds<f64>) -> Result<()> {
        let ok = value.is_finite() && range.contains(&value);
        if ok {
            return Ok(());
        }
        Err(self.invalid_value(field, Float(value), format!("expected a number {}", describe(&range))))
    }

    /// An integer `value` must be at least `min` (`batch_size >= 1`, ...).
    pub fn at_least<T: PartialOrd + Display + Copy>(&self, field: &str, value: T, min: T) -> Result<()> {
        self.satisfies(value >= min, field, value, format!("expected at least {min}"))
    }

    /// An integer `value` must be at most `max`.
    pub fn at_most<T: PartialOrd + Display + Copy>(&self, field: &str, value: T, max: T) -> Result<()> {
        self.satisfies(value <= max, field, value, format!("expected at most {max}"))
    }

    /// Runs a nested config's ranges against the sub-map at `field`.
    pub fn nested_ranges<T: Ranges>(&self, field: &str, value: &T) -> Result<()> {
        value.check_ranges(&self.nested(field))
    }

    /// Fails unless `ok`, naming `field` with its value in effect `value` (see
    /// [`Checker::invalid_value`]): for ranges that depend on other keys.
    pub fn satisfies(&self, ok: bool, field: &str, value: impl Display, message: impl Into<String>) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.invalid_value(field, value, message))
        }
    }
}

/// A float displayed as the config writes it (`1.0`, `.inf`).
struct Float(f64);

impl Display for Float {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_float(self.0))
    }
}

/// `in [0, 1)`, `in (0, 1]`, `>= 0`, `< 2`, ...
fn describe(range: &impl RangeBounds<f64>) -> String {
    let num = |x: &f64| {
        let s = format_float(*x);
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    };
    match (range.start_bound(), range.end_bound()) {
        (Bound::Unbounded, Bound::Unbounded) => "(any finite number)".to_string(),
        (Bound::Included(a), Bound::Unbounded) => format!(">= {}", num(a)),
        (Bound::Excluded(a), Bound::Unbounded) => format!("> {}", num(a)),
        (Bound::Unbounded, Bound::Included(b)) => format!("<= {}", num(b)),
        (Bound::Unbounded, Bound::Excluded(b)) => format!("< {}", num(b)),
        (start, end) => {
            let side = |b: Bound<&f64>, incl: char, excl: char| match b {
                Bound::Included(x) => (incl, num(x)),
                Bound::Excluded(x) => (excl, num(x)),
                Bound::Unbounded => (excl, String::new()),
            };
            let ((open, a), (close, b)) = (side(start, '[', '('), side(end, ']', ')'));
            format!("in {open}{a}, {b}{close}")
        }
    }
}

/// An error about `section.field`: `message` says what was expected.
///
/// When the field is absent, the value reads `null` and the origin is the section's.
pub fn invalid(section: &Section<'_>, field: &str, message: impl Into<String>) -> CoreError {
    let node = section.node();
    let (value, origin) = match node.get(field) {
        Some(n) => (n.value.to_string(), n.origin.clone()),
        None => (Value::Null.to_string(), section.origin().clone()),
    };
    CoreError::InvalidValue { key: join_path(section.key(), field), value, message: message.into(), origin }
}

/// Fails unless `ok`, with [`invalid`]'s error.
pub fn ensure(ok: bool, section: &Section<'_>, field: &str, message: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(invalid(section, field, message))
    }
}

impl Section<'_> {
    /// Deserializes this section into `T` ([`Section::extract`]) and checks its
    /// [`Ranges`].
    pub fn extract_checked<T: DeserializeOwned + Ranges>(&self) -> Result<T> {
        let value: T = self.extract()?;
        value.check_ranges(&Checker::new(self.clone()))?;
        Ok(value)
    }
}

impl Config {
    /// Every non-finite float (`.inf`, `-.inf`, `.nan`) anywhere in the config, each as a
    /// [`CoreError::InvalidValue`] with its key, value and origin. No config key means an
    /// infinite or undefined number, so these are refused before any section is read.
    pub fn non_finite(&self) -> Vec<CoreError> {
        non_finite(self.root(), "")
    }
}

/// [`Config::non_finite`] on any node; `prefix` is the node's dotted key.
pub fn non_finite(node: &Node, prefix: &str) -> Vec<CoreError> {
    let mut errors = Vec::new();
    node.visit_leaves(prefix, &mut |path, leaf| {
        if let Value::Float(x) = leaf.value {
            if !x.is_finite() {
                errors.push(CoreError::InvalidValue {
                    key: path.to_string(),
                    value: leaf.value.to_string(),
                    message: "expected a finite number".into(),
                    origin: leaf.origin.clone(),
                });
            }
        }
    });
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::new(parse_yaml(text, Path::new("alg/ppo.yaml")).unwrap(), vec![])
    }

    fn err(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn checks_name_key_value_and_line() {
        let c = config("args:\n  gamma: 2\n  lr: .inf\n  n: 0\n  p: 0.5\n  eps: 0\n");
        let k = Checker::new(c.section("args").unwrap());
        assert_eq!(
            err(k.probability("gamma", 2.0)),
            "args.gamma: expected a number in [0, 1], found 2 (alg/ppo.yaml:2)"
        );
        assert_eq!(
            err(k.positive("lr", f64::INFINITY)),
            "args.lr: expected a finite number > 0, found .inf (alg/ppo.yaml:3)"
        );
        assert_eq!(err(k.at_least("n", 0usize, 1)), "args.n: expected at least 1, found 0 (alg/ppo.yaml:4)");
        assert!(k.in_range("p", 0.5, 0.0..=0.5).is_ok());
        assert_eq!(
            err(k.in_range("p", 0.5, 0.0..0.5)),
            "args.p: expected a number in [0, 0.5), found 0.5 (alg/ppo.yaml:5)"
        );
        let open_closed = (Bound::Excluded(0.0), Bound::Included(1.0));
        assert_eq!(
            err(k.in_range("eps", 0.0, open_closed)),
            "args.eps: expected a number in (0, 1], found 0 (alg/ppo.yaml:6)"
        );
        assert!(k.in_range("eps", 1.0, open_closed).is_ok());
        assert!(k.non_negative("eps", 0.0).is_ok());
        assert!(k.non_negative("eps", -1.0).is_err());
        assert!(k.non_negative("eps", f64::NAN).is_err());
        assert!(k.at_most("n", 3usize, 2).is_err());
        assert!(k.finite("lr", f64::NEG_INFINITY).is_err());
        assert_eq!(err(k.in_range("p", 0.5, 2.0..)), "args.p: expected a number >= 2, found 0.5 (alg/ppo.yaml:5)");
    }

    #[test]
    fn absent_keys_report_the_default_and_the_section() {
        let c = config("args:\n  gamma: 0.9\n");
        let k = Checker::new(c.section("args").unwrap());
        assert_eq!(
            err(k.at_least("n_epochs", 0usize, 1)),
            "args.n_epochs: expected at least 1, found 0 (default) (alg/ppo.yaml:2)"
        );
        assert_eq!(err(k.ensure(false, "x", "expected y")), "args.x: expected y, found null (alg/ppo.yaml:2)");
        let nested = k.nested("disc");
        assert_eq!(
            err(nested.positive("lr", 0.0)),
            "args.disc.lr: expected a finite number > 0, found 0.0 (default) (alg/ppo.yaml:2)"
        );
    }

    #[test]
    fn nested_sections_and_list_items() {
        let c = config("args:\n  disc:\n    lr: -1\n  betas: [0.9, 1.0]\n");
        let k = Checker::new(c.section("args").unwrap());
        assert_eq!(
            err(k.nested("disc").positive("lr", -1.0)),
            "args.disc.lr: expected a finite number > 0, found -1 (alg/ppo.yaml:3)"
        );
        let e = err(k.in_range("betas.1", 1.0, 0.0..1.0));
        assert!(e.starts_with("args.betas.1: expected a number in [0, 1), found 1.0"), "{e}");
    }

    #[test]
    fn non_finite_floats_are_found_anywhere() {
        let c = config("a:\n  b: .inf\n  c: [1.0, .nan]\nd: -.inf\ne: 1e300\nf: 2\n");
        let errors: Vec<String> = c.non_finite().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errors,
            [
                "a.b: expected a finite number, found .inf (alg/ppo.yaml:2)",
                "a.c.1: expected a finite number, found .nan (alg/ppo.yaml:3)",
                "d: expected a finite number, found -.inf (alg/ppo.yaml:4)",
            ]
        );
    }

    #[test]
    fn describes_ranges() {
        assert_eq!(describe(&(0.0..=1.0)), "in [0, 1]");
        assert_eq!(describe(&(0.0..)), ">= 0");
        assert_eq!(describe(&(..1.0)), "< 1");
        assert_eq!(describe(&(Bound::Excluded(0.0), Bound::Unbounded)), "> 0");
        assert_eq!(describe(&(Bound::Excluded(0.0), Bound::Excluded(0.5))), "in (0, 0.5)");
    }
}
