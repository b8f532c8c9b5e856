//! Reading the config file off the async workers, with a deadline, one read at a time.
//!
//! [`crate::config::read`] never blocks on a FIFO or a device, but a regular file on a
//! stalled network filesystem can still hang in `read(2)` for good. Such a read runs on a
//! thread of its own that nothing waits for: the reload gives up after [`READ_TIMEOUT`]
//! (releasing the reload lock), shutdown never joins it, and while it stays stuck later
//! reloads fail at once with a line saying so instead of piling up more stuck threads.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::config::{ConfigError, ConfigErrors};

/// How long a reload waits for the config file to be read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the config file on a thread of its own; at most one read in flight.
#[derive(Debug)]
pub struct FileReader {
    /// When the read in flight started (None: no read in flight).
    in_flight: Arc<Mutex<Option<Instant>>>,
    timeout: Duration,
}

impl Default for FileReader {
    fn default() -> Self {
        Self::with_timeout(READ_TIMEOUT)
    }
}

impl FileReader {
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            in_flight: Arc::default(),
            timeout,
        }
    }

    /// Reads `path` with [`crate::config::read`].
    pub async fn read(&self, path: &Path) -> Result<String, ConfigErrors> {
        self.read_with(path, crate::config::read).await
    }

    /// Runs `read` on `path` on a thread of its own, waiting at most the timeout.
    pub async fn read_with(
        &self,
        path: &Path,
        read: impl FnOnce(&Path) -> Result<String, ConfigErrors> + Send + 'static,
    ) -> Result<String, ConfigErrors> {
        let fail = |msg: String| ConfigErrors::single(path, ConfigError::new("", msg));
        {
            let mut in_flight = self.lock();
            if let Some(since) = *in_flight {
                return Err(fail(format!(
                    "cannot read file: the previous read has not returned for {:.1?} \
                     (a stalled filesystem?); it is not read again until that one returns",
                    since.elapsed()
                )));
            }
            *in_flight = Some(Instant::now());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let owned: PathBuf = path.to_path_buf();
        let in_flight = self.in_flight.clone();
        let spawned = std::thread::Builder::new()
            .name("gtmd-config-read".into())
            .spawn(move || {
                let result = read(&owned);
                *in_flight.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            *self.lock() = None;
            return Err(fail(format!("cannot start a thread to read the file: {e}")));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(fail("cannot read file: the reading thread panicked".into())),
            Err(_) => Err(fail(format!(
                "cannot read file: no answer within {:?} (a stalled filesystem?)",
                self.timeout
            ))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `f` on a thread of its own and awaits its result without occupying an async
/// worker. Unlike `spawn_blocking`, shutdown does not wait for it.
pub async fn on_own_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.await.map_err(|_| "the thread panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stuck_read_times_out_and_blocks_no_later_read_for_long() {
        let reader = FileReader::with_timeout(Duration::from_millis(100));
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let path = Path::new("/cfg/gtmd.toml");
        let e = reader
            .read_with(path, move |_| {
                let _ = stuck.recv(); // blocks until released, like a hung NFS read
                Ok(String::new())
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/cfg/gtmd.toml"), "{e}");
        assert!(
            e.errors[0].message.contains("no answer within 100ms"),
            "{e:?}"
        );
        // While it is stuck, a later read says so at once.
        let e = reader
            .read_with(path, |_| Ok("x".into()))
            .await
            .unwrap_err();
        assert!(
            e.errors[0]
                .message
                .contains("the previous read has not returned"),
            "{e:?}"
        );
        // Once it returns, reads work again.
        release.send(()).unwrap();
        for _ in 0..500 {
            if reader.lock().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = reader.read_with(path, |_| Ok("x".into())).await.unwrap();
        assert_eq!(text, "x");
    }
}
