//! cashew: a cache proxy for memcached and redis that reads nutcracker's config,
//! takes its flags and places every key where nutcracker would.

mod cli;
mod route_cmd;
mod stats;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // A bad flag prints usage and exits 1, as nutcracker does.
            let message = e.render().to_string();
            eprint!("{message}");
            if !message.contains("Usage:") {
                eprintln!("\n{}", Cli::command().render_usage());
            }
            return ExitCode::from(1);
        }
    };

    match &cli.command {
        Some(Command::Route(args)) => report(route_cmd::run(args)),
        None if cli.describe_stats => {
            print!("{}", stats::describe());
            ExitCode::SUCCESS
        }
        None if cli.test_conf => test_conf(&cli),
        None => report(run_proxy(&cli)),
    }
}

fn test_conf(cli: &Cli) -> ExitCode {
    let file = cli.conf_file.display();
    match cashew_config::load(&cli.conf_file) {
        Ok(_) => {
            println!("configuration file '{file}' syntax is ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("configuration file '{file}' syntax is invalid");
            ExitCode::from(1)
        }
    }
}

fn run_proxy(cli: &Cli) -> Result<(), String> {
    let _config = cashew_config::load(&cli.conf_file).map_err(|e| e.to_string())?;
    Err(
        "the proxy is not available in this build yet; use -t to check a config \
         or 'cashew route' to place keys"
            .into(),
    )
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cashew: {message}");
            ExitCode::from(1)
        }
    }
}
