//! The crate's layer table, checked: each module uses only modules of a lower layer,
//! and modules inside one folder never import each other in a circle. A new `use
//! crate::…` that points upward fails this test, which keeps the house in order.

#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, bottom to top. Same layer: no edge either way.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["layout", "storage"],
    // Spark's functions, and Spark SQL text read into DataFusion's syntax.
    &["functions", "sql"],
    &["definition"],
    &["conf", "params"],
    &["frame", "optimizer"],
    // Sluice's CSV reader (a table on the scheduler, an operator on executors).
    &["read"],
    &["quality"],
    // The planner (on the scheduler) and the write operator (on executors): siblings.
    &["compile", "write"],
    &["codec"],
    &["session"],
    &["datagen"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file below `src`, as (module path, text): `compile/steps.rs` is
/// `["compile", "steps"]`.
fn sources(src: &Path) -> Vec<(Vec<String>, String)> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(src).unwrap().with_extension("");
                let module = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.push((module, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files
}

/// The modules a file refers to by `crate::name` (top level) and `super::name`
/// (siblings inside its folder), outside its own `#[cfg(test)]` code.
fn references(text: &str, prefix: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

#[test]
fn modules_use_only_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = Vec::new();
    for (module, text) in sources(&src) {
        let top = module[0].as_str();
        if matches!(top, "lib" | "layers") {
            continue;
        }
        let own = layer_of(top).unwrap_or_else(|| panic!("module `{top}` is not in LAYERS"));
        for used in references(&text, "crate::") {
            if used == top {
                continue; // a folder's files use their own façade
            }
            let layer =
                layer_of(&used).unwrap_or_else(|| panic!("`crate::{used}` is not in LAYERS"));
            if layer >= own {
                upward.push(format!("{}.rs uses crate::{used}", module.join("/")));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that are not downward: {upward:#?}"
    );
}

#[test]
fn modules_inside_a_folder_import_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // folder → (file → siblings it uses)
    let mut folders: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, text) in sources(&src) {
        if let [folder, file] = module.as_slice() {
            let mut used = references(&text, "super::");
            for via_parent in references(&text, &format!("crate::{folder}::")) {
                used.insert(via_parent);
            }
            used.remove(file);
            folders
                .entry(folder.clone())
                .or_default()
                .insert(file.clone(), used);
        }
    }
    for (folder, graph) in &folders {
        // Kahn's algorithm over sibling edges: whatever is left is on a circle.
        let mut edges: BTreeMap<&str, BTreeSet<&str>> = graph
            .iter()
            .map(|(file, used)| {
                let siblings = used
                    .iter()
                    .filter(|u| graph.contains_key(u.as_str()))
                    .map(String::as_str)
                    .collect();
                (file.as_str(), siblings)
            })
            .collect();
        loop {
            let leaves: Vec<&str> = edges
                .iter()
                .filter(|(_, used)| used.is_empty())
                .map(|(file, _)| *file)
                .collect();
            if leaves.is_empty() {
                break;
            }
            for leaf in leaves {
                edges.remove(leaf);
                for used in edges.values_mut() {
                    used.remove(leaf);
                }
            }
        }
        assert!(
            edges.is_empty(),
            "{folder}/: files import each other in a circle: {edges:?}"
        );
    }
}
