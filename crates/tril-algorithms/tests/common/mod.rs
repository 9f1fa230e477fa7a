//! Helpers shared by the golden-number tests: JSON fixtures into f32 Burn tensors, and the
//! comparison `|got - want| <= 1e-6 * max(1, |want|)` that also records the largest
//! difference seen per family (printed with `--nocapture`).

#![allow(dead_code)]

use burn::tensor::{Bool, Tensor, TensorData};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The backend every golden test runs on (f32).
pub type Cpu = tril_core::backend::CpuBackend;

/// Relative tolerance: `1e-6 * max(1, |want|)`, i.e. 1e-6 absolute for values of magnitude <= 1.
pub const TOL: f64 = 1e-6;

/// Reads `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect("valid JSON")
}

/// A JSON array of numbers.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// A JSON matrix, row-major, with its number of rows.
pub fn matrix(v: &Value) -> (Vec<f64>, usize) {
    let rows = v.as_array().expect("rows");
    (rows.iter().flat_map(floats).collect(), rows.len())
}

/// `[n]` f32 tensor.
pub fn t1(v: &Value) -> Tensor<Cpu, 1> {
    let data: Vec<f32> = floats(v).into_iter().map(|x| x as f32).collect();
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), &Default::default())
}

/// `[rows, cols]` f32 tensor.
pub fn t2(v: &Value) -> Tensor<Cpu, 2> {
    let (data, rows) = matrix(v);
    let data: Vec<f32> = data.into_iter().map(|x| x as f32).collect();
    let cols = data.len() / rows;
    Tensor::from_data(TensorData::new(data, [rows, cols]), &Default::default())
}

/// `[n]` bool tensor.
pub fn bools(v: &Value) -> Tensor<Cpu, 1, Bool> {
    let data: Vec<bool> = v.as_array().expect("array").iter().map(|b| b.as_bool().expect("bool")).collect();
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), &Default::default())
}

/// The value of a one-element tensor.
pub fn s(x: Tensor<Cpu, 1>) -> f64 {
    f64::from(x.into_scalar())
}

/// All values of a tensor, as f64.
pub fn vals<const D: usize>(x: Tensor<Cpu, D>) -> Vec<f64> {
    x.into_data().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
}

thread_local! {
    static MAX_DIFF: RefCell<BTreeMap<String, f64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Asserts `got` is within [`TOL`] of `want`, and records `|got - want|` under `family`.
pub fn close(family: &str, got: f64, want: f64, what: &str) {
    let diff = (got - want).abs();
    MAX_DIFF.with(|m| {
        let mut m = m.borrow_mut();
        let e = m.entry(family.to_string()).or_insert(0.0);
        *e = e.max(diff);
    });
    assert!(diff <= TOL * want.abs().max(1.0), "{what}: got {got}, reference {want} (|diff| {diff:e})");
}

/// [`close`] for a JSON number.
pub fn close_v(family: &str, got: f64, want: &Value, what: &str) {
    close(family, got, want.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {want}")), what);
}

/// [`close`] element-wise.
pub fn close_all(family: &str, got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        close(family, *g, *w, &format!("{what}[{i}]"));
    }
}

/// Prints the largest |diff| per family recorded on this thread (run with `--nocapture`).
pub fn report() {
    MAX_DIFF.with(|m| {
        for (family, diff) in m.borrow().iter() {
            println!("max |diff| {family}: {diff:e}");
        }
    });
}

/// A JSON object's value as a serde type (enum names, args).
pub fn from_json<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}
