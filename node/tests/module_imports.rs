//! Modules of `node/src` import each other one way only: no two sibling
//! modules (the top-level ones, and those inside `server/`) import each
//! other, directly or around a circle. A parent and its own children are
//! not counted: `server/mod.rs` declares its modules and holds their parts
//! in `Node`, which they serve.
//!
//! The imports are read from the source text (`crate::X`, `super::X`,
//! `super::super::X` in nested files), which is what a reader follows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The words that follow `prefix` (a path like `super::`), including those
/// inside a `{...}` group right after it.
fn named_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        // `super::super::x` is not `super::x`'s business.
        if prefix == "super::" && text[at + prefix.len()..].starts_with("super::") {
            continue;
        }
        if prefix == "super::" && text[..at].ends_with("super::") {
            continue;
        }
        let rest = &text[at + prefix.len()..];
        let group = if let Some(inner) = rest.strip_prefix('{') {
            &inner[..inner.find('}').unwrap_or(inner.len())]
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        };
        for word in group.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !word.is_empty() {
                names.insert(word.to_owned());
            }
        }
    }
    names
}

/// Sibling modules of `dir` and whom each imports among them.
fn graph(dir: &Path, from_crate: Option<&str>) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for file in rust_files(dir) {
        let rel = file.strip_prefix(dir).expect("prefix");
        let first = rel.components().next().expect("component");
        let name = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if name == "mod" || name == "main" {
            continue;
        }
        modules.entry(name).or_default().push(file);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (name, files) in &modules {
        let mut to = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(file).expect("read");
            let nested = file.strip_prefix(dir).expect("prefix").components().count() > 1;
            let mut seen = BTreeSet::new();
            match from_crate {
                // Top level: `crate::x`.
                None => seen.extend(named_after(&text, "crate::")),
                Some(parent) => {
                    seen.extend(named_after(&text, &format!("crate::{parent}::")));
                    let up = if nested { "super::super::" } else { "super::" };
                    seen.extend(named_after(&text, up));
                }
            }
            to.extend(seen.into_iter().filter(|n| names.contains(n) && n != name));
        }
        edges.insert(name.clone(), to);
    }
    edges
}

/// The circles of a graph: its strongly connected parts of two or more.
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for a in g.keys() {
        let part: BTreeSet<String> = reaches[a]
            .iter()
            .filter(|b| *b != a && reaches.get(b).is_some_and(|r| r.contains(a)))
            .cloned()
            .chain(std::iter::once(a.clone()))
            .collect();
        if part.len() > 1 && !out.contains(&part) {
            out.push(part);
        }
    }
    out
}

#[test]
fn no_module_of_node_imports_around_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (dir, parent) in [(src.clone(), None), (src.join("server"), Some("server"))] {
        let g = graph(&dir, parent);
        assert!(g.len() > 3, "found the modules of {}: {g:?}", dir.display());
        let found = circles(&g);
        assert!(
            found.is_empty(),
            "modules of {} import each other around a circle: {found:?}\n{g:#?}",
            dir.display()
        );
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    let found = circles(&g);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 3);
}
