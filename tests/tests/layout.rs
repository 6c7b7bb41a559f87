//! The gateway crate's structural rules (docs/architecture.md, "Module map"), checked on
//! the source tree so that they cannot rot: `config` imports no stage; one file names
//! `journal.db`; no source file over 500 lines (tests aside); no two top-level modules
//! import each other; the README's layout table names every top-level module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A test file: `tests.rs`, `*_tests.rs`, or anything under a `tests/` folder.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    let rel = path.strip_prefix(src()).unwrap();
    name == "tests.rs" || name.ends_with("_tests.rs") || rel.components().any(|c| c.as_os_str() == "tests")
}

/// The code of a file: comment lines dropped, and nothing from its `#[cfg(test)]` module on.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Top-level modules: `x.rs` or `x/` under src (`lib.rs` and `main.rs` aside).
fn top_level() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let module = if p.is_dir() { name } else { name.strip_suffix(".rs")?.to_owned() };
            (module != "lib" && module != "main").then_some(module)
        })
        .collect()
}

/// The top-level module a file belongs to.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.strip_suffix(".rs").map(str::to_owned).unwrap_or(first)
}

/// The top-level modules a piece of code names through `crate::`.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c}`: every first segment in the group.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                found.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.insert(name);
        }
    }
    found.retain(|m| modules.contains(m));
    found
}

#[test]
fn config_imports_no_stage() {
    let stages = [
        "devices", "downlink", "forward", "store", "ingest", "api", "cli", "tls", "app", "metrics", "pipeline", "link",
    ];
    let modules = top_level();
    let mut offenders = Vec::new();
    for file in files(&src().join("config")).into_iter().filter(|f| !is_test_file(f)) {
        for module in imports(&code(&file), &modules) {
            if stages.contains(&module.as_str()) {
                offenders.push(format!("{} imports {module}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "config must be a leaf: {offenders:#?}");
}

#[test]
fn one_file_names_the_journal() {
    let naming: Vec<PathBuf> =
        files(&src()).into_iter().filter(|f| !is_test_file(f) && code(f).contains("\"journal.db\"")).collect();
    assert_eq!(naming.len(), 1, "files naming \"journal.db\": {naming:#?}");
}

#[test]
fn no_source_file_is_over_500_lines() {
    let long: Vec<String> = files(&src())
        .into_iter()
        .filter(|f| !is_test_file(f))
        .filter_map(|f| {
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            (lines > 500).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by responsibility: {long:#?}");
}

#[test]
fn no_two_top_level_modules_import_each_other() {
    let modules = top_level();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files(&src()).into_iter().filter(|f| !is_test_file(f)) {
        let module = module_of(&file);
        if !modules.contains(&module) {
            continue;
        }
        let mut named = imports(&code(&file), &modules);
        named.remove(&module);
        graph.entry(module).or_default().extend(named);
    }
    let mut pairs = Vec::new();
    for (a, named) in &graph {
        for b in named {
            if a < b && graph.get(b).is_some_and(|n| n.contains(a)) {
                pairs.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(pairs.is_empty(), "modules importing each other: {pairs:?}");
    // The rule is checked on a real graph: the stages do import their leaves.
    assert!(graph["forward"].contains("store"), "{graph:?}");
}

#[test]
fn the_readme_layout_table_names_every_module() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let missing: Vec<String> = top_level()
        .into_iter()
        .filter(|m| {
            let dir = format!("`gateway/src/{m}/`");
            let file = format!("`gateway/src/{m}.rs`");
            let short = format!("`{m}.rs`");
            let short_dir = format!("`{m}/`");
            ![dir, file, short, short_dir].iter().any(|name| readme.contains(name.as_str()))
        })
        .collect();
    assert!(missing.is_empty(), "README.md's layout table does not name: {missing:?}");
}
