//! Output: a table for people, JSON for scripts, and a progress bar for long work.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Prints `value` as JSON when `json`, else the table `table` builds.
pub(crate) fn print<T: Serialize>(json: bool, value: &T, table: impl FnOnce(&T) -> Table) {
    if json {
        self::json(value);
    } else {
        println!("{}", table(value));
    }
}

/// Prints `value` as JSON.
pub(crate) fn json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// A table with `header`; columns whose header starts with `>` are right-aligned.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(header.iter().map(|h| h.trim_start_matches('>')));
    for (index, name) in header.iter().enumerate() {
        if name.starts_with('>')
            && let Some(column) = table.column_mut(index)
        {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// An optional number, `-` when absent.
pub(crate) fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Bytes as text when they are UTF-8, else as hex (`0x...`); `null` when absent.
pub(crate) fn bytes(value: Option<&[u8]>) -> String {
    match value {
        None => "null".to_owned(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => format!("0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        },
    }
}

/// A progress bar on stderr for `total` steps (hidden when stderr is not a terminal, or
/// for JSON output).
pub(crate) fn progress(total: u64, what: &str, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} ({eta})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}
