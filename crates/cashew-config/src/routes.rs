//! `routes`: keys that begin with a prefix go to another pool of the file, which
//! places them with its own hash, distribution, replicas and limits.

use crate::model::Pool;
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
