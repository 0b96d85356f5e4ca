//! Gives memory back to the system after a burst. glibc's allocator keeps freed
//! memory in its per-thread arenas; once a burst of large requests or replies is
//! over, `malloc_trim` returns it. The main thread checks once a second and trims
//! when the process grew since the last trim and the load has mostly gone (a tenth
//! of its peak since then), so a steady load never pays for it: a trim holds each
//! arena's lock for a moment (1-3 ms measured after a 30 MiB burst).

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Supervisor;
use crate::log::DEBUG;
use crate::log_at;
use crate::state::counters::ServerCounter;

/// Growth since the last trim that makes a trim worth it.
const GROWTH: u64 = 4 << 20;

pub(crate) async fn give_back(supervisor: Rc<Supervisor>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut after_last_trim = crate::process::resident_bytes().unwrap_or(0);
    let mut last_requests = requests(&supervisor);
    let mut peak_rate = 0;
    loop {
        tick.tick().await;
        let total = requests(&supervisor);
        let rate = total.wrapping_sub(last_requests);
        last_requests = total;
        peak_rate = peak_rate.max(rate);
        let load_gone = rate <= peak_rate / 10;
        let Some(now) = crate::process::resident_bytes() else {
            return;
        };
        if !load_gone || now < after_last_trim + GROWTH {
            continue;
        }
        let started = Instant::now();
        trim();
        after_last_trim = crate::process::resident_bytes().unwrap_or(now);
        peak_rate = rate;
        log_at!(
            DEBUG,
            "gave memory back: resident {} MiB -> {} MiB in {} µs",
            now >> 20,
            after_last_trim >> 20,
            started.elapsed().as_micros()
        );
    }
}

/// Requests sent to servers so far, over every pool.
fn requests(supervisor: &Supervisor) -> u64 {
    let generation = supervisor.generation();
    generation
        .config
        .pools
        .iter()
        .zip(&generation.pools)
        .map(|(pool, state)| {
            (0..pool.servers.len())
                .map(|s| state.server_total(s, ServerCounter::Requests))
                .sum::<u64>()
        })
        .sum()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own structures.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
