//! TCP load with one query per connection (connect, send one query, read the reply, close),
//! the pattern of a resolver retrying a truncated answer — which dnsperf cannot produce (it
//! keeps its connections and pipelines). `benches/compare.py` runs it against gtmd and Knot
//! pinned like dnsperf, and prints the figures beside dnsperf's.
//!
//! `cargo bench --bench tcp_oneshot -- ADDR NAME SECONDS THREADS`
//! prints `queries N seconds S qps Q errors E`. Without arguments (as `cargo test
//! --all-targets` runs it) it checks itself against a minimal local responder.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// A wire-format A query for `name`, with the TCP length prefix.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = vec![0, 0];
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let len = (q.len() - 2) as u16;
    q[..2].copy_from_slice(&len.to_be_bytes());
    q
}

fn one(addr: SocketAddr, q: &[u8], buf: &mut [u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(q)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let n = usize::from(u16::from_be_bytes(len));
    s.read_exact(&mut buf[..n])?;
    if n < 12 || buf[..2] != q[2..4] || buf[2] & 0x80 == 0 || buf[3] & 0x0f != 0 {
        return Err(std::io::Error::other("not a NOERROR reply to the query"));
    }
    Ok(())
}

/// Runs the load; returns (queries answered, seconds, errors).
fn run(addr: SocketAddr, name: &str, seconds: f64, threads: usize) -> (u64, f64, u64) {
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (done, errors, name) = (done.clone(), errors.clone(), name.to_owned());
            std::thread::spawn(move || {
                let q = query(&name, 0x4000 + t as u16);
                let mut buf = vec![0u8; 65535];
                while Instant::now() < deadline {
                    match one(addr, &q, &mut buf) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    (
        done.load(Ordering::Relaxed),
        took,
        errors.load(Ordering::Relaxed),
    )
}

/// A responder that answers each connection's one query with its header, QR set.
fn self_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut q = [0u8; 512];
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let n = usize::from(u16::from_be_bytes(len));
            if s.read_exact(&mut q[..n]).is_err() || n < 12 {
                continue;
            }
            q[2] |= 0x80;
            let _ = s.write_all(&[0, 12]).and_then(|()| s.write_all(&q[..12]));
        }
    });
    let (n, _, errors) = run(addr, "check.test", 0.2, 2);
    assert!(
        n > 0 && errors == 0,
        "self-check: {n} answered, {errors} errors"
    );
    println!("tcp_oneshot self-check: {n} one-query connections, 0 errors");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.is_empty() {
        self_check();
        return;
    }
    let [addr, name, seconds, threads] = &args[..] else {
        eprintln!("usage: tcp_oneshot ADDR NAME SECONDS THREADS");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is ip:port");
    let seconds: f64 = seconds.parse().expect("SECONDS");
    let threads: usize = threads.parse().expect("THREADS");
    let (n, took, errors) = run(addr, name, seconds, threads);
    println!(
        "queries {n} seconds {took:.2} qps {:.0} errors {errors}",
        n as f64 / took
    );
}
