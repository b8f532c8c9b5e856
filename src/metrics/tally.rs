//! A UDP worker's own counts of what its fast path answered, added to the shared metrics
//! once per receive batch.
//!
//! Every shared counter is an atomic that all workers would otherwise increment for every
//! packet — several per answer (request, response, latency histogram, the cluster answered)
//! — and with two workers each increment drags the counter's cache line across cores. A
//! tally is plain integers owned by one thread; [`Tally::flush`] adds them with one atomic
//! add per counter that moved, so a batch of 32 answers costs a handful of shared writes
//! instead of ~200. A scrape sees a worker's counts at most one batch late (well under a
//! millisecond under load, at once when idle: a batch of one is flushed straight away).

use hickory_proto::{op::ResponseCode, rr::RecordType};
use prometheus::local::LocalHistogram;

use super::{Dropped, INVALID, Metrics, RCODES, Transport, qtype_index, rcode_index};
use crate::{
    policy::Picks,
    snapshot::{AppAnswer, Snapshot},
};

/// Distinct (app, target) pairs a tally holds before it flushes early (and never grows:
/// the fast path must not allocate).
const ANSWERED: usize = 64;

/// How many of the latest (app, target) entries a new answer may merge into.
const RECENT: usize = 8;

/// What became of a fast-path answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Sent as answered.
    Full,
    /// Rate limiting sent an empty TC=1 reply instead.
    Truncated,
    /// Rate limiting dropped it.
    Nothing,
}

/// The counts of the last answer, held until its fate is known (rate limiting decides
/// after the answer is written).
struct Pending {
    qtype: usize,
    rcode: usize,
    app: Option<AppPending>,
}

/// Which of an app's targets an answer counts under `gtmd_answers_total`.
enum AppPending {
    /// App index, the targets that answered, whether the fallback did.
    Targets(u32, Picks, bool),
    /// App index and family (AAAA: true): every up target of that family's plan (a
    /// pre-rendered `all` answer, which answers all of them).
    EveryUp(u32, bool),
}

pub struct Tally {
    transport: Transport,
    requests: [u64; INVALID + 1],
    responses: [u64; RCODES.len() + 1],
    duration: LocalHistogram,
    /// (app index, target index, answers) in the snapshot the worker is answering from.
    answered: Vec<(u32, u32, u64)>,
    /// (app index, fallback answers).
    fallbacks: Vec<(u32, u64)>,
    /// (app index, AAAA, answers) of answers by every up target of the family: one entry
    /// per answer set, spread over its targets' counters at flush.
    every_up: Vec<(u32, bool, u64)>,
    pending: Option<Pending>,
    rrl_slipped: u64,
    /// Requests that got no response, by [`Dropped`] reason.
    dropped: [u64; 4],
}

impl Tally {
    /// A UDP worker's tally.
    pub fn new(metrics: &Metrics) -> Self {
        Self::for_transport(metrics, Transport::Udp)
    }

    /// A tally of answers sent over `transport` (a TCP connection keeps one).
    pub fn for_transport(metrics: &Metrics, transport: Transport) -> Self {
        Self {
            transport,
            requests: [0; INVALID + 1],
            responses: [0; RCODES.len() + 1],
            duration: metrics.request_duration.local(),
            answered: Vec::with_capacity(ANSWERED),
            fallbacks: Vec::with_capacity(ANSWERED),
            every_up: Vec::with_capacity(ANSWERED),
            pending: None,
            rrl_slipped: 0,
            dropped: [0; 4],
        }
    }

    /// One request of `qtype` answered with `rcode` (and, for an app, its choice),
    /// counted when [`Tally::commit`] says what was sent. An answer never committed counts
    /// as sent in full at the next answer or flush.
    pub fn answer(
        &mut self,
        snapshot: &Snapshot,
        qtype: RecordType,
        rcode: ResponseCode,
        app: Option<(usize, &AppAnswer<'_>)>,
    ) {
        self.commit(snapshot, Sent::Full);
        self.pending = Some(Pending {
            qtype: qtype_index(qtype),
            rcode: rcode_index(rcode),
            app: app.map(|(i, a)| AppPending::Targets(i as u32, a.answered.clone(), a.fallback)),
        });
    }

    /// Like [`Tally::answer`] (NOERROR), for an answer of app `app` by every up target of
    /// its A (`v6` false) or AAAA plan: no target list to copy or walk per query.
    pub fn answer_every_up(
        &mut self,
        snapshot: &Snapshot,
        qtype: RecordType,
        app: usize,
        v6: bool,
    ) {
        self.commit(snapshot, Sent::Full);
        self.pending = Some(Pending {
            qtype: qtype_index(qtype),
            rcode: rcode_index(ResponseCode::NoError),
            app: Some(AppPending::EveryUp(app as u32, v6)),
        });
    }

    /// Counts the pending answer as `sent`: the request always; the response unless it was
    /// dropped; the clusters answered only if it went out in full.
    pub fn commit(&mut self, snapshot: &Snapshot, sent: Sent) {
        let Some(p) = self.pending.take() else {
            return;
        };
        self.requests[p.qtype] += 1;
        match sent {
            Sent::Full => self.responses[p.rcode] += 1,
            // What goes out is an empty NOERROR reply with TC=1.
            Sent::Truncated => self.responses[rcode_index(ResponseCode::NoError)] += 1,
            Sent::Nothing => {}
        }
        match sent {
            Sent::Truncated => self.rrl_slipped += 1,
            Sent::Nothing => self.dropped[Dropped::Rrl as usize] += 1,
            Sent::Full => match p.app {
                Some(AppPending::Targets(app, answered, fallback)) => {
                    self.app_answer(snapshot, app, &answered, fallback);
                }
                Some(AppPending::EveryUp(app, v6)) => self.every_up_answer(snapshot, app, v6),
                None => {}
            },
        }
    }

    /// A request (of `qtype`, or `None` when its question cannot be read) that gets no
    /// response, for `reason`.
    pub fn shed(&mut self, qtype: Option<u16>, reason: Dropped) {
        self.requests[qtype.map_or(INVALID, |t| qtype_index(RecordType::from(t)))] += 1;
        self.dropped[reason as usize] += 1;
    }

    /// A request answered by rate limiting with an empty TC=1 reply (NOERROR) before any
    /// answer was made.
    pub fn slipped(&mut self, qtype: Option<u16>) {
        self.requests[qtype.map_or(INVALID, |t| qtype_index(RecordType::from(t)))] += 1;
        self.responses[rcode_index(ResponseCode::NoError)] += 1;
        self.rrl_slipped += 1;
    }

    /// The time one answer took.
    pub fn observe(&mut self, seconds: f64) {
        self.duration.observe(seconds);
    }

    /// The clusters app `app` answered with (`gtmd_answers_total`), and its fallback;
    /// straight onto the shared counters when the tally has no room (it never grows).
    fn app_answer(&mut self, snapshot: &Snapshot, app: u32, answered: &Picks, fallback: bool) {
        if self.answered.len() + answered.len() > ANSWERED || self.fallbacks.len() >= ANSWERED {
            snapshot
                .app(app as usize)
                .count_answered(answered, fallback);
            return;
        }
        for &t in answered {
            let t = t as u32;
            // Merge with a recent entry of the same pair (a name queried again and again
            // makes one entry); looking further back costs more than the merge saves
            // when names are many.
            let recent = self.answered.len().saturating_sub(RECENT);
            match self.answered[recent..]
                .iter_mut()
                .find(|(a, x, _)| *a == app && *x == t)
            {
                Some(entry) => entry.2 += 1,
                None => self.answered.push((app, t, 1)),
            }
        }
        if fallback {
            match self.fallbacks.iter_mut().find(|(a, _)| *a == app) {
                Some(entry) => entry.1 += 1,
                None => self.fallbacks.push((app, 1)),
            }
        }
    }

    /// One answer by every up target of app `app`'s family: merged with a recent entry of
    /// the same answer set, or straight onto the shared counters when the tally has no
    /// room (it never grows).
    fn every_up_answer(&mut self, snapshot: &Snapshot, app: u32, v6: bool) {
        let len = self.every_up.len();
        match self.every_up[len.saturating_sub(RECENT)..]
            .iter_mut()
            .find(|(a, x, _)| *a == app && *x == v6)
        {
            Some(entry) => entry.2 += 1,
            None if len < ANSWERED => self.every_up.push((app, v6, 1)),
            None => count_every_up(snapshot, app, v6, 1),
        }
    }

    /// Adds everything to the shared metrics and starts again from zero. `snapshot` must
    /// be the one the app answers were counted in.
    pub fn flush(&mut self, metrics: &Metrics, snapshot: &Snapshot) {
        self.commit(snapshot, Sent::Full);
        let requests = &metrics.requests[self.transport as usize];
        for (n, counter) in self.requests.iter_mut().zip(requests) {
            if *n > 0 {
                counter.inc_by(std::mem::take(n));
            }
        }
        for (i, n) in self.responses.iter_mut().enumerate() {
            if *n > 0 {
                metrics.response_counter(i).inc_by(std::mem::take(n));
            }
        }
        self.duration.flush();
        for (app, target, n) in self.answered.drain(..) {
            if let Some(counter) = snapshot
                .apps()
                .get(app as usize)
                .and_then(|a| a.answered.get(target as usize))
            {
                counter.inc_by(n);
            }
        }
        for (app, v6, n) in self.every_up.drain(..) {
            count_every_up(snapshot, app, v6, n);
        }
        for (app, n) in self.fallbacks.drain(..) {
            if let Some(a) = snapshot.apps().get(app as usize) {
                a.fallback_answers.inc_by(n);
            }
        }
        if self.rrl_slipped > 0 {
            metrics
                .rrl_slipped
                .inc_by(std::mem::take(&mut self.rrl_slipped));
        }
        for (i, n) in self.dropped.iter_mut().enumerate() {
            if *n > 0 {
                metrics.dropped[i].inc_by(std::mem::take(n));
            }
        }
    }
}

/// Adds `n` answers to the counter of every up target of app `app`'s family.
fn count_every_up(snapshot: &Snapshot, app: u32, v6: bool, n: u64) {
    if let Some(a) = snapshot.apps().get(app as usize) {
        let plan = if v6 { &a.v6 } else { &a.v4 };
        for c in &plan.up {
            if let Some(counter) = a.answered.get(c.target) {
                counter.inc_by(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        dns::fast,
        test_support::{APP, ONE_APP as CONFIG, STATIC, query, snapshot},
    };

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing"))
    }

    #[test]
    fn counts_reach_the_shared_metrics_only_at_flush_and_exactly() {
        let (snapshot, metrics) = snapshot(CONFIG);
        let mut tally = Tally::new(&metrics);
        let src: IpAddr = "198.51.100.1".parse().unwrap();
        let mut out = [0u8; 512];
        let app = query(APP, 1);
        let stat = query(STATIC, 1);
        for _ in 0..5 {
            fast::answer(&snapshot, &mut tally, &app, src, &mut out);
            tally.observe(0.000_02);
        }
        fast::answer(&snapshot, &mut tally, &stat, src, &mut out);
        let udp_a = r#"gtmd_dns_requests_total{proto="udp",qtype="A"}"#;
        let answered = r#"gtmd_answers_total{app="app.t.test.",cluster="a"}"#;
        assert_eq!(
            value(&metrics.render(), udp_a),
            0.0,
            "nothing before the flush"
        );
        tally.flush(&metrics, &snapshot);
        let text = metrics.render();
        assert_eq!(value(&text, udp_a), 6.0);
        assert_eq!(
            value(&text, r#"gtmd_dns_responses_total{rcode="NOERROR"}"#),
            5.0 + 1.0
        );
        assert_eq!(value(&text, answered), 5.0);
        assert_eq!(value(&text, "gtmd_dns_request_duration_seconds_count"), 5.0);
        // A second flush adds nothing more.
        tally.flush(&metrics, &snapshot);
        assert_eq!(value(&metrics.render(), answered), 5.0);
        // Rate limiting decides after the answer is written: a dropped answer counts as a
        // request only, a slipped one as a request and a response, neither as the cluster
        // answered.
        fast::answer(&snapshot, &mut tally, &app, src, &mut out);
        tally.commit(&snapshot, Sent::Nothing);
        fast::answer(&snapshot, &mut tally, &app, src, &mut out);
        tally.commit(&snapshot, Sent::Truncated);
        tally.flush(&metrics, &snapshot);
        let text = metrics.render();
        assert_eq!(value(&text, udp_a), 8.0);
        assert_eq!(
            value(&text, r#"gtmd_dns_responses_total{rcode="NOERROR"}"#),
            7.0
        );
        assert_eq!(value(&text, answered), 5.0);
        assert_eq!(value(&text, r#"gtmd_dns_dropped_total{reason="rrl"}"#), 1.0);
        assert_eq!(value(&text, "gtmd_rrl_slipped_total"), 1.0);
    }

    /// A pre-rendered `all` answer is counted per answer set (one tally entry however many
    /// targets), and the metric keeps its meaning: each up target's counter once per
    /// answer; the ones not up, never.
    #[test]
    fn every_up_answers_count_each_up_target_once_per_answer() {
        let toml = CONFIG
            .replace(
                "[[apps]]",
                "[[clusters]]\nname = \"b\"\ningress = [\"192.0.2.11\"]\n\
                 [[clusters]]\nname = \"c\"\ningress = [\"192.0.2.12\"]\n\
                 [[clusters]]\nname = \"off\"\ningress = [\"192.0.2.13\"]\nforce = \"down\"\n\
                 [[apps]]",
            )
            .replace(
                "targets = [{ cluster = \"a\" }]",
                "targets = [{ cluster = \"a\" }, { cluster = \"b\" }, { cluster = \"off\" }, { cluster = \"c\" }]",
            );
        let (snapshot, metrics) = snapshot(&toml);
        assert_eq!(snapshot.app(0).v4.rendered.period, 3, "pre-rendered");
        let mut tally = Tally::new(&metrics);
        let src: IpAddr = "198.51.100.1".parse().unwrap();
        let mut out = [0u8; 512];
        let app = query(APP, 1);
        for _ in 0..7 {
            let r = fast::answer(&snapshot, &mut tally, &app, src, &mut out);
            assert!(matches!(r, fast::Fast::Answered(_)), "{r:?}");
        }
        assert!(tally.every_up.len() <= 1, "one entry per answer set");
        // Rate limiting dropped this one: not counted as answered.
        fast::answer(&snapshot, &mut tally, &app, src, &mut out);
        tally.commit(&snapshot, Sent::Nothing);
        tally.flush(&metrics, &snapshot);
        let text = metrics.render();
        for cluster in ["a", "b", "c"] {
            let series = format!(r#"gtmd_answers_total{{app="app.t.test.",cluster="{cluster}"}}"#);
            assert_eq!(value(&text, &series), 7.0, "{cluster}");
        }
        let off = r#"gtmd_answers_total{app="app.t.test.",cluster="off"}"#;
        assert_eq!(value(&text, off), 0.0);
    }

    #[test]
    fn a_tcp_tally_counts_under_proto_tcp() {
        let (snapshot, metrics) = snapshot(CONFIG);
        let mut tally = Tally::for_transport(&metrics, Transport::Tcp);
        let mut out = [0u8; 512];
        let src: IpAddr = "198.51.100.1".parse().unwrap();
        let app = query(APP, 1);
        for _ in 0..3 {
            let sent = fast::answer_tcp(&snapshot, &mut tally, &app, src, &mut out);
            assert!(matches!(sent, fast::Fast::Answered(_)));
        }
        tally.flush(&metrics, &snapshot);
        let text = metrics.render();
        assert_eq!(
            value(&text, r#"gtmd_dns_requests_total{proto="tcp",qtype="A"}"#),
            3.0
        );
        assert_eq!(
            value(&text, r#"gtmd_dns_requests_total{proto="udp",qtype="A"}"#),
            0.0
        );
        let answered = r#"gtmd_answers_total{app="app.t.test.",cluster="a"}"#;
        assert_eq!(value(&text, answered), 3.0);
    }

    #[test]
    fn a_full_tally_counts_straight_onto_the_shared_counters() {
        // 64 clusters, every answer all 64 of them: from the second answer on the pairs
        // do not fit in the tally (64) and go straight to the counters; nothing is lost.
        let mut toml = CONFIG.replace(
            "[[clusters]]\nname = \"a\"\ningress = [\"192.0.2.10\"]\n",
            "",
        );
        let mut targets = Vec::new();
        for i in 0..64 {
            toml.push_str(&format!(
                "[[clusters]]\nname = \"c{i}\"\ningress = [\"10.0.{i}.1\"]\n"
            ));
            targets.push(format!("{{ cluster = \"c{i}\" }}"));
        }
        toml = toml.replace(
            "targets = [{ cluster = \"a\" }]",
            &format!("max_answers = 64\ntargets = [{}]", targets.join(", ")),
        );
        let (snapshot, metrics) = snapshot(&toml);
        let mut tally = Tally::new(&metrics);
        let src: IpAddr = "198.51.100.1".parse().unwrap();
        let mut out = [0u8; 4096];
        // With EDNS (1,232 bytes): 64 addresses do not fit the 512 of plain DNS.
        let mut app = query(APP, 1);
        app[11] = 1;
        app.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        for _ in 0..10 {
            let r = fast::answer(&snapshot, &mut tally, &app, src, &mut out);
            assert!(matches!(r, fast::Fast::Answered(_)), "{r:?}");
        }
        tally.flush(&metrics, &snapshot);
        let total: f64 = metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("gtmd_answers_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(total, 640.0, "10 answers of 64 clusters each");
    }
}
