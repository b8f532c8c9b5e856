//! The fleet (issue 15, in progress): gtmd instances that share what they observe over
//! gossip. The gossip engine is `chitchat` (Scuttlebutt anti-entropy over UDP with
//! phi-accrual failure detection; each node writes only its own keys); gtmd adds what it
//! lacks for a server on the open internet: every datagram authenticated ([`auth`]).
//!
//! What works so far: membership ([`member`]), each instance's configuration hash shared
//! and compared (divergence shown and counted, never merged), `GET /api/v1/fleet` and the
//! `gtmd_fleet_*` metrics, and the shared observations ([`share`]) from which each
//! instance decides the agreed state of every target ([`crate::health::agree`]).

pub mod auth;
pub mod member;
pub mod share;

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    health::{HealthShared, agree::layout::Layout},
    model::fleet::FleetModel,
};
use auth::{AuthTransport, GossipMetrics, REJECT_REASONS};
use member::{CONFIG_GENERATION, CONFIG_HASH, Member, MemberSettings, Peer};

/// What this instance sees of the fleet, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    /// Live peers (this instance left out), by name.
    pub peers: Vec<Peer>,
    /// This instance's configuration hash when the view was taken.
    pub config_hash: String,
}

impl FleetView {
    /// Live peers whose configuration hash differs from this instance's.
    pub fn divergent(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.config_hash.as_deref() != Some(self.config_hash.as_str()))
            .count()
    }
}

/// The fleet's gauges (registered only when `[fleet]` is configured).
#[derive(Clone)]
struct FleetGauges {
    peers: IntGauge,
    divergent: IntGauge,
    /// 1 while the gossip runs.
    up: IntGauge,
}

/// The longest a start waits for the peers' observations, whatever the gossip interval:
/// DNS, `/healthz` and `/readyz` wait for it.
pub const WARM_START_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// The gauges of the shared observations (see [`share`]).
#[derive(Clone)]
pub struct SharingGauges {
    /// Targets answered from the fleet's verdict, not this instance's own.
    pub overruled: IntGauge,
    /// Targets some fresh observation disagrees with what is answered.
    pub disagreeing: IntGauge,
    /// Per live peer: targets it has a fresh observation of.
    pub peer_observations: prometheus::IntGaugeVec,
    /// `gtmd_fleet_work_seconds_total{part}` of the sharing: `sweep`, `publish`, `read`.
    pub work: ShareWork,
    /// Per live peer: seconds since its heartbeat last advanced here (how old the newest
    /// news of it is).
    pub heard: prometheus::GaugeVec,
}

impl SharingGauges {
    fn register(registry: &Registry, work: ShareWork) -> Self {
        let g = Self {
            work,
            heard: prometheus::GaugeVec::new(
                Opts::new(
                    "gtmd_fleet_peer_heard_seconds",
                    "Per live peer (node): seconds since this instance last had news of it (its \
                     heartbeat advanced): about one gossip interval in a healthy fleet; it \
                     grows while the peer is cut off, until the failure detector marks it dead \
                     and the series goes. The peer's observations are as old as this at most.",
                ),
                &["node"],
            )
            .unwrap(),
            overruled: IntGauge::new(
                "gtmd_fleet_overruled_targets",
                "Targets answered from the fleet's agreed verdict where this instance's own \
                 observation says otherwise (its path to them may be broken). Counted every \
                 5 s.",
            )
            .unwrap(),
            disagreeing: IntGauge::new(
                "gtmd_fleet_disagreeing_targets",
                "Targets where at least one fresh observation (this instance's or a peer's) \
                 differs from what is answered. Counted every 5 s.",
            )
            .unwrap(),
            peer_observations: prometheus::IntGaugeVec::new(
                Opts::new(
                    "gtmd_fleet_peer_observations",
                    "Per live peer (node): targets of this configuration it has a fresh \
                     observation of. Lower than the target count: the peer is starting, its \
                     probes are late, or it runs another configuration.",
                ),
                &["node"],
            )
            .unwrap(),
        };
        for c in [
            Box::new(g.overruled.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(g.disagreeing.clone()),
            Box::new(g.peer_observations.clone()),
            Box::new(g.heard.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        g
    }
}

/// This instance's part in the fleet.
pub struct Fleet {
    pub node: String,
    pub listen: std::net::SocketAddr,
    pub authenticated: bool,
    member: Arc<Member>,
    view: Arc<ArcSwap<FleetView>>,
    own_hash: watch::Sender<String>,
    watcher: tokio::task::JoinHandle<()>,
    /// The exchange of observations with the health table ([`share`]).
    sharing: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    gossip_interval: std::time::Duration,
    gauges: SharingGauges,
    /// `fleet.probes_per_target`.
    probes_per_target: Option<usize>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.watcher.abort();
        for t in self
            .sharing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl Fleet {
    /// Joins the fleet as `model.node`, publishing the configuration in effect (`hash`,
    /// `generation`), and registers the `gtmd_fleet_*` metrics in `registry`.
    pub async fn start(
        model: &FleetModel,
        hash: &str,
        generation: u64,
        registry: &Registry,
    ) -> Result<Arc<Self>, String> {
        let (gossip, share_work) = register_metrics(registry);
        let gauges = FleetGauges {
            peers: IntGauge::new(
                "gtmd_fleet_peers",
                "Live fleet peers this instance sees (itself left out).",
            )
            .unwrap(),
            divergent: IntGauge::new(
                "gtmd_fleet_config_divergent_peers",
                "Live fleet peers running another configuration (hash) than this instance.",
            )
            .unwrap(),
            up: IntGauge::new(
                "gtmd_fleet_gossip_up",
                "1 while this instance gossips; 0 once its gossip stopped (see the log): \
                 the peers shown are then the last ones seen.",
            )
            .unwrap(),
        };
        for g in [&gauges.peers, &gauges.divergent, &gauges.up] {
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
        }
        let settings = MemberSettings {
            node: model.node.clone(),
            listen: model.listen,
            peers: model.peers.clone(),
            gossip_interval: model.gossip_interval,
        };
        let own = vec![
            (CONFIG_HASH.to_owned(), hash.to_owned()),
            (CONFIG_GENERATION.to_owned(), generation.to_string()),
        ];
        let member = match &model.key {
            Some(key) => {
                let transport = AuthTransport {
                    key: key.clone(),
                    metrics: gossip,
                };
                Member::join(&settings, &transport, own).await
            }
            None => Member::join(&settings, &chitchat::transport::UdpTransport, own).await,
        }
        .map_err(|e| format!("fleet: {e:#}"))?;
        let member = Arc::new(member);
        if model.key.is_some() {
            info!(node = %model.node, listen = %model.listen, peers = ?model.peers, "fleet: gossiping, every datagram authenticated");
        } else {
            warn!(node = %model.node, listen = %model.listen, peers = ?model.peers, "fleet: gossiping WITHOUT authentication (fleet.insecure = true): anyone who can send UDP to fleet.listen can join the fleet");
        }
        gauges.up.set(1);
        {
            let (stopped, up, peers) = (member.stopped(), gauges.up.clone(), gauges.peers.clone());
            tokio::spawn(async move {
                let why = stopped.await;
                up.set(0);
                peers.set(0);
                error!(result = ?why, "fleet: the gossip stopped; this instance no longer sees its peers (restart it)");
            });
        }
        let view = Arc::new(ArcSwap::from_pointee(FleetView {
            peers: Vec::new(),
            config_hash: hash.to_owned(),
        }));
        let (own_hash, own_rx) = watch::channel(hash.to_owned());
        let watcher = tokio::spawn(watch_peers(member.clone(), view.clone(), own_rx, gauges));
        Ok(Arc::new(Self {
            node: model.node.clone(),
            listen: model.listen,
            authenticated: model.key.is_some(),
            member,
            view,
            own_hash,
            watcher,
            sharing: Default::default(),
            gossip_interval: model.gossip_interval,
            gauges: SharingGauges::register(registry, share_work),
            probes_per_target: model.probes_per_target,
        }))
    }

    /// How long a starting instance waits for its peers' observations at most: three
    /// gossip rounds and a second (a peer is found in the first, its state arrives in the
    /// next, and the ready set must then hold for one more).
    pub fn warm_start_wait(&self) -> std::time::Duration {
        (self.gossip_interval * 3 + std::time::Duration::from_secs(1)).min(WARM_START_MAX)
    }

    /// The peers' observations for a start (see [`share::warm_start`]).
    pub async fn warm_start(&self, layout: &Arc<Layout>) -> (share::PeerReader, bool) {
        share::warm_start(
            &self.member,
            layout,
            self.warm_start_wait(),
            self.gossip_interval,
        )
        .await
    }

    /// Starts exchanging observations with the health table: this instance's go out, the
    /// peers' are decided on.
    pub fn share(&self, health: Arc<HealthShared>, reader: share::PeerReader) {
        let mut tasks = self.sharing.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(tokio::spawn(share::publish_own(
            self.member.clone(),
            health.clone(),
            self.gauges.clone(),
            self.gossip_interval,
        )));
        tasks.push(tokio::spawn(share::heard(
            self.member.clone(),
            self.gauges.heard.clone(),
        )));
        tasks.push(tokio::spawn(share::read_peers(
            self.member.clone(),
            health,
            reader,
            self.gauges.clone(),
            self.probes_per_target,
        )));
    }

    /// A reload applied a configuration: peers learn its hash and generation.
    pub async fn config_applied(&self, hash: &str, generation: u64) {
        self.member.set(CONFIG_HASH, hash).await;
        self.member
            .set(CONFIG_GENERATION, &generation.to_string())
            .await;
        self.own_hash.send_replace(hash.to_owned());
    }

    /// What this instance sees of the fleet now.
    pub fn view(&self) -> Arc<FleetView> {
        self.view.load_full()
    }
}

/// Keeps the view and the gauges current: on every change of the live peers (a join, a
/// death, a key) and of this instance's own hash.
async fn watch_peers(
    member: Arc<Member>,
    view: Arc<ArcSwap<FleetView>>,
    mut own: watch::Receiver<String>,
    gauges: FleetGauges,
) {
    let mut live = member.live_watcher().await;
    loop {
        let config_hash = own.borrow_and_update().clone();
        let now = FleetView {
            peers: member.live_peers().await,
            config_hash,
        };
        gauges.peers.set(now.peers.len() as i64);
        gauges.divergent.set(now.divergent() as i64);
        view.store(Arc::new(now));
        tokio::select! {
            changed = live.changed() => if changed.is_err() { return },
            changed = own.changed() => if changed.is_err() { return },
        }
    }
}

/// The CPU time of each part of the sharing ([`share`]), apart so that an operator (and
/// the benchmark) can tell which one costs.
#[derive(Clone)]
pub struct ShareWork {
    /// The periodic pass over every target ([`share::SWEEP`]).
    pub sweep: prometheus::Counter,
    /// Encoding this instance's own changed observations.
    pub publish: prometheus::Counter,
    /// Reading the peers' changed observations and deciding the targets they change.
    pub read: prometheus::Counter,
}

/// The transport's metrics, and the counters of the sharing's work.
fn register_metrics(registry: &Registry) -> (GossipMetrics, ShareWork) {
    let bytes = IntCounterVec::new(
        Opts::new(
            "gtmd_fleet_gossip_bytes_total",
            "Gossip bytes sent, and received in datagrams accepted (tag valid, decoded).",
        ),
        &["direction"],
    )
    .unwrap();
    let rejected = IntCounterVec::new(
        Opts::new(
            "gtmd_fleet_packets_rejected_total",
            "Gossip datagrams dropped: short (no room for a header and a tag), bad_tag \
             (not the fleet key's), misdirected (sent to another member), stale (sent more \
             than 15 s from this clock), malformed (a valid tag over something that does \
             not decode), too_large (an outgoing message that does not fit four datagrams), \
             incomplete (a message sent in parts of which some never arrived).",
        ),
        &["reason"],
    )
    .unwrap();
    for reason in REJECT_REASONS {
        rejected.with_label_values(&[reason]);
    }
    let work = prometheus::CounterVec::new(
        Opts::new(
            "gtmd_fleet_work_seconds_total",
            "CPU time this instance spent on the fleet, off the query path: part=\"transport\" \
             sealing, checking and decoding gossip datagrams; part=\"sweep\" the pass over \
             every target every 5 s (own observations gone stale, the gauges); \
             part=\"publish\" encoding its own changed observations; part=\"read\" reading \
             the peers' changed observations and deciding the targets they change \
             (chitchat's own bookkeeping is not counted).",
        ),
        &["part"],
    )
    .unwrap();
    let metrics = GossipMetrics {
        sent: bytes.with_label_values(&["sent"]),
        received: bytes.with_label_values(&["received"]),
        rejected: rejected.clone(),
        work: work.with_label_values(&["transport"]),
    };
    let share = ShareWork {
        sweep: work.with_label_values(&["sweep"]),
        publish: work.with_label_values(&["publish"]),
        read: work.with_label_values(&["read"]),
    };
    for c in [
        Box::new(bytes) as Box<dyn prometheus::core::Collector>,
        Box::new(rejected),
        Box::new(work),
    ] {
        registry.register(c).expect("metric names are unique");
    }
    (metrics, share)
}
