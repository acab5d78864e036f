//! The `psctl` binary: parse, resolve settings, dispatch. Everything else lives in the library.

fn main() -> std::process::ExitCode {
    psctl::run(std::env::args_os())
}
