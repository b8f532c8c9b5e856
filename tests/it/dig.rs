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

/// What dig shows of the replies independent DNS test tools check: `+dnssec` gets `do`
/// back in the OPT flags (RFC 3225 §3), a query signed with a key gtmd does not know gets
/// NOTAUTH and a BADKEY TSIG (RFC 8945 §5.2.1), another opcode gets NOTIMP without CD.
#[test]
#[ignore = "needs dig (bind9-dnsutils)"]
fn dig_sees_do_badkey_and_notimp_without_cd() {
    let port = free_port();
    // The example's admin port is fixed: the other dig tests may hold it right now.
    let toml = std::fs::read_to_string(example_on_port(port).path())
        .unwrap()
        .replace(r#"listen = "127.0.0.1:9153""#, r#"listen = "127.0.0.1:0""#);
    assert!(toml.contains(r#"listen = "127.0.0.1:0""#));
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    config.write_all(toml.as_bytes()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _served = serve(config.path(), addr);

    for transport in ["+notcp", "+tcp"] {
        let out = dig(port, &[transport, "+dnssec", "shop.apps.example.com"]);
        assert_eq!(status(&out), "NOERROR");
        assert!(
            out.contains("EDNS: version: 0, flags: do; udp: 1232"),
            "{out}"
        );
        let out = dig(port, &[transport, "+dnssec", "nope.apps.example.com"]);
        assert_eq!(status(&out), "NXDOMAIN");
        assert!(
            out.contains("EDNS: version: 0, flags: do; udp: 1232"),
            "{out}"
        );
    }

    let key = "hmac-sha256:unknown.key:c2VjcmV0c2VjcmV0c2VjcmV0";
    let out = dig(port, &["-y", key, "shop.apps.example.com"]);
    assert_eq!(status(&out), "NOTAUTH", "{out}");
    assert_eq!(flags(&out), "qr rd", "{out}");
    assert_eq!(count(&out, "ANSWER"), 0);
    let tsig = out
        .lines()
        .find(|l| l.starts_with("unknown.key."))
        .unwrap_or_else(|| panic!("no TSIG record in:\n{out}"));
    // "unknown.key. 0 ANY TSIG hmac-sha256. <time> 300 0 <id> BADKEY 0": MAC size 0.
    let fields: Vec<&str> = tsig.split_whitespace().collect();
    assert_eq!(fields[1..5], ["0", "ANY", "TSIG", "hmac-sha256."], "{out}");
    assert_eq!(fields[7], "0", "MAC size: {out}");
    assert_eq!(fields[9], "BADKEY", "{out}");

    let out = dig(
        port,
        &[
            "+opcode=status",
            "+cdflag",
            "+adflag",
            "shop.apps.example.com",
        ],
    );
    assert_eq!(status(&out), "NOTIMP", "{out}");
    assert_eq!(flags(&out), "qr rd", "{out}");
}
