//! `routes`: keys that begin with a prefix go to another pool of the file, which
//! places them with its own hash, distribution, replicas and limits; and `shadow`,
//! a copy of some requests to another pool, to compare its replies.

use crate::model::{Pool, Shadow};
use crate::validate::Validator;
use crate::yaml::{Node, Value};

impl Validator<'_> {
    /// `routes: {prefix: pool, ...}`, longest prefix first.
    pub(crate) fn routes(&mut self, pool: &str, node: &Node) -> Vec<(String, String)> {
        let Value::Mapping(items) = &node.value else {
            let found = node.kind();
            self.error(node.at, Some(pool), Some("routes"), format!("expected a mapping of key prefixes to pools (\"sess:\": sessions), found {found}"));
            return Vec::new();
        };
        let mut routes: Vec<(String, String)> = Vec::new();
        for (k, v) in items {
            let (Value::Scalar(prefix), Value::Scalar(target)) = (&k.value, &v.value) else {
                self.error(
                    k.at,
                    Some(pool),
                    Some("routes"),
                    "each route is a key prefix and the name of a pool".into(),
                );
                continue;
            };
            if prefix.is_empty() || target.is_empty() {
                self.error(
                    k.at,
                    Some(pool),
                    Some("routes"),
                    "a route needs a prefix and a pool name; keys with no route stay in this pool"
                        .into(),
                );
                continue;
            }
            if routes.iter().any(|(p, _)| p == prefix) {
                self.error(
                    k.at,
                    Some(pool),
                    Some("routes"),
                    format!("prefix '{prefix}' is routed twice"),
                );
                continue;
            }
            self.route_targets
                .push((pool.to_string(), prefix.clone(), v.at));
            routes.push((prefix.clone(), target.clone()));
        }
        // Longest first: the first match is the longest.
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        routes
    }

    /// `shadow: {pool, fraction, commands}`.
    pub(crate) fn shadow(&mut self, pool: &str, node: &Node) -> Option<Shadow> {
        let Value::Mapping(items) = &node.value else {
            let found = node.kind();
            self.error(
                node.at,
                Some(pool),
                Some("shadow"),
                format!("expected a mapping of pool, fraction and commands, found {found}"),
            );
            return None;
        };
        let mut shadow = Shadow {
            pool: String::new(),
            fraction: 1.0,
            all_commands: false,
        };
        let mut ok = true;
        for (k, v) in items {
            let (Value::Scalar(key), Value::Scalar(text)) = (&k.value, &v.value) else {
                self.error(
                    k.at,
                    Some(pool),
                    Some("shadow"),
                    "each setting is a name and a single value".into(),
                );
                ok = false;
                continue;
            };
            let full = format!("shadow.{key}");
            match key.as_str() {
                "pool" if !text.is_empty() => {
                    shadow.pool = text.clone();
                    self.shadow_targets.push((pool.to_string(), v.at));
                }
                "fraction" => match text.parse::<f64>() {
                    Ok(f) if f > 0.0 && f <= 1.0 => shadow.fraction = f,
                    _ => {
                        self.error(v.at, Some(pool), Some(&full), format!("'{text}' is not a fraction of the keys: a number above 0, at most 1 (0.1 for a tenth)"));
                        ok = false;
                    }
                },
                "commands" => match text.as_str() {
                    "reads" => shadow.all_commands = false,
                    "all" => shadow.all_commands = true,
                    other => {
                        self.error(
                            v.at,
                            Some(pool),
                            Some(&full),
                            format!("unknown value '{other}'; allowed: reads, all"),
                        );
                        ok = false;
                    }
                },
                other => {
                    self.error(
                        k.at,
                        Some(pool),
                        Some("shadow"),
                        format!("unknown key '{other}'; allowed: pool, fraction, commands"),
                    );
                    ok = false;
                }
            }
        }
        if shadow.pool.is_empty() {
            self.error(
                node.at,
                Some(pool),
                Some("shadow"),
                "needs 'pool': the pool that gets the copies".into(),
            );
            return None;
        }
        ok.then_some(shadow)
    }

    /// A shadow pool is another memcached pool of the file.
    pub(crate) fn check_shadows(&mut self, pools: &[Pool]) {
        for (name, at) in std::mem::take(&mut self.shadow_targets) {
            let Some(pool) = pools.iter().find(|p| p.name == name) else {
                continue;
            };
            let Some(shadow) = &pool.shadow else { continue };
            let target = &shadow.pool;
            let problem = match pools.iter().find(|p| &p.name == target) {
                _ if pool.redis => Some("shadow traffic is for memcached pools".to_string()),
                _ if *target == name => {
                    Some("a pool cannot shadow itself; name another pool of this file".to_string())
                }
                None => {
                    let names: Vec<&str> = pools
                        .iter()
                        .map(|p| p.name.as_str())
                        .filter(|n| *n != name)
                        .collect();
                    Some(format!(
                        "no pool '{target}' in this file; pools: {}",
                        names.join(", ")
                    ))
                }
                Some(t) if t.redis => Some(format!(
                    "pool '{target}' speaks redis; a shadow pool speaks memcached too"
                )),
                Some(_) => None,
            };
            if let Some(message) = problem {
                self.error(at, Some(&name), Some("shadow.pool"), message);
            }
        }
    }

    /// A route names another memcached pool of the file that has no routes of its
    /// own.
    pub(crate) fn check_routes(&mut self, pools: &[Pool]) {
        for (name, prefix, at) in std::mem::take(&mut self.route_targets) {
            let Some(pool) = pools.iter().find(|p| p.name == name) else {
                continue;
            };
            let Some((_, target)) = pool.routes.iter().find(|(p, _)| *p == prefix) else {
                continue;
            };
            let problem = match pools.iter().find(|p| &p.name == target) {
                _ if pool.redis => Some("routes are for memcached pools".to_string()),
                _ if *target == name => Some("a route to this pool itself: leave the prefix out, keys with no route stay here".to_string()),
                None => {
                    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).filter(|n| *n != name).collect();
                    Some(format!("no pool '{target}' in this file; pools: {}", names.join(", ")))
                }
                Some(t) if t.redis => Some(format!("pool '{target}' speaks redis; a route goes to a memcached pool")),
                Some(t) if !t.routes.is_empty() => Some(format!("pool '{target}' has routes of its own; a key is routed once")),
                Some(_) => None,
            };
            if let Some(message) = problem {
                self.error(at, Some(&name), Some("routes"), message);
            }
        }
    }
}
