#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![deny(missing_docs)]
//! The IO shell that runs any cohort mode.

pub mod error;
pub mod storage;

pub use error::RuntimeError;
