//! The runtime's errors.

use std::path::PathBuf;

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration is invalid. Nothing was started.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data file belongs to another cluster or node. The file was not
    /// changed and the node did not start.
    #[error("refusing data file {path}: {reason}")]
    ForeignFile {
        /// The file.
        path: PathBuf,
        /// Whose it is.
        reason: String,
    },
    /// The data file is corrupted, truncated or not a cohort data file. The
    /// file was not changed and the node did not start.
    #[error("refusing data file {path}: corrupted or truncated: {reason}")]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What the storage engine reported.
        reason: String,
    },
    /// Reading or writing the data file failed. A failed write stops the
    /// node: what the failed transaction held may or may not be durable.
    #[error("storage error on {path}: {reason}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A socket or other OS resource failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}
