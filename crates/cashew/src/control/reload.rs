//! Reload: read and validate the file, bind what it needs, publish the next
//! generation and wait until every worker serves it; anything wrong changes nothing.

use std::sync::Arc;

use super::listen::{self, Inherited};
use super::supervisor::Supervisor;
use super::APPLY_TIMEOUT;
use super::{admin_token, load, notify, probe, Phase};
use crate::log::{ERROR, NOTICE, WARN};
use crate::log_at;
use crate::proxy::worker::{Directive, Mode};
use crate::state::generation::Generation;

impl Supervisor {
    /// Reads, validates and publishes the config file; on any error the running
    /// configuration stays in force and the error says why.
    pub(crate) async fn reload(&self) -> Result<Arc<Generation>, String> {
        if self.phase.get() != Phase::Serving {
            let why = format!("cannot reload while {}", self.phase.get().name());
            log_at!(WARN, "reload refused: {why}");
            return Err(why);
        }
        notify::reloading();
        let result = self.publish_next().await;
        match &result {
            Ok(generation) => log_at!(
                NOTICE,
                "configuration generation {} loaded from {} ({}), {} pools",
                generation.number,
                generation.source.path.display(),
                generation.source.checksum,
                generation.config.pools.len()
            ),
            Err(why) => {
                for line in why.lines() {
                    log_at!(
                        ERROR,
                        "reload failed, the running configuration stays: {line}"
                    );
                }
            }
        }
        notify::notify("READY=1");
        result
    }

    pub(super) async fn publish_next(&self) -> Result<Arc<Generation>, String> {
        // The token file is read first: if it cannot be, nothing changes.
        let token = match &self.options.admin_token_file {
            Some(_) => Some(admin_token(&self.options)?),
            None => None,
        };
        let loaded = load(&self.options.conf_file)?;
        let config = &loaded.config;
        let current = self.generation();
        let mut next_id = self.next_listener_id.get();
        let listeners = listen::for_config(
            config,
            Some(&current),
            &mut Inherited::default(),
            self.options.threads,
            &mut next_id,
        )?;
        self.next_listener_id.set(next_id);
        for change in changes(&current, config) {
            log_at!(NOTICE, "reload: {change}");
        }
        let number = current.number + 1;
        let next = Arc::new(Generation::new(
            number,
            loaded,
            current.registry.clone(),
            listeners,
            Some(&current),
        ));
        for (pool, state) in next.config.pools.iter().zip(&next.pools) {
            let started = state.migration.as_ref().is_some_and(|m| {
                let before = current
                    .pool_index(&pool.name)
                    .and_then(|i| current.pools[i].migration.as_ref());
                !before.is_some_and(|b| Arc::ptr_eq(b, m))
            });
            if started {
                log_at!(
                    NOTICE,
                    "reload: pool '{}': keys move to new servers; for {} ms a miss is asked of the key's previous server",
                    pool.name,
                    pool.migrate_ms
                );
            }
        }
        self.directives.send_replace(Directive {
            generation: next.clone(),
            mode: Mode::Serve,
        });
        if let Some(token) = token {
            if *self.admin_token.borrow() != token {
                log_at!(NOTICE, "reload: the admin token changed");
            }
            *self.admin_token.borrow_mut() = token;
        }
        self.restart_probes();
        // Listeners the new generation does not use close here; workers drop theirs
        // as they take the generation.
        for old in &current.pools {
            if !next.pools.iter().any(|p| p.listener.id == old.listener.id) {
                old.listener.retire();
            }
        }
        drop(current);
        if !self
            .reports
            .wait_for(APPLY_TIMEOUT, |r| r.all_applied(number))
            .await
        {
            return Err(format!(
                "generation {number} was published but not every worker took it within {} s",
                APPLY_TIMEOUT.as_secs()
            ));
        }
        Ok(next)
    }

    /// Health probes for the generation in force (their state is carried by name).
    pub(super) fn restart_probes(&self) {
        let mut probes = self.probes.borrow_mut();
        for task in probes.drain(..) {
            task.abort();
        }
        *probes = probe::start(&self.generation());
    }
}

/// What a reload changes, in words, for the log.
fn changes(current: &Generation, next: &cashew_config::Config) -> Vec<String> {
    let mut out = Vec::new();
    for pool in &next.pools {
        match current.config.pool(&pool.name) {
            None => out.push(format!(
                "pool '{}' added, listening on {}",
                pool.name, pool.listen
            )),
            Some(old) if old == pool => {}
            Some(old) => {
                let names = |p: &cashew_config::Pool| -> Vec<String> {
                    p.servers.iter().map(|s| s.name().to_string()).collect()
                };
                let (before, after) = (names(old), names(pool));
                let added: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
                let removed: Vec<&String> = before.iter().filter(|s| !after.contains(s)).collect();
                let mut what = Vec::new();
                if !added.is_empty() {
                    what.push(format!("servers added: {}", join(&added)));
                }
                if !removed.is_empty() {
                    what.push(format!("servers removed: {}", join(&removed)));
                }
                if old.listen != pool.listen {
                    what.push(format!("listen {} -> {}", old.listen, pool.listen));
                }
                if old.redis != pool.redis {
                    what.push("protocol changed: its clients are closed once answered".into());
                }
                if what.is_empty() {
                    what.push("settings changed".into());
                }
                out.push(format!("pool '{}': {}", pool.name, what.join("; ")));
            }
        }
    }
    for pool in &current.config.pools {
        if next.pool(&pool.name).is_none() {
            out.push(format!(
                "pool '{}' removed: its listener on {} closes, its clients are closed once answered",
                pool.name, pool.listen
            ));
        }
    }
    out
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
