//! The crate's modules are layers (see `src/lib.rs`): each top-level module uses
//! only the ones allowed below, and no two files use each other, directly or in a
//! circle (a module and its own submodules are one unit). Read from the source, so
//! a new `use` that breaks the layering fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("log", &["clock"]),
    ("net", &[]),
    ("process", &["log", "clock"]),
    ("state", &["clock", "log", "net"]),
    ("proxy", &["clock", "log", "net", "process", "state"]),
    ("reports", &["clock", "log", "process", "state"]),
    (
        "control",
        &[
            "clock", "log", "net", "process", "proxy", "reports", "state",
        ],
    ),
    ("cli", &["log", "reports"]),
    ("commands", &["cli", "clock", "log", "reports", "state"]),
];

type Module = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The code of a file without comments, string literals and its tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = String::new();
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut in_string = false;
        for c in line.chars() {
            if c == '"' {
                in_string = !in_string;
            } else if !in_string {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// Every path written in `code` (`a::b::c`, `a::{b, c::d}` as `a::b`, `a::c::d`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut path = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            path.push(code[start..j].to_string());
            if code[j..].starts_with("::{") {
                let end = code[j..].find('}').map_or(bytes.len(), |e| j + e);
                for item in code[j + 3..end].split(',') {
                    let mut p = path.clone();
                    p.extend(item.split("::").map(|s| s.trim().to_string()));
                    out.push(p);
                }
                j = end;
                path.clear();
                break;
            }
            if code[j..].starts_with("::") && bytes.get(j + 2).is_some_and(|&b| ident(b)) {
                j += 2;
            } else {
                break;
            }
        }
        if path.len() > 1 {
            out.push(path);
        }
        i = j.max(i + 1);
    }
    out
}

/// Which module of the crate a path names, if any.
fn resolve(me: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let (mut base, rest): (Module, &[String]) = match path[0].as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "super" => (me[..me.len().saturating_sub(1)].to_vec(), &path[1..]),
        "self" => (me.clone(), &path[1..]),
        _ => (me.clone(), path),
    };
    base.extend(rest.iter().cloned());
    (1..=base.len())
        .rev()
        .map(|n| base[..n].to_vec())
        .find(|m| modules.contains(m))
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let mut uses = BTreeSet::new();
        for path in paths(&code(&text)) {
            if let Some(m) = resolve(&me, &path, &modules) {
                // A module and its ancestors are one unit.
                if !me.starts_with(&m) {
                    uses.insert(m);
                }
            }
        }
        edges.insert(me, uses);
    }
    edges
}

#[test]
fn top_level_modules_use_only_the_layers_allowed() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, uses) in graph() {
        let Some(top) = module.first() else { continue };
        let Some(may) = allowed.get(top.as_str()) else {
            wrong.push(format!(
                "{top} is not in ALLOWED: say which layers it may use"
            ));
            continue;
        };
        for used in uses {
            let other = &used[0];
            if other != top && !may.contains(&other.as_str()) {
                wrong.push(format!("{} uses {}", module.join("/"), used.join("/")));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_files_use_each_other_in_a_circle() {
    let edges = graph();
    // A depth-first search for a path back to where it started.
    fn back_to(
        start: &Module,
        at: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        seen: &mut BTreeSet<Module>,
        path: &mut Vec<Module>,
    ) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if back_to(start, next, edges, seen, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        if back_to(start, start, &edges, &mut BTreeSet::new(), &mut path) {
            let names: Vec<String> = path.iter().map(|m| m.join("/")).collect();
            panic!("a circle of uses: {} -> back", names.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_paths_as_written() {
    let found = paths(&code(
        "use crate::state::{counters::Family, health};\nlet x = super::pool::PoolRt::new(); // crate::not::this\n",
    ));
    let text: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert!(
        text.contains(&"crate::state::counters::Family".to_string()),
        "{text:?}"
    );
    assert!(
        text.contains(&"crate::state::health".to_string()),
        "{text:?}"
    );
    assert!(
        text.contains(&"super::pool::PoolRt::new".to_string()),
        "{text:?}"
    );
    assert!(!text.iter().any(|t| t.contains("not")), "{text:?}");
}
