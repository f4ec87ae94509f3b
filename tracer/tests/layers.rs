//! The architecture, checked: every module of `tracer/src` imports only
//! from its own layer or the ones below it (lib.rs lists them), so the data
//! flows one way — kernel → probes → events → connection table → analysis →
//! outputs — and no import cycle can come back.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// Lowest first. `units`, `errors` and `fastmap` are leaves anyone may use.
const LAYERS: &[&str] = &[
    "kernel",
    "probes",
    "events",
    "conntrack",
    "metadata",
    "dns",
    "analysis",
    "pipeline",
    "config",
    "session",
    "output",
    "cli",
    "commands",
];
const LEAVES: &[&str] = &["units", "errors", "fastmap"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code before the file's test module (tests may reach anywhere).
fn non_test_code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// Every top-level module named by `crate::NAME` or inside `use crate::{...}`.
fn crate_imports(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Names at depth 1 of the group: after `{` or `,`.
            let mut depth = 1;
            let mut expect_name = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if expect_name && depth == 1 && c.is_ascii_alphabetic() => {
                        names.push(ident(&group[j..]));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(ident(rest));
        }
    }
    names
}

#[test]
fn every_module_imports_only_from_its_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let layer = |name: &str| LAYERS.iter().position(|l| *l == name);
    let mut violations = BTreeMap::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "main" || top == "lib" || relative.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for name in crate_imports(non_test_code(&text)) {
            let allowed = if LEAVES.contains(&top.as_str()) {
                false // leaves import nothing from the crate
            } else if LEAVES.contains(&name.as_str()) || name == top {
                true
            } else {
                match (layer(&top), layer(&name)) {
                    (Some(own), Some(other)) => other <= own,
                    _ => false,
                }
            };
            checked += 1;
            if !allowed {
                violations
                    .entry(relative.display().to_string())
                    .or_insert_with(Vec::new)
                    .push(name);
            }
        }
    }
    assert!(checked > 50, "the scan found only {checked} imports");
    assert!(
        violations.is_empty(),
        "modules importing from a layer above them (or unknown layers): {violations:#?}"
    );
}

#[test]
fn lib_rs_declares_exactly_the_layers_and_leaves() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    declared.sort();
    let mut expected: Vec<&str> = LAYERS.iter().chain(LEAVES).copied().collect();
    expected.sort();
    assert_eq!(declared, expected);
}

#[test]
fn the_import_scan_sees_groups_and_paths() {
    let code = "use crate::{\n    analysis::{a, b::{c}},\n    events::Event,\n    kernel,\n};\nfn f() { crate::units::ms(x); }";
    assert_eq!(
        crate_imports(code),
        ["analysis", "events", "kernel", "units"]
    );
}
