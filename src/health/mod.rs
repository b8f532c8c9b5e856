//! Health probing: probes of every cluster's ingress drive which targets are answered.
//!
//! [`engine`] schedules the probes ([`http`], [`tcp`]); [`hysteresis`] turns results into
//! states; [`flap`] holds out a target whose state keeps changing; [`state`] holds the
//! verdicts and decides, with drain and force, whether each target is answered. Every
//! change publishes a new immutable snapshot. [`persist`] keeps the verdicts in a file
//! across restarts.

pub mod agree;
pub mod engine;
pub mod flap;
pub mod http;
pub mod hysteresis;
pub mod outcome;
pub mod persist;
pub mod pool;
pub mod publish;
pub mod state;
pub mod tcp;
pub mod tls;

pub use engine::{HealthEngine, HealthShared, ReloadSummary};
pub use state::{HealthTable, ProbeId, TargetState};
