//! `cashew route`: which server holds each key, as the config places it; with
//! `replicas`, every server that keeps it, in order.

use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;

use cashew_config::{Config, Pool};
use cashew_route::Router;

use crate::cli::RouteArgs;

pub fn run(args: &RouteArgs) -> Result<(), String> {
    let config = cashew_config::load(&args.conf_file).map_err(|e| e.to_string())?;
    let pool = pick_pool(&config, args.pool.as_deref())?;
    let nodes = pool.route_nodes();
    let router = Router::new(pool.hash, pool.distribution, pool.hash_tag, &nodes);

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut servers = vec![0usize; pool.replicas.max(1) as usize];
    let mut print = |key: &[u8]| -> io::Result<()> {
        out.write_all(key)?;
        let n = router.replicas(key, &mut servers);
        if n == 0 {
            out.write_all(b"\t-")?;
        }
        for &i in &servers[..n] {
            out.write_all(b"\t")?;
            out.write_all(pool.servers[i].entry.as_bytes())?;
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
