//! `/api/v1/status`: apps × clusters with their settings, health and last probe result,
//! one bounded page at a time.
//!
//! A response holds at most [`MAX_LIMIT`] apps (default [`DEFAULT_LIMIT`]): building the
//! whole listing of a 100k-app config per request took seconds and gigabytes, and the
//! admin connection cap bounds how many pages are built at once, so memory is bounded
//! whatever clients do. Apps are listed in DNS canonical order (by zone, then name), which
//! does not depend on the order of the config file, so a walk with `after=` sees each app
//! that stays configured exactly once even across a reload.
//!
//! Query parameters (all optional):
//! - `app=NAME`: only this app (hostname, with or without the trailing dot).
//! - `cluster=NAME`: only targets on this cluster (and apps that have one; the `clusters`
//!   list shows only it).
//! - `state=up|down|drained`: only targets in this state (and apps that have one).
//! - `limit=N`: apps per page, 1..=1000, default 100.
//! - `after=CURSOR`: the page after this cursor, the `next` of the previous page (`next` is
//!   null on the last page).
//!
//! An unknown parameter or a bad value is a 400 naming the parameter.

use std::sync::{Arc, Mutex, Weak};

use hickory_proto::rr::Name;
use serde::{Serialize, Serializer, ser::SerializeSeq};
use serde_json::{Value, json};

use super::{AdminState, explain::percent_decode, unix};
use crate::{
    health::{HealthShared, ProbeId, flap::FlapView, state::ProbeEntry, state::TargetState},
    model::{Fallback, Model},
    snapshot::{AppAnswers, TargetAnswers},
};

/// Apps per page when `limit` is not given: small configs still get every app at once.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted: about 1-3 MB of JSON at five clusters per app.
pub const MAX_LIMIT: usize = 1000;

/// A bad query: the parameter at fault and why.
#[derive(Debug, PartialEq, Eq)]
pub struct BadQuery {
    pub parameter: String,
    pub error: String,
}

impl BadQuery {
    fn new(parameter: &str, error: impl Into<String>) -> Self {
        Self {
            parameter: parameter.to_owned(),
            error: error.into(),
        }
    }
}

/// What a request asks for, checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatusQuery {
    app: Option<Name>,
    cluster: Option<String>,
    state: Option<TargetState>,
    limit: usize,
    after: Option<Name>,
}

fn absolute_name(parameter: &str, text: &str) -> Result<Name, BadQuery> {
    if text.is_empty() {
        return Err(BadQuery::new(parameter, "empty name"));
    }
    let mut name = Name::from_ascii(text)
        .map_err(|e| BadQuery::new(parameter, format!("{text:?} is not a DNS name: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

impl StatusQuery {
    /// Parses the query string of a request (each parameter at most once).
    pub fn parse(query: &str) -> Result<Self, BadQuery> {
        let mut q = StatusQuery {
            limit: DEFAULT_LIMIT,
            ..Default::default()
        };
        let mut seen: Vec<String> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k), percent_decode(v));
            if seen.contains(&k) {
                return Err(BadQuery::new(&k, "given more than once"));
            }
            match k.as_str() {
                "app" => q.app = Some(absolute_name("app", &v)?),
                "cluster" if v.is_empty() => {
                    return Err(BadQuery::new("cluster", "empty cluster name"));
                }
                "cluster" => q.cluster = Some(v),
                "state" => {
                    q.state = Some(match v.as_str() {
                        "up" => TargetState::Up,
                        "down" => TargetState::Down,
                        "drained" => TargetState::Drained,
                        _ => {
                            return Err(BadQuery::new(
                                "state",
                                format!("{v:?}: expected up, down or drained"),
                            ));
                        }
                    })
                }
                "limit" => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            BadQuery::new(
                                "limit",
                                format!("{v:?} is not a number of apps in 1..={MAX_LIMIT}"),
                            )
                        })?
                }
                "after" => q.after = Some(absolute_name("after", &v)?),
                _ => {
                    return Err(BadQuery::new(
                        &k,
                        "unknown parameter (known: app, cluster, state, limit, after)",
                    ));
                }
            }
            seen.push(k);
        }
        Ok(q)
    }

    /// The targets of an app this query shows (all of them without a target filter).
    fn shows_target(&self, model: &Model, target: &TargetAnswers) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| model.clusters[target.cluster].name == *c)
            && self.state.is_none_or(|s| target.state == s)
    }

    fn filters_targets(&self) -> bool {
        self.cluster.is_some() || self.state.is_some()
    }

    fn shows_app(&self, model: &Model, answers: &AppAnswers) -> bool {
        !self.filters_targets() || answers.targets.iter().any(|t| self.shows_target(model, t))
    }
}

/// The apps of one model in canonical name order, computed once per model (a reload makes
/// a new one) rather than per request.
#[derive(Default)]
pub struct Order {
    cached: Mutex<Option<Sorted>>,
}

/// App indices of a model in name order.
type Sorted = (Weak<Model>, Arc<[u32]>);

impl Order {
    fn of(&self, model: &Arc<Model>) -> Arc<[u32]> {
        if let Some((weak, order)) = &*self.cached.lock().unwrap_or_else(|e| e.into_inner())
            // A live Weak pointing at this model: the same model (a dropped one could share
            // the address of a new one, hence the strong count).
            && weak.strong_count() > 0
            && std::ptr::eq(weak.as_ptr(), Arc::as_ptr(model))
        {
            return order.clone();
        }
        // Sorted outside the lock: concurrent first requests may each sort, none waits.
        let mut order: Vec<u32> = (0..model.apps.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            model.apps[a as usize]
                .hostname
                .cmp(&model.apps[b as usize].hostname)
        });
        let order: Arc<[u32]> = order.into();
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Arc::downgrade(model), order.clone()));
        order
    }
}

/// The probes of a target, in the order they are consulted here: its app probe, then
/// its cluster's probe.
fn target_probes(app: &Name, cluster: &str) -> [ProbeId; 2] {
    let cluster: Arc<str> = Arc::from(cluster);
    [
        ProbeId::App {
            app: app.clone(),
            cluster: cluster.clone(),
        },
        ProbeId::Cluster(cluster),
    ]
}

/// The flapping episode that holds a target out, if any: its app probe's, else its
/// cluster probe's.
pub(super) fn target_flap(health: &HealthShared, app: &Name, cluster: &str) -> Option<FlapView> {
    target_probes(app, cluster)
        .iter()
        .find_map(|id| flap_view(&health.entry(id)?))
}

/// When the fleet overrules this instance on a target (this instance's own fresh
/// observation, of its app probe or its cluster probe, says otherwise than what is
/// answered): the verdict answered and why.
pub(super) fn target_overruled(
    health: &HealthShared,
    app: &Name,
    cluster: &str,
) -> Option<(bool, String)> {
    target_probes(app, cluster).iter().find_map(|id| {
        if !health.fleet_view(id)?.overruled {
            return None;
        }
        let e = health.entry(id)?;
        let answered = e.verdict();
        Some((answered.up, answered.reason.to_string()))
    })
}

fn flap_view(e: &ProbeEntry) -> Option<FlapView> {
    e.flap
        .view(std::time::Instant::now(), std::time::SystemTime::now())
}

/// `null`, or since when a target is held for flapping, when the hold ends if nothing
/// fails meanwhile, and how many state changes the episode has seen.
pub(super) fn flap_json(flap: Option<FlapView>) -> Value {
    flap.map_or(Value::Null, |f| {
        json!({
            "since": unix(f.since),
            "hold_until": unix(f.hold_until),
            "changes": f.changes,
        })
    })
}

/// `null` without a fleet; else what each instance sees of the probe and what is
/// answered: the agreed verdict (`overruled` when this instance's own fresh observation
/// says otherwise).
pub(super) fn fleet_json(health: &HealthShared, id: &ProbeId, entry: Option<&ProbeEntry>) -> Value {
    let (Some(view), Some(e)) = (health.fleet_view(id), entry) else {
        return Value::Null;
    };
    let answered = e.verdict();
    json!({
        "answered": {
            "up": answered.up,
            "reason": &*answered.reason,
            "since": unix(answered.since),
        },
        "overruled": view.overruled,
        "own": view.own.describe(),
        "peers": view.peers.iter().map(|(node, seen, since)| json!({
            "node": node,
            "sees": seen.describe(),
            "since": since.map(unix),
        })).collect::<Vec<_>>(),
        "fresh_observations": view.decision.known,
        "up_observations": view.decision.ups,
        // With fleet.probes_per_target: the instances that probe it.
        "probed_by": health.probers(id),
    })
}

fn probe_json(entry: Option<&ProbeEntry>) -> Value {
    let Some(e) = entry else {
        return Value::Null;
    };
    let flap = flap_view(e);
    json!({
        "up": e.state.up,
        "reason": &*e.state.reason,
        "since": unix(e.state.since),
        "flapping": flap.is_some(),
        "flap": flap_json(flap),
        "last_result": e.last.as_ref().map(|l| json!({
            "ok": l.ok,
            "reason": l.reason,
            "at": unix(l.at),
            "duration_ms": l.duration.as_secs_f64() * 1000.0,
        })),
    })
}

/// A target's probe verdict and its last raw result, apart: a healthy target's verdict
/// may still be its "initial state" (the probes only confirmed it), while the last result
/// says what the probe saw and when. The probe that decides: the cluster's when it is down,
/// else the app's own if it has one, else the cluster's; `probe` says which. Both null for
/// a target nothing probes.
fn target_probe_json(app: Option<&ProbeEntry>, cluster: Option<&ProbeEntry>) -> (Value, Value) {
    let (kind, entry) = match (app, cluster) {
        // A cluster probe that is down decides (see `target_state`).
        (_, Some(c)) if !c.state.up => ("cluster", c),
        (Some(e), _) => ("app", e),
        (None, Some(e)) => ("cluster", e),
        (None, None) => return (Value::Null, Value::Null),
    };
    let verdict = json!({
        "probe": kind,
        "up": entry.state.up,
        "reason": &*entry.state.reason,
        "since": unix(entry.state.since),
    });
    let last = entry.last.as_ref().map_or(Value::Null, |l| {
        json!({
            "probe": kind,
            "ok": l.ok,
            "reason": l.reason,
            "at": unix(l.at),
            "duration_ms": l.duration.as_secs_f64() * 1000.0,
        })
    });
    (verdict, last)
}

/// The apps of a page, each turned into JSON only as it is written: a page then costs its
/// text plus one app, not a tree of every app (several times the text).
struct LazyApps<'a, F> {
    page: &'a [usize],
    app: F,
}

impl<F: Fn(usize) -> Value> Serialize for LazyApps<'_, F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.page.len()))?;
        for &i in self.page {
            seq.serialize_element(&(self.app)(i))?;
        }
        seq.end()
    }
}

/// The response, fields in this order.
#[derive(Serialize)]
#[serde(bound = "F: Fn(usize) -> Value")]
struct Page<'a, F> {
    version: &'static str,
    ready: bool,
    config: crate::reload::ConfigInfo,
    apps: LazyApps<'a, F>,
    clusters: Vec<Value>,
    next: Option<String>,
}

/// One page of the status listing for `query`, as pretty-printed JSON.
pub fn status(state: &AdminState, query: &StatusQuery) -> String {
    let snapshot = state.snapshot.load();
    let model = snapshot.model.clone();
    let health = &state.health;
    let order = state.status_order.of(&model);
    let name = |i: &u32| &model.apps[*i as usize].hostname;
    // The first app after the cursor (or at the requested app).
    let start = match (&query.app, &query.after) {
        (Some(app), Some(after)) if app <= after => order.len(),
        (Some(app), _) => order.partition_point(|i| name(i) < app),
        (None, Some(after)) => order.partition_point(|i| name(i) <= after),
        (None, None) => 0,
    };
    let mut page: Vec<usize> = Vec::with_capacity(query.limit.min(order.len()));
    let mut more = false;
    for &i in &order[start..] {
        let i = i as usize;
        if query
            .app
            .as_ref()
            .is_some_and(|a| model.apps[i].hostname != *a)
        {
            break;
        }
        if !query.shows_app(&model, &snapshot.apps()[i]) {
            continue;
        }
        if page.len() == query.limit {
            more = true;
            break;
        }
        page.push(i);
    }
    let next = more
        .then(|| page.last().map(|&i| model.apps[i].hostname.to_string()))
        .flatten();
    // Cluster probes are few: looked up once per page, not once per target.
    let cluster_entries: Vec<Option<ProbeEntry>> = model
        .clusters
        .iter()
        .map(|c| health.entry(&ProbeId::Cluster(c.id.clone())))
        .collect();
    let cluster_flaps: Vec<Option<FlapView>> = cluster_entries
        .iter()
        .map(|e| flap_view(e.as_ref()?))
        .collect();
    let app = |i: usize| {
        let (m, answers) = (&model.apps[i], &snapshot.apps()[i]);
        let targets: Vec<Value> = m
            .targets
            .iter()
            .zip(&answers.targets)
            .filter(|(_, live)| query.shows_target(&model, live))
            .map(|(t, live)| {
                let cluster = &model.clusters[t.cluster];
                let id = ProbeId::App {
                    app: m.hostname.clone(),
                    cluster: cluster.id.clone(),
                };
                let entry = health.entry(&id);
                let (verdict, last_probe) =
                    target_probe_json(entry.as_ref(), cluster_entries[t.cluster].as_ref());
                let flap = entry
                    .as_ref()
                    .and_then(flap_view)
                    .or(cluster_flaps[t.cluster]);
                json!({
                    "cluster": cluster.name,
                    "region": cluster.region,
                    "weight": t.weight,
                    "priority": t.priority,
                    "drain": t.drain || cluster.drain,
                    "force": t.force.or(cluster.force).map(|up| if up { "up" } else { "down" }),
                    "state": live.state,
                    "detail": &*live.detail,
                    "flapping": flap.is_some(),
                    "flap": flap_json(flap),
                    "addresses": cluster.ingress,
                    "probe": t.probe.as_ref().map(|p| json!({
                        "kind": format!("{:?}", p.kind).to_lowercase(),
                        "address": p.addr.to_string(),
                        "path": p.path,
                        "interval_ms": p.interval.as_millis() as u64,
                    })),
                    "health": probe_json(entry.as_ref()),
                    "fleet": fleet_json(health, &id, entry.as_ref()),
                    "verdict": verdict,
                    "last_probe": last_probe,
                })
            })
            .collect();
        json!({
            "hostname": m.hostname.to_string(),
            "ttl": m.ttl,
            "policy": m.policy.kind.as_str(),
            "fallback": match m.fallback {
                Fallback::All => "all".to_owned(),
                Fallback::None => "none".to_owned(),
                Fallback::Cluster(c) => format!("cluster:{}", model.clusters[c].name),
            },
            "fallback_active": answers.fallback_active,
            "targets": targets,
        })
    };
    let clusters: Vec<Value> = model
        .clusters
        .iter()
        .filter(|c| query.cluster.as_ref().is_none_or(|n| c.name == *n))
        .map(|c| {
            let id = ProbeId::Cluster(c.id.clone());
            json!({
                "name": c.name,
                "region": c.region,
                "ingress": c.ingress,
                "coordinates": c.coordinates.map(|(lat, lon)| json!({ "lat": lat, "lon": lon })),
                "drain": c.drain,
                "force": c.force.map(|up| if up { "up" } else { "down" }),
                "probe": probe_json(health.entry(&id).as_ref()),
                "fleet": fleet_json(health, &id, health.entry(&id).as_ref()),
            })
        })
        .collect();
    let page = Page {
        version: env!("CARGO_PKG_VERSION"),
        ready: *state.ready.borrow(),
        config: state.reloader.info(),
        apps: LazyApps { page: &page, app },
        clusters,
        next,
    };
    let mut text = serde_json::to_string_pretty(&page).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_defaults_and_decoding() {
        let q = StatusQuery::parse("").unwrap();
        assert_eq!(
            (q.limit, q.app.is_none(), q.after.is_none()),
            (DEFAULT_LIMIT, true, true)
        );
        let q = StatusQuery::parse(
            "app=Shop.O.Test&state=down&cluster=eu%2Dwest&limit=1000&after=a.o.test.",
        )
        .unwrap();
        assert_eq!(q.app, Some(Name::from_ascii("shop.o.test.").unwrap()));
        assert_eq!(q.state, Some(TargetState::Down));
        assert_eq!(q.cluster.as_deref(), Some("eu-west"));
        assert_eq!(q.limit, MAX_LIMIT);
        assert_eq!(q.after, Some(Name::from_ascii("a.o.test.").unwrap()));
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        for (query, parameter) in [
            ("limit=0", "limit"),
            ("limit=-1", "limit"),
            ("limit=1001", "limit"),
            ("state=UP", "state"),
            ("app=", "app"),
            ("app=a..b", "app"),
            ("after=", "after"),
            ("cluster", "cluster"),
            ("nope=1", "nope"),
            ("state=up&state=up", "state"),
        ] {
            let e = StatusQuery::parse(query).unwrap_err();
            assert_eq!(e.parameter, parameter, "{query}: {e:?}");
        }
    }
}
