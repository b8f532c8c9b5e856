//! Every Prometheus metric gtmd exports, in one place.
//!
//! One [`Metrics`] per running instance (tests run many in one process). The query path
//! only touches pre-registered handles: counters indexed by protocol, query type and rcode
//! are resolved once here, and per (app, cluster) answer counters are resolved when a
//! snapshot is built — no label hashing or string formatting per query. Labels are bounded:
//! query types outside a fixed list count as `other`, apps and clusters come from the
//! config, never from clients.

mod engine;
mod gauges;
mod probe_gauges;
mod tally;

use std::time::{SystemTime, UNIX_EPOCH};

pub use engine::EngineMetrics;
pub use gauges::StateGauges;
pub use probe_gauges::{ProbeGauges, ProbeSlot};
pub use tally::{Sent, Tally};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Query types with their own label value; the rest are `other`.
const QTYPES: [(RecordType, &str); 14] = [
    (RecordType::A, "A"),
    (RecordType::AAAA, "AAAA"),
    (RecordType::ANY, "ANY"),
    (RecordType::CAA, "CAA"),
    (RecordType::CNAME, "CNAME"),
    (RecordType::DS, "DS"),
    (RecordType::HTTPS, "HTTPS"),
    (RecordType::MX, "MX"),
    (RecordType::NS, "NS"),
    (RecordType::PTR, "PTR"),
    (RecordType::SOA, "SOA"),
    (RecordType::SRV, "SRV"),
    (RecordType::SVCB, "SVCB"),
    (RecordType::TXT, "TXT"),
];
const OTHER: usize = QTYPES.len();
/// The counter index of a packet whose question cannot be read (it still counts as received).
pub(crate) const INVALID: usize = OTHER + 1;

/// Why a received packet got no response at all (`gtmd_dns_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The full path's queue was full: shed at the door rather than answered late.
    Overload = 0,
    /// Response rate limiting dropped the response (or the query, its budget already spent).
    Rrl = 1,
    /// Not a query that can be answered: shorter than a header, QR set, source port 0.
    Malformed = 2,
    /// The response could not be written to the socket (or the TCP client did not take it).
    SendError = 3,
}

const DROP_REASONS: [&str; 4] = ["overload", "rrl", "malformed", "send_error"];

const RCODES: [(ResponseCode, &str); 7] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    // TSIG-signed queries: gtmd knows no key (BADKEY, RFC 8945 §5.2.1).
    (ResponseCode::NotAuth, "NOTAUTH"),
];

/// The counter index of a query type (`other` for types without a label of their own).
fn qtype_index(qtype: RecordType) -> usize {
    QTYPES
        .iter()
        .position(|(t, _)| *t == qtype)
        .unwrap_or(OTHER)
}

/// The counter index of an rcode (`RCODES.len()` for `other`).
fn rcode_index(rcode: ResponseCode) -> usize {
    RCODES
        .iter()
        .position(|(r, _)| *r == rcode)
        .unwrap_or(RCODES.len())
}

/// The transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp = 0,
    Tcp = 1,
}

pub struct Metrics {
    pub registry: Registry,
    requests: [Vec<IntCounter>; 2],
    dropped: [IntCounter; 4],
    responses: Vec<IntCounter>,
    responses_other: IntCounter,
    pub request_duration: Histogram,
    pub answers: IntCounterVec,
    pub fallback_answers: IntCounterVec,
    /// `gtmd_probe_up` and `gtmd_probe_flapping` (1 while a target is held out of the
    /// answers for flapping, health::flap), per probe.
    pub probe_gauges: std::sync::Arc<ProbeGauges>,
    pub probe_duration: HistogramVec,
    pub reloads: IntCounterVec,
    pub last_reload_success: Gauge,
    pub config_info: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub ready: IntGauge,
    pub rrl_slipped: IntCounter,
    pub tcp_connections: IntGauge,
    /// TCP connections closed on accept: `total` (server.tcp_max_connections were open)
    /// or `per_ip` (server.tcp_max_connections_per_ip were open from that address).
    pub tcp_rejected: IntCounterVec,
    /// Failed accept(2) calls by listener (`dns_tcp`, …): EMFILE and the like, each
    /// followed by a backoff rather than a retry at once.
    pub accept_errors: IntCounterVec,
    /// TCP connections closed by `tcp_idle_timeout`: no whole query in time (`read`) or
    /// a reply not taken in time (`write`).
    pub tcp_timeouts: IntCounterVec,
    pub admin_connections: IntGauge,
    pub admin_rejected: IntCounter,
    pub admin_evicted: IntCounter,
    pub admin_shed: IntCounterVec,
    /// Admin connections closed by a timeout: `header` (admin.header_timeout: no whole
    /// request head in time, idle keep-alive included) or `lifetime`
    /// (admin.connection_lifetime).
    pub admin_timeouts: IntCounterVec,
    /// The connection cap in effect per listener kind (`dns_tcp` per listener, `admin`):
    /// the configured one, or lower if the descriptor limit could not hold it.
    pub connection_limit: IntGaugeVec,
    /// Fallback, override and reload-result gauges (see [`StateGauges`]).
    pub state: StateGauges,
    /// The probe engine: slots in use and awaited, health publications.
    pub engine: EngineMetrics,
    /// Health state file writes (`health.state_file`), and those that failed.
    pub health_state_writes: IntCounter,
    pub health_state_write_errors: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let requests_vec = IntCounterVec::new(
            opts(
                "gtmd_dns_requests_total",
                "DNS requests received, by transport and query type.",
            ),
            &["proto", "qtype"],
        )
        .unwrap();
        let responses_vec = IntCounterVec::new(
            opts(
                "gtmd_dns_responses_total",
                "DNS responses sent, by response code.",
            ),
            &["rcode"],
        )
        .unwrap();
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gtmd_dns_request_duration_seconds",
                "Time from a parsed request to its response being handed to the socket.",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.05,
            ]),
        )
        .unwrap();
        let answers = IntCounterVec::new(
            opts(
                "gtmd_answers_total",
                "Answers that included a cluster, per app: the split NOC staff compare with weights.",
            ),
            &["app", "cluster"],
        )
        .unwrap();
        let fallback_answers = IntCounterVec::new(
            opts(
                "gtmd_fallback_answers_total",
                "Answers given by an app's fallback because none of its targets was up.",
            ),
            &["app"],
        )
        .unwrap();
        let probe_gauges = std::sync::Arc::new(ProbeGauges::new());
        // Per cluster, not per target: a histogram per target cost ~1 KiB of memory each
        // here (50 MB at 50,000 probes) and 15 series each in Prometheus, for latencies
        // that differ by ingress, not by app. A target's last duration is in the status API.
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "gtmd_probe_duration_seconds",
                "Duration of each probe, by cluster probed (app and cluster probes).",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["cluster"],
        )
        .unwrap();
        let reloads = IntCounterVec::new(
            opts(
                "gtmd_config_reloads_total",
                "Configuration reloads, by result.",
            ),
            &["result"],
        )
        .unwrap();
        let last_reload_success = Gauge::with_opts(opts(
            "gtmd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration load that was applied.",
        ))
        .unwrap();
        let config_info = IntGaugeVec::new(
            opts(
                "gtmd_config_info",
                "The configuration in effect: 1 for its hash and generation.",
            ),
            &["hash", "generation"],
        )
        .unwrap();
        let build_info = IntGaugeVec::new(
            opts("gtmd_build_info", "gtmd version, always 1."),
            &["version"],
        )
        .unwrap();
        let ready = IntGauge::with_opts(opts(
            "gtmd_ready",
            "1 once the configuration is loaded, sockets bound and the first probe round done; 0 again from the first stop signal (shutdown grace).",
        ))
        .unwrap();
        let dropped_vec = IntCounterVec::new(
            opts(
                "gtmd_dns_dropped_total",
                "DNS requests received and not answered, by reason: overload (the full path's \
                 queue was full), rrl (response rate limiting), malformed (not an answerable query).",
            ),
            &["reason"],
        )
        .unwrap();
        let rrl_slipped = IntCounter::with_opts(opts(
            "gtmd_rrl_slipped_total",
            "UDP responses sent truncated (TC=1) by response rate limiting.",
        ))
        .unwrap();
        let tcp_connections = IntGauge::with_opts(opts(
            "gtmd_tcp_connections",
            "Open DNS-over-TCP connections (capped by server.tcp_max_connections).",
        ))
        .unwrap();
        let tcp_rejected = IntCounterVec::new(
            opts(
                "gtmd_tcp_rejected_total",
                "TCP connections closed on accept, by the limit hit: server.tcp_max_connections \
                 (total) or server.tcp_max_connections_per_ip (per_ip).",
            ),
            &["reason"],
        )
        .unwrap();
        let tcp_timeouts = IntCounterVec::new(
            opts(
                "gtmd_tcp_timeouts_total",
                "TCP connections closed by server.tcp_idle_timeout: no whole query in time \
                 (read) or a reply not taken in time (write).",
            ),
            &["direction"],
        )
        .unwrap();
        let accept_errors = IntCounterVec::new(
            opts(
                "gtmd_accept_errors_total",
                "Failed accepts (e.g. out of file descriptors), by listener; each one is \
                 followed by a backoff.",
            ),
            &["listener"],
        )
        .unwrap();
        let admin_connections = IntGauge::with_opts(opts(
            "gtmd_admin_connections",
            "Open admin HTTP connections (capped by admin.max_connections).",
        ))
        .unwrap();
        let admin_rejected = IntCounter::with_opts(opts(
            "gtmd_admin_rejected_total",
            "Admin connections closed at once: admin.max_connections were open, each with a request in progress.",
        ))
        .unwrap();
        let admin_evicted = IntCounter::with_opts(opts(
            "gtmd_admin_evicted_total",
            "Admin connections without a request in progress closed to make room for a new one at admin.max_connections.",
        ))
        .unwrap();
        let admin_shed = IntCounterVec::new(
            opts(
                "gtmd_admin_shed_total",
                "Admin requests answered 503 because 4 large responses of that path (/metrics, \
                 /api/v1/status) were already being built or written.",
            ),
            &["path"],
        )
        .unwrap();
        let admin_timeouts = IntCounterVec::new(
            opts(
                "gtmd_admin_timeouts_total",
                "Admin connections closed by a timeout: header (admin.header_timeout, idle \
                 keep-alive included), write (a response the client took nothing of for \
                 admin.header_timeout) or lifetime (admin.connection_lifetime).",
            ),
            &["reason"],
        )
        .unwrap();
        let connection_limit = IntGaugeVec::new(
            opts(
                "gtmd_connection_limit",
                "Connection cap in effect, by listener (dns_tcp: per TCP listener; admin): the \
                 configured one, or lower when the file descriptor limit cannot hold it.",
            ),
            &["listener"],
        )
        .unwrap();
        let health_state_writes = IntCounter::with_opts(opts(
            "gtmd_health_state_writes_total",
            "Health state file (health.state_file) writes that succeeded.",
        ))
        .unwrap();
        let health_state_write_errors = IntCounter::with_opts(opts(
            "gtmd_health_state_write_errors_total",
            "Health state file (health.state_file) writes that failed (each one is retried \
             with the next change, and logged at most once a minute).",
        ))
        .unwrap();
        for c in [
            Box::new(dropped_vec.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(health_state_writes.clone()),
            Box::new(health_state_write_errors.clone()),
            Box::new(admin_timeouts.clone()),
            Box::new(connection_limit.clone()),
            Box::new(admin_shed.clone()),
            Box::new(admin_connections.clone()),
            Box::new(admin_rejected.clone()),
            Box::new(admin_evicted.clone()),
            Box::new(tcp_connections.clone()),
            Box::new(tcp_rejected.clone()),
            Box::new(accept_errors.clone()),
            Box::new(tcp_timeouts.clone()),
            Box::new(crate::logging::DROPPED.clone()),
            Box::new(rrl_slipped.clone()),
            Box::new(requests_vec.clone()),
            Box::new(responses_vec.clone()),
            Box::new(request_duration.clone()),
            Box::new(answers.clone()),
            Box::new(fallback_answers.clone()),
            Box::new(SharedCollector(probe_gauges.clone())),
            Box::new(probe_duration.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_success.clone()),
            Box::new(config_info.clone()),
            Box::new(build_info.clone()),
            Box::new(ready.clone()),
        ] {
            reg(c);
        }
        // The standard process_* metrics (CPU, memory, file descriptors, start time),
        // read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let state = StateGauges::new(&registry);
        let engine = EngineMetrics::new(&registry);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        for reason in ["total", "per_ip"] {
            tcp_rejected.with_label_values(&[reason]);
        }
        for listener in ["dns_tcp", "admin"] {
            accept_errors.with_label_values(&[listener]);
        }
        for reason in ["header", "lifetime", "write"] {
            admin_timeouts.with_label_values(&[reason]);
        }
        for path in ["/metrics", "/api/v1/status"] {
            admin_shed.with_label_values(&[path]);
        }
        for direction in ["read", "write"] {
            tcp_timeouts.with_label_values(&[direction]);
        }
        let per_proto = |proto: &str| {
            QTYPES
                .iter()
                .map(|(_, name)| *name)
                .chain(["other", "invalid"])
                .map(|q| requests_vec.with_label_values(&[proto, q]))
                .collect::<Vec<_>>()
        };
        Self {
            requests: [per_proto("udp"), per_proto("tcp")],
            dropped: DROP_REASONS.map(|r| dropped_vec.with_label_values(&[r])),
            responses: RCODES
                .iter()
                .map(|(_, n)| responses_vec.with_label_values(&[n]))
                .collect(),
            responses_other: responses_vec.with_label_values(&["other"]),
            request_duration,
            answers,
            fallback_answers,
            probe_gauges,
            probe_duration,
            reloads,
            last_reload_success,
            config_info,
            build_info,
            ready,
            rrl_slipped,
            tcp_connections,
            tcp_rejected,
            admin_connections,
            admin_rejected,
            admin_evicted,
            admin_shed,
            admin_timeouts,
            connection_limit,
            accept_errors,
            tcp_timeouts,
            state,
            engine,
            health_state_writes,
            health_state_write_errors,
            registry,
        }
    }

    /// Counts one request (query path: index lookups and atomic adds only).
    pub fn request(&self, transport: Transport, qtype: RecordType) {
        self.requests[transport as usize][qtype_index(qtype)].inc();
    }

    /// Counts one received packet whose question cannot be read.
    pub fn request_invalid(&self, transport: Transport) {
        self.requests[transport as usize][INVALID].inc();
    }

    /// The counter of requests dropped for `reason`.
    pub fn dropped(&self, reason: Dropped) -> &IntCounter {
        &self.dropped[reason as usize]
    }

    /// Counts one response.
    pub fn response(&self, rcode: ResponseCode) {
        self.response_counter(rcode_index(rcode)).inc();
    }

    /// The response counter at an [`rcode_index`].
    fn response_counter(&self, i: usize) -> &IntCounter {
        self.responses.get(i).unwrap_or(&self.responses_other)
    }

    /// Removes the series of the probe of `app` (empty for a cluster probe) on `cluster`,
    /// so no alert keeps firing on a probe taken out of the configuration.
    pub fn forget_probe_series(&self, app: &str, cluster: &str) {
        self.probe_gauges.remove(app, cluster);
    }

    /// Records a configuration load that was applied.
    pub fn config_applied(&self, hash: &str, generation: u64) {
        self.config_info.reset();
        self.config_info
            .with_label_values(&[hash, &generation.to_string()])
            .set(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_reload_success.set(now);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Registers a collector the metrics keep a handle on.
struct SharedCollector<C>(std::sync::Arc<C>);

impl<C: prometheus::core::Collector> prometheus::core::Collector for SharedCollector<C> {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn handles_count_under_bounded_labels() {
        let m = Metrics::new();
        m.request(Transport::Udp, RecordType::A);
        m.request(Transport::Tcp, RecordType::Unknown(65280));
        m.response(ResponseCode::NXDomain);
        let text = m.render();
        assert!(
            text.contains(r#"gtmd_dns_requests_total{proto="udp",qtype="A"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"gtmd_dns_requests_total{proto="tcp",qtype="other"} 1"#));
        assert!(text.contains(r#"gtmd_dns_responses_total{rcode="NXDOMAIN"} 1"#));
        assert!(text.contains(r#"gtmd_build_info{version=""#));
        assert!(text.contains(r#"gtmd_config_reloads_total{result="failure"} 0"#));
    }

    #[test]
    fn probe_gauges_render_per_probe_and_go_with_the_probe() {
        let m = Metrics::new();
        let shop = m.probe_gauges.slot("shop.t.", "one");
        shop.set_up(true);
        m.probe_gauges.slot("", "one").set_flapping(true);
        // The same probe's slot again: a task restarted by a reload shares it.
        assert!(Arc::ptr_eq(&shop, &m.probe_gauges.slot("shop.t.", "one")));
        let text = m.render();
        for line in [
            r#"gtmd_probe_up{app="shop.t.",cluster="one"} 1"#,
            r#"gtmd_probe_up{app="",cluster="one"} 0"#,
            r#"gtmd_probe_flapping{app="shop.t.",cluster="one"} 0"#,
            r#"gtmd_probe_flapping{app="",cluster="one"} 1"#,
            "# TYPE gtmd_probe_up gauge",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.forget_probe_series("shop.t.", "one");
        m.forget_probe_series("", "one");
        assert!(!m.render().contains("gtmd_probe_up"));
    }

    #[test]
    fn probe_counters_appear_at_their_first_count_and_go_with_the_probe() {
        let m = Metrics::new();
        let shop = m.probe_gauges.slot("shop.t.", "one");
        let quiet = m.probe_gauges.slot("quiet.t.", "one");
        assert!(!m.render().contains("gtmd_probe_failures_total"));
        shop.count_failure("refused");
        shop.count_failure("refused");
        shop.count_failure("timeout");
        shop.count_failure("ok"); // not a failure's reason: not counted
        shop.count_transition(false);
        quiet.set_up(true);
        let text = m.render();
        for line in [
            r#"gtmd_probe_failures_total{app="shop.t.",cluster="one",reason="refused"} 2"#,
            r#"gtmd_probe_failures_total{app="shop.t.",cluster="one",reason="timeout"} 1"#,
            r#"gtmd_health_transitions_total{app="shop.t.",cluster="one",to="down"} 1"#,
            "# TYPE gtmd_probe_failures_total counter",
            "# TYPE gtmd_health_transitions_total counter",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // Only what counted something is a series.
        for absent in [
            r#"reason="ok""#,
            r#"reason="status""#,
            r#"to="up""#,
            "quiet.t.",
        ] {
            let counters = text
                .lines()
                .filter(|l| l.starts_with("gtmd_probe_failures") || l.starts_with("gtmd_health_t"));
            assert!(
                counters.clone().all(|l| !l.contains(absent)),
                "{absent} in {text}"
            );
        }
        m.forget_probe_series("shop.t.", "one");
        let text = m.render();
        assert!(!text.contains("gtmd_probe_failures_total{"), "{text}");
        assert!(!text.contains("gtmd_health_transitions_total{"), "{text}");
    }
}
