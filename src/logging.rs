//! Log setup: human-readable lines on stderr, filtered by `RUST_LOG`.
//!
//! hickory-server logs every request at INFO; at ~2 µs per line that would dominate the
//! query path, so its crates default to WARN unless `RUST_LOG` says otherwise.
//!
//! Logging can never take down or stall a task. tracing-subscriber's own writer reports a
//! failed write with `eprintln!`, which panics when stderr is a closed pipe (the probe task
//! that logged a transition died with it, and the target kept its last state); and a
//! write to a full pipe that nobody reads blocks the async worker that logs. So tasks only
//! hand each formatted line to a bounded queue ([`QUEUE_LINES`]) without waiting, and one
//! dedicated thread writes the queue to stderr. A line is dropped, and counted in
//! `gtmd_log_dropped_total`, when the queue is full (stderr is blocked or too slow) or when
//! the write fails (stderr closed). fd 2 itself is left in blocking mode: `O_NONBLOCK`
//! would change the file description shared with whoever started gtmd.

use std::{
    io::{self, Write},
    sync::{
        Condvar, LazyLock, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

use prometheus::IntCounter;
use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn";

/// Log lines waiting for the writer thread at most; more are dropped (and counted). At a
/// few hundred bytes a line that is well under a megabyte.
pub const QUEUE_LINES: usize = 1024;

/// How long [`Flush`] waits for queued lines to reach stderr when gtmd exits: the last
/// lines (shutdown) get written, but a stderr that nobody reads cannot hold the exit.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Log lines dropped because stderr was full or closed. Process-wide, as logging is: every
/// metrics registry registers this one counter.
pub static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "gtmd_log_dropped_total",
        "Log lines dropped because stderr was closed, failing, or not read fast enough.",
    )
    .expect("valid metric")
});

static QUEUE: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();
/// Lines handed to the queue, and lines the writer thread has finished (written or
/// dropped): [`Flush`] waits until the second catches up with the first.
static QUEUED: AtomicU64 = AtomicU64::new(0);
static DONE: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// The writer tracing-subscriber gets for each event: it queues the formatted line and
/// never fails, blocks or panics.
pub struct QueueWriter;

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match QUEUE.get() {
            Some(queue) => match queue.try_send(buf.to_vec()) {
                Ok(()) => {
                    QUEUED.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => DROPPED.inc(),
            },
            // No writer thread (it could not be started): write in place, errors dropped.
            None => {
                if io::stderr().write_all(buf).is_err() {
                    DROPPED.inc();
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes queued lines to stderr until every sender is gone.
fn write_lines(lines: Receiver<Vec<u8>>) {
    let mut stderr = io::stderr();
    for line in lines {
        if stderr.write_all(&line).is_err() {
            DROPPED.inc();
        }
        let (done, finished) = &DONE;
        *done.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        finished.notify_all();
    }
}

/// Returned by [`init`]: when dropped (as gtmd exits) it waits, at most [`FLUSH_WAIT`],
/// for the queued lines to be written.
#[must_use = "dropping it at once would not wait for the last log lines"]
pub struct Flush;

impl Drop for Flush {
    fn drop(&mut self) {
        flush(FLUSH_WAIT);
    }
}

/// Waits until every line queued so far is written or dropped, or `limit` has passed.
pub fn flush(limit: Duration) {
    let target = QUEUED.load(Ordering::Relaxed);
    let (done, finished) = &DONE;
    let guard = done.lock().unwrap_or_else(|e| e.into_inner());
    let _ = finished.wait_timeout_while(guard, limit, |done| *done < target);
}

/// Installs the global subscriber: text lines, or one JSON object per line (`json`).
pub fn init(json: bool) -> Flush {
    if QUEUE.get().is_none() {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let started = std::thread::Builder::new()
            .name("gtmd-log".into())
            .spawn(move || write_lines(rx));
        if started.is_ok() {
            let _ = QUEUE.set(tx);
        }
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: journald and container log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| QueueWriter)
        // Our writer never fails; were it to, no `eprintln!` (which panics on a closed
        // stderr) must follow.
        .log_internal_errors(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_ansi(ansi).try_init()
    };
    Flush
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_takes_every_line_without_failing() {
        // Whether or not a writer thread runs in this test process, a write succeeds.
        let mut w = QueueWriter;
        assert_eq!(w.write(b"a line\n").unwrap(), 7);
        w.flush().unwrap();
    }
}
