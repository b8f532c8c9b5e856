//! Warm restart: the verdict of every target kept in a file (`[health] state_file`) and
//! restored at start.
//!
//! Without it a restart (crash, upgrade, node reboot) starts every target from `initial`:
//! with `initial = "up"` a dead cluster is answered until the probes catch up, with
//! `"down"` the healthy ones are withheld. Health belongs to the target (app × cluster, or
//! a cluster for its own probe), not to a process's lifetime.
//!
//! Writing: probe tasks hand each new verdict (a transition, or the first verdict a task
//! settles on) to [`StateWriter`], which only records it in a map and wakes a thread of its
//! own: no I/O on the async workers, none on the DNS path. The thread writes the whole file
//! atomically (a temporary file in the same directory, fsync, rename, fsync of the
//! directory) at most once per [`MIN_WRITE_GAP`] (or four times the last write's duration
//! if that is longer, so a huge table cannot keep the disk busy), taking every verdict that
//! arrived meanwhile: a burst of 10,000 transitions is one or two writes. It writes once
//! more at a clean shutdown. A failed write is counted
//! (`gtmd_health_state_write_errors_total`), logged at most once a minute, and retried
//! with the next change.
//!
//! Reading: once, at start, bounded to [`MAX_FILE_BYTES`] with the config file's guards (a
//! regular file only). A file that is unreadable, corrupt, too large, of another format
//! version, older than `state_max_age` or written for another deployment (none of its zones
//! is served by this configuration) is ignored with one WARN line naming the file and why;
//! entries of targets that are no longer configured are ignored and counted. Zones are the
//! identity because they are what a deployment serves: an edit that adds or removes apps,
//! clusters or even zones keeps the state of every target still there.
//!
//! A verdict restored but not yet confirmed by a probe of this process keeps the time it
//! was last known (`as_of`) in later writes, so a crash loop cannot keep an old verdict
//! alive past `state_max_age`.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hickory_proto::rr::Name;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::state::{HealthTable, ProbeId, ProbeState, probes};
use crate::{metrics::Metrics, model::Model};

/// What the file says it is.
pub const FORMAT: &str = "gtmd-health-state";
/// The format version written and the only one read.
pub const VERSION: u32 = 1;
/// Largest state file read or written: about 500,000 targets with typical names and
/// reasons (~130 bytes each), about 110,000 with 253-byte names and the longest reasons.
/// A larger file is not written (counted and logged as a failed write).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Shortest time between two writes: also how stale the file can be after a change.
pub const MIN_WRITE_GAP: Duration = Duration::from_millis(200);
/// A verdict's reason is cut to this many bytes in the file.
pub const MAX_REASON_BYTES: usize = 160;
/// A file written this far in the future (a clock set back) is still read, as age 0.
const FUTURE_TOLERANCE: Duration = Duration::from_secs(60);
/// At most one WARN line per this for failed writes.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// A verdict as kept for the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub up: bool,
    pub reason: Arc<str>,
    /// When the state last changed.
    pub since: SystemTime,
    /// When it was last known true: None while this process's probes confirm it (as of
    /// each write); a restored verdict keeps its file's until a probe confirms it.
    pub as_of: Option<SystemTime>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    /// Unix milliseconds.
    written_at: u64,
    /// The zones of the configuration that wrote it: the deployment's identity.
    zones: Vec<String>,
    targets: Vec<TargetEntry>,
    clusters: Vec<ClusterEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Verdict {
    up: bool,
    reason: String,
    /// Unix milliseconds.
    since: u64,
    /// Unix milliseconds.
    as_of: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct TargetEntry {
    app: String,
    cluster: String,
    #[serde(flatten)]
    verdict: Verdict,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClusterEntry {
    cluster: String,
    #[serde(flatten)]
    verdict: Verdict,
}

/// Read first, so another version is named as such rather than as a parse error.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u64>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn cut(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// The health table to start from: every target in its initial state, except those
/// restored from the state file; and those verdicts, to seed the writer with.
pub struct Restored {
    pub table: HealthTable,
    pub seed: HashMap<ProbeId, Kept>,
}

/// What [`load`] found usable.
struct Loaded {
    age: Duration,
    entries: Vec<(ProbeId, Kept)>,
    gone: usize,
    stale: usize,
}

/// Why the file is not used.
enum Skip {
    /// No file yet (first start): nothing to warn about.
    Missing,
    Ignored(String),
}

/// Reads `model`'s state file (if any) and returns the table to start from; logs what it
/// did in one line. Blocking: call it off the async workers.
pub fn restore(model: &Model, now: SystemTime) -> Restored {
    let mut out = Restored {
        table: HealthTable::initial(model),
        seed: HashMap::new(),
    };
    let Some(path) = &model.health.state_file else {
        return out;
    };
    let loaded = match load(path, model, now) {
        Ok(l) => l,
        Err(Skip::Missing) => {
            info!(file = %path.display(), "no health state file yet: every target starts from its initial state");
            return out;
        }
        Err(Skip::Ignored(why)) => {
            warn!(
                file = %path.display(),
                "health state file ignored: {why}; every target starts from its initial state"
            );
            return out;
        }
    };
    let mut down = Vec::new();
    let restored = loaded.entries.len();
    for (id, kept) in loaded.entries {
        let Some(entry) = out.table.get_mut(&id) else {
            continue;
        };
        let age = kept.as_of.and_then(|t| now.duration_since(t).ok());
        entry.state = ProbeState {
            up: kept.up,
            reason: Arc::from(format!(
                "restored from state file (age {}): {}",
                secs(age.unwrap_or_default()),
                kept.reason
            )),
            since: kept.since,
        };
        if !kept.up {
            down.push(id.to_string());
        }
        out.seed.insert(id, kept);
    }
    let shown = down.len().min(10);
    info!(
        file = %path.display(),
        written_ago = %secs(loaded.age),
        restored,
        down = down.len(),
        not_configured = loaded.gone,
        too_old = loaded.stale,
        "health state restored: targets start from their last verdict ({}{})",
        if down.is_empty() { "none down".to_owned() } else { format!("down: {}", down[..shown].join(", ")) },
        if down.len() > shown { format!(" and {} more", down.len() - shown) } else { String::new() },
    );
    out
}

fn load(path: &Path, model: &Model, now: SystemTime) -> Result<Loaded, Skip> {
    if let Err(e) = std::fs::symlink_metadata(path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Err(Skip::Missing);
    }
    let ignored = Skip::Ignored;
    let text = crate::config::read_limited(path, MAX_FILE_BYTES).map_err(ignored)?;
    let header: Header = serde_json::from_str(&text)
        .map_err(|e| Skip::Ignored(format!("not a gtmd health state file (corrupt: {e})")))?;
    if header.format.as_deref() != Some(FORMAT) {
        return Err(Skip::Ignored(format!(
            "not a gtmd health state file (format {:?}, expected {FORMAT:?})",
            header.format.unwrap_or_default()
        )));
    }
    if header.version != Some(u64::from(VERSION)) {
        return Err(Skip::Ignored(format!(
            "format version {}, this gtmd reads version {VERSION}",
            header.version.map_or("none".to_owned(), |v| v.to_string())
        )));
    }
    let file: StateFile =
        serde_json::from_str(&text).map_err(|e| Skip::Ignored(format!("corrupt: {e}")))?;
    let max_age = model.health.state_max_age;
    let age_of = |ms: u64| -> Result<Duration, Duration> {
        match now.duration_since(from_unix_ms(ms)) {
            Ok(age) => Ok(age),
            Err(e) if e.duration() <= FUTURE_TOLERANCE => Ok(Duration::ZERO),
            Err(e) => Err(e.duration()),
        }
    };
    let age = age_of(file.written_at).map_err(|ahead| {
        Skip::Ignored(format!(
            "written {} in the future (is the clock right?)",
            secs(ahead)
        ))
    })?;
    if age > max_age {
        return Err(Skip::Ignored(format!(
            "written {} ago, longer than health.state_max_age ({})",
            secs(age),
            secs(max_age)
        )));
    }
    let ours: HashSet<String> = model.zones.iter().map(|z| z.origin.to_string()).collect();
    if !file.zones.iter().any(|z| ours.contains(z)) {
        let mut mine: Vec<&str> = ours.iter().map(String::as_str).collect();
        mine.sort_unstable();
        return Err(Skip::Ignored(format!(
            "written for another deployment: none of its zones ({}) is served by this configuration ({})",
            file.zones.join(", "),
            mine.join(", ")
        )));
    }
    let live: HashSet<ProbeId> = probes(model).into_iter().map(|(id, _)| id).collect();
    let mut out = Loaded {
        age,
        entries: Vec::new(),
        gone: 0,
        stale: 0,
    };
    let mut take = |id: Option<ProbeId>, v: Verdict| {
        let Some(id) = id.filter(|id| live.contains(id)) else {
            out.gone += 1;
            return;
        };
        if age_of(v.as_of).map_or(true, |a| a > max_age) {
            out.stale += 1;
            return;
        }
        out.entries.push((
            id,
            Kept {
                up: v.up,
                reason: Arc::from(cut(&v.reason)),
                since: from_unix_ms(v.since),
                as_of: Some(from_unix_ms(v.as_of)),
            },
        ));
    };
    for t in file.targets {
        let id = t.app.parse::<Name>().ok().map(|app| ProbeId::App {
            app,
            cluster: Arc::from(t.cluster.as_str()),
        });
        take(id, t.verdict);
    }
    for c in file.clusters {
        take(
            Some(ProbeId::Cluster(Arc::from(c.cluster.as_str()))),
            c.verdict,
        );
    }
    Ok(out)
}

/// The file's text for `verdicts` of `model`, at `now`.
fn render(
    model: &Model,
    verdicts: &HashMap<ProbeId, Kept>,
    now: SystemTime,
) -> Result<Vec<u8>, String> {
    let verdict = |k: &Kept| Verdict {
        up: k.up,
        reason: cut(&k.reason),
        since: unix_ms(k.since),
        as_of: unix_ms(k.as_of.unwrap_or(now)),
    };
    let mut targets = Vec::new();
    let mut clusters = Vec::new();
    for (id, k) in verdicts {
        match id {
            ProbeId::App { app, cluster } => targets.push(TargetEntry {
                app: app.to_string(),
                cluster: cluster.to_string(),
                verdict: verdict(k),
            }),
            ProbeId::Cluster(cluster) => clusters.push(ClusterEntry {
                cluster: cluster.to_string(),
                verdict: verdict(k),
            }),
        }
    }
    // Sorted, so that two writes of the same state are the same file.
    targets.sort_unstable_by(|a, b| (&a.app, &a.cluster).cmp(&(&b.app, &b.cluster)));
    clusters.sort_unstable_by(|a, b| a.cluster.cmp(&b.cluster));
    let file = StateFile {
        format: FORMAT.to_owned(),
        version: VERSION,
        written_at: unix_ms(now),
        zones: model.zones.iter().map(|z| z.origin.to_string()).collect(),
        targets,
        clusters,
    };
    let mut text = serde_json::to_vec(&file).map_err(|e| format!("cannot encode: {e}"))?;
    text.push(b'\n');
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes, over the limit of {MAX_FILE_BYTES}: not written",
            text.len()
        ));
    }
    Ok(text)
}

/// Replaces `path` with `text` atomically: a crash leaves the old file or the new one.
fn write_atomic(path: &Path, text: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| "the path names no file".to_owned())?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", tmp.display())
    })
}

#[derive(Default)]
struct Pending {
    /// Latest verdict per target since the last write (one entry per target: bounded by
    /// the number of probes however many transitions arrive).
    changes: HashMap<ProbeId, Kept>,
    /// A model applied by a reload: targets not in it leave the file.
    model: Option<Arc<Model>>,
    dirty: bool,
    stop: bool,
    stopped: bool,
}

struct WriterShared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl WriterShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The state file's writer: a thread of its own fed through a small map.
pub struct StateWriter {
    shared: Arc<WriterShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl StateWriter {
    /// Starts the writer thread for `path`, knowing `seed` (the restored verdicts).
    pub fn start(
        path: PathBuf,
        model: Arc<Model>,
        seed: HashMap<ProbeId, Kept>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let shared = Arc::new(WriterShared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("gtmd-health-state".into())
                .spawn(move || run(&shared, &path, model, seed, &metrics))
                .map_err(|e| format!("cannot start the health state file writer: {e}"))?
        };
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Records a target's new verdict, to be written within [`MIN_WRITE_GAP`]. Cheap: a map
    /// insert under a lock no I/O ever holds.
    pub fn verdict(&self, id: &ProbeId, kept: Kept) {
        let mut p = self.shared.lock();
        p.changes.insert(id.clone(), kept);
        p.dirty = true;
        self.shared.wake.notify_all();
    }

    /// The configuration changed: targets no longer in it leave the file.
    pub fn model(&self, model: Arc<Model>) {
        let mut p = self.shared.lock();
        p.model = Some(model);
        p.dirty = true;
        self.shared.wake.notify_all();
    }

    /// Writes the file one last time and ends the thread; waits at most `wait` for it
    /// (a hung disk must not hold up shutdown). Blocking.
    pub fn finish(&self, wait: Duration) {
        let mut p = self.shared.lock();
        p.stop = true;
        self.shared.wake.notify_all();
        let deadline = Instant::now() + wait;
        while !p.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(
                    "the health state file writer did not finish in time: the last changes may not be on disk"
                );
                return;
            }
            p = self
                .shared
                .wake
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(p);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        // Not finished (a test server dropped without stop): let the thread end.
        let mut p = self.shared.lock();
        p.stop = true;
        self.shared.wake.notify_all();
    }
}

/// Failed writes: the first logged at once, then at most one line per [`ERROR_LOG_EVERY`].
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

fn run(
    shared: &WriterShared,
    path: &Path,
    mut model: Arc<Model>,
    mut verdicts: HashMap<ProbeId, Kept>,
    metrics: &Metrics,
) {
    let mut last_write: Option<Instant> = None;
    let mut gap = MIN_WRITE_GAP;
    let mut errors = ErrorLog::default();
    loop {
        let (changes, new_model, stop) = {
            let mut p = shared.lock();
            while !p.dirty && !p.stop {
                p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            // Coalesce: whatever arrives until the gap is over goes into the same write.
            if let Some(t) = last_write {
                let until = t + gap;
                while !p.stop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    p = shared
                        .wake
                        .wait_timeout(p, until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            p.dirty = false;
            (std::mem::take(&mut p.changes), p.model.take(), p.stop)
        };
        verdicts.extend(changes);
        if let Some(m) = new_model {
            let live: HashSet<ProbeId> = probes(&m).into_iter().map(|(id, _)| id).collect();
            verdicts.retain(|id, _| live.contains(id));
            model = m;
        }
        let started = Instant::now();
        let result =
            render(&model, &verdicts, SystemTime::now()).and_then(|text| write_atomic(path, &text));
        gap = MIN_WRITE_GAP.max(started.elapsed() * 4);
        last_write = Some(Instant::now());
        match result {
            Ok(()) => {
                metrics.health_state_writes.inc();
                if errors.last.take().is_some() {
                    info!(file = %path.display(), "health state file written again");
                    errors.suppressed = 0;
                }
            }
            Err(e) => {
                metrics.health_state_write_errors.inc();
                let due = errors.last.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY);
                if due {
                    warn!(
                        file = %path.display(),
                        error = %e,
                        failures_not_logged = errors.suppressed,
                        "cannot write the health state file: a restart now would start from older state (see gtmd_health_state_write_errors_total)"
                    );
                    errors.last = Some(Instant::now());
                    errors.suppressed = 0;
                } else {
                    errors.suppressed += 1;
                }
            }
        }
        if stop {
            let mut p = shared.lock();
            p.stopped = true;
            shared.wake.notify_all();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(state_file: &Path, apps: &[&str]) -> Arc<Model> {
        let mut text = format!(
            concat!(
                r#"
[health]
state_file = "{}"
[health.defaults]
kind = "tcp"
port = 80
"#,
                crate::test_support::t_test_zone!(),
                r#"[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
probe = {{ kind = "tcp", port = 81 }}
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
"#
            ),
            state_file.display()
        );
        for app in apps {
            text.push_str(&format!(
                "[[apps]]\nhostname = \"{app}\"\ntargets = [{{ cluster = \"a\" }}, {{ cluster = \"b\" }}]\n"
            ));
        }
        Arc::new(crate::from_text(Path::new("t.toml"), &text).unwrap().model)
    }

    fn app(name: &str, cluster: &str) -> ProbeId {
        ProbeId::App {
            app: name.parse().unwrap(),
            cluster: Arc::from(cluster),
        }
    }

    fn kept(up: bool, as_of: Option<SystemTime>) -> Kept {
        Kept {
            up,
            reason: Arc::from("connection refused"),
            since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            as_of,
        }
    }

    #[test]
    fn verdicts_written_are_restored_for_the_targets_still_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let old = model(&path, &["x.t.test", "gone.t.test"]);
        let now = SystemTime::now();
        let verdicts = HashMap::from([
            (app("x.t.test.", "a"), kept(false, None)),
            (app("x.t.test.", "b"), kept(true, None)),
            (app("gone.t.test.", "a"), kept(false, None)),
            (ProbeId::Cluster(Arc::from("a")), kept(false, None)),
            // Restored 20 minutes ago and never confirmed since: too old to restore again.
            (
                app("gone.t.test.", "b"),
                kept(false, Some(now - Duration::from_secs(1200))),
            ),
        ]);
        write_atomic(&path, &render(&old, &verdicts, now).unwrap()).unwrap();
        // The config was edited: gone.t.test left, y.t.test came.
        let new = model(&path, &["y.t.test", "x.t.test"]);
        let Ok(loaded) = load(&path, &new, now + Duration::from_secs(42)) else {
            panic!("the file is used");
        };
        assert_eq!(loaded.age.as_secs(), 42);
        assert_eq!((loaded.gone, loaded.stale), (2, 0));
        let got: HashMap<ProbeId, Kept> = loaded.entries.into_iter().collect();
        assert_eq!(got.len(), 3);
        assert!(!got[&app("x.t.test.", "a")].up);
        assert!(got[&app("x.t.test.", "b")].up);
        assert!(!got[&ProbeId::Cluster(Arc::from("a"))].up);
        assert_eq!(got[&app("x.t.test.", "a")].since, kept(false, None).since);

        let restored = restore(&new, now + Duration::from_secs(42));
        let x = restored.table.get(&app("x.t.test.", "a")).unwrap();
        assert!(!x.state.up);
        assert_eq!(
            &*x.state.reason,
            "restored from state file (age 42s): connection refused"
        );
        let y = restored.table.get(&app("y.t.test.", "a")).unwrap();
        assert_eq!(&*y.state.reason, "initial state");
        // A stale restored entry is dropped; one too old for its own as_of is counted so.
        let stale = model(&path, &["gone.t.test"]);
        let Ok(l) = load(&path, &stale, now) else {
            panic!("the file is used");
        };
        assert_eq!(
            (l.entries.len(), l.stale),
            (2, 1),
            "gone.t.test. in a and cluster a"
        );
    }

    #[test]
    fn files_that_cannot_be_trusted_are_ignored_and_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let m = model(&path, &["x.t.test"]);
        let now = SystemTime::now();
        let why = |text: &str, at: SystemTime| -> String {
            std::fs::write(&path, text).unwrap();
            match load(&path, &m, at) {
                Err(Skip::Ignored(why)) => why,
                Err(Skip::Missing) => "missing".into(),
                Ok(_) => "used".into(),
            }
        };
        let good = String::from_utf8(render(&m, &HashMap::new(), now).unwrap()).unwrap();
        assert_eq!(why(&good, now), "used");
        assert!(why(&good[..10], now).starts_with("not a gtmd health state file (corrupt:"));
        assert!(why(&good.replace(FORMAT, "other"), now).contains("format \"other\""));
        assert!(
            why(&good.replace("\"version\":1", "\"version\":7"), now)
                .contains("format version 7, this gtmd reads version 1")
        );
        assert_eq!(
            why(&good, now + Duration::from_secs(601)),
            "written 10m 1s ago, longer than health.state_max_age (10m)"
        );
        assert!(
            why(&good, now - Duration::from_secs(3600))
                .contains("in the future (is the clock right?)")
        );
        assert!(why(&good.replace("t.test.", "u.test."), now).contains("another deployment"));
        std::fs::write(&path, vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(load(&path, &m, now), Err(Skip::Ignored(w)) if w.contains("larger than")));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(load(&path, &m, now), Err(Skip::Missing)));
    }

    fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_burst_of_transitions_is_a_few_writes_of_the_last_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let m = model(&path, &["x.t.test", "y.t.test"]);
        let metrics = Arc::new(Metrics::new());
        let w =
            StateWriter::start(path.clone(), m.clone(), HashMap::new(), metrics.clone()).unwrap();
        let ids = [
            app("x.t.test.", "a"),
            app("x.t.test.", "b"),
            app("y.t.test.", "a"),
            app("y.t.test.", "b"),
        ];
        let started = Instant::now();
        for i in 0..10_000 {
            w.verdict(&ids[i % 4], kept(i % 3 == 0, None));
        }
        let burst = started.elapsed();
        // The last verdicts: i = 9996..9999.
        let last: Vec<bool> = (9996..10_000).map(|i| i % 3 == 0).collect();
        wait("the last verdicts on disk", || {
            let Ok(Loaded { entries, .. }) = load(&path, &m, SystemTime::now()) else {
                return false;
            };
            let got: HashMap<ProbeId, Kept> = entries.into_iter().collect();
            ids.iter()
                .zip(&last)
                .all(|(id, up)| got.get(id).is_some_and(|k| k.up == *up))
        });
        w.finish(Duration::from_secs(20));
        let writes = metrics.health_state_writes.get();
        // One write may start at the first verdict, the rest wait out the gap: at most one
        // per MIN_WRITE_GAP of the burst, plus the first, the last and the one at shutdown.
        let bound = 3 + (burst.as_millis() / MIN_WRITE_GAP.as_millis()) as u64;
        eprintln!("{writes} writes for 10,000 verdicts sent in {burst:?}");
        assert!(
            (2..=bound).contains(&writes),
            "{writes} writes for 10,000 verdicts in {burst:?}"
        );
        assert_eq!(metrics.health_state_write_errors.get(), 0);
        // A reload that removed y.t.test takes it out of the next write.
        let w = StateWriter::start(path.clone(), m, HashMap::new(), metrics.clone()).unwrap();
        w.model(model(&path, &["x.t.test"]));
        w.finish(Duration::from_secs(20));
        assert!(metrics.health_state_writes.get() > writes);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("y.t.test"), "{text}");
        // A clean shutdown writes the file even when nothing changed.
        let before = metrics.health_state_writes.get();
        let m = model(&path, &["x.t.test"]);
        StateWriter::start(path.clone(), m, HashMap::new(), metrics.clone())
            .unwrap()
            .finish(Duration::from_secs(20));
        assert_eq!(metrics.health_state_writes.get(), before + 1);
    }

    #[test]
    fn failed_writes_are_counted_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: rename fails.
        let path = dir.path().join("state");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), "").unwrap();
        let m = model(&path, &["x.t.test"]);
        let metrics = Arc::new(Metrics::new());
        let w = StateWriter::start(path.clone(), m, HashMap::new(), metrics.clone()).unwrap();
        w.verdict(&app("x.t.test.", "a"), kept(false, None));
        wait("a failed write", || {
            metrics.health_state_write_errors.get() >= 1
        });
        w.finish(Duration::from_secs(20));
        assert_eq!(metrics.health_state_writes.get(), 0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the directory: {left:?}");
    }
}
