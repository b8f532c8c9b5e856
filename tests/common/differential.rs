//! The fast/full path comparison shared by the differential test (`tests/it/fastpath.rs`)
//! and the differential fuzz target (`fuzz/`), which includes this file by path.
//!
//! "Semantically identical" means: same rcode and header flags, the question echoed exactly
//! as sent, the same records in every section (owner names and names inside record data
//! compared case-insensitively, since either reply may compress them against the client's
//! mixed-case question), the same TTLs, and the same EDNS (payload, version, DO, ECS source
//! and scope prefixes).

use std::net::SocketAddr;

use arc_swap::ArcSwap;
use gtmd::{
    dns::{
        DnsHandler,
        fast::{self, Fast},
        udp::{Capture, full_path},
    },
    metrics::Metrics,
    snapshot::Snapshot,
};
use hickory_proto::{
    op::Message,
    rr::{
        RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
};

/// EDNS of a reply: payload, version, DO, ECS (source, scope).
pub type EdnsSummary = Option<(u16, u8, bool, Option<(u8, u8)>)>;

/// What "semantically identical" compares: the header, the records, the EDNS.
pub type Summary = (String, Vec<String>, EdnsSummary);

/// The comparable parts of a reply, or why it does not parse.
pub fn summary(bytes: &[u8]) -> Result<Summary, String> {
    let m = Message::from_vec(bytes).map_err(|e| format!("reply does not parse: {e}"))?;
    let md = &m.metadata;
    let head = format!(
        "{:?} aa={} tc={} rd={} ra={} cd={} an={} ns={} ar={}",
        md.response_code,
        md.authoritative,
        md.truncation,
        md.recursion_desired,
        md.recursion_available,
        md.checking_disabled,
        m.answers.len(),
        m.authorities.len(),
        m.additionals.len(),
    );
    let show = |section: &str, r: &hickory_proto::rr::Record| {
        let data = r.data.to_string();
        let data = match r.record_type() {
            RecordType::TXT | RecordType::CAA => data,
            _ => data.to_ascii_lowercase(),
        };
        format!(
            "{section} {} {} {} {} {data}",
            r.name.to_lowercase(),
            r.ttl,
            r.dns_class,
            r.record_type(),
        )
    };
    let records = m
        .answers
        .iter()
        .map(|r| show("AN", r))
        .chain(m.authorities.iter().map(|r| show("NS", r)))
        .chain(m.additionals.iter().map(|r| show("AR", r)))
        .collect();
    let edns = m.edns.as_ref().map(|e| {
        let ecs = match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some((s.source_prefix(), s.scope_prefix())),
            _ => None,
        };
        (e.max_payload(), e.version(), e.flags().dnssec_ok, ecs)
    });
    Ok((head, records, edns))
}

/// The first question's bytes (name, type, class) as they stand on the wire, if the
/// message has a well-formed uncompressed one.
pub fn question(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < 12 || bytes[4..6] == [0, 0] {
        return None;
    }
    let mut i = 12;
    while *bytes.get(i)? != 0 {
        if bytes[i] & 0xc0 != 0 {
            return None;
        }
        i += bytes[i] as usize + 1;
    }
    bytes.get(12..i + 5)
}

/// What one query did on the two paths.
pub enum Outcome {
    /// The fast path passed it on to the full path (nothing to compare).
    Declined,
    /// Both paths answered alike.
    Agreed,
}

/// Runs `bytes` from `src` through the fast path and, when it answers, through the full
/// path, with the policies' random choices drawn from `seed` on both; `Err` says how the
/// replies differ. Done as a UDP datagram and again as a TCP message (where neither path
/// truncates).
pub fn compare(
    snapshot: &ArcSwap<Snapshot>,
    metrics: &Metrics,
    handler: &DnsHandler,
    runtime: &tokio::runtime::Runtime,
    bytes: &[u8],
    src: SocketAddr,
    seed: u64,
) -> Result<Outcome, String> {
    let udp = compare_over(snapshot, metrics, handler, runtime, bytes, src, seed, false)?;
    let tcp = compare_over(snapshot, metrics, handler, runtime, bytes, src, seed, true)
        .map_err(|e| format!("over TCP: {e}"))?;
    Ok(match (udp, tcp) {
        (Outcome::Declined, Outcome::Declined) => Outcome::Declined,
        _ => Outcome::Agreed,
    })
}

#[allow(clippy::too_many_arguments)]
fn compare_over(
    snapshot: &ArcSwap<Snapshot>,
    metrics: &Metrics,
    handler: &DnsHandler,
    runtime: &tokio::runtime::Runtime,
    bytes: &[u8],
    src: SocketAddr,
    seed: u64,
    tcp: bool,
) -> Result<Outcome, String> {
    let snap = snapshot.load();
    let mut out = vec![0u8; 4096];
    gtmd::policy::rng::seed(seed);
    let mut tally = gtmd::metrics::Tally::new(metrics);
    let fast = if tcp {
        fast::answer_tcp(&snap, &mut tally, bytes, src.ip(), &mut out)
    } else {
        fast::answer(&snap, &mut tally, bytes, src.ip(), &mut out)
    };
    tally.flush(metrics, &snap);
    let Fast::Answered(len) = fast else {
        return Ok(Outcome::Declined);
    };
    let fast = &out[..len];
    let capture = Capture(Default::default(), tcp);
    let formerr = std::cell::RefCell::new(None);
    gtmd::policy::rng::seed(seed);
    let protocol = if tcp {
        hickory_server::net::xfer::Protocol::Tcp
    } else {
        hickory_server::net::xfer::Protocol::Udp
    };
    runtime.block_on(full_path(
        handler,
        bytes.to_vec(),
        src,
        protocol,
        capture.clone(),
        |r| {
            *formerr.borrow_mut() = Some(r);
            true
        },
    ));
    let full = capture
        .0
        .lock()
        .unwrap()
        .clone()
        .or_else(|| formerr.borrow_mut().take())
        .ok_or("the fast path answered a query the full path leaves unanswered")?;
    let sent = question(bytes);
    if sent.is_none() || question(fast) != sent {
        return Err(format!(
            "fast path reply does not echo the question as sent: {fast:02x?}"
        ));
    }
    if question(&full) != sent {
        return Err(format!(
            "full path reply does not echo the question as sent: {full:02x?}"
        ));
    }
    let (f, g) = (summary(fast)?, summary(&full)?);
    if f != g {
        return Err(format!("fast path {f:?}\nfull path {g:?}"));
    }
    if fast[..2] != bytes[..2] {
        return Err("fast path reply has another ID".into());
    }
    Ok(Outcome::Agreed)
}
