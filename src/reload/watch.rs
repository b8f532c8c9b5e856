//! Reloading when the config file changes, whatever else happens in its directory.
//!
//! The directory is watched, not the file: Kubernetes ConfigMaps update by swapping a
//! `..data` symlink in the directory, which a watch on the file itself would miss. Any
//! event in the directory (content, attributes, renames, symlink swaps; only reads are
//! ignored) wakes the watcher, which then compares the config file's [`FileState`] with
//! the last one it acted on: only a change of that file reloads. So a permission fix
//! (`chmod 000`, then `644`) is seen, a file that is still bad is reported once per change
//! of that file rather than on every unrelated event, and reading the file (which raises
//! events of its own) never triggers the next reload.
//!
//! Events are not debounced by waiting for quiet, which a file written every 100 ms
//! elsewhere in the directory would postpone forever: the watcher waits a fixed
//! [`SETTLE`] after the first event (so the write, rename and chmod of one save land
//! together), then looks. Wake-ups coalesce into one pending flag: nothing queues.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Reloader;

/// Pause after the first event of a burst before the file is looked at.
const SETTLE: Duration = Duration::from_millis(100);

/// What identifies one version of the config file on disk: where its symlinks lead, and
/// the metadata of the file there. Any change of content (size, mtime, ctime), mode,
/// owner or symlink target changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    /// `stat` failed (missing, or a directory on the way not searchable).
    Unreachable(std::io::ErrorKind),
    Present {
        resolved: Option<PathBuf>,
        dev: u64,
        ino: u64,
        size: u64,
        mtime: (i64, i64),
        ctime: (i64, i64),
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl FileState {
    fn of(path: &Path) -> Self {
        match std::fs::metadata(path) {
            Err(e) => Self::Unreachable(e.kind()),
            Ok(m) => Self::Present {
                resolved: std::fs::canonicalize(path).ok(),
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
            },
        }
    }
}

/// Starts watching the directory of `path`; reloads run until `cancel`.
pub(super) fn spawn(
    tasks: &mut JoinSet<()>,
    reloader: Arc<Reloader>,
    path: PathBuf,
    cancel: CancellationToken,
) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (ours included) raise access events: not a change. Everything else,
        // errors such as a queue overflow included, is a reason to look.
        let read_only = matches!(
            &event,
            Ok(e) if matches!(e.kind, notify::EventKind::Access(kind)
                if kind != notify::event::AccessKind::Close(notify::event::AccessMode::Write))
        );
        if !read_only {
            waker.notify_one();
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    info!(dir = %dir.display(), "watching the config directory for changes");
    // The file was loaded before this watch existed: a change in between (an edit right
    // after start) raised no event here. So the first look comes now, without an event,
    // and compares the file's text with the configuration in effect (`reload_if_changed`:
    // nothing happens when they are the same); a state taken now would already be the
    // edited file's and hide the edit until the next one.
    let mut seen: Option<FileState> = None;
    wake.notify_one();
    tasks.spawn(async move {
        let _watcher = watcher; // dropped (unwatched) when this task ends
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wake.notified() => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
            // On a thread nothing waits for at shutdown: `stat` can hang on a stalled
            // network filesystem too.
            let p = path.clone();
            let now = tokio::select! {
                _ = cancel.cancelled() => return,
                now = super::read::on_own_thread("gtmd-config-stat", move || FileState::of(&p)) => now,
            };
            let Ok(now) = now else { continue };
            if seen.as_ref() == Some(&now) {
                debug!("config directory changed, config file unchanged");
                continue;
            }
            seen = Some(now);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = reloader.reload_if_changed("file change") => {}
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_state_changes_with_mode_content_and_symlink_target_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), "one").unwrap();
        std::fs::write(d.join("b"), "one").unwrap();
        std::os::unix::fs::symlink("a", d.join("gtmd.toml")).unwrap();
        let path = d.join("gtmd.toml");
        let first = FileState::of(&path);
        std::fs::write(d.join("other"), "churn").unwrap();
        assert_eq!(FileState::of(&path), first, "another file changed");
        std::fs::set_permissions(d.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let chmodded = FileState::of(&path);
        assert_ne!(chmodded, first, "mode");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(FileState::of(&path), FileState::Unreachable(_)));
        std::os::unix::fs::symlink("b", &path).unwrap();
        assert_ne!(FileState::of(&path), chmodded, "symlink target");
    }
}
