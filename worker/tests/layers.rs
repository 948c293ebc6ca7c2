//! The worker's layers, checked from its source: the module graph drawn
//! from the `crate::` and `super::` paths of every file has no cycle, and
//! every edge goes down the layers that lib.rs describes (leaves, then
//! `db`, `config`, `http`, `serve`, `run`). A file's `#[cfg(test)]` part
//! is not counted: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rank of each top-level module: an edge may only go to an equal or
/// lower rank (equal: within one folder, where the cycle check applies).
fn rank(top: &str) -> usize {
    match top {
        "claim" | "events" | "metrics" | "retry" | "text" | "receiver" => 0,
        "db" => 1,
        "config" => 2,
        "http" => 3,
        "serve" => 4,
        "run" => 5,
        other => panic!("{other}: a top-level module lib.rs does not place in a layer; add it to tests/layers.rs"),
    }
}

type Module = Vec<String>;

/// Every source file of the library, by module path (`lib.rs` is `[]`).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("main") if module.len() == 1 => continue, // the binary, not the library
                Some("lib") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            found.insert(module, path);
        }
    }
    found
}

/// The paths a file names through `crate::` or `super::`, as module-path
/// segments (groups in braces expanded), outside comments and tests.
fn referenced(text: &str, own: &Module) -> Vec<Module> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    // `super` is the parent module, whether the file is a/b.rs (module
    // a::b, parent a) or a/mod.rs (module a, parent the crate).
    let parent = own[..own.len().saturating_sub(1)].to_vec();
    for (start, root) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            rest = &rest[i + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // part of a longer path (e.g. `self::super::`)
            }
            expand(rest, root.clone(), &mut paths);
        }
    }
    paths
}

/// Reads one path (or brace group of paths) at the start of `text`.
fn expand(text: &str, prefix: Module, out: &mut Vec<Module>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut item_start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&group[item_start..i], prefix.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&group[item_start..i], prefix.clone(), out);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() || ident == "self" {
        out.push(prefix);
        return;
    }
    let mut path = prefix;
    path.push(ident.clone());
    match text[ident.len()..].strip_prefix("::") {
        Some(more) => expand(more, path, out),
        None => out.push(path),
    }
}

/// The module a path lands in: its longest prefix that is a file.
fn resolve(path: &Module, known: &BTreeMap<Module, PathBuf>) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| known.contains_key(m))
        .unwrap_or_default()
}

#[test]
fn the_worker_modules_form_one_way_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (module, file) in &known {
        if module.is_empty() {
            continue; // lib.rs declares and re-exports; nothing depends on it
        }
        let text = std::fs::read_to_string(file).unwrap();
        for path in referenced(&text, module) {
            let target = resolve(&path, &known);
            if target.is_empty() {
                wrong.push(format!(
                    "{}: crate::{} goes through lib.rs' re-exports; name the defining module",
                    file.display(),
                    path.join("::")
                ));
                continue;
            }
            if &target == module || module.starts_with(&target) {
                continue; // itself, or its own folder's mod.rs (declarations)
            }
            if rank(&target[0]) > rank(&module[0]) {
                wrong.push(format!(
                    "{} ({}) uses {} ({}), a layer above it",
                    file.display(),
                    module[0],
                    target.join("::"),
                    target[0]
                ));
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // No cycle: a depth-first search that never meets a module on its stack.
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = stack.iter().position(|s| s == m) {
            let cycle: Vec<String> = stack[at..]
                .iter()
                .chain([m])
                .map(|s| s.join("::"))
                .collect();
            panic!("import cycle: {}", cycle.join(" -> "));
        }
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            visit(next, edges, stack, done);
        }
        stack.pop();
        done.insert(m.clone());
    }
    let mut done = BTreeSet::new();
    for m in known.keys() {
        visit(m, &edges, &mut Vec::new(), &mut done);
    }
    // The check sees the layers it claims to check.
    assert!(edges.values().flatten().any(|t| t[0] == "db"));
    assert!(edges
        .get(&vec!["run".to_owned(), "worker".to_owned()])
        .is_some_and(|t| t.len() > 8));
}

#[test]
fn the_path_reader_finds_grouped_and_relative_paths() {
    let own: Module = vec!["db".into(), "queue".into()];
    let found = referenced(
        "use crate::{claim::Claim, db::{error::DbError, queries}};\nuse super::tls::PgTls;\n// crate::run::ignored\n",
        &own,
    );
    let shown: Vec<String> = found.iter().map(|m| m.join("::")).collect();
    assert_eq!(
        shown,
        [
            "claim::Claim",
            "db::error::DbError",
            "db::queries",
            "db::tls::PgTls"
        ]
    );
}
