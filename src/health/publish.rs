//! How verdict changes reach the answers: batched, at a cost proportional to what changed.
//!
//! A cluster outage at 10,000 apps is 10,000 transitions within a few seconds. Publishing a
//! snapshot per transition, each after a scan of every app and a copy of the app list, made
//! that O(apps²): on a 10,000 × 5 config the last app left a dead cluster after 26 s instead
//! of the documented 7 s, with gtmd saturated. So a transition only marks its probe in the
//! [`Dirty`] set (under the health table's lock, which probes hold for microseconds) and a
//! publisher thread turns what is marked into one snapshot per [`WINDOW`]:
//!
//! - the apps a probe touches are found in a [`ProbeIndex`] built once per model (a cluster
//!   probe: every app with a target in that cluster; an app probe: that app), not by a scan;
//! - only their verdicts are copied out of the table under its lock, and their answers are
//!   rebuilt after it is released;
//! - the snapshot's app list is copied once per batch, not once per transition.
//!
//! Answers therefore lag a verdict by at most the window plus one batch's build (a few ms
//! per thousand apps rebuilt): `gtmd_health_publish_delay_seconds` shows it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::rr::Name;

use super::state::ProbeId;
use crate::model::Model;

/// How long the publisher waits after the first change of a batch for more to join it.
/// Short against the detection time (seconds), long against one probe result (µs), so a
/// burst of transitions becomes a few snapshots instead of thousands.
pub const WINDOW: Duration = Duration::from_millis(10);

/// After publications that rebuilt at least [`TRIM_AFTER_APPS`] plans, once nothing was
/// published for this long, freed heap is returned to the system ([`crate::heap`]).
pub const TRIM_WHEN_QUIET: Duration = Duration::from_secs(1);
pub const TRIM_AFTER_APPS: u64 = 1000;

/// Probes whose published verdict changed since the last publication.
#[derive(Default)]
pub struct Dirty {
    state: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    ids: HashSet<ProbeId>,
    /// When the oldest unpublished change was marked.
    first: Option<Instant>,
    stop: bool,
}

/// What the publisher does next.
#[derive(Debug)]
pub enum Next {
    Batch(Batch),
    /// Nothing was marked for the idle time asked for.
    Idle,
    Stop,
}

/// Changes to publish together.
#[derive(Debug)]
pub struct Batch {
    pub ids: HashSet<ProbeId>,
    pub first: Instant,
}

impl Dirty {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks probes whose published verdict changed; wakes the publisher.
    pub fn mark(&self, ids: impl IntoIterator<Item = ProbeId>) {
        let mut p = self.lock();
        let before = p.ids.len();
        p.ids.extend(ids);
        if p.ids.len() > before && p.first.is_none() {
            p.first = Some(Instant::now());
            self.wake.notify_one();
        }
    }

    /// What is marked, taken now (None when nothing is).
    pub fn take(&self) -> Option<Batch> {
        take(&mut self.lock())
    }

    /// Blocks until something is marked, lets `window` pass from the first mark so that a
    /// burst joins one batch, and takes it; [`Next::Idle`] when nothing was marked for
    /// `idle` (when given); [`Next::Stop`] once [`Dirty::stop`] was called.
    pub fn next(&self, window: Duration, idle: Option<Duration>) -> Next {
        let mut p = self.lock();
        let quiet_until = idle.map(|d| Instant::now() + d);
        loop {
            if p.stop {
                return Next::Stop;
            }
            match p.first {
                None => match quiet_until {
                    None => p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner()),
                    Some(until) => {
                        let now = Instant::now();
                        if now >= until {
                            return Next::Idle;
                        }
                        p = self
                            .wake
                            .wait_timeout(p, until - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                },
                Some(first) => {
                    let due = first + window;
                    let now = Instant::now();
                    if now >= due {
                        return take(&mut p).map_or(Next::Idle, Next::Batch);
                    }
                    p = self
                        .wake
                        .wait_timeout(p, due - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Ends [`Dirty::next`] for good.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }
}

fn take(p: &mut Pending) -> Option<Batch> {
    let first = p.first.take()?;
    Some(Batch {
        ids: std::mem::take(&mut p.ids),
        first,
    })
}

/// Which apps each probe's verdict feeds, for one model.
#[derive(Debug, Default)]
pub struct ProbeIndex {
    /// Apps with a target in the cluster, ascending.
    by_cluster: HashMap<Arc<str>, Vec<u32>>,
    /// Every app by hostname: an app probe, whatever its cluster, touches only its app.
    /// (Keyed by app, not by target: 10,000 entries instead of 50,000, ~1 MB less.)
    by_app: HashMap<Name, u32>,
}

impl ProbeIndex {
    pub fn build(model: &Model) -> Self {
        let names: Vec<Arc<str>> = model.clusters.iter().map(|c| c.id.clone()).collect();
        let mut index = Self {
            by_cluster: HashMap::with_capacity(names.len()),
            by_app: HashMap::with_capacity(model.apps.len()),
        };
        for (a, app) in model.apps.iter().enumerate() {
            for t in &app.targets {
                let apps = index
                    .by_cluster
                    .entry(names[t.cluster].clone())
                    .or_default();
                if apps.last() != Some(&(a as u32)) {
                    apps.push(a as u32);
                }
            }
            index.by_app.insert(app.hostname.clone(), a as u32);
        }
        index
    }

    /// The apps whose answers depend on any of `ids`, ascending, each once.
    pub fn apps<'a>(&self, ids: impl IntoIterator<Item = &'a ProbeId>) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for id in ids {
            match id {
                ProbeId::Cluster(c) => {
                    if let Some(apps) = self.by_cluster.get(c) {
                        out.extend(apps.iter().map(|&a| a as usize));
                    }
                }
                ProbeId::App { app, .. } => {
                    if let Some(&a) = self.by_app.get(app) {
                        out.push(a as usize);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The index of the model most recently published, rebuilt when the model changes.
#[derive(Default)]
pub struct IndexCache(Option<(Arc<Model>, Arc<ProbeIndex>)>);

impl IndexCache {
    /// The index of `model`, built now: at start and by a reload, so that its memory is
    /// part of what a model costs from the start, not growth during the first outage.
    pub fn for_model(model: &Arc<Model>) -> Self {
        Self(Some((model.clone(), Arc::new(ProbeIndex::build(model)))))
    }

    pub fn get(&mut self, model: &Arc<Model>) -> Arc<ProbeIndex> {
        match &self.0 {
            Some((m, index)) if Arc::ptr_eq(m, model) => index.clone(),
            _ => {
                let index = Arc::new(ProbeIndex::build(model));
                self.0 = Some((model.clone(), index.clone()));
                index
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = concat!(
        crate::test_support::t_test_zone!(),
        r#"[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
[[apps]]
hostname = "x.t.test"
targets = [{ cluster = "a" }, { cluster = "b" }]
[[apps]]
hostname = "y.t.test"
targets = [{ cluster = "b" }]
[[apps]]
hostname = "z.t.test"
targets = [{ cluster = "a" }]
"#
    );

    fn app(name: &str, cluster: &str) -> ProbeId {
        ProbeId::App {
            app: name.parse().unwrap(),
            cluster: Arc::from(cluster),
        }
    }

    #[test]
    fn a_probe_touches_exactly_the_apps_that_read_its_verdict() {
        let model = crate::from_text(std::path::Path::new("t.toml"), CONFIG)
            .unwrap()
            .model;
        let index = ProbeIndex::build(&model);
        let cluster = |c: &str| ProbeId::Cluster(Arc::from(c));
        assert_eq!(index.apps([&cluster("a")]), [0, 2]);
        assert_eq!(index.apps([&cluster("b")]), [0, 1]);
        assert_eq!(index.apps([&app("y.t.test.", "b")]), [1]);
        // An app probe touches its app whatever the cluster (a stale id of a target a
        // reload removed costs one rebuild of its app, which reads the current verdicts);
        // one of an unknown app touches nothing.
        assert_eq!(index.apps([&app("y.t.test.", "a")]), [1]);
        assert!(index.apps([&app("w.t.test.", "a")]).is_empty());
        assert!(index.apps([&cluster("c")]).is_empty());
        // Each app once, however many of its probes changed.
        assert_eq!(
            index.apps([
                &cluster("a"),
                &app("x.t.test.", "b"),
                &app("z.t.test.", "a")
            ]),
            [0, 2]
        );
    }

    #[test]
    fn a_burst_of_marks_is_one_batch_taken_after_the_window() {
        let dirty = Arc::new(Dirty::default());
        let marker = dirty.clone();
        let t = std::thread::spawn(move || {
            for i in 0..1000 {
                marker.mark([ProbeId::Cluster(Arc::from(format!("c{i}").as_str()))]);
            }
        });
        t.join().unwrap();
        let started = Instant::now();
        let Next::Batch(batch) = dirty.next(Duration::from_millis(50), None) else {
            panic!("a batch was marked");
        };
        assert_eq!(batch.ids.len(), 1000);
        // Taken no earlier than the window after the first mark.
        assert!(Instant::now() >= batch.first + Duration::from_millis(50));
        assert!(started <= Instant::now());
        assert!(dirty.take().is_none(), "the batch took every mark");
        // A mark after the take starts the next batch.
        dirty.mark([ProbeId::Cluster(Arc::from("again"))]);
        assert_eq!(dirty.take().unwrap().ids.len(), 1);
        dirty.stop();
        assert!(matches!(dirty.next(Duration::ZERO, None), Next::Stop));
        // Nothing marked for the idle time asked for.
        let quiet = Dirty::default();
        assert!(matches!(
            quiet.next(WINDOW, Some(Duration::from_millis(20))),
            Next::Idle
        ));
    }
}
