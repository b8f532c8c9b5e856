//! Gauges of what the published configuration and snapshot say, for alerts that must tell
//! an outage from an operator's decision: which apps answer their fallback, which targets
//! an operator took out or forced in, whether the last reload attempt succeeded.
//!
//! All are set when a snapshot is built or a reload ends, never on the query path, and
//! their series leave with the app or target they describe.

use std::collections::HashSet;

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use crate::{
    health::state::{Override, operator_override},
    model::Model,
};

pub struct StateGauges {
    /// `gtmd_app_fallback_active{app}`: 1 while no target of the app is up and its
    /// fallback answers, 0 otherwise; one series per app.
    pub fallback_active: IntGaugeVec,
    /// `gtmd_target_override{app,cluster,override}`: 1 for the override in effect on a
    /// target (drain, force_up or force_down); only targets with an override have a series.
    pub target_override: IntGaugeVec,
    /// `gtmd_config_last_reload_successful`: 1 when the last reload attempt applied (or
    /// found the file unchanged), 0 when it was rejected; 1 at start.
    pub last_reload_successful: IntGauge,
    /// `gtmd_config_last_reload_duration_seconds`: how long the last applied reload took,
    /// from its trigger until its snapshot answered (read, parse, build, swap).
    pub last_reload_duration: prometheus::Gauge,
}

/// Every (app, cluster, override) in effect in `model`.
fn overrides(model: &Model) -> HashSet<(String, String, Override)> {
    let mut out = HashSet::new();
    for (a, app) in model.apps.iter().enumerate() {
        for (t, target) in app.targets.iter().enumerate() {
            if let Some(o) = operator_override(model, a, t) {
                out.insert((
                    app.hostname.to_string(),
                    model.clusters[target.cluster].name.clone(),
                    o,
                ));
            }
        }
    }
    out
}

impl StateGauges {
    pub(super) fn new(registry: &Registry) -> Self {
        let fallback_active = IntGaugeVec::new(
            Opts::new(
                "gtmd_app_fallback_active",
                "1 while no target of the app is up and its fallback answers (for any reason: \
                 probes down, drained, forced down), else 0.",
            ),
            &["app"],
        )
        .unwrap();
        let target_override = IntGaugeVec::new(
            Opts::new(
                "gtmd_target_override",
                "1 for the operator override in effect on a target (drain, force_up, \
                 force_down; drain wins over force, the target's force over the cluster's); \
                 targets without one have no series.",
            ),
            &["app", "cluster", "override"],
        )
        .unwrap();
        let last_reload_successful = IntGauge::with_opts(Opts::new(
            "gtmd_config_last_reload_successful",
            "1 if the last configuration reload attempt applied (or found the file \
             unchanged), 0 if it was rejected: the file on disk is not what is serving.",
        ))
        .unwrap();
        last_reload_successful.set(1);
        let last_reload_duration = prometheus::Gauge::with_opts(Opts::new(
            "gtmd_config_last_reload_duration_seconds",
            "How long the last applied configuration reload took, from its trigger until its \
             snapshot answered (0 before the first).",
        ))
        .unwrap();
        for c in [
            Box::new(fallback_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(target_override.clone()),
            Box::new(last_reload_successful.clone()),
            Box::new(last_reload_duration.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            fallback_active,
            target_override,
            last_reload_successful,
            last_reload_duration,
        }
    }

    /// Sets `gtmd_target_override` for `new` (the model being published), removing the
    /// series `old` had that `new` does not (a cleared override, a removed target or app).
    pub fn publish_overrides(&self, old: Option<&Model>, new: &Model) {
        let now = overrides(new);
        if let Some(old) = old {
            for (app, cluster, o) in overrides(old).difference(&now) {
                let _ = self
                    .target_override
                    .remove_label_values(&[app, cluster, o.label()]);
            }
        }
        for (app, cluster, o) in &now {
            self.target_override
                .with_label_values(&[app, cluster, o.label()])
                .set(1);
        }
    }

    /// Removes the series of an app that left the configuration.
    pub fn forget_app(&self, app: &str) {
        let _ = self.fallback_active.remove_label_values(&[app]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(toml: &str) -> Model {
        crate::from_text(std::path::Path::new("t.toml"), toml)
            .unwrap()
            .model
    }

    const BASE: &str = concat!(
        crate::test_support::t_test_zone!(),
        r#"[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
"#
    );

    #[test]
    fn overrides_follow_the_published_model_and_leave_with_it() {
        let registry = Registry::new();
        let g = StateGauges::new(&registry);
        let first = model(&format!(
            "{BASE}[[apps]]\nhostname = \"x.t.test\"\ntargets = [{{ cluster = \"a\", drain = true, force = \"up\" }}, {{ cluster = \"b\", force = \"down\" }}]\n"
        ));
        g.publish_overrides(None, &first);
        let series = |g: &StateGauges| {
            let mut out: Vec<String> = g
                .target_override
                .collect()
                .iter()
                .flat_map(|f| f.get_metric().iter())
                .map(|m| {
                    m.get_label()
                        .iter()
                        .map(|l| l.value())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            out.sort();
            out
        };
        use prometheus::core::Collector;
        // Drain wins over force on the same target.
        assert_eq!(series(&g), ["x.t.test. a drain", "x.t.test. b force_down"]);
        let second = model(&format!(
            "{BASE}[[apps]]\nhostname = \"x.t.test\"\ntargets = [{{ cluster = \"a\" }}, {{ cluster = \"b\", force = \"up\" }}]\n"
        ));
        g.publish_overrides(Some(&first), &second);
        assert_eq!(series(&g), ["x.t.test. b force_up"]);
        let third = model(&format!(
            "{BASE}[[apps]]\nhostname = \"y.t.test\"\ntargets = [{{ cluster = \"a\" }}]\n"
        ));
        g.publish_overrides(Some(&second), &third);
        assert!(series(&g).is_empty());
    }
}
