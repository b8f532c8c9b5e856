//! Fitting a decided [`Answer`] into one DNS message: EDNS(0) and truncation.
//!
//! The size limit is the client's UDP payload (512 without EDNS) clamped to the server's
//! `max_udp_payload`, or 65535 over TCP. When the full answer does not fit:
//! 1. optional additional records are dropped first (RFC 2181 §9: that alone does not set
//!    TC), except a referral's glue, which is required;
//! 2. if it still does not fit, the reply carries the question, the OPT record and TC=1 with
//!    empty sections, so the client retries over TCP and never caches a partial RRset.

use hickory_proto::{
    op::{Edns, LowerQuery, Metadata, emit_message_parts},
    rr::Record,
    serialize::binary::BinEncoder,
};

use super::lookup::Answer;

/// The UDP payload a client may rely on without EDNS (RFC 1035).
pub const CLASSIC_UDP_LIMIT: u16 = 512;

/// The size limit for a response to a query that advertised `client_payload` (None: no OPT).
pub fn udp_limit(client_payload: Option<u16>, server_max: u16) -> u16 {
    match client_payload {
        None => CLASSIC_UDP_LIMIT,
        Some(p) => p.min(server_max).max(CLASSIC_UDP_LIMIT),
    }
}

/// The OPT record of a response: version 0, our payload size, no options, and the DO bit
/// of the query (`dnssec_ok`): RFC 3225 §3 wants it copied, though gtmd signs nothing.
pub fn response_edns(payload: u16, dnssec_ok: bool) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(payload.max(CLASSIC_UDP_LIMIT));
    edns.set_version(0);
    edns.set_dnssec_ok(dnssec_ok);
    edns
}

/// What part of an answer goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Everything fits.
    Full,
    /// Everything but the (optional) additional section.
    WithoutAdditional,
    /// Nothing fits: send an empty reply with TC=1.
    Truncated,
    /// The answer cannot be encoded at all (a bug or a record validation missed):
    /// SERVFAIL rather than a TC=1 the client would retry forever.
    Unencodable,
}

/// Decides how much of `answer` fits in `limit` bytes by encoding it (with name
/// compression, exactly as it will be sent).
pub fn fit(
    metadata: &Metadata,
    queries: &[LowerQuery],
    answer: &Answer<'_>,
    edns: Option<&Edns>,
    limit: u16,
) -> Fit {
    let encode = |additional: &[&Record], limit: u16| {
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(limit);
        emit_message_parts(
            metadata,
            &mut queries.iter(),
            &mut answer.answers.iter().copied(),
            &mut answer.authority.iter().copied(),
            &mut additional.iter().copied(),
            edns,
            None,
            &mut encoder,
        )
    };
    let fits = |additional: &[&Record]| matches!(encode(additional, limit), Ok(h) if !h.truncation);
    if encode(&answer.additional, u16::MAX).is_err() {
        return Fit::Unencodable;
    }
    if fits(&answer.additional) {
        Fit::Full
    } else if !answer.referral && !answer.additional.is_empty() && fits(&[]) {
        Fit::WithoutAdditional
    } else {
        Fit::Truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_limit_follows_the_client_within_bounds() {
        assert_eq!(udp_limit(None, 1232), 512, "no EDNS: classic 512");
        assert_eq!(
            udp_limit(Some(4096), 1232),
            1232,
            "clamped to the server maximum"
        );
        assert_eq!(
            udp_limit(Some(800), 1232),
            800,
            "the client's smaller buffer"
        );
        assert_eq!(
            udp_limit(Some(100), 1232),
            512,
            "never below 512 (RFC 6891)"
        );
    }
}
