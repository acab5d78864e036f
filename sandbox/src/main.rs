//! psctl-sandbox: brings up, inspects and tears down the local Kubernetes test bed.

mod base_image;
mod cli;
mod down;
mod env;
mod fault;
mod pgproxy;
mod probe;
mod process;
mod render;
mod rules;
mod run;
mod secrets;
mod serve;
mod settings;
mod status;
mod targets;
mod up;
mod yaml;

fn main() -> std::process::ExitCode {
    run::main()
}
