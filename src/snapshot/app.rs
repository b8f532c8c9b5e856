//! One app's answer plan for the current health: per-target records, the healthy
//! candidates of each address family (precomputed so a query only runs the policy), and
//! the fallback records.
//!
//! Layout matters here. With thousands of apps queried at random, each query's app is
//! cold in the cache, and every pointer followed is a miss that waits for the one before.
//! So what a query reads — the name to confirm the lookup, the policy, the up candidates
//! and the candidates' addresses — sits inline in [`AppAnswers`] (a few adjacent cache
//! lines, fetched together), and the hickory `Record`s, large and behind two more
//! pointers, are read only by the full path.

use std::{net::IpAddr, sync::Arc};

use hickory_proto::rr::{Name, RData, Record, RecordType};

use prometheus::IntCounter;

use crate::{
    health::state::{Override, TargetState, Verdicts, operator_override, target_state},
    metrics::Metrics,
    model::{Fallback, Model},
    policy::{
        Candidate, Picks, PoolPolicy,
        choose::{AppPolicy, Choice, ClientView, FamilyView, Picked, PolicyKind, choose},
        stable_hash,
    },
};

/// One target as the snapshot saw it.
#[derive(Debug, Clone)]
pub struct TargetAnswers {
    /// Index into the model's clusters.
    pub cluster: usize,
    pub state: TargetState,
    /// Shared with the verdict's reason where it is one (no copy per plan).
    pub detail: Arc<str>,
    /// Out by the operator's word: drained, or forced down (target or cluster). Such a
    /// target is never answered, not even by the fail-open fallback, which only brings
    /// back targets that the probes put down.
    pub by_operator: bool,
    /// Shared by the plans of successive health publications, and across a reload that
    /// makes the same records ([`AppAnswers::same_fixed`]).
    pub a: Arc<[Record]>,
    pub aaaa: Arc<[Record]>,
}

/// Inline capacity for per-app lists: apps with up to this many clusters keep them in
/// [`AppAnswers`] itself.
const INLINE: usize = 6;

/// The largest pre-rendered answer set of one family of one app, in bytes (every
/// rotation's answer section together): 8 targets of one IPv4 address each (8 rotations ×
/// 8 records × 16 bytes), or 6 of one IPv6 address. Bigger plans are answered record by
/// record, so the snapshot's memory stays bounded by the config, not its square.
pub const RENDERED_MAX: usize = 1024;

/// Policy `all`'s answers written out at build time, one answer section per rotation.
///
/// `all` answers every up target, rotated per query: the answer depends on nothing but the
/// plan and which of its `period` rotations the query draws, so each rotation's records
/// (owner a compression pointer to the question at offset 12, class IN, the app's TTL, the
/// address) are rendered here once, and a query copies one slice. Only where every rotation
/// answers the same targets (all of `up`) with the same number of records, so that one
/// stride and one answered set hold for all (`gtmd_answers_total` counts `up`).
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct Rendered {
    /// Rotations rendered; 0: none (not policy `all`, fallback, or over [`RENDERED_MAX`]).
    /// A query answers rotation `random % period`, as [`crate::policy::all::pick`] does.
    pub period: u32,
    /// Bytes of one answer section.
    pub stride: u32,
    /// Records in one answer section (the reply's ANCOUNT).
    pub count: u16,
    /// `period` answer sections of `stride` bytes, rotation 0 first.
    pub bytes: Box<[u8]>,
}

impl Rendered {
    /// The answer section of rotation `random % period` (`period` > 0).
    pub fn rotation(&self, random: u64) -> &[u8] {
        let k = (random as usize) % self.period as usize;
        let stride = self.stride as usize;
        &self.bytes[k * stride..(k + 1) * stride]
    }
}

/// An A or AAAA record whose owner is the question name (a pointer to offset 12): the
/// wire form the fast path writes for an answered address.
pub fn address_record(ip: IpAddr, ttl: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xc0, 0x0c]);
    let (v4, v6);
    let (rtype, rdata): (u16, &[u8]) = match ip {
        IpAddr::V4(a) => {
            v4 = a.octets();
            (1, &v4)
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            (28, &v6)
        }
    };
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// What one address family offers right now. `repr(C)`: fields in the order a query
/// reads them, so they share cache lines.
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct FamilyPlan {
    /// Policy `all`'s answers, pre-rendered (read first: when present, a query needs
    /// nothing else of the plan).
    pub rendered: Rendered,
    /// Weight of every target of this family that is not drained.
    pub total_weight: u64,
    pub up: smallvec::SmallVec<[Candidate; INLINE]>,
    /// Every target's addresses of this family as (target, address), in target order: what
    /// the records of `targets[t]` hold, without reaching them.
    pub addrs: smallvec::SmallVec<[(u32, IpAddr); INLINE]>,
    /// Per pool: its up candidates and total weight.
    pub pools: Vec<(Vec<Candidate>, u64)>,
    /// What the app's fallback answers when no target is up: addresses that point at the
    /// targets' records (or the fallback cluster's, [`AppAnswers::fallback_own`]), not
    /// copies of them. Copies were most of a plan's memory (a `Record` is ~270 bytes), and
    /// were made again at every health publication.
    pub fallback: Box<[Answered]>,
}

/// An app's answer plan. `repr(C)`: what a query reads comes first, in reading order
/// (name, policy, the A plan, the counters), so it is a run of adjacent cache lines.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct AppAnswers {
    /// The hostname in lower-case wire form, inline: the fast path confirms its lookup
    /// here instead of in a separately allocated key.
    pub wire_name: smallvec::SmallVec<[u8; 48]>,
    /// The TTL of every address record of the app (targets' and fallback's).
    pub ttl: u32,
    /// No target is up: answers come from the fallback.
    pub fallback_active: bool,
    /// Inline (not shared behind a pointer): one cache miss less per query.
    pub policy: AppPolicy,
    pub v4: FamilyPlan,
    /// `gtmd_answers_total{app, cluster}` per target, resolved once; inline, so counting
    /// an answer does not go through `targets`.
    pub answered: smallvec::SmallVec<[IntCounter; INLINE]>,
    /// `gtmd_fallback_answers_total{app}`, resolved once.
    pub fallback_answers: IntCounter,
    pub v6: FamilyPlan,
    pub hostname: Name,
    pub fallback: Fallback,
    pub targets: Vec<TargetAnswers>,
    /// The records of the fallback cluster (`fallback = "cluster:<name>"`), A and AAAA, that
    /// [`Source::Fallback`] indexes; none for the other fallbacks. Carried from plan to
    /// plan (and across reloads) with the targets' records.
    pub fallback_own: Option<Family<Arc<[Record]>>>,
}

/// Where an answered address comes from, to find its `Record` (full path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `k`-th record of the family at target `t`.
    Target(u32, u32),
    /// The `k`-th record of the family in the fallback cluster's own records.
    Fallback(u32),
}

/// One address of an answer: all the fast path needs to write it (the TTL is the app's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub ip: IpAddr,
    pub source: Source,
}

/// The records answered for one query, and why.
#[derive(Debug)]
pub struct AppAnswer<'a> {
    /// Inline up to 8, like [`Picks`]: an answer is built without allocating.
    /// [`AppAnswers::record`] finds each one's `Record`.
    pub records: smallvec::SmallVec<[Answered; 8]>,
    /// Whether these are AAAA (true) or A records.
    pub v6: bool,
    /// Ties the answer to the plan it came from.
    pub plan: &'a AppAnswers,
    pub choice: Choice,
    /// The fallback answered (no eligible target was up).
    pub fallback: bool,
    /// Targets whose addresses made it into the answer (for `gtmd_answers_total`).
    pub answered: Picks,
}

fn records_for(hostname: &Name, ttl: u32, ips: &[IpAddr]) -> (Vec<Record>, Vec<Record>) {
    let (mut a, mut aaaa) = (Vec::new(), Vec::new());
    for ip in ips {
        match ip {
            IpAddr::V4(v4) => a.push(Record::from_rdata(
                hostname.clone(),
                ttl,
                RData::A((*v4).into()),
            )),
            IpAddr::V6(v6) => aaaa.push(Record::from_rdata(
                hostname.clone(),
                ttl,
                RData::AAAA((*v6).into()),
            )),
        }
    }
    (a, aaaa)
}

/// A value per address family: (A, AAAA).
type Family<T> = (T, T);

/// What an app's plan holds that no verdict changes: its records and counters. Built once,
/// then carried from plan to plan by [`AppAnswers::rebuilt`], also across reloads where
/// [`AppAnswers::same_fixed`] holds.
struct Fixed {
    /// Per target: its A and AAAA records.
    records: Vec<Family<Arc<[Record]>>>,
    wire_name: smallvec::SmallVec<[u8; 48]>,
    answered: smallvec::SmallVec<[IntCounter; INLINE]>,
    fallback_answers: IntCounter,
    fallback_own: Option<Family<Arc<[Record]>>>,
}

impl AppAnswers {
    pub fn build(model: &Model, app: usize, table: &impl Verdicts, metrics: &Metrics) -> Self {
        let m = &model.apps[app];
        let app_label = m.hostname.to_string();
        let fixed = Fixed {
            records: m
                .targets
                .iter()
                .map(|target| {
                    let (a, aaaa) =
                        records_for(&m.hostname, m.ttl, &model.clusters[target.cluster].ingress);
                    (Arc::from(a), Arc::from(aaaa))
                })
                .collect(),
            wire_name: crate::dns::fast::wire_name(&m.hostname).into(),
            answered: m
                .targets
                .iter()
                .map(|t| {
                    let cluster = &model.clusters[t.cluster].name;
                    metrics.answers.with_label_values(&[&app_label, cluster])
                })
                .collect(),
            fallback_answers: metrics.fallback_answers.with_label_values(&[&app_label]),
            fallback_own: match m.fallback {
                Fallback::Cluster(c) => {
                    let (a, aaaa) = records_for(&m.hostname, m.ttl, &model.clusters[c].ingress);
                    Some((Arc::from(a), Arc::from(aaaa)))
                }
                Fallback::All | Fallback::None => None,
            },
        };
        Self::assemble(model, app, table, metrics, fixed, None)
    }

    /// Whether app `new` of `new_model` would get the records and counters that app `old`
    /// of `old_model` has ([`Fixed`]): the same name and TTL, the same clusters in the same
    /// order with the same addresses, and the same fallback cluster's addresses. Then
    /// [`AppAnswers::rebuilt`] may carry them across a reload.
    pub fn same_fixed(old_model: &Model, old: usize, new_model: &Model, new: usize) -> bool {
        let (x, y) = (&old_model.apps[old], &new_model.apps[new]);
        let same_cluster = |c: usize, d: usize| {
            let (p, q) = (&old_model.clusters[c], &new_model.clusters[d]);
            p.name == q.name && p.ingress == q.ingress
        };
        x.hostname == y.hostname
            && x.ttl == y.ttl
            && x.targets.len() == y.targets.len()
            && x.targets
                .iter()
                .zip(&y.targets)
                .all(|(s, t)| same_cluster(s.cluster, t.cluster))
            && match (x.fallback, y.fallback) {
                (Fallback::Cluster(c), Fallback::Cluster(d)) => same_cluster(c, d),
                (Fallback::Cluster(_), _) | (_, Fallback::Cluster(_)) => false,
                _ => true,
            }
    }

    /// Whether this plan (of app `old` in `old_model`) is the plan app `new` of
    /// `new_model` gets with `table`'s verdicts: every input [`AppAnswers::assemble`]
    /// reads is the same (records, policy, weights, priorities, operator overrides,
    /// coordinates, the fallback, the cluster indices the plan names, and each target's
    /// state and detail). A reload then keeps the plan itself: at 10,000 apps most of a
    /// reload's snapshot is made of plans it would build again, equal, while the old
    /// ones still serve.
    pub fn still_holds(
        &self,
        old_model: &Model,
        old: usize,
        new_model: &Model,
        new: usize,
        table: &impl Verdicts,
    ) -> bool {
        if !Self::same_fixed(old_model, old, new_model, new) {
            return false;
        }
        let (x, y) = (&old_model.apps[old], &new_model.apps[new]);
        let same_cluster = |c: usize, d: usize| {
            let (p, q) = (&old_model.clusters[c], &new_model.clusters[d]);
            c == d && p.coordinates == q.coordinates && p.drain == q.drain && p.force == q.force
        };
        let same_fallback = match (x.fallback, y.fallback) {
            (Fallback::All, Fallback::All) | (Fallback::None, Fallback::None) => true,
            (Fallback::Cluster(c), Fallback::Cluster(d)) => same_cluster(c, d),
            _ => false,
        };
        same_fallback
            && x.policy == y.policy
            && x.targets.iter().zip(&y.targets).all(|(s, t)| {
                s.weight == t.weight
                    && s.priority == t.priority
                    && s.drain == t.drain
                    && s.force == t.force
                    && same_cluster(s.cluster, t.cluster)
            })
            && self.targets.iter().enumerate().all(|(t, was)| {
                let (state, detail) = target_state(new_model, table, new, t);
                was.state == state && was.detail == detail
            })
    }

    /// This plan (of app `app` in the same model, or in a model where
    /// [`AppAnswers::same_fixed`] holds) for new verdicts: records, counters and
    /// labels are carried over instead of made again, so a health publication costs the
    /// verdicts and the policy plan, not allocation and metric label lookups.
    pub fn rebuilt(
        &self,
        model: &Model,
        app: usize,
        table: &impl Verdicts,
        metrics: &Metrics,
    ) -> Self {
        let fixed = Fixed {
            records: self
                .targets
                .iter()
                .map(|t| (t.a.clone(), t.aaaa.clone()))
                .collect(),
            wire_name: self.wire_name.clone(),
            answered: self.answered.clone(),
            fallback_answers: self.fallback_answers.clone(),
            fallback_own: self.fallback_own.clone(),
        };
        Self::assemble(
            model,
            app,
            table,
            metrics,
            fixed,
            Some(self.fallback_active),
        )
    }

    /// The plan from `fixed` and the verdicts; `was_fallback`: the previous plan's
    /// fallback state (its gauge is set only when that changes).
    fn assemble(
        model: &Model,
        app: usize,
        table: &impl Verdicts,
        metrics: &Metrics,
        fixed: Fixed,
        was_fallback: Option<bool>,
    ) -> Self {
        let m = &model.apps[app];
        let policy = m.policy.clone();
        let targets: Vec<TargetAnswers> = m
            .targets
            .iter()
            .zip(fixed.records)
            .enumerate()
            .map(|(t, (target, (a, aaaa)))| {
                let (state, detail) = target_state(model, table, app, t);
                TargetAnswers {
                    cluster: target.cluster,
                    state,
                    detail,
                    by_operator: out_by_operator(model, app, t),
                    a,
                    aaaa,
                }
            })
            .collect();
        let fallback_active = !targets.iter().any(|t| t.state == TargetState::Up);
        // Set where the plan is built (start, reload, health transition), not per query.
        if was_fallback != Some(fallback_active) {
            metrics
                .state
                .fallback_active
                .with_label_values(&[&m.hostname.to_string()])
                .set(i64::from(fallback_active));
        }
        let family = |v6: bool| {
            let has = |t: &TargetAnswers| {
                if v6 {
                    !t.aaaa.is_empty()
                } else {
                    !t.a.is_empty()
                }
            };
            let candidate = |i: usize| {
                let target = &m.targets[i];
                let cluster = &model.clusters[target.cluster];
                Candidate {
                    target: i,
                    weight: target.weight,
                    priority: target.priority,
                    coordinates: cluster.coordinates,
                    key: stable_hash(cluster.name.as_bytes()),
                }
            };
            let plan_of = |members: &mut dyn Iterator<Item = usize>| {
                let mut up = smallvec::SmallVec::new();
                let mut total = 0u64;
                for i in members {
                    let t = &targets[i];
                    if !has(t) || t.state == TargetState::Drained {
                        continue;
                    }
                    total += u64::from(m.targets[i].weight);
                    if t.state == TargetState::Up {
                        up.push(candidate(i));
                    }
                }
                (up, total)
            };
            let (up, total_weight) = plan_of(&mut (0..targets.len()));
            let pools = policy
                .pools
                .iter()
                .map(|p| {
                    let (up, total) = plan_of(&mut p.targets.iter().copied());
                    (up.into_vec(), total)
                })
                .collect();
            let fallback =
                fallback_plan(model, &targets, fixed.fallback_own.as_ref(), m.fallback, v6);
            let addrs = targets
                .iter()
                .enumerate()
                .flat_map(|(t, target)| {
                    let set = if v6 { &target.aaaa } else { &target.a };
                    set.iter()
                        .filter_map(move |r| Some((t as u32, address(r)?)))
                })
                .collect();
            FamilyPlan {
                rendered: Rendered::default(),
                up,
                addrs,
                total_weight,
                pools,
                fallback,
            }
        };
        let (v4, v6) = (family(false), family(true));
        let mut answers = Self {
            hostname: m.hostname.clone(),
            wire_name: fixed.wire_name,
            ttl: m.ttl,
            policy,
            fallback: m.fallback,
            targets,
            fallback_active,
            v4,
            v6,
            answered: fixed.answered,
            fallback_answers: fixed.fallback_answers,
            fallback_own: fixed.fallback_own,
        };
        answers.v4.rendered = answers.render(RecordType::A);
        answers.v6.rendered = answers.render(RecordType::AAAA);
        answers
    }

    /// Pre-renders policy `all`'s answers of `rtype` from [`AppAnswers::answer`] itself,
    /// one per rotation, so they are the general path's answers by construction; none
    /// where [`Rendered`]'s conditions do not hold.
    fn render(&self, rtype: RecordType) -> Rendered {
        let Some((plan, _)) = self.plan(rtype) else {
            return Rendered::default();
        };
        let period = plan.up.len();
        let applies = self.policy.kind == PolicyKind::All
            && self.policy.pool_policy == PoolPolicy::All
            && !self.fallback_active
            && period > 0;
        if !applies {
            return Rendered::default();
        }
        let nowhere = crate::geo::Location::default;
        let client = ClientView {
            sticky_key: 0,
            sticky_scope: 0,
            locate: &nowhere,
        };
        let mut bytes = Vec::new();
        let mut count = None;
        for k in 0..period {
            let answer = self.answer(rtype, &client, &mut || k as u64);
            let n = answer.records.len();
            // The policy picks distinct up targets: all of them iff as many as are up.
            if answer.fallback || answer.answered.len() != period || count.is_some_and(|c| c != n) {
                return Rendered::default();
            }
            count = Some(n);
            for r in &answer.records {
                address_record(r.ip, self.ttl, &mut bytes);
            }
            if bytes.len() * period > RENDERED_MAX {
                return Rendered::default(); // every rotation is as long as the first
            }
            if k == 0 {
                bytes.reserve_exact(bytes.len() * (period - 1));
            }
        }
        let count = count.unwrap_or(0);
        Rendered {
            period: period as u32,
            stride: (bytes.len() / period) as u32,
            count: count as u16,
            bytes: bytes.into_boxed_slice(),
        }
    }

    fn plan(&self, rtype: RecordType) -> Option<(&FamilyPlan, bool)> {
        match rtype {
            RecordType::A => Some((&self.v4, false)),
            RecordType::AAAA => Some((&self.v6, true)),
            _ => None,
        }
    }

    /// The answer for one query of `rtype` (A or AAAA; anything else is empty). Counts
    /// nothing: only the caller knows whether the answer is sent (a snapshot build, an
    /// explanation or a truncated reply sends nothing), so it counts with
    /// [`AppAnswers::count_answered`] once it does.
    pub fn answer(
        &self,
        rtype: RecordType,
        client: &ClientView<'_>,
        random: &mut dyn FnMut() -> u64,
    ) -> AppAnswer<'_> {
        let Some((plan, v6)) = self.plan(rtype) else {
            return AppAnswer {
                records: smallvec::SmallVec::new(),
                v6: false,
                plan: self,
                answered: Picks::new(),
                choice: Choice {
                    picked: Picked::Targets(Picks::new()),
                    scope: None,
                    location: None,
                    rule: None,
                    pool: None,
                },
                fallback: false,
            };
        };
        let view = FamilyView {
            up: &plan.up,
            total_weight: plan.total_weight,
            pools: &plan.pools,
            all_down: self.fallback_active,
        };
        let choice = choose(&self.policy, &view, client, random);
        let max = self.policy.max_answers;
        let mut records = smallvec::SmallVec::<[Answered; 8]>::new();
        let mut answered = Picks::new();
        let fallback = match &choice.picked {
            Picked::Targets(targets) => {
                for &t in targets {
                    let before = records.len();
                    // `addrs` lists target t's records in order: k is the record's index.
                    let own = plan.addrs.iter().filter(|(owner, _)| *owner as usize == t);
                    for (k, &(_, ip)) in own.enumerate() {
                        if records.len() < max && !records.iter().any(|x| x.ip == ip) {
                            records.push(Answered {
                                ip,
                                source: Source::Target(t as u32, k as u32),
                            });
                        }
                    }
                    if records.len() > before {
                        answered.push(t);
                    }
                }
                false
            }
            Picked::Fallback { rule: None } => {
                records.extend(plan.fallback.iter().copied().take(max));
                true
            }
            Picked::Fallback { rule: Some(rule) } => {
                records.extend(self.fenced_fallback(*rule, v6).into_iter().take(max));
                true
            }
        };
        AppAnswer {
            records,
            v6,
            plan: self,
            choice,
            fallback,
            answered,
        }
    }

    /// Adds one answer with these targets (and the fallback, if it answered).
    pub fn count_answered(&self, answered: &[usize], fallback: bool) {
        if fallback {
            self.fallback_answers.inc();
        }
        for &t in answered {
            self.answered[t].inc();
        }
    }

    /// The `Record` of one answered address.
    pub fn record(&self, answered: &Answered, v6: bool) -> &Record {
        match answered.source {
            Source::Target(t, k) => {
                let t = &self.targets[t as usize];
                &(if v6 { &t.aaaa } else { &t.a })[k as usize]
            }
            Source::Fallback(k) => {
                let own = self
                    .fallback_own
                    .as_ref()
                    .expect("Source::Fallback only in plans with the fallback cluster's records");
                &(if v6 { &own.1 } else { &own.0 })[k as usize]
            }
        }
    }

    /// The fallback of a geofenced rule: the app's fallback restricted to the rule's pools
    /// (a fallback cluster outside them answers nothing: the fence holds).
    fn fenced_fallback(&self, rule: usize, v6: bool) -> Vec<Answered> {
        let policy = &self.policy;
        let within: Vec<usize> = policy.rules[rule]
            .pools
            .iter()
            .flat_map(|&p| policy.pools[p].targets.iter().copied())
            .collect();
        let mut out: Vec<Answered> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let eligible = within.contains(&i)
                && !t.by_operator
                && match self.fallback {
                    Fallback::All => true,
                    Fallback::None => false,
                    Fallback::Cluster(c) => t.cluster == c,
                };
            if !eligible {
                continue;
            }
            push_addresses(&mut out, i, t, v6);
        }
        out
    }

    /// Every answerable record of `rtype` without a client (additional-section data):
    /// the up targets' records, or the fallback.
    pub fn all_records(&self, rtype: RecordType) -> Vec<&Record> {
        let Some((plan, v6)) = self.plan(rtype) else {
            return Vec::new();
        };
        if self.fallback_active {
            return plan.fallback.iter().map(|a| self.record(a, v6)).collect();
        }
        let mut out: Vec<&Record> = Vec::new();
        for c in &plan.up {
            let set = if v6 {
                &self.targets[c.target].aaaa
            } else {
                &self.targets[c.target].a
            };
            for r in set.iter() {
                if !out.iter().any(|x| x.data == r.data) {
                    out.push(r);
                }
            }
        }
        out
    }
}

impl<'a> AppAnswer<'a> {
    /// The answered `Record`s, in answer order (full path).
    pub fn record_refs(&self) -> impl Iterator<Item = &'a Record> + '_ {
        let plan = self.plan;
        self.records.iter().map(move |a| plan.record(a, self.v6))
    }
}

/// The address of an A or AAAA record.
fn address(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// Adds target `t`'s addresses of one family to `out`, each pointing at its record, and
/// each address once (two clusters may share an ingress edge).
fn push_addresses(out: &mut Vec<Answered>, t: usize, target: &TargetAnswers, v6: bool) {
    let set = if v6 { &target.aaaa } else { &target.a };
    for (k, r) in set.iter().enumerate() {
        if let Some(ip) = address(r)
            && !out.iter().any(|x| x.ip == ip)
        {
            out.push(Answered {
                ip,
                source: Source::Target(t as u32, k as u32),
            });
        }
    }
}

/// The app's fallback addresses (all targets down), each pointing at its record.
fn fallback_plan(
    model: &Model,
    targets: &[TargetAnswers],
    own: Option<&Family<Arc<[Record]>>>,
    fallback: Fallback,
    v6: bool,
) -> Box<[Answered]> {
    let mut out: Vec<Answered> = Vec::new();
    match fallback {
        // Fail open: every target the probes put down; none the operator took out.
        Fallback::All => {
            for (t, target) in targets.iter().enumerate().filter(|(_, t)| !t.by_operator) {
                push_addresses(&mut out, t, target, v6);
            }
        }
        Fallback::None => {}
        Fallback::Cluster(c) => {
            if !fallback_cluster_out(model, targets, c)
                && let Some(own) = own
            {
                let set = if v6 { &own.1 } else { &own.0 };
                out.extend(set.iter().enumerate().filter_map(|(k, r)| {
                    Some(Answered {
                        ip: address(r)?,
                        source: Source::Fallback(k as u32),
                    })
                }));
            }
        }
    }
    out.into_boxed_slice()
}

/// Whether the fallback cluster `c` is out by the operator's word for this app: the whole
/// cluster drained or forced down, or this app's own target there drained or forced down
/// (as the geofenced fallback sees it: an operator's "not here" is never failed open).
fn fallback_cluster_out(model: &Model, targets: &[TargetAnswers], c: usize) -> bool {
    cluster_out_by_operator(&model.clusters[c])
        || targets.iter().any(|t| t.cluster == c && t.by_operator)
}

/// Whether the operator took target `target` of app `app` out (drained or forced down),
/// by the one precedence rule ([`operator_override`]). Decided at build time so the query
/// path only reads a flag.
fn out_by_operator(model: &Model, app: usize, target: usize) -> bool {
    matches!(
        operator_override(model, app, target),
        Some(Override::Drain | Override::ForceDown)
    )
}

/// Whether the operator took a whole cluster out (drained or forced down).
fn cluster_out_by_operator(cluster: &crate::model::ClusterModel) -> bool {
    cluster.drain || cluster.force == Some(false)
}

impl AppAnswers {
    /// What the fallback answers while no target is up, for the log: true to the plan
    /// (fail open brings back only the targets the probes put down; an app whose every
    /// target the operator took out answers nothing).
    pub fn fallback_note(&self, model: &Model) -> String {
        match self.fallback {
            Fallback::All => {
                let by_probes = self.targets.iter().filter(|t| !t.by_operator).count();
                if by_probes == 0 {
                    "none: no target: all drained/forced down by operator (NODATA)".to_owned()
                } else {
                    format!(
                        "all (fail open): the {by_probes} target{} down by probes (none drained/forced down by operator)",
                        if by_probes == 1 { "" } else { "s" }
                    )
                }
            }
            Fallback::None => "none (NODATA)".to_owned(),
            Fallback::Cluster(c) => {
                let cluster = &model.clusters[c];
                if fallback_cluster_out(model, &self.targets, c) {
                    format!(
                        "cluster:{}, drained/forced down by operator: nothing (NODATA)",
                        cluster.name
                    )
                } else {
                    format!("cluster:{}", cluster.name)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::RecordType;

    use super::*;

    /// Apps whose targets are out by the operator (drain, force down, on the target or its
    /// cluster) or down by their probe (`dead`: down from the start, nothing on port 1).
    const OVERRIDES: &str = concat!(
        crate::test_support::t_test_zone!(),
        r#"[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[clusters]]
name = "b"
ingress = ["192.0.2.11"]
[[clusters]]
name = "dead"
ingress = ["192.0.2.12"]
probe_address = "127.0.0.1"
probe = { kind = "tcp", port = 1, initial = "down" }
[[clusters]]
name = "off"
ingress = ["192.0.2.13"]
force = "down"
[[apps]]
hostname = "forced.t.test"
targets = [{ cluster = "a", force = "down" }, { cluster = "b", force = "down" }]
[[apps]]
hostname = "drained.t.test"
targets = [{ cluster = "a", drain = true }, { cluster = "b", drain = true }]
[[apps]]
hostname = "mixed.t.test"
targets = [{ cluster = "a", force = "down" }, { cluster = "off" }, { cluster = "dead" }]
[[apps]]
hostname = "maintenance.t.test"
fallback = "cluster:off"
targets = [{ cluster = "dead" }]
[[apps]]
hostname = "up-wins.t.test"
targets = [{ cluster = "off", force = "up" }]
[[apps]]
hostname = "drained-fallback.t.test"
fallback = "cluster:a"
targets = [{ cluster = "a", drain = true }, { cluster = "dead" }]
"#
    );

    fn fallback_ips(snapshot: &crate::Snapshot, app: usize) -> Vec<String> {
        let a = snapshot.app(app);
        assert!(a.fallback_active || app == 4);
        a.all_records(RecordType::A)
            .iter()
            .filter_map(|r| address(r))
            .map(|ip| ip.to_string())
            .collect()
    }

    /// Issue 13 point 7: forcing every target down answered them all (fail open) while
    /// draining them answered nothing. Now both are the operator's word: never answered;
    /// fail open brings back only what the probes put down, and the log says what the
    /// fallback really answers.
    #[test]
    fn operator_overrides_are_never_answered_by_fail_open_and_the_note_says_so() {
        let (snapshot, _) = crate::test_support::snapshot(OVERRIDES);
        let model = crate::from_text(std::path::Path::new("t.toml"), OVERRIDES)
            .unwrap()
            .model;
        assert_eq!(fallback_ips(&snapshot, 0), Vec::<String>::new());
        assert_eq!(fallback_ips(&snapshot, 1), Vec::<String>::new());
        for app in [0, 1] {
            assert_eq!(
                snapshot.app(app).fallback_note(&model),
                "none: no target: all drained/forced down by operator (NODATA)"
            );
        }
        // Forced down (target, cluster) stays out; the probe-down target fails open.
        assert_eq!(fallback_ips(&snapshot, 2), ["192.0.2.12"]);
        assert_eq!(
            snapshot.app(2).fallback_note(&model),
            "all (fail open): the 1 target down by probes (none drained/forced down by operator)"
        );
        // A fallback cluster the operator forced down answers nothing either.
        assert_eq!(fallback_ips(&snapshot, 3), Vec::<String>::new());
        assert_eq!(
            snapshot.app(3).fallback_note(&model),
            "cluster:off, drained/forced down by operator: nothing (NODATA)"
        );
        // The app's own target on the fallback cluster drained: not answered either.
        assert_eq!(fallback_ips(&snapshot, 5), Vec::<String>::new());
        assert_eq!(
            snapshot.app(5).fallback_note(&model),
            "cluster:a, drained/forced down by operator: nothing (NODATA)"
        );
        // The target's force decides over its cluster's.
        assert!(!snapshot.app(4).fallback_active);
        assert_eq!(fallback_ips(&snapshot, 4), ["192.0.2.13"]);
    }

    /// The fallback's answers point at records the plan holds (the targets', or the
    /// fallback cluster's own) instead of copying them: the full path's records are those
    /// of the addresses answered, owned by the app's name, each address once.
    #[test]
    fn fallback_answers_point_at_the_records_the_plan_holds() {
        let text = concat!(
            crate::test_support::t_test_zone!(),
            r#"[[clusters]]
name = "dead1"
ingress = ["192.0.2.20", "2001:db8::20"]
probe_address = "127.0.0.1"
probe = { kind = "tcp", port = 1, initial = "down" }
[[clusters]]
name = "dead2"
ingress = ["192.0.2.21", "192.0.2.20"]
probe_address = "127.0.0.1"
probe = { kind = "tcp", port = 1, initial = "down" }
[[clusters]]
name = "spare"
ingress = ["192.0.2.30", "192.0.2.31", "2001:db8::30"]
[[apps]]
hostname = "open.t.test"
targets = [{ cluster = "dead1" }, { cluster = "dead2" }]
[[apps]]
hostname = "spare.t.test"
fallback = "cluster:spare"
targets = [{ cluster = "dead1" }]
"#
        );
        let (snapshot, _) = crate::test_support::snapshot(text);
        let nowhere = crate::geo::Location::default;
        let client = ClientView {
            sticky_key: 0,
            sticky_scope: 0,
            locate: &nowhere,
        };
        let answered = |app: usize, rtype: RecordType| {
            let plan = snapshot.app(app);
            assert!(plan.fallback_active);
            let answer = plan.answer(rtype, &client, &mut || 0);
            assert!(answer.fallback);
            let ips: Vec<String> = answer.records.iter().map(|a| a.ip.to_string()).collect();
            // Each record is one the plan holds (a target's, or the fallback cluster's
            // own), not a copy made for the fallback.
            let held: Vec<*const Record> = plan
                .targets
                .iter()
                .flat_map(|t| t.a.iter().chain(t.aaaa.iter()))
                .chain(
                    plan.fallback_own
                        .iter()
                        .flat_map(|o| o.0.iter().chain(o.1.iter())),
                )
                .map(|r| r as *const Record)
                .collect();
            let records: Vec<String> = answer
                .record_refs()
                .map(|r| {
                    assert_eq!(&r.name, &plan.hostname);
                    assert!(held.contains(&(r as *const Record)), "{r:?} is a copy");
                    address(r).unwrap().to_string()
                })
                .collect();
            assert_eq!(ips, records, "each answered address is its record's");
            let all: Vec<String> = plan
                .all_records(rtype)
                .iter()
                .map(|r| address(r).unwrap().to_string())
                .collect();
            assert_eq!(all, records);
            ips
        };
        assert_eq!(
            answered(0, RecordType::A),
            ["192.0.2.20", "192.0.2.21"],
            "fail open: every target's address once"
        );
        assert_eq!(answered(0, RecordType::AAAA), ["2001:db8::20"]);
        assert_eq!(
            answered(1, RecordType::A),
            ["192.0.2.30", "192.0.2.31"],
            "the fallback cluster's own records"
        );
        assert_eq!(answered(1, RecordType::AAAA), ["2001:db8::30"]);
    }
}
