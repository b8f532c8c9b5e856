//! Configurations shared by the integration tests and the fuzz targets (`fuzz/`), which
//! include this file by path: a zone with every record shape the lookup handles, and a
//! zone of apps under every policy with a test MaxMind database.

/// The config most DNS behaviour tests run against.
pub const ZONE_TOML: &str = r#"
[server]
listen = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"

[[zones]]
origin = "example.test"
ttl = 3600
nameservers = ["ns1.example.test", "ns.outside.net"]
[zones.soa]
mname = "ns1.example.test"
rname = "hostmaster.example.test"
serial = 7
minimum = 60
ttl = 300

[[zones.records]]
name = "ns1"
type = "A"
value = "192.0.2.1"
[[zones.records]]
name = "ns1"
type = "AAAA"
value = "2001:db8::1"
[[zones.records]]
name = "www"
type = "CNAME"
value = "app"
[[zones.records]]
name = "c1"
type = "CNAME"
value = "c2"
[[zones.records]]
name = "c2"
type = "CNAME"
value = "app.example.test."
[[zones.records]]
name = "loop1"
type = "CNAME"
value = "loop2"
[[zones.records]]
name = "loop2"
type = "CNAME"
value = "loop1"
[[zones.records]]
name = "dangling"
type = "CNAME"
value = "missing"
[[zones.records]]
name = "away"
type = "CNAME"
value = "host.elsewhere.net."
[[zones.records]]
name = "a.b.c"
type = "A"
value = "192.0.2.9"
[[zones.records]]
name = "@"
type = "TXT"
value = "hello world"
[[zones.records]]
name = "@"
type = "MX"
value = "10 ns1"
[[zones.records]]
name = "srv"
type = "SRV"
value = "1 1 443 app"
[[zones.records]]
name = "@"
type = "CAA"
value = '0 issue "ca.example"'
[[zones.records]]
name = "sub"
type = "NS"
values = ["ns1.sub", "ns.outside.net."]
[[zones.records]]
name = "ns1.sub"
type = "A"
value = "192.0.2.77"
[[zones.records]]
name = "todel"
type = "CNAME"
value = "host.sub"
[[zones.records]]
name = "appns"
type = "NS"
value = "app"
[[zones.records]]
name = "longtxt"
type = "TXT"
value = "LONGTXT"
[[zones.records]]
name = "at"
type = "MX"
value = "5 @"
# The parent side of the nested zone below: allowed, the child zone answers its names.
[[zones.records]]
name = "inner"
type = "NS"
value = "ns.outside.net."
[[zones.records]]
name = "mail"
type = "MX"
values = [
  "1 mx01", "1 mx02", "1 mx03", "1 mx04", "1 mx05", "1 mx06", "1 mx07", "1 mx08",
  "1 mx09", "1 mx10", "1 mx11", "1 mx12", "1 mx13", "1 mx14", "1 mx15", "1 mx16",
  "1 mx17", "1 mx18", "1 mx19", "1 mx20",
]
[[zones.records]]
name = "mx01"
type = "A"
values = ["192.0.2.101"]
[[zones.records]]
name = "mx02"
type = "A"
value = "192.0.2.102"
[[zones.records]]
name = "mx03"
type = "A"
value = "192.0.2.103"
[[zones.records]]
name = "mx04"
type = "A"
value = "192.0.2.104"
[[zones.records]]
name = "mx05"
type = "A"
value = "192.0.2.105"
[[zones.records]]
name = "mx06"
type = "A"
value = "192.0.2.106"
[[zones.records]]
name = "mx07"
type = "A"
value = "192.0.2.107"
[[zones.records]]
name = "mx08"
type = "A"
value = "192.0.2.108"
[[zones.records]]
name = "mx09"
type = "A"
value = "192.0.2.109"
[[zones.records]]
name = "mx10"
type = "A"
value = "192.0.2.110"
[[zones.records]]
name = "mx11"
type = "A"
value = "192.0.2.111"
[[zones.records]]
name = "mx12"
type = "A"
value = "192.0.2.112"
[[zones.records]]
name = "mx13"
type = "A"
value = "192.0.2.113"
[[zones.records]]
name = "mx14"
type = "A"
value = "192.0.2.114"
[[zones.records]]
name = "mx15"
type = "A"
value = "192.0.2.115"
[[zones.records]]
name = "mx16"
type = "A"
value = "192.0.2.116"
[[zones.records]]
name = "mx17"
type = "A"
value = "192.0.2.117"
[[zones.records]]
name = "mx18"
type = "A"
value = "192.0.2.118"
[[zones.records]]
name = "mx19"
type = "A"
value = "192.0.2.119"
[[zones.records]]
name = "mx20"
type = "A"
value = "192.0.2.120"

[[zones]]
origin = "inner.example.test"
ttl = 600
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "hostmaster.inner.example.test"
serial = 99
minimum = 30
[[zones.records]]
name = "x"
type = "A"
value = "192.0.2.50"

[[clusters]]
name = "east"
region = "us-east"
ingress = ["198.51.100.10", "2001:db8:e::10"]
[[clusters]]
name = "west"
region = "us-west"
ingress = ["198.51.100.20"]
[[clusters]]
name = "eu"
ingress = ["203.0.113.30"]
[[clusters]]
name = "forty"
ingress = [BIG40]
[[clusters]]
name = "hundred"
ingress = [BIG100]

[[apps]]
hostname = "app.example.test"
ttl = 30
targets = [{ cluster = "east" }, { cluster = "west" }]
[[apps]]
hostname = "v4only.example.test"
ttl = 45
targets = [{ cluster = "eu" }]
[[apps]]
hostname = "mid.example.test"
max_answers = 64
targets = [{ cluster = "forty" }]
[[apps]]
hostname = "big.example.test"
max_answers = 256
targets = [{ cluster = "hundred" }]
"#;

/// [`ZONE_TOML`] with its address lists filled in.
pub fn zone_toml() -> String {
    let list = |n: u32| {
        (0..n)
            .map(|i| format!("\"10.{}.{}.{}\"", n, i / 250, i % 250 + 1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    ZONE_TOML
        .replace("LONGTXT", &"é-gtmd-".repeat(200))
        .replace("BIG40", &list(40))
        .replace("BIG100", &list(100))
}

/// The policy config's two clusters' ingress addresses.
pub const EU: &str = "127.0.0.31";
pub const US: &str = "127.0.0.32";

/// Apps under every policy; `mmdb` is the path of `tests/data/geo-test.mmdb` as the
/// including crate sees it.
pub fn policy_toml(mmdb: &str, extra_geo: &str) -> String {
    format!(
        r#"
[geo]
mmdb = "{mmdb}"
{extra_geo}
[[geo.regions]]
name = "lab"
networks = ["10.0.0.0/8"]

[[zones]]
origin = "p.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.p.test"

[[clusters]]
name = "eu"
ingress = ["{EU}"]
lat = 50.1
lon = 8.7
[[clusters]]
name = "us"
ingress = ["{US}"]
lat = 39.0
lon = -77.5
# The EU ingress again, down by its probe from the start (nothing listens on port 1): a
# target the probes put down, which fail open may answer (one the operator forced down
# never is).
[[clusters]]
name = "eu-dead"
ingress = ["{EU}"]
probe_address = "127.0.0.1"
probe = {{ kind = "tcp", port = 1, initial = "down" }}

[[apps]]
hostname = "geo.p.test"
policy = "geo"
targets = [{{ cluster = "eu" }}, {{ cluster = "us" }}]
pools = [{{ name = "eu", clusters = ["eu"] }}, {{ name = "us", clusters = ["us"] }}]
rules = [
  {{ match = "continent:EU", pools = ["eu", "us"] }},
  {{ match = "region:lab", pools = ["us"] }},
  {{ match = "default", pools = ["us", "eu"] }},
]

[[apps]]
hostname = "fenced.p.test"
policy = "geo"
targets = [{{ cluster = "eu-dead" }}, {{ cluster = "us" }}]
pools = [{{ name = "eu", clusters = ["eu-dead"] }}, {{ name = "us", clusters = ["us"] }}]
rules = [
  {{ match = ["country:DE", "country:FR"], pools = ["eu"], geofence = true }},
  {{ match = "default", pools = ["us"] }},
]

[[apps]]
hostname = "fenced-none.p.test"
policy = "geo"
fallback = "none"
targets = [{{ cluster = "eu", force = "down" }}, {{ cluster = "us" }}]
pools = [{{ name = "eu", clusters = ["eu"] }}, {{ name = "us", clusters = ["us"] }}]
rules = [
  {{ match = "country:DE", pools = ["eu"], geofence = true }},
  {{ match = "default", pools = ["us"] }},
]

[[apps]]
hostname = "near.p.test"
policy = "nearest"
targets = [{{ cluster = "eu" }}, {{ cluster = "us" }}]

[[apps]]
hostname = "sticky.p.test"
policy = "weighted"
sticky = true
targets = [{{ cluster = "eu", weight = 50 }}, {{ cluster = "us", weight = 50 }}]

[[apps]]
hostname = "plain.p.test"
targets = [{{ cluster = "eu" }}, {{ cluster = "us" }}]

[[apps]]
hostname = "noecs.p.test"
policy = "geo"
ignore_ecs = true
targets = [{{ cluster = "eu" }}, {{ cluster = "us" }}]
pools = [{{ name = "eu", clusters = ["eu"] }}, {{ name = "us", clusters = ["us"] }}]
rules = [
  {{ match = "continent:EU", pools = ["eu"] }},
  {{ match = "default", pools = ["us"] }},
]
"#,
    )
}
