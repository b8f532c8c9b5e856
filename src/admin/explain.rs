//! `/api/v1/explain`: which answer a given client gets now, and why — step by step, in
//! words a NOC person on call can act on.

use std::{collections::HashMap, net::IpAddr};

use hickory_proto::{
    op::Edns,
    rr::{
        LowerName, Name, RecordType,
        rdata::opt::{ClientSubnet, EdnsOption},
    },
};
use serde_json::{Value, json};

use super::AdminState;
use crate::{
    dns::{client::Client, lookup::lookup},
    health::TargetState,
    policy::{
        PoolPolicy,
        choose::{ClientView, Picked, PolicyKind},
        geo::Matcher,
    },
};

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn matcher_text(m: &Matcher) -> String {
    match m {
        Matcher::Region(r) => format!("region:{r}"),
        Matcher::Country(c) => format!("country:{c}"),
        Matcher::Continent(c) => format!("continent:{c}"),
        Matcher::Default => "default".into(),
    }
}

fn pool_policy_text(p: &PoolPolicy) -> String {
    match p {
        PoolPolicy::All => "all".into(),
        PoolPolicy::Failover => "failover".into(),
        PoolPolicy::Weighted {
            answers, sticky, ..
        } => format!(
            "weighted ({answers} answer{}{})",
            if *answers == 1 { "" } else { "s" },
            if *sticky { ", sticky" } else { ", random" }
        ),
    }
}

pub fn explain(state: &AdminState, query: &str) -> Result<Value, String> {
    let p = params(query);
    let name = p.get("name").ok_or("missing name=")?;
    let client_ip: IpAddr = p
        .get("client")
        .ok_or("missing client= (the resolver's or client's address)")?
        .parse()
        .map_err(|_| "client= is not an IP address")?;
    let qtype = match p.get("type").map(|t| t.to_ascii_uppercase()).as_deref() {
        None | Some("A") => RecordType::A,
        Some("AAAA") => RecordType::AAAA,
        Some(other) => return Err(format!("type={other}: only A and AAAA are explained")),
    };
    let mut fqdn = Name::from_ascii(name).map_err(|e| format!("name={name}: {e}"))?;
    fqdn.set_fqdn(true);
    let qname = LowerName::new(&fqdn);
    let snapshot = state.snapshot.load();
    let mut steps: Vec<String> = Vec::new();
    let edns = match p.get("ecs") {
        None => None,
        Some(ecs) => {
            let (addr, prefix) = ecs.split_once('/').unwrap_or((ecs, ""));
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("ecs={ecs}: not an address"))?;
            let prefix: u8 = if prefix.is_empty() {
                if addr.is_ipv4() { 24 } else { 56 }
            } else {
                prefix
                    .parse()
                    .map_err(|_| format!("ecs={ecs}: bad prefix length"))?
            };
            let mut e = Edns::new();
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
            Some(e)
        }
    };
    let client = Client::from_query(client_ip, edns.as_ref(), &snapshot.clients).map_err(|_| {
        "ecs= is malformed (address bits beyond the prefix?): a real query would get FORMERR"
            .to_owned()
    })?;
    match (&edns, &client.ecs) {
        (None, _) => steps.push(format!("no ECS: the client is located by its address {client_ip}")),
        (Some(_), Some(e)) => steps.push(format!(
            "ECS {}/{} is used (sent by {client_ip})",
            e.addr, e.source_prefix
        )),
        (Some(_), None) => steps.push(format!(
            "ECS is ignored ([geo] ignore_ecs, or {client_ip} is not in [geo] ecs_trusted): the client is located by {client_ip}"
        )),
    }

    let model = snapshot.model.clone();
    let Some(index) = model
        .apps
        .iter()
        .position(|a| a.hostname == fqdn.to_lowercase())
    else {
        let answer = lookup(&snapshot, &qname, qtype, &client);
        return Ok(json!({
            "name": fqdn.to_string(),
            "app": false,
            "steps": ["not an app hostname: answered from the zone's static data"],
            "rcode": answer.rcode.to_string(),
            "authoritative": answer.authoritative,
            "answers": answer.answers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "authority": answer.authority.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        }));
    };
    let m = &model.apps[index];
    let app = snapshot.app(index);
    let policy = &app.policy;
    let addr = client.view(policy.ignore_ecs);
    if policy.ignore_ecs && client.ecs.is_some() {
        steps.push(format!(
            "this app ignores ECS: located by {} instead",
            addr.locate
        ));
    }
    let geo = &snapshot.clients.geo;
    let location = geo.locate(addr.locate);
    steps.push(format!(
        "location of {}: region {}, country {}, continent {}, coordinates {}",
        addr.locate,
        location.region.as_deref().unwrap_or("none"),
        location.country.as_deref().unwrap_or("unknown"),
        location.continent.as_deref().unwrap_or("unknown"),
        location
            .coordinates
            .map_or("unknown".into(), |(a, b)| format!("{a:.2},{b:.2}")),
    ));
    steps.push(format!("policy {}", policy.kind));
    let targets: Vec<Value> = m
        .targets
        .iter()
        .zip(&app.targets)
        .map(|(t, live)| {
            let cluster = &model.clusters[t.cluster];
            let has = if qtype == RecordType::A {
                !live.a.is_empty()
            } else {
                !live.aaaa.is_empty()
            };
            let flap = super::status::target_flap(&state.health, &m.hostname, &cluster.name);
            let overruled =
                super::status::target_overruled(&state.health, &m.hostname, &cluster.name);
            json!({
                "cluster": cluster.name,
                "state": live.state,
                "detail": &*live.detail,
                "fleet_overruled": overruled.is_some(),
                "flapping": flap.is_some(),
                "flap": super::status::flap_json(flap),
                "weight": t.weight,
                "priority": t.priority,
                "has_addresses_of_type": has,
            })
        })
        .collect();
    for (t, live) in m.targets.iter().zip(&app.targets) {
        let name = &model.clusters[t.cluster].name;
        if let Some((up, why)) = super::status::target_overruled(&state.health, &m.hostname, name) {
            steps.push(format!(
                "{name}: the fleet overrules this instance's own probes and counts it {}: {why}",
                if up { "up" } else { "down" }
            ));
        }
        let has = if qtype == RecordType::A {
            !live.a.is_empty()
        } else {
            !live.aaaa.is_empty()
        };
        if live.state != TargetState::Up {
            steps.push(format!("{name} is out: {} ({})", live.state, live.detail));
            if live.state == TargetState::Down
                && let Some(f) = super::status::target_flap(&state.health, &m.hostname, name)
            {
                steps.push(format!(
                    "{name} is held out for flapping since {} ({} state changes): it returns \
                     once stable (no change, no failed probe) until at least {}",
                    humantime::format_rfc3339_seconds(f.since),
                    f.changes,
                    humantime::format_rfc3339_seconds(f.hold_until),
                ));
            }
        } else if !has {
            steps.push(format!("{name} is up but has no {qtype} address"));
        } else if policy.kind == PolicyKind::Weighted && t.weight == 0 {
            steps.push(format!("{name} is up but has weight 0"));
        }
    }
    if policy.kind == PolicyKind::Failover {
        let best = m
            .targets
            .iter()
            .zip(&app.targets)
            .filter(|(_, live)| live.state == TargetState::Up)
            .map(|(t, _)| t.priority)
            .min();
        if let Some(best) = best {
            for (t, live) in m.targets.iter().zip(&app.targets) {
                if live.state == TargetState::Up && t.priority > best {
                    steps.push(format!(
                        "{} is a standby (priority {}, behind healthy priority {best})",
                        model.clusters[t.cluster].name, t.priority
                    ));
                }
            }
        }
    }
    let locate = || location.clone();
    let view = ClientView {
        sticky_key: addr.sticky_key(),
        sticky_scope: addr.sticky_prefix,
        locate: &locate,
    };
    let mut rng = rand::rng();
    let mut random = || rand::RngExt::random::<u64>(&mut rng);
    let answer = app.answer(qtype, &view, &mut random);
    if let Some(r) = answer.choice.rule {
        let rule = &policy.rules[r];
        steps.push(format!(
            "rule {r} ({}) matched: pools {}{}",
            rule.matchers
                .iter()
                .map(matcher_text)
                .collect::<Vec<_>>()
                .join(" or "),
            rule.pools
                .iter()
                .map(|&i| policy.pools[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if rule.geofence { " (geofenced)" } else { "" }
        ));
    } else if policy.kind == PolicyKind::Geo && !answer.fallback {
        steps.push("no rule matched: every healthy target answers".into());
    }
    if policy.kind == PolicyKind::Nearest && location.coordinates.is_none() {
        steps.push(format!(
            "the client's coordinates are unknown: fallback_policy {} chooses",
            pool_policy_text(&policy.fallback_policy)
        ));
    }
    if let Some(pool) = answer.choice.pool {
        let pool = &policy.pools[pool];
        steps.push(format!(
            "pool {} has healthy targets and answers with policy {}",
            pool.name,
            pool_policy_text(&pool.policy)
        ));
    } else if let PolicyKind::All | PolicyKind::Failover | PolicyKind::Weighted = policy.kind {
        steps.push(format!(
            "targets chosen by {}",
            pool_policy_text(&policy.pool_policy)
        ));
    }
    match &answer.choice.picked {
        Picked::Fallback { rule } => steps.push(format!(
            "no eligible target is up: the app's fallback answers, fallback={}{}",
            answer.plan.fallback_note(&model),
            if rule.is_some() {
                " within the fenced pools"
            } else {
                ""
            }
        )),
        Picked::Targets(t) if t.is_empty() => {
            steps.push(format!("nothing to answer: NODATA for {qtype}"))
        }
        Picked::Targets(t) => steps.push(format!(
            "answer: {}",
            t.iter()
                .map(|&i| model.clusters[m.targets[i].cluster].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    let random_choice = matches!(
        (
            policy.kind,
            answer.choice.pool.map(|p| &policy.pools[p].policy)
        ),
        (PolicyKind::Weighted, _) | (_, Some(PoolPolicy::Weighted { sticky: false, .. }))
    ) && !matches!(
        policy.pool_policy,
        PoolPolicy::Weighted { sticky: true, .. }
    );
    if random_choice {
        steps.push("weighted random: this is one sample; repeated queries split by weight".into());
    }
    let ecs_scope = client
        .ecs
        .filter(|_| !policy.ignore_ecs)
        .map(|_| answer.choice.scope.unwrap_or(0));
    Ok(json!({
        "name": fqdn.to_string(),
        "app": true,
        "type": qtype.to_string(),
        "policy": policy.kind.as_str(),
        "client": client_ip.to_string(),
        "located_by": addr.locate.to_string(),
        "location": {
            "region": location.region.as_deref(),
            "country": location.country.as_deref(),
            "continent": location.continent.as_deref(),
            "coordinates": location.coordinates.map(|(lat, lon)| json!({"lat": lat, "lon": lon})),
        },
        "targets": targets,
        "answer": answer.records.iter().map(|r| r.ip.to_string()).collect::<Vec<_>>(),
        "fallback": answer.fallback,
        "ecs_scope": ecs_scope,
        "ttl": m.ttl,
        "steps": steps,
    }))
}
