//! The one error type of the crate.

use std::path::PathBuf;

/// What went wrong in a benchmark run. No variant leaves anything behind
/// but what it names: nodes of a failed scenario are shut down or dropped
/// with their temporary data directories.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A node could not start or failed while running; the scenario stopped.
    #[error("node: {0}")]
    Runtime(#[from] cohort_runtime::RuntimeError),
    /// A file or socket operation failed; `what` says which.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An output file could not be written; earlier outputs stay written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Options that cannot be run; nothing was started.
    #[error("invalid options: {0}")]
    Options(String),
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}
