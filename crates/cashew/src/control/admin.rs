//! The admin API: HTTP/1.1 on the main thread's event loop, never on a worker, so
//! nothing done to it can slow the data plane. With a token set, every call needs
//! it but `GET /health` and `GET /ready` (probes carry no credentials), and
//! `/metrics` with `--metrics-public`. No reply ever holds a secret.
//!
//! The listener is hardened against clients that hold connections: at most
//! [`MAX_CONNECTIONS`] at once (a new one closes the oldest that is not in a
//! call), headers must arrive within [`HEADER_TIMEOUT`] (an idle kept-alive
//! connection too), and a request may carry at most [`MAX_BODY`] bytes of body.

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Phase, Request, Supervisor};
use crate::log::{INFO, NOTICE, WARN};
use crate::log_at;
use crate::net::{Listener, Stream};
use crate::reports::status::{self, generation_info};
use crate::reports::{api, insight};

type Reply = Response<Full<Bytes>>;

/// Admin connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers, or to start the next one.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body taken (no endpoint reads one).
pub(crate) const MAX_BODY: u64 = 64 * 1024;
/// Bytes hyper buffers for one request's headers.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// One admin connection: when it came, and whether a call on it is being answered.
struct Connection {
    accepted: Instant,
    calls: Rc<Cell<u32>>,
    task: JoinHandle<()>,
}

pub(crate) async fn serve(listener: Listener, supervisor: Rc<Supervisor>) {
    let mut open: Vec<Connection> = Vec::new();
    let mut refused_logged: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                log_at!(WARN, "admin API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        open.retain(|c| !c.task.is_finished());
        if open.len() >= MAX_CONNECTIONS {
            // Make room by closing the connection held longest without a call in
            // progress: a slow or idle client cannot lock operators out.
            let idle = open
                .iter()
                .enumerate()
                .filter(|(_, c)| c.calls.get() == 0)
                .min_by_key(|(_, c)| c.accepted)
                .map(|(i, _)| i);
            if refused_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                refused_logged = Some(Instant::now());
                log_at!(
                    INFO,
                    "admin API: {MAX_CONNECTIONS} connections open; {}",
                    match idle {
                        Some(_) => "closing the oldest one that is not in a call",
                        None => "refusing a new one",
                    }
                );
            }
            match idle {
                Some(i) => open.swap_remove(i).task.abort(),
                None => continue,
            }
        }
        let calls = Rc::new(Cell::new(0));
        let task = tokio::task::spawn_local(connection(stream, supervisor.clone(), calls.clone()));
        open.push(Connection {
            accepted: Instant::now(),
            calls,
            task,
        });
    }
}

async fn connection(stream: Stream, supervisor: Rc<Supervisor>, calls: Rc<Cell<u32>>) {
    let service = hyper::service::service_fn(move |request| {
        let (supervisor, calls) = (supervisor.clone(), calls.clone());
        async move {
            calls.set(calls.get() + 1);
            let reply = handle(&supervisor, request).await;
            calls.set(calls.get() - 1);
            Ok::<_, Infallible>(reply)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Who may make a call.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    /// Anyone: the probes.
    Open,
    /// Anyone with `--metrics-public`, else the token.
    Metrics,
    Token,
}

fn access(method: &Method, path: &[&str]) -> Access {
    match (method, path) {
        // The status page holds no data; what it shows it asks for with the token.
        (&Method::GET | &Method::HEAD, ["health" | "ready"] | []) => Access::Open,
        (_, ["metrics"]) => Access::Metrics,
        _ => Access::Token,
    }
}

async fn handle(supervisor: &Supervisor, request: HttpRequest<Incoming>) -> Reply {
    let segments: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    if request.body().size_hint().lower() > MAX_BODY {
        let mut reply = json_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &api::Failure::new(format!(
                "a request body may be at most {MAX_BODY} bytes; no endpoint reads one"
            )),
        );
        reply
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return reply;
    }
    let needs_token = match access(&method, &path) {
        Access::Open => false,
        Access::Metrics => !supervisor.options().metrics_public,
        Access::Token => true,
    };
    if needs_token && !authorized(supervisor, &request) {
        let mut reply = json_reply(
            StatusCode::UNAUTHORIZED,
            &api::Failure::new("this call needs the admin token: Authorization: Bearer TOKEN"),
        );
        reply
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return reply;
    }
    let reads = matches!(method, Method::GET | Method::HEAD);
    match (reads, method == Method::POST, path.as_slice()) {
        (true, _, ["health"]) => json_reply(
            StatusCode::OK,
            &api::Health {
                status: "ok".into(),
                pid: std::process::id(),
            },
        ),
        (true, _, ["ready"]) => ready(supervisor),
        (true, _, ["stats"]) => text_reply(supervisor.stats_json(), "application/json"),
        (true, _, ["metrics"]) => text_reply(
            crate::reports::metrics::render(supervisor.generation()),
            crate::reports::metrics::CONTENT_TYPE,
        ),
        (true, _, ["hotkeys"]) => {
            json_reply(StatusCode::OK, &insight::hotkeys(&supervisor.generation()))
        }
        (true, _, ["slowlog"]) => {
            json_reply(StatusCode::OK, &insight::slowlog(&supervisor.generation()))
        }
        (true, _, ["clients"]) => json_reply(StatusCode::OK, &insight::clients()),
        (_, true, ["clients", id, "kill"]) => kill_client(id),
        (true, _, []) => text_reply(STATUS_PAGE.to_string(), "text/html; charset=utf-8"),
        (true, _, ["shadow"]) => {
            json_reply(StatusCode::OK, &insight::shadow(&supervisor.generation()))
        }
        (true, _, ["config"]) => {
            let generation = supervisor.generation();
            let view = api::ConfigView {
                generation: generation_info(&generation),
                // The file as written but for its secrets; the checksum stays the file's.
                text: cashew_config::redact(&generation.source.text),
            };
            json_reply(StatusCode::OK, &view)
        }
        (true, _, ["status"]) => {
            let phase = supervisor.phase().name();
            let status = status::status(&supervisor.generation(), phase, |p| supervisor.rate(p));
            json_reply(StatusCode::OK, &status)
        }
        (_, true, ["reload"]) => reload(supervisor).await,
        (_, true, ["restart"]) => restart(supervisor).await,
        (_, true, ["stop"]) => {
            supervisor.request(Request::Stop);
            let stopping = api::Stopping {
                status: "draining".into(),
            };
            json_reply(StatusCode::ACCEPTED, &stopping)
        }
        (_, true, ["pools", pool, "servers", server, action @ ("eject" | "restore")]) => {
            eject(supervisor, pool, server, action)
        }
        (
            _,
            _,
            ["health" | "ready" | "stats" | "metrics" | "hotkeys" | "slowlog" | "shadow" | "clients"
            | "config" | "status"],
        )
        | (_, _, ["reload" | "restart" | "stop"])
        | (_, _, ["clients", _, "kill"])
        | (_, _, ["pools", _, "servers", _, "eject" | "restore"]) => json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &api::Failure::new(format!("{method} is not allowed here")),
        ),
        _ => {
            let endpoints = [
                "GET /",
                "GET /health",
                "GET /ready",
                "GET /stats",
                "GET /metrics",
                "GET /hotkeys",
                "GET /slowlog",
                "GET /shadow",
                "GET /clients",
                "GET /config",
                "GET /status",
                "POST /reload",
                "POST /restart",
                "POST /stop",
                "POST /clients/{id}/kill",
                "POST /pools/{pool}/servers/{server}/eject",
                "POST /pools/{pool}/servers/{server}/restore",
            ];
            let failure = api::Failure {
                endpoints: endpoints.map(String::from).to_vec(),
                ..api::Failure::new("no such endpoint")
            };
            json_reply(StatusCode::NOT_FOUND, &failure)
        }
    }
}

/// Closes a client's connection (as Redis's `CLIENT KILL ID`).
fn kill_client(id: &str) -> Reply {
    let card = id.parse::<u64>().ok().and_then(crate::state::clients::kill);
    match card {
        Some(card) => {
            log_at!(
                NOTICE,
                "pool '{}': closing client {} ({}): asked by the admin API",
                card.pool,
                card.id,
                card.address
            );
            let killed = api::Killed {
                killed: card.id,
                pool: card.pool.clone(),
                address: card.address.clone(),
            };
            json_reply(StatusCode::OK, &killed)
        }
        None => json_reply(
            StatusCode::NOT_FOUND,
            &api::Failure::new(format!(
                "no client {id} is connected (GET /clients lists them)"
            )),
        ),
    }
}

/// A path segment with `%XX` escapes decoded (server names may hold `/` or spaces).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn authorized(supervisor: &Supervisor, request: &HttpRequest<Incoming>) -> bool {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    supervisor.admin_token_matches(given)
}

/// `GET /`: the status page, self-contained (it reads `/status`, `/hotkeys` and
/// `/slowlog` once a second and ejects and restores servers).
const STATUS_PAGE: &str = include_str!("status_page.html");

fn json_reply(status: StatusCode, body: &impl Serialize) -> Reply {
    let mut text = serde_json::to_string(body).expect("admin documents serialize");
    text.push('\n');
    let mut reply = text_reply(text, "application/json");
    *reply.status_mut() = status;
    reply
}

fn text_reply(text: String, content_type: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

fn ready(supervisor: &Supervisor) -> Reply {
    let phase = supervisor.phase();
    let ready = matches!(phase, Phase::Serving | Phase::Restarting);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = api::Ready {
        ready,
        phase: phase.name().into(),
        generation: supervisor.generation().number,
    };
    json_reply(status, &body)
}

async fn reload(supervisor: &Supervisor) -> Reply {
    let (tx, rx) = oneshot::channel();
    supervisor.request(Request::Reload(tx));
    match rx.await {
        Ok(Ok(generation)) => {
            let reloaded = api::Reloaded {
                generation: generation.number,
                loaded_at: generation.source.loaded_at_secs(),
                checksum: generation.source.checksum.clone(),
                pools: generation
                    .config
                    .pools
                    .iter()
                    .map(|p| p.name.clone())
                    .collect(),
            };
            json_reply(StatusCode::OK, &reloaded)
        }
        Ok(Err(errors)) => {
            let failure = api::Failure {
                generation: Some(supervisor.generation().number),
                ..api::Failure::new(errors)
            };
            json_reply(StatusCode::BAD_REQUEST, &failure)
        }
        Err(_) => stopping(),
    }
}

fn stopping() -> Reply {
    json_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        &api::Failure::new("cashew is stopping"),
    )
}

async fn restart(supervisor: &Supervisor) -> Reply {
    let (tx, rx) = oneshot::channel();
    supervisor.request(Request::Restart(tx));
    match rx.await {
        Ok(Ok(pid)) => json_reply(StatusCode::OK, &api::Restarted { pid }),
        Ok(Err(why)) => json_reply(StatusCode::INTERNAL_SERVER_ERROR, &api::Failure::new(why)),
        Err(_) => stopping(),
    }
}

fn eject(supervisor: &Supervisor, pool: &str, server: &str, action: &str) -> Reply {
    let generation = supervisor.generation();
    let Some(p) = generation.pool_index(pool) else {
        let failure = api::Failure::new(format!("no pool '{pool}'"));
        return json_reply(StatusCode::NOT_FOUND, &failure);
    };
    let config = &generation.config.pools[p];
    let Some(s) = config.servers.iter().position(|s| s.name() == server) else {
        let failure = api::Failure {
            servers: config
                .servers
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            ..api::Failure::new(format!("pool '{pool}' has no server '{server}'"))
        };
        return json_reply(StatusCode::NOT_FOUND, &failure);
    };
    let health = &generation.pools[p].servers[s];
    if action == "eject" {
        health.eject_by_hand();
    } else {
        health.restore();
    }
    log_at!(
        crate::log::NOTICE,
        "pool '{pool}': server '{server}' {} through the admin API",
        if action == "eject" {
            "ejected"
        } else {
            "restored"
        }
    );
    let changed = api::ServerChanged {
        pool: pool.into(),
        server: server.into(),
        state: health.state().name().into(),
    };
    json_reply(StatusCode::OK, &changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("%2Ftmp%2Fmc.sock:"), "/tmp/mc.sock:");
        assert_eq!(percent_decode("cache%20a"), "cache a");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn only_the_probes_and_the_status_page_are_open_and_metrics_may_be() {
        let get = |path: &[&str]| access(&Method::GET, path);
        assert_eq!(get(&["health"]), Access::Open);
        assert_eq!(get(&["ready"]), Access::Open);
        assert_eq!(access(&Method::HEAD, &["health"]), Access::Open);
        assert_eq!(access(&Method::POST, &["health"]), Access::Token);
        assert_eq!(get(&["metrics"]), Access::Metrics);
        for path in [
            "stats", "config", "status", "hotkeys", "slowlog", "shadow", "clients", "nothing",
        ] {
            assert_eq!(get(&[path]), Access::Token, "{path}");
        }
        // The page itself; what it shows it asks for with the token.
        assert_eq!(get(&[]), Access::Open);
        assert_eq!(access(&Method::POST, &[]), Access::Token);
        assert_eq!(access(&Method::POST, &["reload"]), Access::Token);
    }
}
