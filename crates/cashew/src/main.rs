//! cashew: a cache proxy for memcached and redis that reads nutcracker's config,
//! takes its flags and places every key where nutcracker would.

mod cli;
mod log;
mod process;
mod proxy;
mod route_cmd;
mod signals;
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
    // Paths are made absolute first, while the working directory is the user's.
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let output = cli.output.as_deref().map(absolute);
    log::init(cli.verbose, output.clone()).map_err(|e| {
        let file = output.unwrap_or_default();
        format!("cannot open log file {}: {e}", file.display())
    })?;
    let config = cashew_config::load(&cli.conf_file).map_err(|e| e.to_string())?;
    let threads = cli
        .threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let settings = proxy::Settings {
        threads,
        stats_addr: cli.stats_addr.clone(),
        stats_port: cli.stats_port,
    };
    let prepared = proxy::prepare(config, settings)?;
    if cli.daemonize {
        process::daemonize()?;
    }
    let _pid_file = match &cli.pid_file {
        Some(path) => Some(process::PidFile::create(&absolute(path))?),
        None => None,
    };
    signals::install_crash_handler();
    prepared.serve()
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
