//! The command line: nutcracker's flags, same short and long forms and defaults,
//! plus cashew's own subcommands beside them.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cashew",
    version,
    about = "cashew: a cache proxy for memcached and redis, compatible with nutcracker",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Test configuration for syntax errors and exit
    #[arg(short = 't', long = "test-conf")]
    pub test_conf: bool,

    /// Run as a daemon
    #[arg(short = 'd', long = "daemonize")]
    pub daemonize: bool,

    /// Print stats description and exit
    #[arg(short = 'D', long = "describe-stats")]
    pub describe_stats: bool,

    /// Set logging level (min: 0, max: 11; higher levels mean 11, as in nutcracker)
    #[arg(short = 'v', long = "verbose", value_name = "N", default_value_t = 5,
          value_parser = parse_level)]
    pub verbose: u8,

    /// Set logging file [default: stderr]
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Log line format: text or json (one object per line)
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "text",
          value_parser = parse_log_format)]
    pub log_format: crate::log::Format,

    /// Set configuration file
    #[arg(
        short = 'c',
        long = "conf-file",
        value_name = "FILE",
        default_value = "conf/nutcracker.yml"
    )]
    pub conf_file: PathBuf,

    /// Set stats monitoring port
    #[arg(
        short = 's',
        long = "stats-port",
        value_name = "N",
        default_value_t = 22222
    )]
    pub stats_port: u16,

    /// Set stats monitoring ip
    #[arg(
        short = 'a',
        long = "stats-addr",
        value_name = "ADDR",
        default_value = "0.0.0.0"
    )]
    pub stats_addr: String,

    /// Accepted for nutcracker's command lines and ignored: stats are always current
    #[arg(
        short = 'i',
        long = "stats-interval",
        value_name = "MS",
        default_value_t = 30_000
    )]
    pub stats_interval: u64,

    /// Set pid file [default: off]
    #[arg(short = 'p', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Accepted (512 to 16777216) for nutcracker's command lines and ignored:
    /// buffers are sized to what they hold
    #[arg(short = 'm', long = "mbuf-size", value_name = "N", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(512..=16_777_216))]
    pub mbuf_size: u32,

    /// Worker threads, each with its own event loop [default: number of CPUs, one fewer
    /// when a server is on this host]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Serve the admin API (HTTP) on ADDR:PORT, e.g. 127.0.0.1:22223 [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin: Option<String>,

    /// Bearer token the admin API requires for every call but /health and /ready;
    /// required when --admin is not on a loopback address. A token given here is
    /// visible in `ps`: prefer --admin-token-file or CASHEW_ADMIN_TOKEN
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CASHEW_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Read the admin token from FILE, at start and at every reload (so that it can
    /// be rotated, e.g. a mounted Kubernetes Secret)
    #[arg(long, value_name = "FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,

    /// Serve /metrics without the admin token (the rest of the admin API keeps it)
    #[arg(long)]
    pub metrics_public: bool,

    /// Reload when the configuration file's content changes (checked every second,
    /// after it has stayed the same for a second; follows symlinks, so a mounted
    /// Kubernetes ConfigMap's update is seen)
    #[arg(long)]
    pub watch_config: bool,

    /// Seconds a stop or restart waits for requests in flight before closing clients
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub drain_timeout: std::time::Duration,

    /// nutcracker's `-?`, the same as --help
    #[arg(short = '?', action = ArgAction::Help, hide = true)]
    pub question_mark_help: Option<bool>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the server that holds each key: KEY<TAB>SERVER, one line per key (with
    /// replicas: every server that keeps it, in order, each after a tab)
    Route(RouteArgs),
    /// Make a running cashew reload its configuration file
    Reload(InstanceArgs),
    /// Make a running cashew stop gracefully (answer requests in flight, then exit)
    Stop(InstanceArgs),
    /// Replace a running cashew with a new process of the binary now on disk,
    /// without dropping a connection
    Restart(InstanceArgs),
    /// Show a running cashew's pools, servers and their state
    Status(InstanceArgs),
    /// List a running cashew's client connections (through its admin API)
    Clients(InstanceArgs),
    /// A live view of a running cashew: requests/s, hit ratio, latency, errors,
    /// server states and hot keys, refreshed every second
    Top(TopArgs),
}

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// The instance's admin API address, as given to its --admin
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:22223")]
    pub admin: String,

    #[command(flatten)]
    pub token: TokenArgs,

    /// Print one plain-text frame (rates over one second) and exit
    #[arg(long)]
    pub once: bool,
}

/// How to find a running cashew: its admin API, or its pid file.
#[derive(clap::Args, Debug)]
pub struct InstanceArgs {
    /// The instance's admin API address, as given to its --admin
    #[arg(long, value_name = "ADDR:PORT", required_unless_present = "pid_file")]
    pub admin: Option<String>,

    #[command(flatten)]
    pub token: TokenArgs,

    /// The instance's pid file, as given to its -p (signals are used then)
    #[arg(short = 'p', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Seconds to wait for the operation to complete
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub wait: std::time::Duration,
}

/// The admin API's bearer token, for the commands that call it.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The admin API's bearer token
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CASHEW_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Read the admin API's bearer token from FILE
    #[arg(long, value_name = "FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token given, if any; an unreadable or empty file is an error.
    pub fn token(&self) -> Result<Option<String>, String> {
        match (&self.admin_token, &self.admin_token_file) {
            (_, Some(path)) => crate::reports::api::read_token_file(path).map(Some),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, None) => Ok(None),
        }
    }
}

/// A log level: any whole number, levels above 11 meaning 11 (nutcracker clamps too).
fn parse_level(text: &str) -> Result<u8, String> {
    text.parse::<u64>()
        .map(|level| level.min(11) as u8)
        .map_err(|_| format!("'{text}' is not a log level (0 to 11)"))
}

/// Whole or fractional seconds: `10`, `2.5`.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("'{text}' is not a number of seconds"))
}

#[derive(clap::Args, Debug)]
pub struct RouteArgs {
    /// Configuration file
    #[arg(
        short = 'c',
        long = "conf-file",
        value_name = "FILE",
        default_value = "conf/nutcracker.yml"
    )]
    pub conf_file: PathBuf,

    /// Pool to route in; may be left out when the config has one pool
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,

    /// Keys to route; with none, keys are read from standard input, one per line
    #[arg(value_name = "KEY", conflicts_with = "diff")]
    pub keys: Vec<std::ffi::OsString>,

    /// Compare two configurations: the share of each pool's keys that moves, from
    /// which server to which (exit 0 when nothing moves, 1 when keys move)
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    pub diff: Option<Vec<PathBuf>>,

    /// With --diff: also list the keys of FILE (one a line; - for standard input)
    /// that move
    #[arg(long = "keys", value_name = "FILE", requires = "diff")]
    pub keys_file: Option<PathBuf>,
}

fn parse_log_format(text: &str) -> Result<crate::log::Format, String> {
    match text {
        "text" => Ok(crate::log::Format::Text),
        "json" => Ok(crate::log::Format::Json),
        other => Err(format!("'{other}' is not a log format: text or json")),
    }
}
