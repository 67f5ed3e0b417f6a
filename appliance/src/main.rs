//! The `parvis` command: parse arguments, hand over to the library.

fn main() -> std::process::ExitCode {
    parvis::cli::main()
}
