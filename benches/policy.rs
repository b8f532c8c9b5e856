//! Policy picks and geo lookups, in nanoseconds per query (criterion).
//!
//! `cargo bench --bench policy` — each policy with 3, 10 and 100 healthy targets, the full
//! per-query `choose` for a geo app, and a region-table lookup with 100,000 prefixes.

use std::{hint::black_box, net::IpAddr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gtmd::{
    geo::{Location, PrefixTable},
    policy::{
        Candidate, PoolPolicy, all,
        choose::{AppPolicy, ClientView, FamilyView, PolicyKind, Pool, choose},
        failover,
        geo::{Matcher, Rule},
        mix, nearest, stable_hash, weighted,
    },
};
use ipnet::IpNet;

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            target: i,
            weight: 1 + (i as u32 * 7) % 100,
            priority: 1 + (i as u32 % 3),
            coordinates: Some((
                (i as f64 * 13.0) % 180.0 - 90.0,
                (i as f64 * 29.0) % 360.0 - 180.0,
            )),
            key: stable_hash(format!("cluster-{i}").as_bytes()),
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [3usize, 10, 100] {
        let cs = candidates(n);
        let mut out = gtmd::policy::Picks::with_capacity(n);
        let mut seed = 1u64;
        g.bench_with_input(BenchmarkId::new("all", n), &cs, |b, cs| {
            b.iter(|| {
                out.clear();
                seed = mix(seed, 1);
                all::pick(black_box(cs), seed as usize, 8, &mut out);
                black_box(&out);
            })
        });
        g.bench_with_input(BenchmarkId::new("failover", n), &cs, |b, cs| {
            b.iter(|| {
                out.clear();
                seed = mix(seed, 1);
                failover::pick(black_box(cs), seed as usize, 8, &mut out);
                black_box(&out);
            })
        });
        g.bench_with_input(BenchmarkId::new("weighted", n), &cs, |b, cs| {
            b.iter(|| {
                out.clear();
                weighted::pick_random(
                    black_box(cs),
                    1,
                    || {
                        seed = mix(seed, 1);
                        seed
                    },
                    &mut out,
                );
                black_box(&out);
            })
        });
        g.bench_with_input(BenchmarkId::new("sticky", n), &cs, |b, cs| {
            b.iter(|| {
                out.clear();
                seed = mix(seed, 1);
                weighted::pick_sticky(black_box(cs), 1, seed, &mut out);
                black_box(&out);
            })
        });
        g.bench_with_input(BenchmarkId::new("nearest", n), &cs, |b, cs| {
            b.iter(|| {
                out.clear();
                nearest::pick(black_box(cs), (48.85, 2.35), &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn geo_choose(c: &mut Criterion) {
    let cs = candidates(10);
    let policy = AppPolicy {
        kind: PolicyKind::Geo,
        pool_policy: PoolPolicy::All,
        max_answers: 8,
        fallback_policy: PoolPolicy::All,
        pools: vec![
            Pool {
                name: "eu".into(),
                targets: (0..5).collect(),
                policy: PoolPolicy::Weighted {
                    answers: 1,
                    sticky: false,
                    min_healthy_fraction: 0.0,
                },
            },
            Pool {
                name: "us".into(),
                targets: (5..10).collect(),
                policy: PoolPolicy::All,
            },
        ],
        rules: vec![
            Rule {
                matchers: vec![Matcher::Continent("EU".into())],
                pools: vec![0, 1],
                geofence: false,
            },
            Rule {
                matchers: vec![Matcher::Default],
                pools: vec![1, 0],
                geofence: false,
            },
        ],
        ignore_ecs: false,
    };
    let pools = vec![(cs[..5].to_vec(), 200), (cs[5..].to_vec(), 200)];
    let view = FamilyView {
        up: &cs,
        total_weight: 400,
        pools: &pools,
        all_down: false,
    };
    let eu = || Location {
        continent: gtmd::geo::Code::new("EU"),
        db_scope: 24,
        ..Location::default()
    };
    let client = ClientView {
        sticky_key: 9,
        sticky_scope: 24,
        locate: &eu,
    };
    let mut seed = 3u64;
    c.bench_function("choose/geo 10 targets (location given)", |b| {
        b.iter(|| {
            black_box(choose(black_box(&policy), &view, &client, &mut || {
                seed = mix(seed, 1);
                seed
            }))
        })
    });
}

fn geo_table(c: &mut Criterion) {
    // 100,000 prefixes: /24s spread over the IPv4 space plus covering /16s and /12s.
    let mut entries: Vec<(IpNet, u32)> = Vec::new();
    for i in 0..90_000u32 {
        let x = mix(u64::from(i), 5) as u32 & 0xffff_ff00;
        entries.push((
            IpNet::new(IpAddr::from(x.to_be_bytes()), 24)
                .unwrap()
                .trunc(),
            i % 50,
        ));
    }
    for i in 0..10_000u32 {
        let x = mix(u64::from(i), 6) as u32 & 0xffff_0000;
        let len = if i % 10 == 0 { 12 } else { 16 };
        entries.push((
            IpNet::new(IpAddr::from(x.to_be_bytes()), len)
                .unwrap()
                .trunc(),
            i % 50,
        ));
    }
    let start = std::time::Instant::now();
    let table = PrefixTable::build(entries);
    eprintln!(
        "built a {}-prefix table in {:?}",
        table.len(),
        start.elapsed()
    );
    let mut seed = 11u64;
    c.bench_function("geo/region lookup, 100k prefixes", |b| {
        b.iter(|| {
            seed = mix(seed, 1);
            let ip = IpAddr::from((seed as u32).to_be_bytes());
            black_box(table.lookup(black_box(ip)))
        })
    });
}

criterion_group!(benches, picks, geo_choose, geo_table);
criterion_main!(benches);
