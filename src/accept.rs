//! Accepting connections on a TCP listener (DNS over TCP, admin HTTP) without spinning when
//! `accept` fails.
//!
//! Out of descriptors (EMFILE/ENFILE), `accept` fails at once for as long as the shortage
//! lasts; retrying at once spun a core (~9,200 failed `accept4` per second) and starved
//! the tasks (probes) whose closing descriptors would end the shortage. So after a failure
//! the listener pauses: 10 ms, doubling up to 1 s, back to 10 ms after a success. Each
//! failure is counted; one WARN line per streak of failures, the rest at DEBUG.

use std::{net::SocketAddr, time::Duration};

use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The pause after a failed accept, doubling with each failure in a row.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(10);
    pub const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The pause for this failure; the next one will be twice as long (up to [`Self::MAX`]).
    pub fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        pause
    }

    /// True if the last accept succeeded (the next failure starts a new streak).
    pub fn is_reset(&self) -> bool {
        self.next == Self::FIRST
    }

    pub fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// The next connection on `listener` (`what` names it in log lines), pausing after each
/// failure as `backoff` says and counting it in `errors`; None once `cancel` fires.
pub async fn next(
    listener: &TcpListener,
    backoff: &mut Backoff,
    errors: &IntCounter,
    what: &str,
    cancel: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(a) => {
                backoff.succeeded();
                return Some(a);
            }
            Err(e) => {
                errors.inc();
                if backoff.is_reset() {
                    warn!(error = %e, "{what} accept failed: pausing accepts (10 ms doubling to 1 s) until one succeeds");
                } else {
                    debug!(error = %e, "{what} accept failed again");
                }
                let pause = backoff.failed();
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::new();
        let pauses: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert!(b.is_reset());
        assert_eq!(b.failed(), Backoff::FIRST);
    }
}
