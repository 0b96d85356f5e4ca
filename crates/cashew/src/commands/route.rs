//! `cashew route`: which server holds each key, as the config places it; with
//! `replicas`, every server that keeps it, in order; with `routes`, in the pool
//! its prefix names (then the pool is printed last, `pool=NAME`). A Redis Cluster
//! pool's keys are given their slot, whose owner the cluster decides.

use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;

use cashew_config::{Config, Pool};
use cashew_route::Router;

/// Most replicas printed for a key (as many as cashew keeps).
const MAX_REPLICAS: usize = 16;

use crate::cli::RouteArgs;

pub fn run(args: &RouteArgs) -> Result<(), String> {
    let config = cashew_config::load(&args.conf_file).map_err(|e| e.to_string())?;
    let pool = pick_pool(&config, args.pool.as_deref())?;
    let router = |p: &Pool| Router::new(p.hash, p.distribution, p.hash_tag, &p.route_nodes());
    // The pool itself and those its routes name, each with its router.
    let mut pools: Vec<(&Pool, Router)> = vec![(pool, router(pool))];
    for (_, name) in &pool.routes {
        if let Some(p) = config
            .pool(name)
            .filter(|p| !pools.iter().any(|(q, _)| q.name == p.name))
        {
            pools.push((p, router(p)));
        }
    }

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut servers = [0usize; MAX_REPLICAS];
    let mut print = |key: &[u8]| -> io::Result<()> {
        if pool.redis_cluster {
            // The slot's owner is the cluster's to say (`cashew status` lists them).
            out.write_all(key)?;
            return out
                .write_all(format!("\tslot={}\n", cashew_route::cluster_slot(key)).as_bytes());
        }
        let target = pool.route_for(key).unwrap_or(&pool.name);
        let (p, router) = pools
            .iter()
            .find(|(p, _)| p.name == target)
            .unwrap_or(&pools[0]);
        out.write_all(key)?;
        let want = (p.replicas.max(1) as usize).min(MAX_REPLICAS);
        let n = router.replicas(key, &mut servers[..want]);
        if n == 0 {
            out.write_all(b"\t-")?;
        }
        for &i in &servers[..n] {
            out.write_all(b"\t")?;
            out.write_all(p.servers[i].entry.as_bytes())?;
        }
        if !pool.routes.is_empty() {
            // Which pool serves it, when keys may be routed to others.
            out.write_all(format!("\tpool={}", p.name).as_bytes())?;
        }
        out.write_all(b"\n")
    };
    let result = if args.keys.is_empty() {
        io::stdin().lock().split(b'\n').try_for_each(|line| {
            let mut line = line?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            print(&line)
        })
    } else {
        args.keys.iter().try_for_each(|k| print(k.as_bytes()))
    };
    result
        .and_then(|()| out.flush())
        .or_else(|e| match e.kind() {
            // A closed pipe (`cashew route ... | head`) is a normal end.
            io::ErrorKind::BrokenPipe => Ok(()),
            _ => Err(e.to_string()),
        })
}

fn pick_pool<'c>(config: &'c Config, name: Option<&str>) -> Result<&'c Pool, String> {
    let names = || {
        config
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => config
            .pool(name)
            .ok_or_else(|| format!("no pool named '{name}'; the pools are: {}", names())),
        None if config.pools.len() == 1 => Ok(&config.pools[0]),
        None => Err(format!(
            "the config has {} pools; choose one with --pool NAME (one of: {})",
            config.pools.len(),
            names()
        )),
    }
}
