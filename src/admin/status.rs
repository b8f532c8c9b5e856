//! `/api/v1/status`: every app × cluster with its settings, health and last probe result.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{AdminState, unix};
use crate::{
    health::{ProbeId, state::ProbeEntry},
    model::Fallback,
};

fn probe_json(entry: Option<&ProbeEntry>) -> Value {
    let Some(e) = entry else {
        return Value::Null;
    };
    json!({
        "up": e.state.up,
        "reason": &*e.state.reason,
        "since": unix(e.state.since),
        "last_result": e.last.as_ref().map(|l| json!({
            "ok": l.ok,
            "reason": l.reason,
            "at": unix(l.at),
            "duration_ms": l.duration.as_secs_f64() * 1000.0,
        })),
    })
}

pub fn status(state: &AdminState) -> Value {
    let snapshot = state.snapshot.load();
    let model = snapshot.model.clone();
    let table = state.health.table();
    let apps: Vec<Value> = model
        .apps
        .iter()
        .zip(snapshot.apps())
        .map(|(m, answers)| {
            let targets: Vec<Value> = m
                .targets
                .iter()
                .zip(&answers.targets)
                .map(|(t, live)| {
                    let cluster = &model.clusters[t.cluster];
                    let id = ProbeId::App {
                        app: m.hostname.clone(),
                        cluster: Arc::from(cluster.name.as_str()),
                    };
                    json!({
                        "cluster": cluster.name,
                        "region": cluster.region,
                        "weight": t.weight,
                        "priority": t.priority,
                        "drain": t.drain || cluster.drain,
                        "force": t.force.or(cluster.force).map(|up| if up { "up" } else { "down" }),
                        "state": live.state,
                        "detail": live.detail,
                        "addresses": cluster.ingress,
                        "probe": t.probe.as_ref().map(|p| json!({
                            "kind": format!("{:?}", p.kind).to_lowercase(),
                            "address": p.addr.to_string(),
                            "path": p.path,
                            "interval_ms": p.interval.as_millis() as u64,
                        })),
                        "health": probe_json(table.get(&id)),
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
        })
        .collect();
    let clusters: Vec<Value> = model
        .clusters
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "region": c.region,
                "ingress": c.ingress,
                "coordinates": c.coordinates.map(|(lat, lon)| json!({ "lat": lat, "lon": lon })),
                "drain": c.drain,
                "force": c.force.map(|up| if up { "up" } else { "down" }),
                "probe": probe_json(table.get(&ProbeId::Cluster(Arc::from(c.name.as_str())))),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": *state.ready.borrow(),
        "config": state.reloader.info(),
        "apps": apps,
        "clusters": clusters,
    })
}
