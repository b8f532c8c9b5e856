//! One app's answer plan for the current health: per-target records, the healthy
//! candidates of each address family (precomputed so a query only runs the policy), and
//! the fallback records.

use std::{net::IpAddr, sync::Arc};

use hickory_proto::rr::{Name, RData, Record, RecordType};

use prometheus::IntCounter;

use crate::{
    health::state::{HealthTable, TargetState, target_state},
    metrics::Metrics,
    model::{Fallback, Model},
    policy::{
        Candidate, Picks,
        choose::{AppPolicy, Choice, ClientView, FamilyView, Picked, choose},
        stable_hash,
    },
};

/// One target as the snapshot saw it.
#[derive(Debug, Clone)]
pub struct TargetAnswers {
    /// Index into the model's clusters.
    pub cluster: usize,
    pub state: TargetState,
    pub detail: String,
    pub a: Vec<Record>,
    pub aaaa: Vec<Record>,
    /// `gtmd_answers_total{app, cluster}`, resolved once.
    pub answered: IntCounter,
}

/// What one address family offers right now.
#[derive(Debug, Clone, Default)]
pub struct FamilyPlan {
    pub up: Vec<Candidate>,
    /// Weight of every target of this family that is not drained.
    pub total_weight: u64,
    /// Per pool: its up candidates and total weight.
    pub pools: Vec<(Vec<Candidate>, u64)>,
    /// What the app's fallback answers when no target is up.
    pub fallback: Vec<Record>,
}

/// An app's answer plan.
#[derive(Debug, Clone)]
pub struct AppAnswers {
    pub hostname: Name,
    pub policy: Arc<AppPolicy>,
    pub fallback: Fallback,
    pub targets: Vec<TargetAnswers>,
    /// No target is up: answers come from the fallback.
    pub fallback_active: bool,
    pub v4: FamilyPlan,
    pub v6: FamilyPlan,
    /// `gtmd_fallback_answers_total{app}`, resolved once.
    pub fallback_answers: IntCounter,
}

/// The records answered for one query, and why.
#[derive(Debug)]
pub struct AppAnswer<'a> {
    /// Inline up to 8, like [`Picks`]: an answer is built without allocating.
    pub records: smallvec::SmallVec<[&'a Record; 8]>,
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

/// Records of `targets`, each address once (two clusters may share an ingress edge).
fn union<'a>(targets: impl Iterator<Item = &'a [Record]>) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for set in targets {
        for r in set {
            if !out.iter().any(|x| x.data == r.data) {
                out.push(r.clone());
            }
        }
    }
    out
}

impl AppAnswers {
    pub fn build(model: &Model, app: usize, table: &HealthTable, metrics: &Metrics) -> Self {
        let policy = Arc::new(model.apps[app].policy.clone());
        Self::build_with_policy(model, app, table, policy, metrics)
    }

    /// Like [`Self::build`], sharing an already allocated policy (health changes rebuild
    /// answers, never policies).
    pub fn build_with_policy(
        model: &Model,
        app: usize,
        table: &HealthTable,
        policy: Arc<AppPolicy>,
        metrics: &Metrics,
    ) -> Self {
        let m = &model.apps[app];
        let app_label = m.hostname.to_string();
        let targets: Vec<TargetAnswers> = m
            .targets
            .iter()
            .enumerate()
            .map(|(t, target)| {
                let (state, detail) = target_state(model, table, app, t);
                let (a, aaaa) =
                    records_for(&m.hostname, m.ttl, &model.clusters[target.cluster].ingress);
                let answered = metrics
                    .answers
                    .with_label_values(&[&app_label, &model.clusters[target.cluster].name]);
                TargetAnswers {
                    cluster: target.cluster,
                    state,
                    detail,
                    a,
                    aaaa,
                    answered,
                }
            })
            .collect();
        let fallback_active = !targets.iter().any(|t| t.state == TargetState::Up);
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
                let mut up = Vec::new();
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
                .map(|p| plan_of(&mut p.targets.iter().copied()))
                .collect();
            let fallback = fallback_records(model, app, &targets, m.fallback, v6);
            FamilyPlan {
                up,
                total_weight,
                pools,
                fallback,
            }
        };
        let (v4, v6) = (family(false), family(true));
        Self {
            hostname: m.hostname.clone(),
            policy,
            fallback: m.fallback,
            targets,
            fallback_active,
            v4,
            v6,
            fallback_answers: metrics.fallback_answers.with_label_values(&[&app_label]),
        }
    }

    fn plan(&self, rtype: RecordType) -> Option<(&FamilyPlan, bool)> {
        match rtype {
            RecordType::A => Some((&self.v4, false)),
            RecordType::AAAA => Some((&self.v6, true)),
            _ => None,
        }
    }

    /// The answer for one query of `rtype` (A or AAAA; anything else is empty). `count`:
    /// add it to the answer metrics (false for explanations).
    pub fn answer(
        &self,
        rtype: RecordType,
        client: &ClientView<'_>,
        random: &mut dyn FnMut() -> u64,
        count: bool,
    ) -> AppAnswer<'_> {
        let Some((plan, v6)) = self.plan(rtype) else {
            return AppAnswer {
                records: smallvec::SmallVec::new(),
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
        let mut records = smallvec::SmallVec::<[&Record; 8]>::new();
        let mut answered = Picks::new();
        let fallback = match &choice.picked {
            Picked::Targets(targets) => {
                for &t in targets {
                    let set = if v6 {
                        &self.targets[t].aaaa
                    } else {
                        &self.targets[t].a
                    };
                    let before = records.len();
                    for r in set {
                        if records.len() < max && !records.iter().any(|x| x.data == r.data) {
                            records.push(r);
                        }
                    }
                    if records.len() > before {
                        answered.push(t);
                    }
                }
                false
            }
            Picked::Fallback { rule: None } => {
                records.extend(plan.fallback.iter().take(max));
                true
            }
            Picked::Fallback { rule: Some(rule) } => {
                records.extend(self.fenced_fallback(*rule, v6).into_iter().take(max));
                true
            }
        };
        let answer = AppAnswer {
            records,
            choice,
            fallback,
            answered,
        };
        if count {
            self.count(&answer);
        }
        answer
    }

    /// Adds an answer given to the metrics.
    pub fn count(&self, answer: &AppAnswer<'_>) {
        self.count_answered(&answer.answered, answer.fallback);
    }

    /// Adds one answer with these targets (and the fallback, if it answered).
    pub fn count_answered(&self, answered: &[usize], fallback: bool) {
        if fallback {
            self.fallback_answers.inc();
        }
        for &t in answered {
            self.targets[t].answered.inc();
        }
    }

    /// The fallback of a geofenced rule: the app's fallback restricted to the rule's pools
    /// (a fallback cluster outside them answers nothing: the fence holds).
    fn fenced_fallback(&self, rule: usize, v6: bool) -> Vec<&Record> {
        let policy = &self.policy;
        let within: Vec<usize> = policy.rules[rule]
            .pools
            .iter()
            .flat_map(|&p| policy.pools[p].targets.iter().copied())
            .collect();
        let mut out: Vec<&Record> = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            let eligible = within.contains(&i)
                && t.state != TargetState::Drained
                && match self.fallback {
                    Fallback::All => true,
                    Fallback::None => false,
                    Fallback::Cluster(c) => t.cluster == c,
                };
            if !eligible {
                continue;
            }
            for r in if v6 { &t.aaaa } else { &t.a } {
                if !out.iter().any(|x| x.data == r.data) {
                    out.push(r);
                }
            }
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
            return plan.fallback.iter().collect();
        }
        let mut out: Vec<&Record> = Vec::new();
        for c in &plan.up {
            let set = if v6 {
                &self.targets[c.target].aaaa
            } else {
                &self.targets[c.target].a
            };
            for r in set {
                if !out.iter().any(|x| x.data == r.data) {
                    out.push(r);
                }
            }
        }
        out
    }
}

/// The app's fallback records (all targets down).
fn fallback_records(
    model: &Model,
    app: usize,
    targets: &[TargetAnswers],
    fallback: Fallback,
    v6: bool,
) -> Vec<Record> {
    let m = &model.apps[app];
    fn pick(t: &TargetAnswers, v6: bool) -> &[Record] {
        if v6 { &t.aaaa } else { &t.a }
    }
    match fallback {
        // Fail open: every target that is not drained.
        Fallback::All => union(
            targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t.state != TargetState::Drained)
                .map(|(_, t)| pick(t, v6)),
        ),
        Fallback::None => Vec::new(),
        Fallback::Cluster(c) => {
            let cluster = &model.clusters[c];
            if cluster.drain {
                return Vec::new();
            }
            let (a, aaaa) = records_for(&m.hostname, m.ttl, &cluster.ingress);
            if v6 { aaaa } else { a }
        }
    }
}
