//! ARCHITECTURE.md stays true: every file or folder it names (a code span such as
//! `src/server.rs`, `storage/src/flush.rs`, `tests/layering.rs`) exists, and every Rust name it
//! gives as a path (`listener::serve`, `api::dispatch`, `Store::append`) is defined where it
//! says.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The code spans of a Markdown text (single backticks; in fenced blocks, the first word of
/// each line that does not start with a space: the codemap's entries).
fn spans(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            // An entry starts at the line's start; indented lines continue its description.
            if !line.starts_with(char::is_whitespace) {
                if let Some(word) = line.split_whitespace().next() {
                    out.push(word.to_string());
                }
            }
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let Some(inside) = parts.next() {
            out.push(inside.to_string());
            parts.next();
        }
    }
    out
}

const FILE_ENDINGS: &[&str] = &[
    ".rs", ".md", ".toml", ".json", ".py", ".sh", ".html", ".js", ".service",
];

fn is_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_alphanumeric() || "._-/".contains(c))
        && (s.contains('/') || FILE_ENDINGS.iter().any(|e| s.ends_with(e)))
        && !s.starts_with('/')
        && !s.contains("//")
}

fn is_rust_path(s: &str) -> bool {
    s.contains("::")
        && s.split("::")
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `name` is defined (fn, struct, enum, variant, trait, const, static, type, mod,
/// macro) in a file under `place` (a file, or a folder searched whole).
fn defined_in(place: &Path, name: &str) -> bool {
    let mut files = Vec::new();
    rust_files(place, &mut files);
    let kinds = [
        "fn",
        "struct",
        "enum",
        "trait",
        "const",
        "static",
        "type",
        "mod",
        "macro_rules!",
    ];
    let variant = name.starts_with(char::is_uppercase);
    files.iter().any(|f| {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        // An enum's variant: `Name(`, `Name {` or `Name,` opening a line.
        let is_variant = variant
            && text.lines().any(|l| {
                let l = l.trim_start();
                [format!("{name}("), format!("{name} {{"), format!("{name},")]
                    .iter()
                    .any(|v| l.starts_with(v.as_str()))
            });
        is_variant
            || kinds.iter().any(|k| {
                text.contains(&format!("{k} {name}("))
                    || text.contains(&format!("{k} {name} "))
                    || text.contains(&format!("{k} {name}<"))
                    || text.contains(&format!("{k} {name}:"))
                    || text.contains(&format!("{k} {name};"))
                    || text.contains(&format!("{k} {name}\n"))
            })
    })
}

/// Where a Rust path of ARCHITECTURE.md points: (the file or folder to search, the name).
/// `None` for paths it does not resolve (another crate's, a type's associated item spelled
/// with a type name outside the crates).
fn resolve(path: &str) -> Option<(PathBuf, String)> {
    let parts: Vec<&str> = path.split("::").collect();
    let name = parts.last()?.to_string();
    let (crate_src, rest): (PathBuf, &[&str]) = match parts[0] {
        "kafkabox_storage" | "Store" | "StoreError" | "Partition" | "PartitionState"
        | "StoreConfig" => {
            let rest = if parts[0] == "kafkabox_storage" {
                &parts[1..]
            } else {
                &parts[..]
            };
            (root().join("storage/src"), rest)
        }
        "kafkabox_protocol" => (root().join("protocol/src"), &parts[1..]),
        _ => (root().join("src"), &parts[..]),
    };
    // The longest prefix that is a module file or folder; the rest is items (Type::method).
    for k in (0..rest.len()).rev() {
        let base = rest[..k].iter().fold(crate_src.clone(), |p, s| p.join(s));
        for candidate in [base.with_extension("rs"), base.join("mod.rs"), base.clone()] {
            if k > 0 && candidate.exists() {
                let place = if candidate.ends_with("mod.rs") {
                    candidate.parent().unwrap().to_path_buf()
                } else {
                    candidate
                };
                return Some((place, name));
            }
        }
        if k == 0 {
            // A type's item (`Store::append`) or a crate-level name: the whole crate.
            let first = rest.first()?;
            if first.chars().next()?.is_uppercase() || rest.len() == 1 {
                return Some((crate_src, name));
            }
        }
    }
    None
}

#[test]
fn every_path_and_name_in_architecture_md_exists() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    let (mut paths, mut names) = (0, 0);
    for span in spans(&text) {
        let span = span.trim_end_matches([',', ':', ')']);
        if is_path(span) {
            paths += 1;
            if !root().join(span).exists() {
                missing.push(format!("file or folder {span}"));
            }
        } else if is_rust_path(span) {
            if let Some((place, name)) = resolve(span) {
                names += 1;
                if !defined_in(&place, &name) {
                    missing.push(format!(
                        "Rust name {span} (looked for {name} in {})",
                        place.display()
                    ));
                }
            }
        }
    }
    assert!(
        paths > 50 && names > 5,
        "ARCHITECTURE.md names {paths} paths and {names} Rust names: the codemap should give full paths"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what does not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_reader_finds_spans_paths_and_definitions() {
    let spans =
        spans("a `src/x.rs` and `api::dispatch`\n```\nsrc/    the crate\n      and/so on\n```\n");
    assert_eq!(spans, ["src/x.rs", "api::dispatch", "src/"]);
    assert!(defined_in(&root().join("storage/src"), "PartitionLimit"));
    assert!(is_path("storage/src/") && is_path("README.md") && !is_path("a b"));
    assert!(is_rust_path("listener::serve") && !is_rust_path("x"));
    assert!(defined_in(&root().join("src/api/mod.rs"), "dispatch"));
    assert!(!defined_in(
        &root().join("src/api/mod.rs"),
        "no_such_name_here"
    ));
}
