//! The layering of `src/`, checked so that it stays true without anyone remembering it: each
//! top-level module belongs to one layer of [`LAYERS`], and a file may use (`crate::` and
//! `super::` paths, `use crate::{..}` groups included) only modules of its own layer or of the
//! layers below it. Between files no import cycle is allowed at all. ARCHITECTURE.md describes
//! these layers; a new top-level module must be given a layer here.
//!
//! Below `src/` sit the other crates of the workspace (their own Cargo.toml files keep them
//! there): kafkabox-protocol, which depends on no other kafkabox crate, and kafkabox-storage,
//! which depends only on kafkabox-protocol (also checked here).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. Each name is a top-level module of `src/` (a file or a folder).
const LAYERS: &[(&str, &[&str])] = &[
    // Settings, the customer-events contract, TLS configuration, closing librdkafka clients.
    ("base", &["config", "contract", "tls", "clients"]),
    // The domain services: kafkabox's own terms, no wire types.
    ("services", &["services"]),
    // What the services are used by: the Kafka API (wire types), the handler pipeline and the
    // customer profiles it keeps.
    ("api and pipeline", &["api", "pipeline", "profile"]),
    // Built-in handlers (pipeline stages) and the HTTP API (which answers REST Proxy produce
    // with the Kafka API's error codes and shows the pipeline).
    ("handlers and http", &["handlers", "http"]),
    // The Kafka transport: connections and frames, handed to the API layer.
    ("transport", &["listener"]),
    // What assembles the product: the server (store, TLS, bound listeners), the appliance
    // (server, stages, HTTP) and `kafkabox handle` (the stages on a Kafka cluster).
    ("assembly", &["server", "appliance", "handle"]),
    // The front ends: the binary, its commands on a data directory, the benchmark.
    ("front ends", &["main", "lib", "cli", "datadir", "bench"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file of `src/`: `src/services/groups/mod.rs` is `services::groups`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod")) {
        parts.pop();
    }
    parts
}

/// The file that holds the longest existing prefix of a module path.
fn file_of(path: &[String]) -> Option<PathBuf> {
    for k in (1..=path.len()).rev() {
        let base = path[..k].iter().fold(src(), |p, s| p.join(s));
        for candidate in [base.with_extension("rs"), base.join("mod.rs")] {
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The code of a file without its unit tests (from the first `#[cfg(test)]`) and without
/// comments.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file names through `crate::` or `super::`.
fn paths_used(file: &Path) -> Vec<Vec<String>> {
    let me = module_of(file);
    // `super` of a folder's mod.rs is the folder's parent, of any other file its folder; both
    // are the module path without its last name.
    let parent = me[..me.len().saturating_sub(1)].to_vec();
    paths_in(&code(file), &parent)
}

/// The module paths `code` names through `crate::` or `super::` (`super` being `parent`),
/// `use crate::{a, b::c}` groups expanded (one level of braces, which is what rustfmt leaves
/// for module paths).
fn paths_in(code: &str, parent: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut segments = Vec::new();
            let mut tail = rest;
            loop {
                let n = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                if n == 0 {
                    break;
                }
                segments.push(tail[..n].to_string());
                tail = &tail[n..];
                if let Some(t) = tail.strip_prefix("::") {
                    tail = t;
                } else {
                    break;
                }
            }
            if let Some(group) = tail.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let item: Vec<String> = item
                        .split("::")
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty() && s != "self")
                        .collect();
                    let mut p = base.clone();
                    p.extend(segments.iter().cloned());
                    p.extend(item);
                    out.push(p);
                }
            } else if !segments.is_empty() {
                let mut p = base.clone();
                p.extend(segments);
                out.push(p);
            }
        }
    }
    out
}

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

/// Top-level module of a file (`main.rs` and `lib.rs` are `main` and `lib`).
fn top_of(file: &Path) -> String {
    module_of(file)
        .first()
        .cloned()
        .unwrap_or_else(|| "lib".into())
}

/// Every file of `src/` with the files its code uses.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut edges = BTreeMap::new();
    for f in &files {
        let mut to = BTreeSet::new();
        for p in paths_used(f) {
            if let Some(target) = file_of(&p) {
                if &target != f {
                    to.insert(target);
                }
            }
        }
        edges.insert(f.clone(), to);
    }
    edges
}

fn rel(p: &Path) -> String {
    p.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn every_top_level_module_has_a_layer() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
        if is_module && layer_of(&name).is_none() {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "src/ modules without a layer in tests/layering.rs: {missing:?}"
    );
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let mut wrong = Vec::new();
    for (from, tos) in graph() {
        let (from_top, lib) = (top_of(&from), rel(&from) == "src/lib.rs");
        let Some(mine) = layer_of(&from_top) else {
            continue;
        };
        for to in tos {
            let to_top = top_of(&to);
            let theirs = layer_of(&to_top).unwrap_or(usize::MAX);
            if theirs > mine && !lib {
                wrong.push(format!(
                    "{} ({}) uses {} ({})",
                    rel(&from),
                    LAYERS[mine].0,
                    rel(&to),
                    LAYERS.get(theirs).map_or("no layer", |l| l.0)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering (see tests/layering.rs and ARCHITECTURE.md):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycle_between_files() {
    let edges = graph();
    // Tarjan's strongly connected components, iteratively.
    let nodes: Vec<&PathBuf> = edges.keys().collect();
    let id: BTreeMap<&PathBuf, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            edges[*n]
                .iter()
                .filter_map(|t| id.get(t).copied())
                .collect()
        })
        .collect();
    let n = nodes.len();
    let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut next, mut cycles) = (Vec::new(), 0, Vec::new());
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut work = vec![(start, 0usize)];
        while let Some(&mut (v, ref mut i)) = work.last_mut() {
            if *i == 0 {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on[v] = true;
            }
            if *i < succ[v].len() {
                let w = succ[v][*i];
                *i += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                loop {
                    let w = stack.pop().unwrap();
                    on[w] = false;
                    component.push(rel(nodes[w]));
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    cycles.push(component.join(", "));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files of src/ that import each other (directly or round a cycle):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_kafka_api_reaches_storage_only_through_the_services() {
    // Storage's types may pass through (a topic, an error to map to a Kafka code); its calls
    // may not: `services.store`, `Store::` and friends belong in src/services/.
    let mut files = Vec::new();
    rust_files(&src().join("api"), &mut files);
    let mut calls = Vec::new();
    for f in files {
        let code = code(&f);
        for (n, line) in code.lines().enumerate() {
            let l = line.trim_start();
            let field = line.match_indices(".store").any(|(i, m)| {
                !line[i + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if field
                || line.contains("Store::")
                || line.contains("kafkabox_storage::Store;")
                || line.contains("kafkabox_storage::{Store,")
            {
                calls.push(format!("{}:{}: {}", rel(&f), n + 1, l));
            }
        }
    }
    assert!(
        calls.is_empty(),
        "the Kafka API calls the store directly:\n{}",
        calls.join("\n")
    );
}

#[test]
fn the_lower_crates_depend_only_downwards() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = |c: &str| std::fs::read_to_string(root.join(c).join("Cargo.toml")).unwrap();
    let protocol = manifest("protocol");
    assert!(
        !protocol.contains("kafkabox-storage") && !protocol.contains("path = \"..\""),
        "kafkabox-protocol depends on another kafkabox crate"
    );
    let rdadmin = manifest("rdadmin");
    assert!(
        !rdadmin.contains("path = "),
        "kafkabox-rdadmin depends on another kafkabox crate"
    );
    let storage = manifest("storage");
    assert!(
        !storage.contains("path = \"..\""),
        "kafkabox-storage depends on the kafkabox crate"
    );
    // Storage knows no Kafka versions: no wire types.
    let mut files = Vec::new();
    rust_files(&root.join("storage/src"), &mut files);
    let wire: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .contains("kafka_protocol::messages")
        })
        .map(|f| rel(f))
        .collect();
    assert!(wire.is_empty(), "storage files with wire types: {wire:?}");
}

#[test]
fn the_path_reader_sees_groups_and_super() {
    let code = "use crate::{config::Config, services};\nlet x = super::faults::pick();\nmycrate::no::such();";
    let parent = vec!["api".to_string()];
    let paths: Vec<String> = paths_in(code, &parent)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(paths, ["config::Config", "services", "api::faults::pick"]);
    // And on the tree itself: some file reaches another through `super::`.
    assert!(graph()
        .iter()
        .any(|(f, to)| code_has_super(f) && !to.is_empty()));
}

fn code_has_super(f: &Path) -> bool {
    code(f).contains("super::")
}
