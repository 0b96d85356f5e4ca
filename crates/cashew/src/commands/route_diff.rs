//! `cashew route --diff OLD NEW`: what a config change does to where keys live,
//! before it is made. For each pool, the share of the key space whose server
//! changes, from which server to which: exact from the rings or slots when both
//! configs hash keys the same way, else estimated over sample keys. With `--keys`,
//! the keys of a list that move. Servers are compared by name (the node name, or
//! the address), as placement knows them.

use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cashew_config::{Config, Pool};
use cashew_route::{Distribution, HashFunction, Router};

use crate::cli::RouteArgs;

/// Sample keys when the share cannot be computed from the placements.
const SAMPLES: u32 = 100_000;

/// Prints the differences; `Ok(true)` when keys move.
pub fn run(args: &RouteArgs) -> Result<bool, String> {
    let paths = args.diff.as_deref().unwrap_or_default();
    let [old_path, new_path] = paths else {
        return Err("--diff takes two files: OLD NEW".into());
    };
    let load = |p: &Path| cashew_config::load(p).map_err(|e| e.to_string());
    let (old, new) = (load(old_path)?, load(new_path)?);
    let names = pool_names(&old, &new, args.pool.as_deref())?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut moves = false;
    let io_error = |e: io::Error| e.to_string();
    for name in &names {
        let line = match (old.pool(name), new.pool(name)) {
            (Some(_), None) => {
                moves = true;
                format!(
                    "pool '{name}': only in {}: its keys are no longer served\n",
                    old_path.display()
                )
            }
            (None, Some(_)) => format!(
                "pool '{name}': only in {}: a new pool\n",
                new_path.display()
            ),
            (Some(a), Some(b)) => {
                let (text, moved) = compare(a, b);
                moves |= moved;
                text
            }
            (None, None) => unreachable!("names come from the two configs"),
        };
        out.write_all(line.as_bytes()).map_err(io_error)?;
    }
    if let Some(file) = &args.keys_file {
        let pairs: Vec<(&Pool, &Pool)> = names
            .iter()
            .filter_map(|n| Some((old.pool(n)?, new.pool(n)?)))
            .collect();
        moves |= list_moved_keys(file, &pairs, &mut out).map_err(io_error)?;
    }
    out.flush().map_err(io_error)?;
    Ok(moves)
}

/// The pools to compare: the one asked for, or every pool of either file.
fn pool_names(old: &Config, new: &Config, only: Option<&str>) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = old.pools.iter().map(|p| p.name.clone()).collect();
    for p in &new.pools {
        if !names.contains(&p.name) {
            names.push(p.name.clone());
        }
    }
    match only {
        None => Ok(names),
        Some(n) if names.iter().any(|m| m == n) => Ok(vec![n.to_string()]),
        Some(n) => Err(format!(
            "neither file has a pool named '{n}'; the pools are: {}",
            names.join(", ")
        )),
    }
}

fn router(pool: &Pool) -> Router {
    Router::new(
        pool.hash,
        pool.distribution,
        pool.hash_tag,
        &pool.route_nodes(),
    )
}

/// The report of one pool present in both files, and whether keys move.
fn compare(a: &Pool, b: &Pool) -> (String, bool) {
    let name = &a.name;
    let shape = |p: &Pool| {
        format!(
            "{} servers, {}, {}",
            p.servers.len(),
            p.distribution,
            p.hash
        )
    };
    let header = format!("pool '{name}' ({} -> {})", shape(a), shape(b));
    if a.distribution == Distribution::Random || b.distribution == Distribution::Random {
        return (
            format!("{header}: random distribution, no key has a fixed server\n"),
            false,
        );
    }
    let (ra, rb) = (router(a), router(b));
    let (pairs, exact) = match ra.overlap(&rb) {
        Some(counts) => (counts, true),
        None => (sampled(&ra, &rb), false),
    };
    let total: u64 = pairs.iter().map(|p| p.2).sum();
    let mut moved: Vec<(&str, &str, f64)> = pairs
        .iter()
        .filter(|(x, y, _)| a.servers[*x].name() != b.servers[*y].name())
        .map(|&(x, y, n)| {
            (
                a.servers[x].entry.as_str(),
                b.servers[y].entry.as_str(),
                n as f64 / total as f64,
            )
        })
        .collect();
    if moved.is_empty() {
        return (format!("{header}: nothing moves\n"), false);
    }
    moved.sort_by(|p, q| {
        q.2.total_cmp(&p.2)
            .then_with(|| (p.0, p.1).cmp(&(q.0, q.1)))
    });
    let share: f64 = moved.iter().map(|m| m.2).sum();
    let how = match exact {
        true => "of the key space",
        false => "of sample keys (the hash or hash tag changed: estimated)",
    };
    let width = moved.iter().map(|m| m.0.len()).max().unwrap_or(0).max(4);
    let width2 = moved.iter().map(|m| m.1.len()).max().unwrap_or(0).max(2);
    let mut text = format!("{header}: {} {how} moves\n", percent(share));
    if exact && matches!(a.hash, HashFunction::Fnv1a64 | HashFunction::Fnv1_64) {
        // Their low 32 bits, which place keys, spread short similar keys unevenly.
        text.push_str(&format!(
            "  ({} places similar keys unevenly over the key space: the share of your keys may differ; --keys FILE with a sample of them counts exactly)\n",
            a.hash
        ));
    }
    text.push_str(&format!(
        "  {:<width$}  {:<width2$}  {:>7}\n",
        "from", "to", "share"
    ));
    for (from, to, s) in moved {
        text.push_str(&format!(
            "  {from:<width$}  {to:<width2$}  {:>7}\n",
            percent(s)
        ));
    }
    (text, true)
}

fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// Counts per (server in a, server in b) over sample keys.
fn sampled(a: &Router, b: &Router) -> Vec<(usize, usize, u64)> {
    let mut counts: Vec<(usize, usize, u64)> = Vec::new();
    for i in 0..SAMPLES {
        let key = format!("cashew-route-diff:{i}");
        let (Some(x), Some(y)) = (a.route(key.as_bytes()), b.route(key.as_bytes())) else {
            continue;
        };
        match counts.iter_mut().find(|c| c.0 == x && c.1 == y) {
            Some(c) => c.2 += 1,
            None => counts.push((x, y, 1)),
        }
    }
    counts
}

/// Prints `pool<TAB>key<TAB>from<TAB>to` for each key of `file` whose server
/// changes in one of `pools`, then how many moved; true when any did.
fn list_moved_keys(
    file: &Path,
    pools: &[(&Pool, &Pool)],
    out: &mut impl Write,
) -> io::Result<bool> {
    let reader: Box<dyn BufRead> = match file.as_os_str().as_bytes() {
        b"-" => Box::new(io::stdin().lock()),
        _ => Box::new(io::BufReader::new(std::fs::File::open(file).map_err(
            |e| io::Error::new(e.kind(), format!("{}: {e}", file.display())),
        )?)),
    };
    let routers: Vec<(Router, Router)> =
        pools.iter().map(|(a, b)| (router(a), router(b))).collect();
    let mut moved = vec![0u64; pools.len()];
    let mut seen = 0u64;
    writeln!(out, "\nkeys that move (pool, key, from, to):")?;
    for line in reader.split(b'\n') {
        let mut key = line?;
        if key.last() == Some(&b'\r') {
            key.pop();
        }
        seen += 1;
        for (p, ((a, b), (ra, rb))) in pools.iter().zip(&routers).enumerate() {
            let (Some(x), Some(y)) = (ra.route(&key), rb.route(&key)) else {
                continue;
            };
            if a.servers[x].name() != b.servers[y].name() {
                let (from, to) = (&a.servers[x].entry, &b.servers[y].entry);
                moved[p] += 1;
                out.write_all(a.name.as_bytes())?;
                out.write_all(b"\t")?;
                out.write_all(&key)?;
                writeln!(out, "\t{from}\t{to}")?;
            }
        }
    }
    for ((a, _), n) in pools.iter().zip(&moved) {
        writeln!(out, "pool '{}': {n} of {seen} keys move", a.name)?;
    }
    Ok(moved.iter().any(|&n| n > 0))
}
