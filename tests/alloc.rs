//! The UDP fast path allocates nothing per query: a counting global allocator (this test
//! binary's own, so no other test is affected) sees zero allocations on this thread while
//! the fast path answers static names and apps under every policy, with and without ECS,
//! and while a worker's tally of those answers is flushed into the shared metrics.
//! Counting is exact, not timed: the machine's load cannot make it flaky.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    net::IpAddr,
    path::Path,
    sync::Arc,
};

use gtmd::{
    dns::fast::{self, Fast},
    metrics::{Metrics, Tally},
    snapshot::Snapshot,
};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{
        Name, RecordType,
        rdata::opt::{ClientSubnet, EdnsOption},
    },
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// const-initialised thread-local Cell, which needs no allocation to access.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONFIG: &str = r#"
[geo]
mmdb = "MMDB"
regions = [{ name = "eu", networks = ["192.0.2.0/24", "2001:db8::/32"] }]
[[zones]]
origin = "a.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.a.test"
[[zones.records]]
name = "static"
type = "A"
value = "192.0.2.1"
[[zones.records]]
name = "mx"
type = "MX"
value = "10 mail.outside.net."
[[clusters]]
name = "a"
ingress = ["127.0.0.11", "2001:db8::11"]
lat = 50.1
lon = 8.7
[[clusters]]
name = "b"
ingress = ["127.0.0.12", "2001:db8::12"]
lat = 39.0
lon = -77.5
[[clusters]]
name = "c"
ingress = ["127.0.0.13", "127.0.0.14", "127.0.0.15"]
[[apps]]
hostname = "all.a.test"
targets = [{ cluster = "a" }, { cluster = "b" }, { cluster = "c" }]
[[apps]]
hostname = "failover.a.test"
policy = "failover"
targets = [{ cluster = "a", priority = 1 }, { cluster = "b", priority = 2 }]
[[apps]]
hostname = "weighted.a.test"
policy = "weighted"
targets = [{ cluster = "a", weight = 80 }, { cluster = "b", weight = 20 }]
[[apps]]
hostname = "two.a.test"
policy = "weighted"
answers = 2
targets = [{ cluster = "a", weight = 5 }, { cluster = "b", weight = 3 }, { cluster = "c", weight = 2 }]
[[apps]]
hostname = "sticky.a.test"
policy = "weighted"
sticky = true
targets = [{ cluster = "a", weight = 50 }, { cluster = "b", weight = 50 }]
[[apps]]
hostname = "geo.a.test"
policy = "geo"
targets = [{ cluster = "a" }, { cluster = "b" }]
pools = [{ name = "eu", clusters = ["a"] }, { name = "us", clusters = ["b"] }]
rules = [{ match = "region:eu", pools = ["eu", "us"] }, { match = "default", pools = ["us"] }]
[[apps]]
hostname = "country.a.test"
policy = "geo"
targets = [{ cluster = "a" }, { cluster = "b" }]
pools = [{ name = "eu", clusters = ["a"] }, { name = "us", clusters = ["b"] }]
rules = [{ match = "continent:EU", pools = ["eu"] }, { match = "default", pools = ["us"] }]
[[apps]]
hostname = "near.a.test"
policy = "nearest"
targets = [{ cluster = "a" }, { cluster = "b" }]
"#;

fn query(name: &str, rtype: RecordType, ecs: Option<(&str, u8)>) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some((addr, prefix)) = ecs {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            addr.parse().unwrap(),
            prefix,
            0,
        )));
    }
    m.set_edns(e);
    m.to_vec().unwrap()
}

#[test]
fn the_fast_path_answers_without_allocating() {
    let path = Path::new("alloc.toml");
    let mmdb = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/geo-test.mmdb");
    let model = Arc::new(
        gtmd::from_text(path, &CONFIG.replace("MMDB", mmdb))
            .unwrap()
            .model,
    );
    let metrics = Metrics::new();
    let snapshot = Snapshot::initial(&model, &metrics);
    let src: IpAddr = "198.51.100.7".parse().unwrap();
    let mut out = vec![0u8; 4096];
    let cases = [
        query("static.a.test.", RecordType::A, None),
        query("mx.a.test.", RecordType::MX, None),
        query("all.a.test.", RecordType::A, None),
        query("all.a.test.", RecordType::AAAA, None),
        query("failover.a.test.", RecordType::A, None),
        query("weighted.a.test.", RecordType::A, None),
        query("two.a.test.", RecordType::A, None),
        query("sticky.a.test.", RecordType::A, Some(("203.0.113.0", 24))),
        query("geo.a.test.", RecordType::A, Some(("192.0.2.0", 24))),
        query("geo.a.test.", RecordType::AAAA, Some(("2001:db8::", 48))),
        query("geo.a.test.", RecordType::A, None),
        query("country.a.test.", RecordType::A, Some(("198.18.0.0", 24))),
        query(
            "country.a.test.",
            RecordType::A,
            Some(("2001:db8:e00::", 48)),
        ),
        query("near.a.test.", RecordType::A, Some(("203.0.113.0", 24))),
        query("near.a.test.", RecordType::A, None),
    ];
    // A UDP worker's tally, made once per worker.
    let mut tally = Tally::new(&metrics);
    // Warm up: first use of thread-locals (the policy RNG) and lazily built state.
    for q in &cases {
        assert!(matches!(
            fast::answer(&snapshot, &mut tally, q, src, &mut out),
            Fast::Answered(_)
        ));
    }
    tally.flush(&metrics, &snapshot);
    for q in &cases {
        let before = ALLOCATIONS.with(Cell::get);
        for i in 0..100 {
            let r = fast::answer(&snapshot, &mut tally, q, src, &mut out);
            assert!(matches!(r, Fast::Answered(_)));
            if i % 32 == 31 {
                tally.flush(&metrics, &snapshot); // as a worker does after each batch
            }
        }
        tally.flush(&metrics, &snapshot);
        let allocations = ALLOCATIONS.with(Cell::get) - before;
        let name = Message::from_vec(q).unwrap().queries[0].to_string();
        assert_eq!(
            allocations, 0,
            "{name}: {allocations} allocations in 100 answers"
        );
    }
}
