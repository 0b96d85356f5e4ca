//! The threads that watch what a configuration names outside the file (Sentinels,
//! host names, Redis Clusters). The first load happens before `-d` forks, which
//! keeps only the forking thread: watchers asked for then start once the process
//! is the one that serves.

use std::sync::Mutex;

type Watcher = Box<dyn FnOnce() + Send>;

/// `None` once threads may start; before, the watchers waiting to.
static WAITING: Mutex<Option<Vec<(String, Watcher)>>> = Mutex::new(Some(Vec::new()));

/// Runs `watcher` on a thread named `name`: now, or once [`allow`] is called.
pub(super) fn spawn(name: &str, watcher: impl FnOnce() + Send + 'static) {
    let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
    match waiting.as_mut() {
        Some(list) => list.push((name.to_string(), Box::new(watcher))),
        None => start(name.to_string(), Box::new(watcher)),
    }
}

/// From now on watchers start at once; those waiting start now.
pub(super) fn allow() {
    let waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner()).take();
    for (name, watcher) in waiting.into_iter().flatten() {
        start(name, watcher);
    }
}

fn start(name: String, watcher: Watcher) {
    if let Err(e) = std::thread::Builder::new()
        .name(name.clone())
        .spawn(watcher)
    {
        crate::log_at!(crate::log::WARN, "cannot start the {name} thread: {e}");
    }
}
