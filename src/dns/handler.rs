//! gtmd's hickory [`RequestHandler`]: request checks, lookup, response.
//!
//! The stock `Catalog` cannot be used: it does not see EDNS options (needed for client
//! subnet steering) and apps are answered from the live snapshot, not from a zone store.
//! The handler reads the current snapshot once per query (lock-free, via arc-swap) and
//! never awaits anything but the send.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_server::{
    net::{runtime::Time, xfer::Protocol},
    proto::{
        op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode},
        rr::{
            DNSClass, RData, Record, RecordType,
            rdata::tsig::{TSIG, TsigError},
        },
        serialize::binary::{BinDecoder, BinEncodable},
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponseBuilder, Queries},
};
use tracing::{debug, warn};

use super::{
    client::Client,
    lookup::{Answer, lookup},
    response::{Fit, fit, response_edns, udp_limit},
    sections::{self, Tsig, Walk},
};
use crate::{
    metrics::{Metrics, Transport},
    snapshot::Snapshot,
};

/// Answers DNS requests from the current snapshot.
#[derive(Clone)]
pub struct DnsHandler {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
}

impl DnsHandler {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Self {
        Self { snapshot, metrics }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The snapshot answers come from now.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = std::time::Instant::now();
        let snapshot = self.snapshot.load();
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(RecordType::Unknown(0), |q| q.query_type());
        self.metrics.request(transport, qtype);
        let server_max = snapshot.max_udp_payload;
        let client_payload = request.edns.as_ref().map(|e| e.max_payload());
        let limit = match request.protocol() {
            Protocol::Udp => udp_limit(client_payload, server_max),
            _ => u16::MAX,
        };
        // The OPT we send advertises our own maximum (RFC 6891 §6.2.3). hickory encodes UDP
        // against that number, but `fit` below has already made the content fit `limit`.
        // DO is copied from the query (RFC 3225 §3).
        let edns = request
            .edns
            .as_ref()
            .map(|e| response_edns(server_max, e.flags().dnssec_ok));
        let mut metadata = Metadata::response_from_request(&request.metadata);
        if request.metadata.op_code != OpCode::Query {
            // CD means something only to a query (RFC 4035 §3.2.2 copies it into answers);
            // the NOTIMP to other opcodes does not echo it, as Knot does not.
            metadata.checking_disabled = false;
        }

        let walk = sections::walk(request.as_slice());
        let client = match walk {
            Some(walk) => Client::from_wire(request.src().ip(), walk.ecs, &snapshot.clients),
            None => Err(ResponseCode::FormErr),
        };
        let checked = check_request(request, walk.as_ref());
        let mut badkey = match checked {
            Err(ResponseCode::NotAuth) => badkey_tsig(request),
            _ => None,
        };
        let answer = match checked.and(client.as_ref().map_err(|e| *e)) {
            Err(ResponseCode::NotAuth) if badkey.is_none() => Answer {
                rcode: ResponseCode::FormErr,
                ..Answer::default()
            },
            Err(rcode) => Answer {
                rcode,
                ..Answer::default()
            },
            Ok(client) => {
                let query = &request.queries.queries()[0];
                lookup(&snapshot, query.name(), query.query_type(), client)
            }
        };
        let mut edns = edns;
        if let (Some(edns), Some(scope), Ok(client)) = (edns.as_mut(), answer.ecs_scope, &client)
            && let Some(option) = client.echo(scope)
        {
            edns.options_mut().insert(option);
        }
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.authoritative;

        let queries = request.queries.queries();
        // The TSIG record goes after everything `fit` weighs: keep room for it.
        let tsig_len = badkey
            .as_ref()
            .map_or(0, |t| t.to_bytes().map_or(usize::from(limit), |b| b.len()));
        let room = limit.saturating_sub(u16::try_from(tsig_len).unwrap_or(u16::MAX));
        let fitted = fit(&metadata, queries, &answer, edns.as_ref(), room);
        let empty: &[&Record] = &[];
        let (answers, authority, additional) = match fitted {
            Fit::Full => (
                &answer.answers[..],
                &answer.authority[..],
                &answer.additional[..],
            ),
            Fit::WithoutAdditional => (&answer.answers[..], &answer.authority[..], empty),
            Fit::Truncated => {
                metadata.truncation = true;
                // A NOTAUTH too long for UDP with its TSIG: TC=1, the client retries over TCP.
                badkey = None;
                (empty, empty, empty)
            }
            Fit::Unencodable => {
                badkey = None;
                warn!(src = %request.src(), "answer cannot be encoded: SERVFAIL");
                metadata.response_code = ResponseCode::ServFail;
                metadata.authoritative = false;
                (empty, empty, empty)
            }
        };
        // hickory echoes the question section as the client sent it, pointers and all; a
        // section of several questions can hold pointers that mean something else in the
        // reply, so FORMERR for a question count other than one echoes none.
        let no_questions;
        let questions = if request.queries.len() == 1 {
            &request.queries
        } else {
            no_questions = Queries::read(&mut BinDecoder::new(&[]), 0)
                .expect("reading zero questions cannot fail");
            &no_questions
        };
        let mut builder = MessageResponseBuilder::new(questions, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut response = builder.build(
            metadata,
            answers.iter().copied(),
            authority.iter().copied(),
            std::iter::empty(),
            additional.iter().copied(),
        );
        if let Some(tsig) = badkey {
            // Emitted after the OPT record: a TSIG record is always the last one.
            response.set_signature(Box::new(tsig));
        }
        let rcode = metadata.response_code;
        let sent = response_handle.send_response(response).await;
        if sent.is_ok() {
            // Counted once it is sent: rate limiting may have dropped it (counted there).
            self.metrics.response(rcode);
            // The app's answer only if it went out with its answer section.
            if let (Fit::Full | Fit::WithoutAdditional, Some(app)) = (fitted, &answer.app) {
                app.count(&snapshot);
            }
        }
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        match sent {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, src = %request.src(), "failed to send response");
                let mut metadata = metadata;
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Request-level checks before any lookup, in the order servers conventionally apply them
/// (Knot's: the opcode and the EDNS version come before the signature). `walk`: the
/// query's records as sent (`None`: they do not parse).
fn check_request(request: &Request, walk: Option<&Walk<'_>>) -> Result<(), ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    if let Some(edns) = &request.edns
        && edns.version() > 0
    {
        // RFC 6891 §6.1.3: we implement version 0 only.
        return Err(ResponseCode::BADVERS);
    }
    if request.queries.len() != 1 {
        return Err(ResponseCode::FormErr);
    }
    match walk.map(|w| w.tsig) {
        // RFC 8945 §5.1: one TSIG record, the last one, or FORMERR.
        None | Some(Tsig::Misplaced) => return Err(ResponseCode::FormErr),
        // gtmd holds no TSIG keys, so every key is unknown: RFC 8945 §5.2.1.
        Some(Tsig::Last) => return Err(ResponseCode::NotAuth),
        Some(Tsig::Absent) => {}
    }
    if request.queries.queries()[0].query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    Ok(())
}

/// The TSIG record of the NOTAUTH reply to a query signed with a key gtmd does not know
/// (it knows none): BADKEY, unsigned (MAC size 0), as RFC 8945 §5.2.1 and §5.3.2 want.
/// Key name, algorithm, time signed and fudge are the query's, the original ID its
/// message ID — what Knot sends. `None` if hickory did not read the record as TSIG.
fn badkey_tsig(request: &Request) -> Option<Record<TSIG>> {
    let (name, signed) = request.additionals.iter().find_map(|r| match &r.data {
        RData::TSIG(t) => Some((&r.name, t)),
        _ => None,
    })?;
    let reply = TSIG::new(
        signed.algorithm.clone(),
        signed.time,
        signed.fudge,
        Vec::new(),
        request.metadata.id,
        Some(TsigError::BadKey),
        Vec::new(),
    );
    let mut record = Record::from_rdata(name.clone(), 0, reply);
    record.dns_class = DNSClass::ANY;
    Some(record)
}
