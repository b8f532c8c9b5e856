//! The probe engine's own load: probe slots in use and awaited (the bound
//! `health.max_concurrent_probes`), and how health changes reach the answers (batches
//! published, apps rebuilt, and how stale the answers were while a batch waited and was
//! built: the bound `health::publish` promises).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::health::pool::PoolMetrics;

pub struct EngineMetrics {
    /// `gtmd_probes_in_flight`: probes holding one of the `max_concurrent_probes` slots.
    pub in_flight: IntGauge,
    /// `gtmd_probes_waiting`: probes due but waiting for a slot (the cap is binding).
    pub waiting: IntGauge,
    /// `gtmd_health_publications_total`: snapshots published for health changes.
    pub publications: IntCounter,
    /// `gtmd_health_published_apps_total`: app answer plans rebuilt by those publications.
    pub apps: IntCounter,
    /// `gtmd_health_publish_delay_seconds`: from the first change of a batch until the
    /// snapshot holding it is published (the answers' staleness).
    pub delay: Histogram,
    /// `gtmd_probe_idle_connections` and `gtmd_probe_connections_total{how}`: the
    /// keep-alive pool of `reuse_connections` probes.
    pub pool: PoolMetrics,
}

impl EngineMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let in_flight = IntGauge::with_opts(Opts::new(
            "gtmd_probes_in_flight",
            "Probes in flight, each holding one of health.max_concurrent_probes slots.",
        ))
        .unwrap();
        let waiting = IntGauge::with_opts(Opts::new(
            "gtmd_probes_waiting",
            "Probes due but waiting for a free slot: above 0 for long, \
             health.max_concurrent_probes delays probing (and detection).",
        ))
        .unwrap();
        let publications = IntCounter::with_opts(Opts::new(
            "gtmd_health_publications_total",
            "Snapshots published for health changes (a burst of changes is one publication \
             per batch window).",
        ))
        .unwrap();
        let apps = IntCounter::with_opts(Opts::new(
            "gtmd_health_published_apps_total",
            "App answer plans rebuilt by health publications (only the apps a change \
             touches).",
        ))
        .unwrap();
        let delay = Histogram::with_opts(
            HistogramOpts::new(
                "gtmd_health_publish_delay_seconds",
                "From the first health change of a batch until the snapshot holding it is \
                 published: how long answers lag behind a verdict.",
            )
            .buckets(vec![
                0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .unwrap();
        let idle = IntGauge::with_opts(Opts::new(
            "gtmd_probe_idle_connections",
            "Open connections kept for http probes with reuse_connections (at most 32 per \
             ingress address, each holding one of health.max_concurrent_probes slots).",
        ))
        .unwrap();
        let connections = IntCounterVec::new(
            Opts::new(
                "gtmd_probe_connections_total",
                "Connections of http probes with reuse_connections: opened (fresh connects), \
                 reused (probes sent on a kept connection), stale (kept connections the \
                 server had closed; the probe went on with a fresh one).",
            ),
            &["how"],
        )
        .unwrap();
        let rechecks = IntCounter::new(
            "gtmd_probe_rechecks_total",
            "Probes run again at once on a fresh connection because their success on a kept \
             connection was put in doubt (a fresh connection to the address failed since).",
        )
        .unwrap();
        let pool = PoolMetrics {
            idle: idle.clone(),
            opened: connections.with_label_values(&["opened"]),
            reused: connections.with_label_values(&["reused"]),
            stale: connections.with_label_values(&["stale"]),
            rechecked: rechecks.clone(),
        };
        for c in [
            Box::new(in_flight.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(idle),
            Box::new(connections),
            Box::new(rechecks),
            Box::new(waiting.clone()),
            Box::new(publications.clone()),
            Box::new(apps.clone()),
            Box::new(delay.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            in_flight,
            waiting,
            publications,
            apps,
            delay,
            pool,
        }
    }
}
