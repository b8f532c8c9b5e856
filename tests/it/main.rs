//! gtmd integration tests: one binary, one module per area.

pub mod cli;
mod config;
mod dig;
mod dns;
mod malformed;
mod support;
