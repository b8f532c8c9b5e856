//! The result of one probe, with the reason people need to read in a log line.

use std::{fmt, time::Duration};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// HTTP status received (acceptable or not, see [`Outcome::up`]).
    Status(u16),
    /// The status was acceptable but the body lacked the expected text.
    BodyMismatch,
    /// TCP connect succeeded (tcp probes).
    Connected,
    Timeout(Duration),
    ConnectionRefused,
    /// Another connection failure (unreachable, reset, …).
    Connect(String),
    Tls(String),
    /// Malformed response or another protocol error.
    Protocol(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Status(s) => write!(f, "status {s}"),
            Reason::BodyMismatch => f.write_str("body does not contain the expected text"),
            Reason::Connected => f.write_str("connected"),
            Reason::Timeout(d) => write!(f, "timeout after {}", humantime::format_duration(*d)),
            Reason::ConnectionRefused => f.write_str("connection refused"),
            Reason::Connect(e) => write!(f, "connection failed: {e}"),
            Reason::Tls(e) => write!(f, "TLS error: {e}"),
            Reason::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// Every value [`Reason::label`] can return for a failure.
pub const REASON_LABELS: [&str; 7] = [
    "status", "body", "timeout", "refused", "connect", "tls", "protocol",
];

impl Reason {
    /// A short, bounded label for metrics (`status`, `timeout`, `refused`, …).
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Status(_) => "status",
            Reason::BodyMismatch => "body",
            Reason::Connected => "ok",
            Reason::Timeout(_) => "timeout",
            Reason::ConnectionRefused => "refused",
            Reason::Connect(_) => "connect",
            Reason::Tls(_) => "tls",
            Reason::Protocol(_) => "protocol",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub up: bool,
    pub reason: Reason,
    pub duration: Duration,
}
