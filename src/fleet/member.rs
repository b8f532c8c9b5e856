//! Membership: this instance as a chitchat node, and the peers it sees.
//!
//! Each instance writes only its own keys (chitchat's rule): for now its configuration's
//! hash and generation, so that instances running different configurations are seen
//! (config divergence is shown, never merged). The shared verdicts come next.

use std::{net::SocketAddr, time::Duration};

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat,
    transport::Transport,
};

/// The cluster id every gtmd fleet gossips under (the key, not this, keeps fleets apart).
const CLUSTER: &str = "gtmd";

/// Keys an instance publishes about itself.
pub const CONFIG_HASH: &str = "config.hash";
pub const CONFIG_GENERATION: &str = "config.generation";

/// How this instance joins the fleet.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// `fleet.node`: unique in the fleet.
    pub node: String,
    /// `fleet.listen`: the gossip UDP address, also the one peers reach this instance at.
    pub listen: SocketAddr,
    /// `fleet.peers`: "host:port" seeds (resolved again every minute by chitchat).
    pub peers: Vec<String>,
    /// How often this instance gossips with up to three others.
    pub gossip_interval: Duration,
}

/// A peer as this instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
    pub addr: SocketAddr,
    pub config_hash: Option<String>,
}

/// This instance in the fleet; leaves it when dropped (chitchat's task ends with its
/// handle).
pub struct Member {
    handle: ChitchatHandle,
}

impl Member {
    /// Starts gossiping as `settings.node` over `transport`, publishing `own` keys.
    pub async fn join(
        settings: &MemberSettings,
        transport: &dyn Transport,
        own: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        // A restarted instance is a new generation: peers forget the old one's keys.
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let interval = settings.gossip_interval;
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(settings.node.clone(), generation, settings.listen),
            cluster_id: CLUSTER.to_owned(),
            gossip_interval: interval,
            listen_addr: settings.listen,
            seed_nodes: settings.peers.clone(),
            // A peer is dead after ~8 gossip intervals without news (phi 8 over a mean
            // seeded at the gossip interval), not after chitchat's default 5 s prior.
            failure_detector_config: FailureDetectorConfig::new(
                8.0,
                1000,
                interval * 10,
                interval,
                Duration::from_secs(3600),
            ),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let handle = spawn_chitchat(config, own, transport).await?;
        Ok(Self { handle })
    }

    /// Sets one of this instance's keys (gossiped from the next round).
    pub async fn set(&self, key: &str, value: &str) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(key, value))
            .await;
    }

    /// Sets several of this instance's keys at once.
    pub async fn set_all(&self, pairs: Vec<(String, String)>) {
        self.handle
            .with_chitchat(move |c| {
                let me = c.self_node_state();
                for (k, v) in &pairs {
                    me.set(k, v);
                }
            })
            .await;
    }

    /// Gossips with these peers now, besides the regular rounds (a change of this
    /// instance's keys then travels at once instead of at the next round).
    pub fn gossip_now(&self, peers: impl IntoIterator<Item = SocketAddr>) {
        for addr in peers {
            // Fails only once chitchat stopped, which `stopped` reports.
            let _ = self.handle.gossip(addr);
        }
    }

    /// Wakes `notify` whenever a peer's key under `prefix` changes (as a delta is applied,
    /// not at the next round). Subscribed while the handle lives.
    pub async fn on_key_change(
        &self,
        prefix: &str,
        notify: std::sync::Arc<tokio::sync::Notify>,
    ) -> chitchat::ListenerHandle {
        let prefix = prefix.to_owned();
        self.handle
            .with_chitchat(move |c| {
                let n = notify.clone();
                c.subscribe_event(prefix.clone(), move |_| n.notify_one())
            })
            .await
    }

    /// The live nodes and their state now (the watch's value is refreshed once a round).
    pub async fn live_states(&self) -> LiveNodes {
        self.handle
            .with_chitchat(|c| {
                let ids: Vec<ChitchatId> = c.live_nodes().cloned().collect();
                ids.into_iter()
                    .filter_map(|id| {
                        let state = c.node_state(&id)?.clone();
                        Some((id, state))
                    })
                    .collect()
            })
            .await
    }

    /// This instance's name in the fleet.
    pub fn node(&self) -> &str {
        &self.handle.chitchat_id().node_id
    }

    /// The live peers, this instance left out, by node name. A restarted peer is live
    /// twice for a few intervals (its old generation is not yet seen dead): only its newest
    /// generation is listed.
    pub async fn live_peers(&self) -> Vec<Peer> {
        let me = self.handle.chitchat_id().clone();
        self.handle
            .with_chitchat(|c| {
                let mut ids: Vec<&ChitchatId> = c
                    .live_nodes()
                    .filter(|id| id.node_id != me.node_id)
                    .collect();
                // By name, the newest generation first, then one per name.
                ids.sort_by(|a, b| {
                    a.node_id
                        .cmp(&b.node_id)
                        .then(b.generation_id.cmp(&a.generation_id))
                });
                ids.dedup_by(|later, first| later.node_id == first.node_id);
                ids.into_iter()
                    .map(|id| Peer {
                        node: id.node_id.to_string(),
                        addr: id.gossip_advertise_addr,
                        config_hash: c
                            .node_state(id)
                            .and_then(|s| s.get(CONFIG_HASH))
                            .map(str::to_owned),
                    })
                    .collect()
            })
            .await
    }

    /// Completes when the gossip stops for good (its socket failed, or chitchat's task
    /// ended), with why.
    pub fn stopped(&self) -> impl std::future::Future<Output = anyhow::Result<()>> + use<> {
        self.handle.termination_watcher()
    }

    /// chitchat's watch of the live nodes (this one included): it changes when a peer
    /// joins, dies or changes a key.
    pub async fn live_watcher(&self) -> tokio::sync::watch::Receiver<LiveNodes> {
        self.handle.chitchat().lock().await.live_nodes_watcher()
    }
}

/// What chitchat's live-nodes watch carries.
pub type LiveNodes = std::collections::BTreeMap<ChitchatId, chitchat::NodeState>;

/// The live peers of a watch value, `me` left out, each by its newest generation (a
/// restarted peer is live twice for a few intervals).
pub fn newest_peers<'a>(
    live: &'a LiveNodes,
    me: &str,
) -> Vec<(&'a ChitchatId, &'a chitchat::NodeState)> {
    let mut out: Vec<(&ChitchatId, &chitchat::NodeState)> =
        live.iter().filter(|(id, _)| &*id.node_id != me).collect();
    out.sort_by(|a, b| {
        a.0.node_id
            .cmp(&b.0.node_id)
            .then(b.0.generation_id.cmp(&a.0.generation_id))
    });
    out.dedup_by(|later, first| later.0.node_id == first.0.node_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::auth::{AuthTransport, FleetKey, GossipMetrics};

    const KEY: &[u8] = b"a fleet key of thirty-two bytes!";

    /// `N` distinct UDP ports on 127.0.0.1 free a moment ago (chitchat must know its address
    /// before it binds it: the id carries it). Held together while chosen, so they differ.
    fn free_ports<const N: usize>() -> [SocketAddr; N] {
        let held: Vec<std::net::UdpSocket> = (0..N)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        std::array::from_fn(|i| held[i].local_addr().unwrap())
    }

    fn transport(key: &[u8]) -> (AuthTransport, GossipMetrics) {
        let metrics = GossipMetrics::unregistered();
        (
            AuthTransport {
                key: FleetKey::new(key).unwrap(),
                metrics: metrics.clone(),
            },
            metrics,
        )
    }

    fn settings(node: &str, listen: SocketAddr, peers: &[SocketAddr]) -> MemberSettings {
        MemberSettings {
            node: node.to_owned(),
            listen,
            peers: peers.iter().map(|p| p.to_string()).collect(),
            gossip_interval: Duration::from_millis(100),
        }
    }

    /// Waits (at most a minute) until `member` sees exactly `nodes` live, then returns them.
    async fn until_peers(member: &Member, nodes: &[&str]) -> Vec<Peer> {
        let mut watch = member.live_watcher().await;
        let wait = async {
            loop {
                let peers = member.live_peers().await;
                let names: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
                if names == nodes {
                    return peers;
                }
                watch.changed().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("peers {nodes:?} not seen within a minute"))
    }

    /// Two instances with the fleet's key find each other from one seed and see each
    /// other's configuration hash; an instance with another key never joins, and its
    /// datagrams are counted as rejected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_with_the_key_meet_and_a_stranger_stays_out() {
        let [a_addr, b_addr, c_addr] = free_ports::<3>();
        let (ta, a_metrics) = transport(KEY);
        let (tb, _) = transport(KEY);
        let own = |hash: &str| vec![(CONFIG_HASH.to_owned(), hash.to_owned())];
        let a = Member::join(&settings("a", a_addr, &[]), &ta, own("h1"))
            .await
            .unwrap();
        let b = Member::join(&settings("b", b_addr, &[a_addr]), &tb, own("h2"))
            .await
            .unwrap();
        let seen = until_peers(&a, &["b"]).await;
        assert_eq!(seen[0].addr, b_addr);
        assert_eq!(seen[0].config_hash.as_deref(), Some("h2"));
        until_peers(&b, &["a"]).await;
        // A changed key travels.
        b.set(CONFIG_HASH, "h3").await;
        let mut watch = a.live_watcher().await;
        tokio::time::timeout(Duration::from_secs(60), async {
            while a
                .live_peers()
                .await
                .first()
                .and_then(|p| p.config_hash.as_deref())
                != Some("h3")
            {
                watch.changed().await.unwrap();
            }
        })
        .await
        .expect("the new hash within a minute");
        // Another key: its gossip reaches a, and is dropped there.
        let (tc, _) = transport(b"another fleet's key of 32 bytes!");
        let c = Member::join(&settings("c", c_addr, &[a_addr]), &tc, own("h1"))
            .await
            .unwrap();
        let rejected = || a_metrics.rejected.with_label_values(&["bad_tag"]).get();
        tokio::time::timeout(Duration::from_secs(60), async {
            while rejected() == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the stranger's gossip reached a within a minute");
        let names: Vec<String> = a.live_peers().await.into_iter().map(|p| p.node).collect();
        assert_eq!(names, ["b"]);
        assert!(c.live_peers().await.is_empty());
    }

    /// Seeds that include the instance's own address (a headless Service resolves to every
    /// pod, this one too): the instances still meet, and none lists itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seed_list_with_the_instance_itself_is_fine() {
        let [a_addr, b_addr] = free_ports::<2>();
        let (ta, _) = transport(KEY);
        let (tb, _) = transport(KEY);
        let both = [a_addr, b_addr];
        let a = Member::join(&settings("a", a_addr, &both), &ta, Vec::new())
            .await
            .unwrap();
        let b = Member::join(&settings("b", b_addr, &both), &tb, Vec::new())
            .await
            .unwrap();
        until_peers(&a, &["b"]).await;
        until_peers(&b, &["a"]).await;
    }

    /// A starting instance's wait ([`crate::fleet::share::warm_start`]) ends as soon as
    /// every member its live peers name is live and ready: undecided while a peer names
    /// none, not yet while one it names is missing, then yes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_waits_for_exactly_the_members_its_peers_name() {
        use crate::fleet::share::{MEMBERS_KEY, PeerReader, READY_KEY};
        let [a_addr, b_addr, c_addr] = free_ports::<3>();
        let join = |node: &'static str, addr, seeds: Vec<SocketAddr>, keys: &[(&str, &str)]| {
            let keys: Vec<(String, String)> = keys
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            async move {
                let (t, _) = transport(KEY);
                Member::join(&settings(node, addr, &seeds), &t, keys)
                    .await
                    .unwrap()
            }
        };
        let a = join(
            "a",
            a_addr,
            vec![],
            &[(READY_KEY, "1"), (MEMBERS_KEY, "a b")],
        )
        .await;
        let b = join("b", b_addr, vec![a_addr], &[(READY_KEY, "1")]).await;
        let c = join("c", c_addr, vec![a_addr], &[]).await;
        // What c's start sees, once the live peers' states satisfy `until`.
        let named_when = |until: fn(&LiveNodes) -> bool| {
            let c = &c;
            async move {
                let mut watch = c.live_watcher().await;
                tokio::time::timeout(Duration::from_secs(60), async {
                    loop {
                        let live = c.live_states().await;
                        if until(&live) {
                            return PeerReader::all_named_ready(&live, "c");
                        }
                        watch.changed().await.unwrap();
                    }
                })
                .await
                .expect("the peers' keys within a minute")
            }
        };
        let both_ready = |live: &LiveNodes| PeerReader::complete(live, "c") == (2, 2);
        assert_eq!(named_when(both_ready).await, None, "b names no members yet");
        b.set(MEMBERS_KEY, "a b x").await;
        let names_x = |live: &LiveNodes| {
            PeerReader::complete(live, "c") == (2, 2)
                && newest_peers(live, "c")
                    .iter()
                    .any(|(id, s)| &*id.node_id == "b" && s.get(MEMBERS_KEY) == Some("a b x"))
        };
        assert_eq!(named_when(names_x).await, Some(false), "x is not live");
        b.set(MEMBERS_KEY, "a b c").await;
        let names_c = |live: &LiveNodes| {
            newest_peers(live, "c")
                .iter()
                .any(|(id, s)| &*id.node_id == "b" && s.get(MEMBERS_KEY) == Some("a b c"))
        };
        assert_eq!(named_when(names_c).await, Some(true));
        drop(a);
    }
}
