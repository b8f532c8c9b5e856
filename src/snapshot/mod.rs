//! The immutable answer plan the DNS handler reads.
//!
//! A [`Snapshot`] is built once from a validated [`Model`] (and later, from health changes)
//! and then only read: the query path takes no lock and re-checks nothing. Everything that
//! can be decided ahead of a query is decided here: zone lookup tables, empty non-terminals,
//! delegation points, negative-answer SOA records with their RFC 2308 TTL, and each app's
//! answer records.

mod app;
mod zone;

use std::{collections::HashMap, sync::Arc};

use hickory_proto::rr::LowerName;

use crate::{
    health::state::{HealthTable, Verdicts},
    metrics::Metrics,
    model::Model,
};

pub use app::{AppAnswer, AppAnswers, FamilyPlan, TargetAnswers};

/// How clients are identified, from `[geo]`.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    pub geo: Arc<crate::geo::Geo>,
    pub ignore_ecs: bool,
    pub ecs_trusted: Option<Vec<ipnet::IpNet>>,
}
pub use zone::{Node, Zone};

/// Counts printed by `gtmd check` and logged at start and reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub zones: usize,
    pub records: usize,
    pub apps: usize,
    pub clusters: usize,
}

/// Everything the DNS handler needs, frozen.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Shared between snapshots that differ only in health.
    zones: Arc<HashMap<LowerName, Zone>>,
    apps: Vec<Arc<AppAnswers>>,
    /// The largest UDP payload gtmd sends (server.max_udp_payload).
    pub max_udp_payload: u16,
    pub clients: ClientSettings,
    pub summary: Summary,
    /// The fast path's index (static answers don't change with health: shared).
    pub fast: Arc<crate::dns::fast::FastIndex>,
    /// The model this snapshot was built from: readers that need config details (status,
    /// explain) take them from here, so they always match the answers.
    pub model: Arc<Model>,
}

impl Snapshot {
    /// Builds the snapshot for `health`. The model is valid, so this cannot fail.
    pub fn build(model: &Arc<Model>, health: &impl Verdicts, metrics: &Metrics) -> Self {
        Self::build_after(None, model, health, metrics)
    }

    /// Like [`Snapshot::build`], for a reload: an app whose plan in `previous` is the one
    /// it would get ([`AppAnswers::still_holds`]) keeps that plan; one whose records and
    /// counters would be made the same (same name, TTL, clusters with the same addresses)
    /// takes them from its plan there, as a health publication does. At 10,000 apps that
    /// is 50,000 records and metric lookups a reload need not make again, and memory that
    /// is not allocated twice while both snapshots live.
    pub fn build_after(
        previous: Option<&Snapshot>,
        model: &Arc<Model>,
        health: &impl Verdicts,
        metrics: &Metrics,
    ) -> Self {
        let mut finder = previous.map(|p| crate::model::AppFinder::new(&p.model));
        let apps: Vec<Arc<AppAnswers>> = (0..model.apps.len())
            .map(|a| {
                let reused = previous.zip(finder.as_mut()).and_then(|(p, finder)| {
                    let at = finder.find(a, &model.apps[a].hostname)?;
                    let plan = &p.apps[at];
                    if plan.still_holds(&p.model, at, model, a, health) {
                        Some(plan.clone())
                    } else {
                        AppAnswers::same_fixed(&p.model, at, model, a)
                            .then(|| Arc::new(plan.rebuilt(model, a, health, metrics)))
                    }
                });
                reused.unwrap_or_else(|| Arc::new(AppAnswers::build(model, a, health, metrics)))
            })
            .collect();
        let mut zones: HashMap<LowerName, Zone> = model
            .zones
            .iter()
            .map(|z| (LowerName::new(&z.origin), Zone::build(z)))
            .collect();
        for (i, app) in model.apps.iter().enumerate() {
            let origin = LowerName::new(&model.zones[app.zone].origin);
            if let Some(zone) = zones.get_mut(&origin) {
                zone.attach_app(&app.hostname, i);
            }
        }
        let summary = Summary {
            zones: model.zones.len(),
            records: model.zones.iter().map(|z| z.records.len()).sum(),
            apps: model.apps.len(),
            clusters: model.clusters.len(),
        };
        let mut snapshot = Self {
            fast: Arc::default(),
            zones: Arc::new(zones),
            apps,
            model: model.clone(),
            max_udp_payload: model.server.max_udp_payload,
            clients: ClientSettings {
                geo: model.geo.geo.clone(),
                ignore_ecs: model.geo.ignore_ecs,
                ecs_trusted: model.geo.ecs_trusted.clone(),
            },
            summary,
        };
        snapshot.fast = Arc::new(crate::dns::fast::FastIndex::build(&snapshot));
        snapshot
    }

    /// The snapshot a freshly loaded model starts from: every target in its initial
    /// health state (before any probe has answered).
    pub fn initial(model: &Arc<Model>, metrics: &Metrics) -> Self {
        Self::build(model, &HealthTable::initial(model), metrics)
    }

    /// Every owner name with static records, in every zone.
    pub fn static_names(&self) -> Vec<hickory_proto::rr::Name> {
        self.zones.values().flat_map(|z| z.owner_names()).collect()
    }

    /// The most specific zone holding `name`: the longest configured suffix wins, so nested
    /// zones each answer for their own names.
    pub fn find_zone(&self, name: &LowerName) -> Option<&Zone> {
        let mut candidate = name.clone();
        loop {
            if let Some(zone) = self.zones.get(&candidate) {
                return Some(zone);
            }
            if candidate.is_root() {
                return None;
            }
            candidate = candidate.base_name();
        }
    }

    pub fn app(&self, index: usize) -> &AppAnswers {
        &self.apps[index]
    }

    pub fn apps(&self) -> &[Arc<AppAnswers>] {
        &self.apps
    }

    /// A copy with some apps' answers replaced (after a health change); zones are shared.
    pub fn with_apps(&self, updates: impl IntoIterator<Item = (usize, AppAnswers)>) -> Self {
        let mut next = self.clone();
        for (i, answers) in updates {
            next.apps[i] = Arc::new(answers);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RecordType;

    fn model(apps: &str, b_ingress: &str) -> Arc<Model> {
        let text = format!(
            "{}[[clusters]]\nname = \"a\"\ningress = [\"192.0.2.10\"]\n\
             [[clusters]]\nname = \"b\"\ningress = [\"{b_ingress}\"]\n{apps}",
            crate::test_support::t_test_zone!()
        );
        Arc::new(crate::test_support::model(&text))
    }

    /// (TTL, address) of every A record an app answers.
    fn answers(s: &Snapshot, app: usize) -> Vec<(u32, String)> {
        s.app(app)
            .all_records(RecordType::A)
            .iter()
            .map(|r| (r.ttl, r.data.to_string()))
            .collect()
    }

    /// A reload takes an app's records and counters from the running snapshot only where
    /// they would be made the same (same name, TTL, clusters and addresses), found by name
    /// when the apps moved; and answers exactly as a snapshot built from scratch.
    #[test]
    fn a_reload_carries_the_records_of_the_apps_whose_addresses_did_not_change() {
        let old = model(
            concat!(
                "[[apps]]\nhostname = \"x.t.test\"\ntargets = [{ cluster = \"a\" }, { cluster = \"b\" }]\n",
                "[[apps]]\nhostname = \"y.t.test\"\ntargets = [{ cluster = \"a\" }]\n",
                "[[apps]]\nhostname = \"z.t.test\"\ntargets = [{ cluster = \"b\" }]\n",
            ),
            "192.0.2.11",
        );
        // y moved to the front, x's TTL changed, cluster b (z's) has a new address, w is new.
        let new = model(
            concat!(
                "[[apps]]\nhostname = \"y.t.test\"\ntargets = [{ cluster = \"a\" }]\n",
                "[[apps]]\nhostname = \"x.t.test\"\nttl = 60\ntargets = [{ cluster = \"a\" }, { cluster = \"b\" }]\n",
                "[[apps]]\nhostname = \"z.t.test\"\ntargets = [{ cluster = \"b\" }]\n",
                "[[apps]]\nhostname = \"w.t.test\"\ntargets = [{ cluster = \"a\" }]\n",
            ),
            "192.0.2.12",
        );
        let metrics = Metrics::new();
        let before = Snapshot::initial(&old, &metrics);
        let health = HealthTable::initial(&new);
        let after = Snapshot::build_after(Some(&before), &new, &health, &metrics);
        let fresh = Snapshot::build(&new, &health, &metrics);
        let same = |a: usize, b: usize| {
            Arc::ptr_eq(&after.app(a).targets[0].a, &before.app(b).targets[0].a)
        };
        assert!(same(0, 1), "y's records are carried from where y was");
        assert!(!same(1, 0), "x's TTL changed: its records are made again");
        assert!(
            !same(2, 2),
            "z's cluster has a new address: its records are made again"
        );
        for app in 0..new.apps.len() {
            assert_eq!(answers(&after, app), answers(&fresh, app), "app {app}");
            assert_eq!(
                after.app(app).v4.rendered.bytes,
                fresh.app(app).v4.rendered.bytes,
                "app {app}"
            );
        }
        assert_eq!(answers(&after, 1)[0], (60, "192.0.2.10".to_owned()));
        assert_eq!(answers(&after, 2), [(30, "192.0.2.12".to_owned())]);
    }

    const PLANS: &str = r#"[[geo.regions]]
name = "eu"
networks = ["10.0.0.0/8"]
[health.defaults]
kind = "tcp"
port = 1
[[clusters]]
name = "a"
ingress = ["192.0.2.10", "2001:db8::10"]
probe_address = "127.0.0.1"
lat = 50.1
lon = 8.7
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
probe_address = "127.0.0.1"
lat = 39.0
lon = -77.5
[[clusters]]
name = "c"
ingress = ["192.0.2.12"]
probe_address = "127.0.0.1"
[[apps]]
hostname = "all.t.test"
targets = [{ cluster = "a" }, { cluster = "b" }, { cluster = "c" }]
[[apps]]
hostname = "failover.t.test"
policy = "failover"
targets = [{ cluster = "a", priority = 1 }, { cluster = "b", priority = 2 }]
[[apps]]
hostname = "weighted.t.test"
policy = "weighted"
fallback = "cluster:c"
targets = [{ cluster = "a", weight = 80 }, { cluster = "b", weight = 20 }]
[[apps]]
hostname = "geo.t.test"
policy = "geo"
targets = [{ cluster = "a" }, { cluster = "b" }]
pools = [{ name = "eu", clusters = ["a"] }, { name = "us", clusters = ["b"] }]
rules = [{ match = "region:eu", pools = ["eu", "us"] }, { match = "default", pools = ["us"] }]
"#;

    /// Whichever input of a plan a reload changes (and the verdicts it is built with), the
    /// snapshot built after the running one answers exactly as one built from scratch, and
    /// keeps the running plans of the apps the change does not touch.
    #[test]
    fn a_reload_keeps_a_plan_only_when_every_input_of_it_is_unchanged() {
        let text = |edit: (&str, &str)| {
            assert!(PLANS.contains(edit.0), "{edit:?}");
            let t = format!(
                "{}{}",
                crate::test_support::t_test_zone!(),
                PLANS.replacen(edit.0, edit.1, 1)
            );
            Arc::new(crate::test_support::model(&t))
        };
        let metrics = Metrics::new();
        let old = text(("", ""));
        let before = Snapshot::initial(&old, &metrics);
        // (edit, apps whose plan must be new)
        let cases: &[((&str, &str), &[usize])] = &[
            (("", ""), &[]),
            (("weight = 80", "weight = 70"), &[2]),
            (("priority = 2", "priority = 0"), &[1]),
            (
                (
                    "{ cluster = \"b\", priority = 2 }",
                    "{ cluster = \"b\", priority = 2, drain = true }",
                ),
                &[1],
            ),
            (
                (
                    "{ cluster = \"b\", priority = 2 }",
                    "{ cluster = \"b\", priority = 2, force = \"down\" }",
                ),
                &[1],
            ),
            (("lat = 39.0", "lat = 40.0"), &[0, 1, 2, 3]),
            (
                ("ingress = [\"192.0.2.12\"]", "ingress = [\"192.0.2.13\"]"),
                &[0, 2],
            ),
            (
                (
                    "ingress = [\"192.0.2.12\"]\nprobe_address = \"127.0.0.1\"",
                    "ingress = [\"192.0.2.12\"]\nprobe_address = \"127.0.0.1\"\ndrain = true",
                ),
                &[0, 2],
            ),
            (("fallback = \"cluster:c\"", "fallback = \"none\""), &[2]),
            (
                ("pools = [\"eu\", \"us\"]", "pools = [\"us\", \"eu\"]"),
                &[3],
            ),
            (
                (
                    "hostname = \"all.t.test\"",
                    "hostname = \"all.t.test\"\nttl = 60",
                ),
                &[0],
            ),
            (
                (
                    "[[clusters]]\nname = \"a\"",
                    "[[clusters]]\nname = \"first\"\ningress = [\"192.0.2.9\"]\n[[clusters]]\nname = \"a\"",
                ),
                &[0, 1, 2, 3],
            ),
        ];
        for (edit, changed) in cases {
            let new = text(*edit);
            let health = HealthTable::initial(&new);
            let after = Snapshot::build_after(Some(&before), &new, &health, &metrics);
            let fresh = Snapshot::build(&new, &health, &metrics);
            for app in 0..new.apps.len() {
                assert_eq!(
                    format!("{:?}", after.app(app)),
                    format!("{:?}", fresh.app(app)),
                    "{edit:?}: app {app}"
                );
                assert_eq!(
                    Arc::ptr_eq(&after.apps()[app], &before.apps()[app]),
                    !changed.contains(&app),
                    "{edit:?}: app {app}"
                );
            }
        }
        // A verdict that changed since: that app's plan is new, and says so.
        let mut health = HealthTable::initial(&old);
        let id = crate::health::ProbeId::App {
            app: "failover.t.test.".parse().unwrap(),
            cluster: Arc::from("a"),
        };
        let entry = health.get_mut(&id).unwrap();
        entry.state.up = false;
        entry.state.reason = Arc::from("refused");
        let after = Snapshot::build_after(Some(&before), &old, &health, &metrics);
        let fresh = Snapshot::build(&old, &health, &metrics);
        for app in 0..old.apps.len() {
            assert_eq!(
                format!("{:?}", after.app(app)),
                format!("{:?}", fresh.app(app))
            );
            assert_eq!(
                Arc::ptr_eq(&after.apps()[app], &before.apps()[app]),
                app != 1
            );
        }
        assert_eq!(
            after.app(1).targets[0].state,
            crate::health::state::TargetState::Down
        );
    }
}
