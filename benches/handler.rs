//! The DNS handler, wire bytes in → wire bytes out: the UDP fast path against the full
//! hickory path, for a static name, a weighted GSLB name, a geo name with ECS and a name
//! answering three addresses (policy `all` over three clusters).
//!
//! `cargo bench --bench handler`

use std::{hint::black_box, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_group, criterion_main};
use gtmd::{
    dns::{
        DnsHandler,
        fast::{self, Fast},
        udp::{Capture, full_path},
    },
    metrics::Metrics,
    snapshot::Snapshot,
};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{
        Name, RecordType,
        rdata::opt::{ClientSubnet, EdnsOption},
    },
};

const CONFIG: &str = r#"
[geo]
regions = [{ name = "eu", networks = ["192.0.2.0/24"] }]
[[zones]]
origin = "bench.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.bench.test"
[[zones.records]]
name = "static"
type = "A"
value = "192.0.2.1"
[[clusters]]
name = "a"
ingress = ["127.0.0.11"]
[[clusters]]
name = "b"
ingress = ["127.0.0.12"]
[[clusters]]
name = "c"
ingress = ["127.0.0.13"]
[[apps]]
hostname = "all.bench.test"
policy = "all"
targets = [{ cluster = "a" }, { cluster = "b" }, { cluster = "c" }]
[[apps]]
hostname = "w.bench.test"
policy = "weighted"
targets = [{ cluster = "a", weight = 80 }, { cluster = "b", weight = 20 }]
[[apps]]
hostname = "geo.bench.test"
policy = "geo"
targets = [{ cluster = "a" }, { cluster = "b" }]
pools = [{ name = "eu", clusters = ["a"] }, { name = "us", clusters = ["b"] }]
rules = [{ match = "region:eu", pools = ["eu", "us"] }, { match = "default", pools = ["us"] }]
"#;

fn query(name: &str, ecs: bool) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if ecs {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            "192.0.2.0".parse().unwrap(),
            24,
            0,
        )));
    }
    m.set_edns(e);
    m.to_vec().unwrap()
}

fn bench(c: &mut Criterion) {
    let model = Arc::new(
        gtmd::from_text(std::path::Path::new("b.toml"), CONFIG)
            .unwrap()
            .model,
    );
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::initial(&model, &metrics)));
    let handler = DnsHandler::new(snapshot.clone(), metrics.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let src: SocketAddr = "10.0.0.1:5300".parse().unwrap();
    let mut out = vec![0u8; 4096];
    let mut tally = gtmd::metrics::Tally::new(&metrics);
    for (label, name, ecs) in [
        ("static", "static.bench.test.", false),
        ("weighted", "w.bench.test.", false),
        ("geo+ecs", "geo.bench.test.", true),
        ("all3", "all.bench.test.", false),
    ] {
        let q = query(name, ecs);
        c.bench_function(&format!("handler/fast/{label}"), |b| {
            b.iter(|| {
                let snap = snapshot.load();
                let r = fast::answer(&snap, &mut tally, black_box(&q), src.ip(), &mut out);
                assert!(matches!(r, Fast::Answered(_)));
                black_box(&out);
            })
        });
        tally.flush(&metrics, &snapshot.load());
        c.bench_function(&format!("handler/full/{label}"), |b| {
            b.iter(|| {
                let capture = Capture::default();
                runtime.block_on(full_path(
                    &handler,
                    q.clone(),
                    src,
                    hickory_server::net::xfer::Protocol::Udp,
                    capture.clone(),
                    |_| true,
                ));
                black_box(capture);
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
