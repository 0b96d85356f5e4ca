//! The cashew command: parses the command line and hands over to the library.

use std::process::ExitCode;

use cashew::cli::{Cli, Command};
use cashew::commands::ctl::{self, Action};
use cashew::commands::{route, route_diff, top};
use cashew::{control, log};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

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
        Some(Command::Route(args)) if args.diff.is_some() => match route_diff::run(args) {
            Ok(false) => ExitCode::SUCCESS,
            Ok(true) => ExitCode::from(1),
            Err(message) => {
                eprintln!("cashew: {message}");
                ExitCode::from(2)
            }
        },
        Some(Command::Route(args)) => report(route::run(args)),
        Some(Command::Reload(args)) => ctl::run(Action::Reload, args),
        Some(Command::Stop(args)) => ctl::run(Action::Stop, args),
        Some(Command::Restart(args)) => ctl::run(Action::Restart, args),
        Some(Command::Status(args)) => ctl::run(Action::Status, args),
        Some(Command::Clients(args)) => ctl::run(Action::Clients, args),
        Some(Command::Top(args)) => top::run(args),
        None if cli.describe_stats => {
            print!("{}", cashew::reports::nutcracker::describe());
            ExitCode::SUCCESS
        }
        None if cli.test_conf => test_conf(&cli),
        None => match run_proxy(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                log::fatal(&message);
                ExitCode::from(1)
            }
        },
    }
}

fn test_conf(cli: &Cli) -> ExitCode {
    let file = cli.conf_file.display();
    match cashew::control::check(&cli.conf_file) {
        Ok(()) => {
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
    log::init(cli.verbose, cli.log_format, output.clone()).map_err(|e| {
        let file = output.unwrap_or_default();
        format!("cannot open log file {}: {e}", file.display())
    })?;
    // 0: chosen once the configuration is read (one fewer than the CPUs when a
    // server runs on this host).
    let threads = cli.threads.map_or(0, usize::from);
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    control::run(control::Options {
        conf_file: absolute(&cli.conf_file),
        threads,
        stats_addr: cli.stats_addr.clone(),
        stats_port: cli.stats_port,
        admin: cli.admin.clone(),
        admin_token: cli.admin_token.clone(),
        admin_token_file: cli.admin_token_file.as_deref().map(absolute),
        metrics_public: cli.metrics_public,
        watch_config: cli.watch_config,
        drain_timeout: cli.drain_timeout,
        pid_file: cli.pid_file.as_deref().map(absolute),
        daemonize: cli.daemonize,
        exe,
        args: std::env::args_os().skip(1).collect(),
    })
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
