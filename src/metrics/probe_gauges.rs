//! The per-probe series, kept compactly and rendered at scrape time:
//! `gtmd_probe_up{app,cluster}` and `gtmd_probe_flapping{app,cluster}` (two flags), and
//! `gtmd_probe_failures_total{app,cluster,reason}` and
//! `gtmd_health_transitions_total{app,cluster,to}` (counters, allocated at a probe's first
//! failure or transition).
//!
//! A child of the prometheus crate's vectors carries its own copy of the metric's
//! description (name, help text) and of its label pairs: ~500 bytes each, two gauges per
//! probe were 50 MB at 50,000 probes for two bits of information each, and the counters
//! a cluster outage created (a failure and a transition series per target of the cluster)
//! grew memory by ~12 MB at 10,000 apps, during the outage. Here a probe costs its app
//! name, an interned cluster name and one small shared slot (~150 bytes), plus ~100 bytes
//! of counters once it has failed.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use prometheus::{
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::health::outcome::REASON_LABELS;

/// The series of one probe.
#[derive(Debug, Default)]
pub struct ProbeSlot {
    up: AtomicBool,
    flapping: AtomicBool,
    /// Allocated at the first failure or transition: most probes of a healthy fleet have
    /// neither, and a series is shown only once it counted something (as the crate's
    /// vectors create a series at its first use).
    counters: OnceLock<Box<Counters>>,
}

/// A probe's counters: failures by reason ([`REASON_LABELS`]), transitions to up and down.
#[derive(Debug, Default)]
struct Counters {
    failures: [AtomicU64; REASON_LABELS.len()],
    transitions: [AtomicU64; 2],
}

impl ProbeSlot {
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    pub fn set_flapping(&self, flapping: bool) {
        self.flapping.store(flapping, Ordering::Relaxed);
    }

    /// Counts a failed probe; `reason` is one of [`REASON_LABELS`] (anything else is not
    /// a failure's reason and is not counted).
    pub fn count_failure(&self, reason: &str) {
        if let Some(i) = REASON_LABELS.iter().position(|r| *r == reason) {
            self.counters().failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a health transition to `up` (true) or down.
    pub fn count_transition(&self, up: bool) {
        self.counters().transitions[usize::from(!up)].fetch_add(1, Ordering::Relaxed);
    }

    fn counters(&self) -> &Counters {
        self.counters.get_or_init(Box::default)
    }
}

/// The `to` label of [`Counters::transitions`], by index.
const TRANSITION_LABELS: [&str; 2] = ["up", "down"];

/// Every probe's slot, by cluster then app; the app is empty for a cluster probe.
pub struct ProbeGauges {
    /// Per cluster (a handful, each name kept once), the slots by app.
    series: Mutex<Series>,
    up: Desc,
    flapping: Desc,
    failures: Desc,
    transitions: Desc,
}

/// Per cluster, the slots of its probes by app.
type Series = Vec<(Arc<str>, HashMap<Box<str>, Arc<ProbeSlot>>)>;

const UP_HELP: &str =
    "Probe state after hysteresis (1 up, 0 down); app is empty for cluster probes.";
const FLAPPING_HELP: &str = "1 while the target is held out of the answers for flapping (its \
     state changed more than flap_changes times within flap_window), until stable for flap_hold.";

impl ProbeGauges {
    pub fn new() -> Self {
        let desc = |name: &str, help: &str, third: Option<&str>| {
            let mut labels = vec!["app".into(), "cluster".into()];
            labels.extend(third.map(String::from));
            Desc::new(name.into(), help.into(), labels, HashMap::new())
                .expect("valid metric description")
        };
        Self {
            series: Mutex::default(),
            up: desc("gtmd_probe_up", UP_HELP, None),
            flapping: desc("gtmd_probe_flapping", FLAPPING_HELP, None),
            failures: desc(
                "gtmd_probe_failures_total",
                "Failed probes, by reason.",
                Some("reason"),
            ),
            transitions: desc(
                "gtmd_health_transitions_total",
                "Health state changes, by new state.",
                Some("to"),
            ),
        }
    }

    /// The slot of the probe of `app` on `cluster`, created (both gauges 0) if new.
    pub fn slot(&self, app: &str, cluster: &str) -> Arc<ProbeSlot> {
        let mut series = lock(&self.series);
        let i = match series.iter().position(|(c, _)| **c == *cluster) {
            Some(i) => i,
            None => {
                series.push((Arc::from(cluster), HashMap::new()));
                series.len() - 1
            }
        };
        let apps = &mut series[i].1;
        if let Some(slot) = apps.get(app) {
            return slot.clone();
        }
        let slot = Arc::new(ProbeSlot::default());
        apps.insert(Box::from(app), slot.clone());
        slot
    }

    /// Removes the series of a probe taken out of the configuration.
    pub fn remove(&self, app: &str, cluster: &str) {
        let mut series = lock(&self.series);
        if let Some(i) = series.iter().position(|(c, _)| **c == *cluster) {
            series[i].1.remove(app);
            if series[i].1.is_empty() {
                series.swap_remove(i);
            }
        }
    }

    fn family(&self, desc: &Desc, value: impl Fn(&ProbeSlot) -> bool) -> MetricFamily {
        let metrics: Vec<Metric> = {
            let series = lock(&self.series);
            series
                .iter()
                .flat_map(|(cluster, apps)| {
                    apps.iter().map(move |(app, slot)| (cluster, app, slot))
                })
                .map(|(cluster, app, slot)| {
                    let mut m = Metric::default();
                    m.set_label(vec![label("app", app), label("cluster", cluster)]);
                    let mut g = Gauge::default();
                    g.set_value(if value(slot) { 1.0 } else { 0.0 });
                    m.set_gauge(g);
                    m
                })
                .collect()
        };
        family_of(desc, MetricType::GAUGE, metrics)
    }
}

impl ProbeGauges {
    /// The counter family of `desc`: per probe, one series per `names[i]` whose count
    /// (`count(counters)[i]`) is not zero.
    fn counter_family<const N: usize>(
        &self,
        desc: &Desc,
        third: &str,
        names: [&str; N],
        count: impl Fn(&Counters) -> &[AtomicU64; N],
    ) -> MetricFamily {
        let mut metrics = Vec::new();
        {
            let series = lock(&self.series);
            for (cluster, apps) in series.iter() {
                for (app, slot) in apps {
                    let Some(counters) = slot.counters.get() else {
                        continue;
                    };
                    for (name, n) in names.iter().zip(count(counters)) {
                        let n = n.load(Ordering::Relaxed);
                        if n == 0 {
                            continue;
                        }
                        let mut m = Metric::default();
                        m.set_label(vec![
                            label("app", app),
                            label("cluster", cluster),
                            label(third, name),
                        ]);
                        let mut c = Counter::default();
                        c.set_value(n as f64);
                        m.set_counter(c);
                        metrics.push(m);
                    }
                }
            }
        }
        family_of(desc, MetricType::COUNTER, metrics)
    }
}

/// The family of `desc` with its series (the registry sorts them).
fn family_of(desc: &Desc, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

impl Default for ProbeGauges {
    fn default() -> Self {
        Self::new()
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.into());
    l.set_value(value.into());
    l
}

fn lock(m: &Mutex<Series>) -> std::sync::MutexGuard<'_, Series> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Collector for ProbeGauges {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.up, &self.flapping, &self.failures, &self.transitions]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let up = self.family(&self.up, |s| s.up.load(Ordering::Relaxed));
        let flapping = self.family(&self.flapping, |s| s.flapping.load(Ordering::Relaxed));
        let failures =
            self.counter_family(&self.failures, "reason", REASON_LABELS, |c| &c.failures);
        let transitions = self.counter_family(&self.transitions, "to", TRANSITION_LABELS, |c| {
            &c.transitions
        });
        // A family without series is left out, as the crate's own vectors do.
        [up, flapping, failures, transitions]
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}
