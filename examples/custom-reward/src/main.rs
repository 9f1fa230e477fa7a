//! tril with the `custom_reward` plugin linked in: the three lines a plugin author writes.
use custom_reward as _;
fn main() -> std::process::ExitCode {
    tril::main()
}
