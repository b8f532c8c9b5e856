//! End-to-end: the real `gtmd` binary checked with `dig` (bind9-dnsutils), the tool DNS
//! teams use to check a delegation. Ignored by default; the README test command runs it.

use std::{io::Write, net::SocketAddr, process::Command};

use crate::cli::{example_on_port, free_port, serve};

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (apt-get install bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {args:?} failed:\n{text}");
    text
}

/// The `;; flags: …;` part of dig's header line, e.g. "qr aa".
fn flags(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or_else(|| panic!("no flags line in:\n{out}"));
    line.trim_start_matches(";; flags:")
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

fn status(out: &str) -> String {
    let line = out.lines().find(|l| l.contains("status:")).unwrap();
    line.split("status: ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned()
}

fn count(out: &str, section: &str) -> usize {
    let line = out.lines().find(|l| l.starts_with(";; flags:")).unwrap();
    let field = line.split(&format!("{section}: ")).nth(1).unwrap();
    field.split(',').next().unwrap().trim().parse().unwrap()
}

/// Record lines (not comments) of a dig output.
fn records(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
#[ignore = "needs dig (bind9-dnsutils)"]
fn dig_sees_an_authoritative_server() {
    let port = free_port();
    let config = example_on_port(port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _served = serve(config.path(), addr);

    // An app: AA, RD copied, no RA, the app TTL, both clusters.
    for transport in ["+notcp", "+tcp"] {
        let out = dig(port, &[transport, "shop.apps.example.com", "A"]);
        assert_eq!(status(&out), "NOERROR");
        assert_eq!(flags(&out), "qr aa rd", "{out}");
        let mut recs = records(&out);
        recs.sort();
        assert_eq!(
            recs,
            [
                "shop.apps.example.com. 30 IN A 198.51.100.10",
                "shop.apps.example.com. 30 IN A 198.51.100.20"
            ],
            "{out}"
        );
        assert!(out.contains("EDNS: version: 0, flags:; udp: 1232"), "{out}");
    }
    let out = dig(
        port,
        &["+norec", "+noedns", "shop.apps.example.com", "AAAA"],
    );
    assert_eq!(flags(&out), "qr aa");
    assert!(!out.contains("OPT PSEUDOSECTION"), "{out}");
    assert_eq!(count(&out, "ANSWER"), 2);

    // NXDOMAIN and NODATA carry the SOA with TTL min(3600, 60).
    let out = dig(port, &["nope.apps.example.com"]);
    assert_eq!(status(&out), "NXDOMAIN");
    assert_eq!((count(&out, "ANSWER"), count(&out, "AUTHORITY")), (0, 1));
    assert!(
        records(&out)[0].starts_with(
            "apps.example.com. 60 IN SOA ns1.apps.example.com. hostmaster.example.com. 2026112201"
        ),
        "{out}"
    );
    let out = dig(port, &["shop.apps.example.com", "MX"]);
    assert_eq!(status(&out), "NOERROR");
    assert_eq!((count(&out, "ANSWER"), count(&out, "AUTHORITY")), (0, 1));

    // CNAME followed within the zone.
    let out = dig(port, &["www.apps.example.com"]);
    assert_eq!(count(&out, "ANSWER"), 3);
    assert!(
        records(&out)[0].contains("CNAME shop.apps.example.com."),
        "{out}"
    );

    // Referral: no AA, NS in authority, glue in additional.
    let out = dig(port, &["host.legacy.apps.example.com"]);
    assert_eq!(status(&out), "NOERROR");
    assert_eq!(flags(&out), "qr rd", "{out}");
    assert_eq!((count(&out, "ANSWER"), count(&out, "AUTHORITY")), (0, 2));
    assert!(
        records(&out).contains(&"ns1.legacy.apps.example.com. 3600 IN A 192.0.2.80".to_owned()),
        "{out}"
    );

    // Apex NS with glue.
    let out = dig(port, &["apps.example.com", "NS"]);
    assert_eq!(count(&out, "ANSWER"), 2);
    assert!(
        records(&out).contains(&"ns2.apps.example.com. 3600 IN AAAA 2001:db8::54".to_owned()),
        "{out}"
    );

    // Outside the zone, other classes, EDNS version 1, ANY.
    assert_eq!(status(&dig(port, &["example.org"])), "REFUSED");
    assert_eq!(
        status(&dig(port, &["-c", "CH", "version.bind", "TXT"])),
        "REFUSED"
    );
    assert_eq!(
        status(&dig(
            port,
            &["+edns=1", "+noednsnegotiation", "shop.apps.example.com"]
        )),
        "BADVERS"
    );
    let out = dig(port, &["apps.example.com", "ANY"]);
    let kinds: std::collections::BTreeSet<String> = records(&out)
        .iter()
        .map(|r| r.split(' ').nth(3).unwrap().to_owned())
        .collect();
    assert_eq!(kinds.len(), 1, "one RRset for ANY: {out}");
}

#[test]
#[ignore = "needs dig (bind9-dnsutils)"]
fn dig_retries_truncated_answers_over_tcp() {
    let port = free_port();
    let toml = crate::support::zone_toml().replace(
        r#"listen = ["127.0.0.1:0"]"#,
        &format!(r#"listen = ["127.0.0.1:{port}"]"#),
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _served = serve(f.path(), addr);

    let out = dig(port, &["+noedns", "+ignore", "big.example.test"]);
    assert_eq!(flags(&out), "qr aa tc rd", "{out}");
    assert_eq!(count(&out, "ANSWER"), 0);
    let out = dig(port, &["+noedns", "big.example.test"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert_eq!(count(&out, "ANSWER"), 100, "{out}");
    assert!(!flags(&out).contains("tc"));
}
