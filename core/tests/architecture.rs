//! The core's architecture, checked on its source: the top-level modules of `core/src`
//! import each other without a cycle, each may use only the layers below it (the order
//! the architecture chapter gives), and no source file or function grows past what a
//! reader can take in at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The top-level modules, lowest layer first: each may use only those before it.
const LAYERS: &[&str] = &[
    "redact",
    "failpoint",
    "error",
    "store",
    "kafka",
    "api",
    "pipeline",
    "ops",
    "engine",
    "database_mode",
    "kafka_mode",
    "outbox",
    "admin",
    "runtime",
];

/// Names `lib.rs` re-exports at the crate root, and the module each comes from: a use of
/// `crate::Error` is a use of `error`.
const ROOT_NAMES: &[(&str, &str)] = &[
    ("Error", "error"),
    ("ErrorClass", "error"),
    ("KafkaResource", "error"),
    ("Location", "error"),
    ("Result", "error"),
    ("Batch", "api"),
    ("Consumes", "api"),
    ("Context", "api"),
    ("Handler", "api"),
    ("HandlerError", "api"),
    ("Message", "api"),
    ("Output", "api"),
    ("RetryPolicy", "api"),
    ("StartFrom", "api"),
    ("Subscription", "api"),
    ("codec", "api"),
    ("mode", "api"),
    ("DeadLettered", "pipeline"),
    ("Health", "ops"),
    ("metrics", "ops"),
    ("dead_letters", "admin"),
    ("offsets", "admin"),
    ("migrate", "admin"),
    ("kafka_settings_from_env", "kafka"),
    ("GroupProtocol", "kafka"),
    ("Runtime", "runtime"),
    ("RuntimeBuilder", "runtime"),
];

const MAX_FILE_LINES: usize = 600;
const MAX_FUNCTION_LINES: usize = 80;

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The lines of `path` before its unit tests.
fn code_lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().take_while(|line| line.trim() != "#[cfg(test)]").map(str::to_owned).collect()
}

/// The top-level module `path` belongs to.
fn module_of(path: &Path) -> String {
    let relative = path.strip_prefix(source_root()).unwrap_or(path);
    let first = relative.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// Which top-level modules each top-level module uses (`crate::name`, outside comments).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust_files(&source_root()) {
        let module = module_of(&path);
        if module == "lib" {
            continue;
        }
        let uses = edges.entry(module.clone()).or_default();
        for line in code_lines(&path) {
            let line = line.trim();
            if line.starts_with("//") {
                continue;
            }
            for (_, rest) in line.match_indices("crate::").map(|(at, _)| line.split_at(at + "crate::".len())) {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let target = if LAYERS.contains(&name.as_str()) {
                    Some(name.as_str())
                } else {
                    ROOT_NAMES.iter().find(|(root, _)| *root == name).map(|(_, module)| *module)
                };
                if let Some(target) = target.filter(|target| *target != module) {
                    uses.insert(target.to_owned());
                }
            }
        }
    }
    edges
}

#[test]
fn every_top_level_module_is_a_known_layer() {
    let modules: BTreeSet<String> =
        rust_files(&source_root()).iter().map(|path| module_of(path)).filter(|m| m != "lib").collect();
    let layers: BTreeSet<String> = LAYERS.iter().map(|layer| (*layer).to_owned()).collect();
    assert_eq!(modules, layers, "a new top-level module needs its place in LAYERS and the architecture chapter");
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let rank = |module: &str| LAYERS.iter().position(|layer| *layer == module);
    let mut upward = Vec::new();
    for (module, uses) in dependencies() {
        for used in uses {
            if rank(&used) >= rank(&module) {
                upward.push(format!("{module} -> {used}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules that use a layer above (or beside) them, which makes a cycle possible: {upward:?}"
    );
}

#[test]
fn no_source_file_or_function_is_too_long_to_read_at_once() {
    let mut long = Vec::new();
    for path in rust_files(&source_root()) {
        let lines = code_lines(&path);
        if lines.len() > MAX_FILE_LINES {
            long.push(format!("{}: {} lines", path.display(), lines.len()));
        }
        for (start, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let is_fn = trimmed.starts_with("fn ")
                || ["pub ", "pub(crate) ", "pub(super) ", "async ", "const "]
                    .iter()
                    .any(|prefix| trimmed.starts_with(prefix) && trimmed.contains(" fn ") && !trimmed.contains('='));
            if !is_fn {
                continue;
            }
            // The signature ends with the body's `{`, or with `;` for a declaration; a
            // function on one line ends with its `}`.
            let signature_end =
                lines[start..].iter().map(|l| l.trim_end()).find(|l| l.ends_with('{') || l.ends_with(';'));
            if signature_end.is_none_or(|l| l.ends_with(';')) || (trimmed.contains('{') && trimmed.ends_with('}')) {
                continue;
            }
            let closing = format!("{indent}}}");
            let end = lines[start..].iter().position(|l| *l == closing).map_or(0, |at| at + 1);
            if end > MAX_FUNCTION_LINES {
                long.push(format!("{}:{}: a function of {end} lines", path.display(), start + 1));
            }
        }
    }
    assert!(long.is_empty(), "over {MAX_FILE_LINES} lines a file, or {MAX_FUNCTION_LINES} a function: {long:#?}");
}
