//! Rebuild when the embedded `cfgs/` change (include_dir does not track files itself).
fn main() {
    println!("cargo:rerun-if-changed=../../cfgs");
    for group in ["", "task", "alg", "logging"] {
        println!("cargo:rerun-if-changed=../../cfgs/{group}");
    }
}
