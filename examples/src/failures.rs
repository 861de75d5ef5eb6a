//! Handler failures a runtime reports, kept in a file so that the examples can check that
//! there were none: a handler error is retried and a message out of retries is
//! dead-lettered, so a run can end with every row right and still have failed on the way.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// An append-only file of the handler failures a runtime reported, one line each.
///
/// A file, not a counter in memory: the demo's worker is killed with SIGKILL, and what it
/// reported must outlive it. Each line is one `write` to a file opened for appending, so
/// lines from successive workers never interleave.
#[derive(Debug, Clone)]
pub struct FailureLog {
    path: PathBuf,
}

impl FailureLog {
    /// The log at `path` (created on the first failure).
    pub fn at(path: impl Into<PathBuf>) -> FailureLog {
        FailureLog { path: path.into() }
    }

    /// An empty log at `path`: an older run's failures removed.
    ///
    /// # Errors
    /// When an old log exists and cannot be removed.
    pub fn fresh(path: impl Into<PathBuf>) -> anyhow::Result<FailureLog> {
        let log = FailureLog::at(path);
        match std::fs::remove_file(&log.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(log),
        }
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `builder` with both hooks set to this log: handler failures from `on_error`, dead
    /// letters from `on_dead_letter`.
    pub fn watch(&self, builder: exactly::RuntimeBuilder) -> exactly::RuntimeBuilder {
        let (errors, letters) = (self.clone(), self.clone());
        builder
            .on_error(move |error| errors.record(error))
            .on_dead_letter(move |letter| letters.record_dead_letter(letter))
    }

    /// Records `error` if it is a handler's failure; for [`RuntimeBuilder::on_error`](exactly::RuntimeBuilder::on_error).
    pub fn record(&self, error: &exactly::Error) {
        if is_handler_failure(error) {
            self.append(&error.to_string());
        }
    }

    /// Records a message moved to the dead letters; for
    /// [`RuntimeBuilder::on_dead_letter`](exactly::RuntimeBuilder::on_dead_letter).
    pub fn record_dead_letter(&self, letter: &exactly::DeadLettered) {
        self.append(&letter.to_string());
    }

    /// Appends `report` as one line.
    fn append(&self, report: &str) {
        let line = format!("{}\n", report.replace('\n', " "));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(e) = written {
            // Losing a report would hide a failure: say so where the worker's output goes.
            eprintln!("cannot record a failure in {}: {e}: {line}", self.path.display());
        }
    }

    /// How many handler failures were recorded.
    ///
    /// # Errors
    /// When the log exists and cannot be read.
    pub fn count(&self) -> anyhow::Result<usize> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text.lines().count()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `error` says a handler failed on a message: it returned an error, or its
/// message could not be decoded. (A message moved to the dead letters is an event of its
/// own, [`FailureLog::record_dead_letter`].)
pub fn is_handler_failure(error: &exactly::Error) -> bool {
    matches!(error, exactly::Error::Handler { .. } | exactly::Error::Decode { .. })
}
