//! The `tril` command.
fn main() -> std::process::ExitCode {
    tril::main()
}
