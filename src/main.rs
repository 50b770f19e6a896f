//! The `pricebeast` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;

use pricebeast::cli::{self, Cli, Command};
use pricebeast::server::{self, ServeOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.config().and_then(|config| {
            pricebeast::logging::init(&config.log.level, config.log.format);
            server::run(config, ServeOptions { danger_admin_without_token: args.danger_admin_without_token })
        }),
        Command::Keys(command) => cli::keys::run(command),
        Command::Usage(command) => cli::usage::run(command),
        Command::Query(args) => cli::query::run(args),
        Command::MockExchange(args) => cli::mock::run(args),
        Command::Tls(command) => cli::tls::run(command),
        // Threshold and regression failures are exit codes of their own, after the report.
        Command::Stress(args) => match pricebeast::stress::run(args) {
            Ok(0) => Ok(()),
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pricebeast: {e:#}");
            ExitCode::FAILURE
        }
    }
}
