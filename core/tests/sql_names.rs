//! No name from configuration reaches exactly's SQL: every `AssertSqlSafe(..)` in the
//! library and the `exactly` tool takes a string literal, or a `format!` that only puts
//! UPPER_CASE constants into one. Everything else travels as a bind parameter. sqlx takes
//! no other dynamic SQL (a `String` is not `SqlSafeStr`), so this scan sees all of it.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text between the `(` at `open` and its matching `)`, string literals skipped over.
fn argument(text: &str, open: usize) -> &str {
    let bytes = text.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0_usize, false, false);
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..i];
                }
            }
            _ => {}
        }
    }
    &text[open + 1..]
}

/// The names put into a format string: `{NAME}` or `{NAME:...}`; `{{` is a literal brace.
fn interpolated(literal: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = literal;
    while let Some(start) = rest.find('{') {
        if rest[start..].starts_with("{{") {
            rest = &rest[start + 2..];
            continue;
        }
        let Some(end) = rest[start..].find('}') else { break };
        let inner = &rest[start + 1..start + end];
        names.push(inner.split(':').next().unwrap_or(inner));
        rest = &rest[start + end + 1..];
    }
    names
}

/// Why the SQL given to `AssertSqlSafe` may carry a name from outside, if it may.
fn unsafe_reason(sql: &str) -> Option<String> {
    let sql = sql.trim();
    if sql.starts_with('"') || sql.starts_with("r\"") || sql.starts_with("r#\"") {
        return None;
    }
    let Some(arguments) = sql.strip_prefix("format!(") else {
        return Some(format!("not a literal or a format!: `{sql}`"));
    };
    let arguments = arguments.trim();
    let literal_end = arguments.rfind('"').unwrap_or(0);
    if !arguments[literal_end + 1..].trim().trim_start_matches(',').trim().trim_end_matches(')').trim().is_empty() {
        return Some(format!("format! with arguments: `{sql}`"));
    }
    let bad: Vec<&str> = interpolated(&arguments[..=literal_end])
        .into_iter()
        .filter(|name| {
            name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    (!bad.is_empty()).then(|| format!("interpolates {bad:?}, not UPPER_CASE constants"))
}

#[test]
fn sql_interpolates_only_constants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["core/src", "cli/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the sources were not found under {}", root.display());
    let mut seen = 0;
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (at, _) in text.match_indices("AssertSqlSafe(") {
            seen += 1;
            let sql = argument(&text, at + "AssertSqlSafe".len());
            if let Some(reason) = unsafe_reason(sql) {
                problems.push(format!("{}: {reason}", file.display()));
            }
        }
    }
    assert!(seen > 0, "no AssertSqlSafe found: the scan is broken");
    assert!(problems.is_empty(), "SQL built from something other than constants:\n{}", problems.join("\n"));
}

#[test]
fn the_scan_catches_a_name_put_into_sql() {
    assert_eq!(unsafe_reason(r#""SELECT 1""#), None);
    assert_eq!(unsafe_reason(r#"format!("SELECT {COLUMNS} FROM t WHERE id = $1")"#), None);
    assert!(unsafe_reason(r#"format!("SELECT * FROM {table}")"#).is_some());
    assert!(unsafe_reason(r#"format!("SELECT * FROM {}", table)"#).is_some());
    assert!(unsafe_reason("sql.as_str()").is_some());
    assert!(unsafe_reason(r#"format!("DROP TABLE {TABLE:?}")"#).is_none());
}
