//! `cashew top`: a live view of a running cashew, read from its admin API
//! (`/status` and `/hotkeys`) every second: per pool and per server requests per
//! second, hit ratio, p50/p99 latency of that second, errors, server states and how long they
//! have held, hot keys, and a sparkline of each pool's requests per second over
//! the last minute. `--once` prints one plain-text frame instead.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table};

use super::admin_client::AdminClient;
use crate::cli::TopArgs;
use crate::reports::api::{HotKeys, Latency, Status};

/// Samples of requests per second kept for the sparklines: one minute.
const HISTORY: usize = 60;

/// What the admin API said at one moment.
struct Sample {
    at: Instant,
    status: Status,
    hotkeys: HotKeys,
}

fn fetch(admin: &AdminClient) -> Result<Sample, String> {
    Ok(Sample {
        at: Instant::now(),
        status: admin.document("/status")?,
        hotkeys: admin.document("/hotkeys")?,
    })
}

/// One pool or server row, with rates from two samples.
struct RowData {
    name: String,
    state: String,
    rate: f64,
    hit_ratio: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    errors: f64,
    connections: u64,
}

/// Columns the server table can be sorted by.
const SORTS: [&str; 4] = ["req/s", "errors/s", "p99", "name"];

struct View {
    header: String,
    pools: Vec<(RowData, Vec<RowData>)>,
    hotkeys: Vec<(String, String, f64, String)>,
}

/// p50 and p99 in ms of the requests between two readings of a latency (the
/// bucket counts' difference); since start when there is no earlier one.
fn window_quantiles(now: &Latency, before: Option<&Latency>) -> (Option<f64>, Option<f64>) {
    let mut total = crate::state::counters::HistogramTotal::default();
    for (t, n) in total.buckets.iter_mut().zip(&now.buckets) {
        *t = *n;
    }
    if let Some(old) = before {
        for (t, o) in total.buckets.iter_mut().zip(&old.buckets) {
            *t = t.saturating_sub(*o);
        }
    }
    let q = |q: f64| total.quantile_us(q).map(|us| us as f64 / 1e3);
    (q(0.5), q(0.99))
}

/// How much a count grew between two readings, per second.
fn per_second(now: u64, before: Option<u64>, seconds: f64) -> f64 {
    now.saturating_sub(before.unwrap_or(0)) as f64 / seconds
}

fn view(before: &Sample, now: &Sample) -> View {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let s = &now.status;
    let header = format!(
        "cashew {} pid {}  up {}  generation {}  {} worker threads  {}",
        s.version,
        s.pid,
        uptime(s.uptime),
        s.generation.generation,
        s.threads,
        s.phase
    );
    let pools = s
        .pools
        .iter()
        .map(|p| {
            let old = before.status.pools.iter().find(|o| o.name == p.name);
            let hits = p.get_hits.saturating_sub(old.map_or(0, |o| o.get_hits)) as f64;
            let misses = p.get_misses.saturating_sub(old.map_or(0, |o| o.get_misses)) as f64;
            let (p50, p99) = window_quantiles(&p.latency_ms, old.map(|o| &o.latency_ms));
            let pool = RowData {
                name: p.name.clone(),
                state: p.protocol.clone(),
                rate: per_second(p.requests, old.map(|o| o.requests), seconds),
                hit_ratio: (hits + misses > 0.0).then(|| hits / (hits + misses)),
                p50,
                p99,
                errors: per_second(p.errors, old.map(|o| o.errors), seconds),
                connections: p.client_connections,
            };
            let servers = p
                .servers
                .iter()
                .map(|srv| {
                    let old = old.and_then(|o| o.servers.iter().find(|x| x.name == srv.name));
                    let (p50, p99) = window_quantiles(&srv.latency_ms, old.map(|o| &o.latency_ms));
                    RowData {
                        name: srv.name.clone(),
                        state: format!("{} {}", srv.state, uptime(srv.state_for_s)),
                        rate: per_second(srv.requests, old.map(|o| o.requests), seconds),
                        hit_ratio: None,
                        p50,
                        p99,
                        errors: per_second(srv.errors, old.map(|o| o.errors), seconds),
                        connections: srv.connections,
                    }
                })
                .collect();
            (pool, servers)
        })
        .collect();
    let hotkeys = now
        .hotkeys
        .hotkeys
        .iter()
        .map(|k| {
            let server = k.server.clone().unwrap_or_default();
            (k.pool.clone(), k.key.clone(), k.rate, server)
        })
        .collect();
    View {
        header,
        pools,
        hotkeys,
    }
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v}ms"))
}

fn cells(r: &RowData) -> [String; 8] {
    [
        r.name.clone(),
        r.state.clone(),
        format!("{:.0}", r.rate),
        r.hit_ratio
            .map_or("-".into(), |h| format!("{:.1}%", h * 100.0)),
        ms(r.p50),
        ms(r.p99),
        format!("{:.1}", r.errors),
        r.connections.to_string(),
    ]
}

const POOL_HEADER: [&str; 8] = [
    "pool", "protocol", "req/s", "hits", "p50", "p99", "errors/s", "clients",
];
const SERVER_HEADER: [&str; 8] = [
    "server", "state", "req/s", "hits", "p50", "p99", "errors/s", "conns",
];

fn sort(rows: &mut [RowData], by: usize) {
    match SORTS[by] {
        "req/s" => rows.sort_by(|a, b| b.rate.total_cmp(&a.rate)),
        "errors/s" => rows.sort_by(|a, b| b.errors.total_cmp(&a.errors)),
        "p99" => rows.sort_by(|a, b| b.p99.unwrap_or(0.0).total_cmp(&a.p99.unwrap_or(0.0))),
        _ => rows.sort_by(|a, b| a.name.cmp(&b.name)),
    }
}

/// One plain-text frame: every pool and every server.
fn text_frame(mut v: View) -> String {
    let mut out = format!("{}\n", v.header);
    let table = |out: &mut String, header: &[&str; 8], rows: &[[String; 8]]| {
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for r in rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cols: Vec<&str>| {
            let mut l: String = cols
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}  "))
                .collect();
            l.truncate(l.trim_end().len());
            l + "\n"
        };
        out.push_str(&line(header.to_vec()));
        for r in rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
    };
    out.push('\n');
    let pool_rows: Vec<[String; 8]> = v.pools.iter().map(|(p, _)| cells(p)).collect();
    table(&mut out, &POOL_HEADER, &pool_rows);
    for (pool, servers) in &mut v.pools {
        sort(servers, 0);
        out.push_str(&format!("\npool '{}'\n", pool.name));
        let rows: Vec<[String; 8]> = servers.iter().map(cells).collect();
        table(&mut out, &SERVER_HEADER, &rows);
    }
    if !v.hotkeys.is_empty() {
        out.push_str("\nhot keys\n");
        let rows: Vec<[String; 8]> = v
            .hotkeys
            .iter()
            .map(|(pool, key, rate, server)| {
                let blank = String::new;
                [
                    pool.clone(),
                    key.clone(),
                    format!("{rate:.0}"),
                    server.clone(),
                    blank(),
                    blank(),
                    blank(),
                    blank(),
                ]
            })
            .collect();
        table(
            &mut out,
            &["pool", "key", "req/s", "server", "", "", "", ""],
            &rows,
        );
    }
    out
}

pub fn run(args: &TopArgs) -> ExitCode {
    let result = args.token.token().and_then(|token| {
        let admin = AdminClient::new(&args.admin, token, Duration::from_secs(5));
        match args.once {
            true => once(&admin),
            false => live(&admin),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cashew top: {message}");
            ExitCode::from(1)
        }
    }
}

fn once(admin: &AdminClient) -> Result<(), String> {
    let first = fetch(admin)?;
    std::thread::sleep(Duration::from_secs(1));
    let second = fetch(admin)?;
    print!("{}", text_frame(view(&first, &second)));
    Ok(())
}

fn live(admin: &AdminClient) -> Result<(), String> {
    let mut before = fetch(admin)?;
    let mut terminal = ratatui::init();
    let result = live_loop(&mut terminal, admin, &mut before);
    ratatui::restore();
    result.map_err(|e| e.to_string())
}

fn live_loop(
    terminal: &mut ratatui::DefaultTerminal,
    admin: &AdminClient,
    before: &mut Sample,
) -> io::Result<()> {
    let mut history: HashMap<String, VecDeque<u64>> = HashMap::new();
    let mut sort_by = 0;
    let mut picked = 0;
    let mut now = fetch(admin).map_err(io::Error::other)?;
    let mut last_fetch = Instant::now();
    let mut fresh = true;
    loop {
        let mut v = view(before, &now);
        for (pool, _) in &v.pools {
            let h = history.entry(pool.name.clone()).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            if fresh {
                h.push_back(pool.rate.round() as u64);
            }
        }
        fresh = false;
        picked %= v.pools.len().max(1);
        terminal.draw(|frame| draw(frame, &mut v, &history, picked, sort_by))?;
        if event::poll(Duration::from_millis(250))? {
            if let Event::Key(key) = event::read()? {
                if key.kind == KeyEventKind::Press {
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('s') => sort_by = (sort_by + 1) % SORTS.len(),
                        KeyCode::Char('p') | KeyCode::Tab => picked += 1,
                        _ => {}
                    }
                }
            }
        }
        if last_fetch.elapsed() >= Duration::from_secs(1) {
            let next = fetch(admin).map_err(io::Error::other)?;
            *before = std::mem::replace(&mut now, next);
            last_fetch = Instant::now();
            fresh = true;
        }
    }
}

fn draw(
    frame: &mut ratatui::Frame,
    v: &mut View,
    history: &HashMap<String, VecDeque<u64>>,
    picked: usize,
    sort_by: usize,
) {
    let widths = [
        Constraint::Length(18),
        Constraint::Length(14),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
    ];
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let [head, pools_area, spark_area, servers_area, keys_area, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(v.pools.len() as u16 + 3),
        Constraint::Length(5),
        Constraint::Min(5),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(v.header.clone()), head);
    let pool_rows = v.pools.iter().enumerate().map(|(i, (p, _))| {
        let row = Row::new(cells(p));
        if i == picked {
            row.style(bold)
        } else {
            row
        }
    });
    frame.render_widget(
        Table::new(pool_rows, widths)
            .header(Row::new(POOL_HEADER).style(bold))
            .block(Block::default().borders(Borders::ALL).title("pools")),
        pools_area,
    );
    let Some((pool, servers)) = v.pools.get_mut(picked) else {
        return;
    };
    let data: Vec<u64> = history
        .get(&pool.name)
        .map(|h| h.iter().copied().collect())
        .unwrap_or_default();
    frame.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(format!(
                "pool '{}': requests/s, last minute (now {:.0})",
                pool.name, pool.rate
            )))
            .data(&data),
        spark_area,
    );
    sort(servers, sort_by);
    let rows = servers.iter().map(|s| Row::new(cells(s)));
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(SERVER_HEADER).style(bold))
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!("servers of '{}', by {}", pool.name, SORTS[sort_by])),
            ),
        servers_area,
    );
    let name = pool.name.clone();
    let keys = v
        .hotkeys
        .iter()
        .filter(|(p, ..)| *p == name)
        .map(|(_, key, rate, server)| {
            Row::new([key.clone(), format!("{rate:.0}"), server.clone()])
        });
    frame.render_widget(
        Table::new(
            keys,
            [
                Constraint::Min(20),
                Constraint::Length(10),
                Constraint::Length(18),
            ],
        )
        .header(Row::new(["hot key", "req/s", "server"]).style(bold))
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title("hot keys (pools with hotkeys: true)"),
        ),
        keys_area,
    );
    frame.render_widget(
        Paragraph::new(Line::from("q quit   s sort servers   p / tab next pool")),
        help,
    );
}
