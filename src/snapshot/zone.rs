//! One zone's names, RRsets and delegation points, ready for lookup.

use std::collections::HashMap;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::model::ZoneModel;

/// What exists at one owner name.
#[derive(Debug, Default)]
pub struct Node {
    /// Static RRsets in the order they were configured (SOA and NS first at the apex).
    rrsets: Vec<(RecordType, Vec<Record>)>,
    /// The app whose hostname this is (index into the snapshot's apps).
    pub app: Option<usize>,
    /// True at a delegation point (NS below the apex).
    pub delegation: bool,
}

impl Node {
    /// The static RRset of `rtype` (empty when absent).
    pub fn rrset(&self, rtype: RecordType) -> &[Record] {
        self.rrsets
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[])
    }

    /// The first static RRset, for ANY (RFC 8482: answer one RRset, not the node).
    pub fn first_rrset(&self) -> &[Record] {
        self.rrsets
            .first()
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[])
    }

    /// An empty non-terminal, or a name with nothing of its own.
    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty() && self.app.is_none()
    }

    fn push(&mut self, record: Record) {
        let rtype = record.record_type();
        match self.rrsets.iter_mut().find(|(t, _)| *t == rtype) {
            Some((_, set)) => set.push(record),
            None => self.rrsets.push((rtype, vec![record])),
        }
    }
}

#[derive(Debug)]
pub struct Zone {
    pub origin: LowerName,
    pub soa: Record,
    /// The SOA as it goes in the authority section of negative answers: TTL =
    /// min(SOA TTL, SOA MINIMUM), per RFC 2308 §3.
    pub negative_soa: Record,
    nodes: HashMap<LowerName, Node>,
}

impl Zone {
    pub fn build(model: &ZoneModel) -> Self {
        let origin = LowerName::new(&model.origin);
        let mut zone = Zone {
            origin: origin.clone(),
            soa: model.soa.clone(),
            negative_soa: negative_soa(&model.soa),
            nodes: HashMap::new(),
        };
        zone.node_mut(&model.origin).push(model.soa.clone());
        for ns in &model.nameservers {
            zone.node_mut(&model.origin).push(ns.clone());
        }
        for record in &model.records {
            let is_cut = record.record_type() == RecordType::NS && record.name != model.origin;
            let node = zone.node_mut(&record.name);
            node.delegation |= is_cut;
            node.push(record.clone());
        }
        zone
    }

    pub(super) fn attach_app(&mut self, hostname: &Name, index: usize) {
        self.node_mut(hostname).app = Some(index);
    }

    /// The node at `name`, creating it and every empty non-terminal between it and the apex
    /// so that those answer NODATA rather than NXDOMAIN (RFC 8020).
    fn node_mut(&mut self, name: &Name) -> &mut Node {
        let mut ancestor = name.base_name();
        while ancestor.num_labels() > self.origin.num_labels() {
            self.nodes.entry(LowerName::new(&ancestor)).or_default();
            ancestor = ancestor.base_name();
        }
        self.nodes.entry(LowerName::new(name)).or_default()
    }

    pub fn node(&self, name: &LowerName) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// The delegation point at or above `name` (below the apex), if any.
    pub fn find_cut(&self, name: &LowerName) -> Option<(LowerName, &Node)> {
        let mut found = None;
        let mut candidate = name.clone();
        while candidate.num_labels() > self.origin.num_labels() {
            if let Some(node) = self.nodes.get(&candidate).filter(|n| n.delegation) {
                found = Some((candidate.clone(), node));
            }
            candidate = candidate.base_name();
        }
        found
    }

    /// Names that own static records (not empty non-terminals, not app-only names).
    pub fn owner_names(&self) -> impl Iterator<Item = Name> + '_ {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.rrsets.is_empty())
            .map(|(name, _)| Name::from(name.clone()))
    }

    /// Is `name` in this zone's namespace?
    pub fn contains(&self, name: &LowerName) -> bool {
        self.origin.zone_of(name)
    }
}

fn negative_soa(soa: &Record) -> Record {
    let mut neg = soa.clone();
    if let RData::SOA(s) = &soa.data {
        neg.ttl = soa.ttl.min(s.minimum);
    }
    neg
}
