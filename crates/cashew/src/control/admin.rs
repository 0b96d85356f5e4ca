//! The admin API: HTTP/1.1 on the main thread's event loop, never on a worker.
//! Reads are open; every call that changes something needs the bearer token when
//! one is set.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::{Phase, Request, Supervisor};
use crate::log::WARN;
use crate::log_at;
use crate::proxy::health::{ProbeState, ServerState};
use crate::stats::{self, server as st};

type Reply = Response<Full<Bytes>>;

pub async fn serve(listener: tokio::net::TcpListener, supervisor: Rc<Supervisor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log_at!(WARN, "admin API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let supervisor = supervisor.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |request| {
                let supervisor = supervisor.clone();
                async move { Ok::<_, Infallible>(handle(&supervisor, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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
    let reads = matches!(method, Method::GET | Method::HEAD);
    if !reads && !authorized(supervisor, &request) {
        let mut reply = json_reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "this call needs the admin token: Authorization: Bearer TOKEN"}),
        );
        reply
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return reply;
    }
    match (reads, method == Method::POST, path.as_slice()) {
        (true, _, ["health"]) => json_reply(
            StatusCode::OK,
            json!({"status": "ok", "pid": std::process::id()}),
        ),
        (true, _, ["ready"]) => ready(supervisor),
        (true, _, ["stats"]) => {
            let mut reply = Response::new(Full::new(Bytes::from(supervisor.stats_json())));
            reply
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            reply
        }
        (true, _, ["metrics"]) => {
            let text = crate::metrics::render(supervisor.generation());
            let mut reply = Response::new(Full::new(Bytes::from(text)));
            reply.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            reply
        }
        (true, _, ["hotkeys"]) => json_reply(
            StatusCode::OK,
            super::insight::hotkeys(&supervisor.generation()),
        ),
        (true, _, ["slowlog"]) => json_reply(
            StatusCode::OK,
            super::insight::slowlog(&supervisor.generation()),
        ),
        (true, _, ["config"]) => config(supervisor),
        (true, _, ["status"]) => json_reply(StatusCode::OK, status(supervisor)),
        (_, true, ["reload"]) => reload(supervisor).await,
        (_, true, ["restart"]) => restart(supervisor).await,
        (_, true, ["stop"]) => {
            supervisor.request(Request::Stop);
            json_reply(StatusCode::ACCEPTED, json!({"status": "draining"}))
        }
        (_, true, ["pools", pool, "servers", server, action @ ("eject" | "restore")]) => {
            eject(supervisor, pool, server, action)
        }
        (
            _,
            _,
            ["health" | "ready" | "stats" | "metrics" | "hotkeys" | "slowlog" | "config" | "status"],
        )
        | (_, _, ["reload" | "restart" | "stop"])
        | (_, _, ["pools", _, "servers", _, "eject" | "restore"]) => json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": format!("{method} is not allowed here")}),
        ),
        _ => json_reply(
            StatusCode::NOT_FOUND,
            json!({"error": "no such endpoint", "endpoints": [
                "GET /health", "GET /ready", "GET /stats", "GET /metrics", "GET /hotkeys", "GET /slowlog",
                "GET /config", "GET /status",
                "POST /reload", "POST /restart", "POST /stop",
                "POST /pools/{pool}/servers/{server}/eject", "POST /pools/{pool}/servers/{server}/restore"
            ]}),
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
    let Some(token) = &supervisor.options().admin_token else {
        return true;
    };
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_reply(status: StatusCode, body: Value) -> Reply {
    let mut text = body.to_string();
    text.push('\n');
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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
    let generation = supervisor.generation().number;
    json_reply(
        status,
        json!({"ready": ready, "phase": phase.name(), "generation": generation}),
    )
}

fn generation_fields(supervisor: &Supervisor) -> Value {
    let generation = supervisor.generation();
    json!({
        "generation": generation.number,
        "loaded_at": generation.source.loaded_at_secs(),
        "checksum": generation.source.checksum,
        "file": generation.source.path.display().to_string(),
    })
}

fn config(supervisor: &Supervisor) -> Reply {
    let mut body = generation_fields(supervisor);
    body["text"] = Value::from(supervisor.generation().source.text.clone());
    json_reply(StatusCode::OK, body)
}

/// Pools, servers with their state, requests per second, and the generation.
fn status(supervisor: &Supervisor) -> Value {
    let generation = supervisor.generation();
    let registry = &generation.registry;
    let pools: Vec<Value> = generation
        .config
        .pools
        .iter()
        .zip(&generation.pools)
        .map(|(pool, state)| {
            let servers: Vec<Value> = pool
                .servers
                .iter()
                .enumerate()
                .map(|(s, server)| {
                    let total = |i| stats::server_total(state, s, i);
                    let health = state.servers[s].state();
                    let shared = &state.servers[s];
                    let since = crate::stats::now_usec().saturating_sub(shared.changed_at_usec()) / 1_000_000;
                    let probe = match shared.probe_state() {
                        ProbeState::Off => "off",
                        ProbeState::Ok => "ok",
                        ProbeState::Failing => "failing",
                    };
                    let mut entry = json!({
                        "name": server.name(),
                        "address": server.entry,
                        "state": health.name(),
                        "state_for_s": since,
                        "health_check": probe,
                        "requests": total(st::REQUESTS),
                        "errors": total(st::SERVER_ERR) + total(st::SERVER_EOF) + total(st::SERVER_TIMEDOUT),
                        "connections": total(st::SERVER_CONNECTIONS),
                        "latency_ms": super::insight::latency_ms(&crate::metrics::server_latency(state, s)),
                    });
                    if let ServerState::Ejected(until) = health {
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        entry["back_in_ms"] = Value::from(left.as_millis() as u64);
                    }
                    entry
                })
                .collect();
            json!({
                "name": pool.name,
                "listen": pool.listen.to_string(),
                "protocol": if pool.redis { "redis" } else { "memcached" },
                "client_connections": stats::pool_total(state, stats::pool::CLIENT_CONNECTIONS),
                "requests_per_second": supervisor.rate(&pool.name),
                "requests": (0..stats::FAMILIES.len())
                    .map(|i| stats::pool_total(state, stats::pool::FAMILY + i))
                    .sum::<u64>(),
                "get_hits": stats::pool_total(state, stats::pool::GET_HITS),
                "get_misses": stats::pool_total(state, stats::pool::GET_MISSES),
                "errors": (stats::pool::ERR_CLIENT..=stats::pool::ERR_UNSUPPORTED)
                    .map(|i| stats::pool_total(state, i))
                    .sum::<u64>(),
                "latency_ms": super::insight::latency_ms(&crate::metrics::pool_latency(state)),
                "servers": servers,
            })
        })
        .collect();
    let mut body = generation_fields(supervisor);
    body["pid"] = Value::from(std::process::id());
    body["version"] = Value::from(env!("CARGO_PKG_VERSION"));
    body["uptime"] = Value::from(registry.uptime());
    body["phase"] = Value::from(supervisor.phase().name());
    body["threads"] = Value::from(registry.threads());
    body["pools"] = Value::from(pools);
    body
}

async fn reload(supervisor: &Supervisor) -> Reply {
    let (tx, rx) = oneshot::channel();
    supervisor.request(Request::Reload(tx));
    match rx.await {
        Ok(Ok(generation)) => json_reply(
            StatusCode::OK,
            json!({
                "generation": generation.number,
                "loaded_at": generation.source.loaded_at_secs(),
                "checksum": generation.source.checksum,
                "pools": generation.config.pools.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            }),
        ),
        Ok(Err(errors)) => json_reply(
            StatusCode::BAD_REQUEST,
            json!({"error": errors, "generation": supervisor.generation().number}),
        ),
        Err(_) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "cashew is stopping"}),
        ),
    }
}

async fn restart(supervisor: &Supervisor) -> Reply {
    let (tx, rx) = oneshot::channel();
    supervisor.request(Request::Restart(tx));
    match rx.await {
        Ok(Ok(pid)) => json_reply(StatusCode::OK, json!({"pid": pid})),
        Ok(Err(why)) => json_reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": why})),
        Err(_) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "cashew is stopping"}),
        ),
    }
}

fn eject(supervisor: &Supervisor, pool: &str, server: &str, action: &str) -> Reply {
    let generation = supervisor.generation();
    let Some(p) = generation.pool_index(pool) else {
        return json_reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no pool '{pool}'")}),
        );
    };
    let config = &generation.config.pools[p];
    let Some(s) = config.servers.iter().position(|s| s.name() == server) else {
        let names: Vec<&str> = config.servers.iter().map(|s| s.name()).collect();
        return json_reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("pool '{pool}' has no server '{server}'"), "servers": names}),
        );
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
    json_reply(
        StatusCode::OK,
        json!({"pool": pool, "server": server, "state": health.state().name()}),
    )
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
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
