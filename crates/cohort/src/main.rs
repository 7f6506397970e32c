#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
//! The `cohort` binary.
fn main() {}
