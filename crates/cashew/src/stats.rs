//! The stats cashew reports, with nutcracker's names and descriptions so that
//! existing monitoring reads them unchanged.

#[derive(Clone, Copy, Debug)]
pub struct StatInfo {
    pub name: &'static str,
    pub description: &'static str,
}

const fn stat(name: &'static str, description: &'static str) -> StatInfo {
    StatInfo { name, description }
}

pub const POOL_STATS: [StatInfo; 6] = [
    stat("client_eof", "# eof on client connections"),
    stat("client_err", "# errors on client connections"),
    stat("client_connections", "# active client connections"),
    stat("server_ejects", "# times backend server was ejected"),
    stat("forward_error", "# times we encountered a forwarding error"),
    stat(
        "fragments",
        "# fragments created from a multi-vector request",
    ),
];

pub const SERVER_STATS: [StatInfo; 13] = [
    stat("server_eof", "# eof on server connections"),
    stat("server_err", "# errors on server connections"),
    stat("server_timedout", "# timeouts on server connections"),
    stat("server_connections", "# active server connections"),
    stat(
        "server_ejected_at",
        "timestamp when server was ejected in usec since epoch",
    ),
    stat("requests", "# requests"),
    stat("request_bytes", "total request bytes"),
    stat("responses", "# responses"),
    stat("response_bytes", "total response bytes"),
    stat("in_queue", "# requests in incoming queue"),
    stat("in_queue_bytes", "current request bytes in incoming queue"),
    stat("out_queue", "# requests in outgoing queue"),
    stat("out_queue_bytes", "current request bytes in outgoing queue"),
];

/// The text of `-D`, laid out as nutcracker lays it out.
pub fn describe() -> String {
    let mut out = String::new();
    for (title, stats) in [
        ("pool stats:", &POOL_STATS[..]),
        ("server stats:", &SERVER_STATS[..]),
    ] {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(title);
        out.push('\n');
        for s in stats {
            out.push_str(&format!("  {:<20}\"{}\"\n", s.name, s.description));
        }
    }
    out
}
