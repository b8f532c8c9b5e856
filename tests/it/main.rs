//! gtmd integration tests: one binary, one module per area.

mod backend;
pub mod cli;
mod config;
mod dig;
mod dns;
mod e2e;
mod fastpath;
mod health;
mod malformed;
pub mod ops;
mod policy;
mod reload;
mod rrl;
mod support;
mod tcp;
