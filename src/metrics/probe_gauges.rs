//! `gtmd_probe_up{app,cluster}` and `gtmd_probe_flapping{app,cluster}`: two gauges per
//! probe, kept as two flags and rendered at scrape time.
//!
//! A gauge child of the prometheus crate carries its own copy of the metric's description
//! (name, help text) and of its label pairs: ~500 bytes each, two per probe, 50 MB at
//! 50,000 probes for two bits of information each. Here a probe costs its app name, an
//! interned cluster name and one small shared slot (~150 bytes).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use prometheus::{
    core::{Collector, Desc},
    proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

/// The two gauges of one probe.
#[derive(Debug, Default)]
pub struct ProbeSlot {
    up: AtomicBool,
    flapping: AtomicBool,
}

impl ProbeSlot {
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    pub fn set_flapping(&self, flapping: bool) {
        self.flapping.store(flapping, Ordering::Relaxed);
    }
}

/// Every probe's slot, by cluster then app; the app is empty for a cluster probe.
pub struct ProbeGauges {
    /// Per cluster (a handful, each name kept once), the slots by app.
    series: Mutex<Series>,
    up: Desc,
    flapping: Desc,
}

/// Per cluster, the slots of its probes by app.
type Series = Vec<(Arc<str>, HashMap<Box<str>, Arc<ProbeSlot>>)>;

const UP_HELP: &str =
    "Probe state after hysteresis (1 up, 0 down); app is empty for cluster probes.";
const FLAPPING_HELP: &str = "1 while the target is held out of the answers for flapping (its \
     state changed more than flap_changes times within flap_window), until stable for flap_hold.";

impl ProbeGauges {
    pub fn new() -> Self {
        let desc = |name: &str, help: &str| {
            Desc::new(
                name.into(),
                help.into(),
                vec!["app".into(), "cluster".into()],
                HashMap::new(),
            )
            .expect("valid metric description")
        };
        Self {
            series: Mutex::default(),
            up: desc("gtmd_probe_up", UP_HELP),
            flapping: desc("gtmd_probe_flapping", FLAPPING_HELP),
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
        // The registry sorts the series.
        let mut family = MetricFamily::default();
        family.set_name(desc.fq_name.clone());
        family.set_help(desc.help.clone());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(metrics);
        family
    }
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
        vec![&self.up, &self.flapping]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let up = self.family(&self.up, |s| s.up.load(Ordering::Relaxed));
        let flapping = self.family(&self.flapping, |s| s.flapping.load(Ordering::Relaxed));
        // A family without series is left out, as the crate's own vectors do.
        [up, flapping]
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}
