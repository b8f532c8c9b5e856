//! `[[zones]]` validation: origin, SOA, apex NS, static records, delegations.

use std::collections::{HashMap, HashSet};

use hickory_proto::rr::{
    Name, RData, Record, RecordType,
    rdata::{MX, NS, SOA, SRV, TXT},
};
use hickory_proto::serialize::binary::BinEncodable;

use super::{AppModel, MAX_TTL, ZoneModel, names, zone_for};
use crate::config::{
    Errors,
    file::{RecordConfig, ZoneConfig},
};

/// Record types a static record may have.
const ALLOWED_TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::MX,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::NS,
];

/// A parsed static record and where it came from, for error paths.
struct Located {
    path: String,
    record: Record,
}

pub fn validate_zones(cfgs: &[ZoneConfig], errors: &mut Errors) -> Vec<ZoneModel> {
    if cfgs.is_empty() {
        errors.push("zones", "at least one zone is needed");
    }
    let mut origins = HashMap::new();
    let mut out = Vec::with_capacity(cfgs.len());
    for (i, z) in cfgs.iter().enumerate() {
        let path = format!("zones[{i}]");
        let origin = match names::absolute(&z.origin) {
            Ok(o) if o.is_root() => {
                errors.push(format!("{path}.origin"), "the root zone cannot be served");
                continue;
            }
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("{path}.origin"), e);
                continue;
            }
        };
        if let Some(first) = origins.insert(origin.clone(), i) {
            errors.push(
                format!("{path}.origin"),
                format!("duplicate zone {origin} (also zones[{first}])"),
            );
        }
        if z.ttl > MAX_TTL {
            errors.push(
                format!("{path}.ttl"),
                format!("{} is out of range 0..={MAX_TTL}", z.ttl),
            );
        }
        let soa = validate_soa(z, &origin, &path, errors);
        let nameservers = validate_nameservers(z, &origin, &path, errors);
        let located = parse_records(&z.records, &origin, z.ttl, &path, errors);
        check_zone_records(&located, &origin, errors);
        out.push(ZoneModel {
            origin,
            soa,
            nameservers,
            record_paths: located.iter().map(|l| l.path.clone()).collect(),
            records: located.into_iter().map(|l| l.record).collect(),
        });
    }
    out
}

fn validate_soa(z: &ZoneConfig, origin: &Name, path: &str, errors: &mut Errors) -> Record {
    let s = &z.soa;
    let mname = names::absolute(&s.mname)
        .and_then(|n| names::check_not_single_label(&n, &s.mname).map(|()| n))
        .unwrap_or_else(|e| {
            errors.push(format!("{path}.soa.mname"), e);
            Name::root()
        });
    let rname = names::mailbox(&s.rname).unwrap_or_else(|e| {
        errors.push(format!("{path}.soa.rname"), e);
        Name::root()
    });
    // RFC 1035 declares refresh/retry/expire as signed 32-bit on the wire in hickory.
    let mut signed = |field: &str, v: u32| -> i32 {
        i32::try_from(v).unwrap_or_else(|_| {
            errors.push(
                format!("{path}.soa.{field}"),
                format!("{v} is out of range 0..={}", i32::MAX),
            );
            0
        })
    };
    let refresh = signed("refresh", s.refresh);
    let retry = signed("retry", s.retry);
    let expire = signed("expire", s.expire);
    if s.minimum > 86_400 {
        errors.push(
            format!("{path}.soa.minimum"),
            format!(
                "{} is out of range 0..=86400 (RFC 2308: negative caching TTL)",
                s.minimum
            ),
        );
    }
    let ttl = s.ttl.unwrap_or(z.ttl);
    // Inherited from the zone TTL: already reported there if out of range.
    if s.ttl.is_some() && ttl > MAX_TTL {
        errors.push(
            format!("{path}.soa.ttl"),
            format!("{ttl} is out of range 0..={MAX_TTL}"),
        );
    }
    Record::from_rdata(
        origin.clone(),
        ttl,
        RData::SOA(SOA::new(
            mname, rname, s.serial, refresh, retry, expire, s.minimum,
        )),
    )
}

fn validate_nameservers(
    z: &ZoneConfig,
    origin: &Name,
    path: &str,
    errors: &mut Errors,
) -> Vec<Record> {
    if z.nameservers.is_empty() {
        errors.push(
            format!("{path}.nameservers"),
            "at least one nameserver is needed (the apex NS RRset)",
        );
    }
    let mut out: Vec<Record> = Vec::new();
    for (j, text) in z.nameservers.iter().enumerate() {
        let npath = format!("{path}.nameservers[{j}]");
        match names::absolute(text)
            .and_then(|n| names::check_not_single_label(&n, text).map(|()| n))
        {
            Ok(ns) if out.iter().any(|r| r.data == RData::NS(NS(ns.clone()))) => {
                errors.push(npath, format!("duplicate nameserver {ns}"))
            }
            Ok(ns) => out.push(Record::from_rdata(origin.clone(), z.ttl, RData::NS(NS(ns)))),
            Err(e) => errors.push(npath, e),
        }
    }
    out
}

fn parse_records(
    cfgs: &[RecordConfig],
    origin: &Name,
    zone_ttl: u32,
    zpath: &str,
    errors: &mut Errors,
) -> Vec<Located> {
    let mut out = Vec::new();
    for (k, r) in cfgs.iter().enumerate() {
        let path = format!("{zpath}.records[{k}]");
        let owner = match names::relative(&r.name, origin) {
            Ok(_) if names::repeats_origin(&r.name, origin) => {
                errors.push(
                    format!("{path}.name"),
                    format!(
                        "{:?} already ends with the zone origin: add a trailing dot (\"{}.\") \
                         or write it relative (\"{}\")",
                        r.name,
                        r.name.trim(),
                        names::strip_origin(&r.name, origin)
                    ),
                );
                continue;
            }
            Ok(o) if o.is_wildcard() || o.iter().any(|l| l == b"*") => {
                errors.push(
                    format!("{path}.name"),
                    "wildcard records are not supported: list each name",
                );
                continue;
            }
            Ok(o) if !names::in_zone(&o, origin) => {
                errors.push(
                    format!("{path}.name"),
                    format!("{o} is outside the zone {origin}"),
                );
                continue;
            }
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("{path}.name"), e);
                continue;
            }
        };
        let rtype = match r.rtype.trim().to_ascii_uppercase().parse::<RecordType>() {
            Ok(t) if ALLOWED_TYPES.contains(&t) => t,
            _ => {
                errors.push(
                    format!("{path}.type"),
                    format!(
                        "unsupported record type {:?} (supported: A, AAAA, CNAME, TXT, MX, SRV, CAA, NS)",
                        r.rtype
                    ),
                );
                continue;
            }
        };
        let ttl = r.ttl.unwrap_or(zone_ttl);
        if ttl > MAX_TTL {
            errors.push(
                format!("{path}.ttl"),
                format!("{ttl} is out of range 0..={MAX_TTL}"),
            );
        }
        let values: Vec<(String, &String)> = match (&r.value, &r.values) {
            (Some(v), None) => vec![(format!("{path}.value"), v)],
            (None, Some(vs)) if !vs.is_empty() => vs
                .iter()
                .enumerate()
                .map(|(m, v)| (format!("{path}.values[{m}]"), v))
                .collect(),
            (None, Some(_)) => {
                errors.push(format!("{path}.values"), "empty list");
                continue;
            }
            (None, None) => {
                errors.push(format!("{path}.value"), "missing (set value or values)");
                continue;
            }
            (Some(_), Some(_)) => {
                errors.push(
                    format!("{path}.values"),
                    "set either value or values, not both",
                );
                continue;
            }
        };
        for (vpath, text) in values {
            match parse_rdata(rtype, text, origin) {
                Ok(rdata) => out.push(Located {
                    path: vpath,
                    record: Record::from_rdata(owner.clone(), ttl, rdata),
                }),
                Err(e) => errors.push(vpath, e),
            }
        }
    }
    out
}

/// Parses record data in presentation format and completes relative names with the origin.
fn parse_rdata(rtype: RecordType, text: &str, origin: &Name) -> Result<RData, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty value".to_owned());
    }
    // A TXT value that is not quoted is one string, as people mean it, not one string per
    // word as the zone-file lexer would read it.
    if rtype == RecordType::TXT && !t.starts_with('"') {
        return Ok(RData::TXT(TXT::new(split_txt(t))));
    }
    // `@` stands for the origin inside record data too (zone-file rules).
    let owned;
    let t = if t.split_whitespace().any(|w| w == "@") && rtype != RecordType::TXT {
        owned = t
            .split_whitespace()
            .map(|w| {
                if w == "@" {
                    origin.to_string()
                } else {
                    w.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        owned.as_str()
    } else {
        t
    };
    let rdata = RData::try_from_str(rtype, t)
        .map_err(|e| format!("invalid {rtype} value {text:?}: {e}"))?;
    if let RData::TXT(txt) = &rdata
        && let Some(long) = txt.txt_data.iter().find(|s| s.len() > 255)
    {
        return Err(format!(
            "a quoted TXT string is {} bytes, over the 255-byte limit of one DNS string: \
             split it into several quoted strings, or leave the value unquoted",
            long.len()
        ));
    }
    let complete = |n: Name| -> Result<Name, String> {
        // `shop.apps.example.com` without the trailing dot would become
        // `shop.apps.example.com.apps.example.com.`: almost surely not what was meant.
        let mut as_absolute = n.clone();
        as_absolute.set_fqdn(true);
        if !n.is_fqdn() && origin.zone_of(&as_absolute) {
            return Err(format!(
                "{n} already ends with the zone origin: add a trailing dot (\"{as_absolute}\")"
            ));
        }
        Ok(names::make_absolute(n, origin)?.to_lowercase())
    };
    Ok(match rdata {
        RData::CNAME(c) => RData::CNAME(hickory_proto::rr::rdata::CNAME(complete(c.0)?)),
        RData::NS(n) => RData::NS(NS(complete(n.0)?)),
        RData::MX(mx) => RData::MX(MX::new(mx.preference, complete(mx.exchange)?)),
        RData::SRV(srv) => RData::SRV(SRV::new(
            srv.priority,
            srv.weight,
            srv.port,
            complete(srv.target)?,
        )),
        other => other,
    })
}

/// Splits an unquoted TXT value into DNS character-strings of at most 255 bytes, at UTF-8
/// character boundaries.
fn split_txt(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in t.chars() {
        if current.len() + c.len_utf8() > 255 {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    out.push(current);
    out
}

/// Rules within one zone: CNAME exclusivity, duplicates, apex NS, and occlusion by
/// delegations (records below a cut are never served, except glue).
fn check_zone_records(records: &[Located], origin: &Name, errors: &mut Errors) {
    let mut seen: HashSet<(&Name, RecordType, &RData)> = HashSet::new();
    let mut types_at: HashMap<&Name, Vec<RecordType>> = HashMap::new();
    let mut ttls: HashMap<(&Name, RecordType), u32> = HashMap::new();
    for l in records {
        let r = &l.record;
        if let Err(e) = r.to_bytes() {
            errors.push(
                &l.path,
                format!("cannot be encoded in DNS wire format: {e}"),
            );
        }
        let first_ttl = *ttls.entry((&r.name, r.record_type())).or_insert(r.ttl);
        if first_ttl != r.ttl {
            errors.push(
                field_path(&l.path, "ttl"),
                format!(
                    "TTL {} differs from {first_ttl} of the other {} {} records: an RRset has one \
                     TTL (RFC 2181 §5.2)",
                    r.ttl,
                    r.name,
                    r.record_type()
                ),
            );
        }
        if !seen.insert((&r.name, r.record_type(), &r.data)) {
            errors.push(
                &l.path,
                format!("duplicate record {} {}", r.name, r.record_type()),
            );
            continue;
        }
        types_at.entry(&r.name).or_default().push(r.record_type());
    }
    for l in records {
        let r = &l.record;
        let types = &types_at[&r.name];
        match r.record_type() {
            RecordType::CNAME if r.name == *origin => errors.push(
                &l.path,
                "a CNAME cannot be at the zone apex (the apex holds SOA and NS)",
            ),
            RecordType::CNAME if types.iter().filter(|t| **t == RecordType::CNAME).count() > 1 => {
                errors.push(&l.path, format!("{} has more than one CNAME", r.name))
            }
            RecordType::CNAME if types.iter().any(|t| *t != RecordType::CNAME) => errors.push(
                &l.path,
                format!("CNAME beside other data at {} (RFC 1034 §3.6.2)", r.name),
            ),
            RecordType::NS if r.name == *origin => errors.push(
                &l.path,
                "apex NS records come from the zone's nameservers list",
            ),
            _ => {}
        }
    }
    // Delegations: names below the apex that own NS records.
    let cuts: HashMap<&Name, Vec<&Name>> = records
        .iter()
        .filter_map(|l| match &l.record.data {
            RData::NS(ns) if l.record.name != *origin => Some((&l.record.name, &ns.0)),
            _ => None,
        })
        .fold(HashMap::new(), |mut m, (cut, ns)| {
            m.entry(cut).or_insert_with(Vec::new).push(ns);
            m
        });
    for l in records {
        let r = &l.record;
        let Some((cut, _)) = cuts
            .iter()
            .filter(|(cut, _)| names::in_zone(&r.name, cut))
            .min_by_key(|(cut, _)| cut.num_labels())
        else {
            continue;
        };
        let rt = r.record_type();
        if rt == RecordType::NS && r.name == **cut {
            continue;
        }
        let is_glue = matches!(rt, RecordType::A | RecordType::AAAA)
            && cuts.values().flatten().any(|t| **t == r.name);
        if !is_glue {
            errors.push(
                &l.path,
                format!(
                    "{} {rt} is at or below the delegation at {cut} and would never be served \
                     (only NS at the cut and glue addresses of its nameservers may be there)",
                    r.name
                ),
            );
        }
    }
}

/// Rules that need zones and apps together.
pub fn check_cross(zones: &[ZoneModel], apps: &[AppModel], errors: &mut Errors) {
    let app_names: HashSet<&Name> = apps.iter().map(|a| &a.hostname).collect();
    for (zi, zone) in zones.iter().enumerate() {
        let zpath = format!("zones[{zi}]");
        let cuts: Vec<&Name> = zone
            .records
            .iter()
            .filter(|r| r.record_type() == RecordType::NS)
            .map(|r| &r.name)
            .collect();
        // Delegations to a child zone this server also serves are allowed (with glue), as
        // in BIND and Knot; the child zone answers for its names.
        let child_cuts: Vec<&Record> = zone
            .records
            .iter()
            .filter(|r| {
                r.record_type() == RecordType::NS
                    && zones
                        .iter()
                        .any(|z| z.origin == r.name && z.origin != zone.origin)
            })
            .collect();
        let is_child_glue = |r: &Record| {
            matches!(r.record_type(), RecordType::A | RecordType::AAAA)
                && child_cuts
                    .iter()
                    .any(|c| matches!(&c.data, RData::NS(NS(t)) if *t == r.name))
        };
        for (ri, r) in zone.records.iter().enumerate() {
            let path = &zone.record_paths[ri];
            if let Some(other) = zone_for(zones, &r.name)
                && other != zi
                && !child_cuts.iter().any(|c| std::ptr::eq(*c, r))
                && !is_child_glue(r)
            {
                errors.push(
                    field_path(path, "name"),
                    format!(
                        "{} is inside the more specific zone {}: move the record there",
                        r.name, zones[other].origin
                    ),
                );
            }
            if app_names.contains(&r.name) {
                match r.record_type() {
                    RecordType::CNAME => errors.push(
                        path,
                        format!("CNAME beside other data: {} is an app hostname", r.name),
                    ),
                    RecordType::A | RecordType::AAAA => errors.push(
                        path,
                        format!(
                            "{} is an app hostname: its A/AAAA answers come from its clusters",
                            r.name
                        ),
                    ),
                    _ => {}
                }
            }
        }
        for app in apps.iter().filter(|a| a.zone == zi) {
            if let Some(cut) = cuts.iter().find(|c| {
                names::in_zone(&app.hostname, c) && zone_for(zones, &app.hostname) == Some(zi)
            }) {
                errors.push(
                    format!("apps[{}].hostname", app.index),
                    format!("{} is at or below the delegation at {cut}", app.hostname),
                );
            }
        }
        // In-zone nameserver names (apex and delegations) need addresses to be reachable.
        let has_address = |name: &Name| {
            app_names.contains(name)
                || zones.iter().any(|z| {
                    z.records.iter().any(|r| {
                        r.name == *name
                            && matches!(r.record_type(), RecordType::A | RecordType::AAAA)
                    })
                })
        };
        for (j, ns) in zone.nameservers.iter().enumerate() {
            if let RData::NS(NS(target)) = &ns.data
                && names::in_zone(target, &zone.origin)
                && !has_address(target)
            {
                errors.push(
                    format!("{zpath}.nameservers[{j}]"),
                    format!("{target} is inside the zone but has no A or AAAA record"),
                );
            }
        }
        for (ri, r) in zone.records.iter().enumerate() {
            if let RData::NS(NS(target)) = &r.data
                && r.name != zone.origin
                && names::in_zone(target, &r.name)
                && !has_address(target)
            {
                errors.push(
                    &zone.record_paths[ri],
                    format!(
                        "{target} is below the delegation at {} and needs glue (an A or AAAA record)",
                        r.name
                    ),
                );
            }
        }
    }
}

/// `zones[0].records[3].values[1]` → `zones[0].records[3].FIELD`.
fn field_path(value_path: &str, field: &str) -> String {
    match value_path.rfind("].") {
        Some(i) if value_path[..=i].contains("records[") => {
            format!("{}.{field}", &value_path[..=i])
        }
        _ => format!("{value_path}.{field}"),
    }
}
