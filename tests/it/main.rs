//! gtmd integration tests: one binary, one module per area.

mod admin;
mod backend;
pub mod cli;
mod compliance;
mod config;
#[path = "../common/differential.rs"]
mod differential;
mod dig;
mod dns;
mod e2e;
mod fastpath;
#[path = "../common/fixtures.rs"]
mod fixtures;
mod flap;
mod fleet;
#[path = "../common/fuzz_checks.rs"]
mod fuzz_checks;
mod fuzz_regressions;
mod health;
mod logging;
mod malformed;
pub mod ops;
mod overload;
mod policy;
mod reload;
mod restart;
mod rrl;
mod support;
mod tcp;
