//! Gives memory back to the system after a burst. glibc's allocator keeps freed
//! memory in its per-thread arenas; once a burst of large requests or replies is
//! over, `malloc_trim` returns it. The main thread checks once a second and trims
//! when the process is above the least it was after a trim and the load has mostly
//! gone (a tenth of its peak since then), so a steady load never pays for it: a
//! trim holds each arena's lock for a moment (1-3 ms measured after a 30 MiB burst,
//! tens of µs when there is nothing to give back).
//!
//! Large buffers (a 16 MiB value) are mapped on their own: glibc would otherwise
//! raise its mmap threshold after the first such buffer is freed and take the next
//! ones from an arena, where small allocations made meanwhile pin them (measured:
//! 16 MiB kept per burst of 16 MiB values, 5 → 37 MiB after two). Values up to
//! memcached's default limit (1 MiB) stay in the arena: a buffer mapped and unmapped
//! per reply faults in every page of it each time (512 KiB values cost 2.5 times
//! the CPU per request with the threshold at 128 KiB), and so does an arena that
//! gives its top back at every free.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Supervisor;
use crate::log::DEBUG;
use crate::log_at;
use crate::state::counters::ServerCounter;

/// Growth over the least resident size after a trim that makes a trim worth it.
const GROWTH: u64 = 4 << 20;
/// Allocations from this size on are mapped on their own, and unmapped when freed:
/// above a 1 MiB value and the read room made for it.
const MMAP_THRESHOLD: i32 = 4 << 20;
/// Free memory an arena may keep at its top before a free gives it back. glibc's
/// default (128 KiB, no longer raised once the mmap threshold is set) gives back,
/// and faults in again, the room of every large reply; 2 MiB still did for four
/// clients of 512 KiB values, 8 MiB does not, and holds 5 MiB more under a mixed load.
const TRIM_THRESHOLD: i32 = 8 << 20;

/// Sets the allocator up, before any thread starts.
pub(crate) fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; no thread runs yet.
    unsafe {
        // Setting it also turns off glibc's raising of the threshold.
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        // Freeing is not trimming: `give_back` trims once a burst is over.
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

pub(crate) async fn give_back(supervisor: Rc<Supervisor>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The least the process was after a trim: memory a burst left behind is what
    // lies above it (a trim made while the burst was still held must not become
    // the new mark).
    let mut floor = crate::process::resident_bytes().unwrap_or(0);
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
        if !load_gone || now < floor + GROWTH {
            continue;
        }
        let started = Instant::now();
        trim();
        let after = crate::process::resident_bytes().unwrap_or(now);
        floor = floor.min(after);
        peak_rate = rate;
        log_at!(
            DEBUG,
            "gave memory back: resident {} MiB -> {} MiB in {} µs",
            now >> 20,
            after >> 20,
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
