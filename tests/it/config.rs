//! Configuration loading and validation: every rule names the exact field at fault, and all
//! errors of a file are reported together.

use std::path::Path;

const BASE: &str = r#"
[[zones]]
origin = "apps.example.com"
nameservers = ["ns1.gtm.example.net"]
[zones.soa]
mname = "ns1.gtm.example.net"
rname = "hostmaster@example.com"

[[clusters]]
name = "east"
ingress = ["198.51.100.10", "2001:db8::10"]
[[clusters]]
name = "west"
ingress = ["198.51.100.20"]

[[apps]]
hostname = "shop.apps.example.com"
targets = [{ cluster = "east", weight = 80 }, { cluster = "west", weight = 20 }]
"#;

/// Loads `toml` (with `env`) and returns "path: message" for every error.
fn errors_with_env(toml: &str, env: &[(&str, &str)]) -> Vec<String> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let result = gtmd::config::parse_with_env(Path::new("t.toml"), toml, env)
        .and_then(|c| gtmd::from_config(Path::new("t.toml"), &c));
    match result {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn errors(toml: &str) -> Vec<String> {
    errors_with_env(toml, &[])
}

/// Asserts exactly one error, at `path`, whose message contains `needle`.
fn assert_one_error(toml: &str, path: &str, needle: &str) {
    let errs = errors(toml);
    assert_eq!(errs.len(), 1, "expected one error at {path}, got {errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{path}: ")) && errs[0].contains(needle),
        "expected {path}: …{needle}…, got {:?}",
        errs[0]
    );
}

#[test]
fn base_config_is_valid() {
    assert_eq!(errors(BASE), Vec::<String>::new());
}

#[test]
fn example_config_is_valid() {
    let loaded = gtmd::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/gtmd.toml"
    )))
    .expect("config/gtmd.toml is valid");
    let s = loaded.summary;
    assert_eq!((s.zones, s.apps, s.clusters), (1, 3, 3));
}

#[test]
fn unknown_cluster_in_a_target() {
    assert_one_error(
        &BASE.replace(r#"cluster = "west""#, r#"cluster = "west2""#),
        "apps[0].targets[1].cluster",
        r#"unknown cluster "west2" (known: east, west)"#,
    );
}

#[test]
fn hostname_outside_every_zone() {
    assert_one_error(
        &BASE.replace("shop.apps.example.com", "shop.example.org"),
        "apps[0].hostname",
        "not inside any configured zone",
    );
}

#[test]
fn duplicate_hostname() {
    let toml = format!(
        "{BASE}\n[[apps]]\nhostname = \"SHOP.apps.example.com.\"\ntargets = [{{ cluster = \"east\" }}]\n"
    );
    assert_one_error(&toml, "apps[1].hostname", "duplicate hostname");
}

#[test]
fn cname_beside_other_data() {
    let toml = BASE.replace(
        "[[clusters]]\nname = \"east\"",
        "[[zones.records]]\nname = \"www\"\ntype = \"CNAME\"\nvalue = \"shop\"\n\
         [[zones.records]]\nname = \"www\"\ntype = \"TXT\"\nvalue = \"x\"\n\
         [[clusters]]\nname = \"east\"",
    );
    let errs = errors(&toml);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("zones[0].records[0].value: CNAME beside other data"),
        "{errs:?}"
    );

    // A CNAME at an app hostname is CNAME beside other data too.
    let toml = BASE.replace(
        "[[clusters]]\nname = \"east\"",
        "[[zones.records]]\nname = \"shop\"\ntype = \"CNAME\"\nvalue = \"elsewhere.net.\"\n\
         [[clusters]]\nname = \"east\"",
    );
    assert_one_error(
        &toml,
        "zones[0].records[0].value",
        "CNAME beside other data",
    );
}

#[test]
fn bad_ip_literal() {
    assert_one_error(
        &BASE.replace("198.51.100.20", "198.51.100.300"),
        "clusters[1].ingress[0]",
        "invalid IP address \"198.51.100.300\"",
    );
    let toml = BASE.replace(
        "[[clusters]]\nname = \"east\"",
        "[[zones.records]]\nname = \"x\"\ntype = \"A\"\nvalue = \"2001:db8::1\"\n\
         [[clusters]]\nname = \"east\"",
    );
    assert_one_error(&toml, "zones[0].records[0].value", "invalid A value");
}

#[test]
fn ttl_out_of_range() {
    assert_one_error(
        &BASE.replace(
            "hostname = \"shop.apps.example.com\"",
            "hostname = \"shop.apps.example.com\"\nttl = 100000",
        ),
        "apps[0].ttl",
        "out of range",
    );
    assert_one_error(
        &BASE.replace(
            "origin = \"apps.example.com\"",
            "origin = \"apps.example.com\"\nttl = 9999999",
        ),
        "zones[0].ttl",
        "out of range",
    );
}

#[test]
fn zero_total_weight() {
    assert_one_error(
        &BASE
            .replace("weight = 80", "weight = 0")
            .replace("weight = 20", "weight = 0"),
        "apps[0].targets",
        "zero total weight",
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let errs = errors(&BASE.replace("weight = 80", "wieght = 80"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("wieght"), "{errs:?}");
}

#[test]
fn wrong_type_names_the_key() {
    let errs = errors(&BASE.replace(
        "hostname = \"shop.apps.example.com\"",
        "hostname = \"shop.apps.example.com\"\nttl = \"thirty\"",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("ttl"), "{errs:?}");
}

#[test]
fn policy_names_and_options_are_checked() {
    let with = |lines: &str| {
        BASE.replace(
            "hostname = \"shop.apps.example.com\"",
            &format!("hostname = \"shop.apps.example.com\"\n{lines}"),
        )
    };
    assert_one_error(
        &with("policy = \"georgia\""),
        "apps[0].policy",
        "unknown policy",
    );
    assert_one_error(
        &with("policy = \"geo\""),
        "apps[0].rules",
        "at least one rule",
    );
    assert_one_error(
        &with("sticky = true"),
        "apps[0].sticky",
        "only applies to the weighted policy",
    );
    assert_one_error(
        &with("policy = \"weighted\"\nmin_healthy_fraction = 1.5"),
        "apps[0].min_healthy_fraction",
        "out of range",
    );
    assert_one_error(
        &with("max_answers = 0"),
        "apps[0].max_answers",
        "out of range",
    );
    let errs = errors(&with("policy = \"nearest\""));
    assert_eq!(
        errs,
        [
            "apps[0].policy: the nearest policy needs client coordinates: set [geo] mmdb",
            "apps[0].targets: the nearest policy needs clusters with lat/lon",
        ]
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let toml = BASE
        .replace(r#"cluster = "west""#, r#"cluster = "nope""#)
        .replace("198.51.100.10", "bad-ip")
        .replace(
            "origin = \"apps.example.com\"",
            "origin = \"apps.example.com\"\nttl = 9999999",
        )
        + "\n[[apps]]\nhostname = \"x.example.org\"\ntargets = []\n";
    let errs = errors(&toml);
    let paths: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "zones[0].ttl",
            "clusters[0].ingress[0]",
            "apps[0].targets[1].cluster",
            "apps[1].hostname",
            "apps[1].targets",
        ],
        "{errs:#?}"
    );
}

#[test]
fn delegation_rules() {
    let with = |records: &str| {
        BASE.replace(
            "[[clusters]]\nname = \"east\"",
            &format!("{records}\n[[clusters]]\nname = \"east\""),
        )
    };
    // Glue is needed for an in-bailiwick nameserver of a delegation.
    assert_one_error(
        &with("[[zones.records]]\nname = \"sub\"\ntype = \"NS\"\nvalue = \"ns1.sub\""),
        "zones[0].records[0].value",
        "needs glue",
    );
    // Data below a cut is occluded.
    assert_one_error(
        &with(
            "[[zones.records]]\nname = \"sub\"\ntype = \"NS\"\nvalue = \"ns.other.net.\"\n\
             [[zones.records]]\nname = \"www.sub\"\ntype = \"TXT\"\nvalue = \"x\"",
        ),
        "zones[0].records[1].value",
        "below the delegation",
    );
    // An app below a cut.
    assert_one_error(
        &with("[[zones.records]]\nname = \"shop\"\ntype = \"NS\"\nvalue = \"ns.other.net.\""),
        "apps[0].hostname",
        "delegation",
    );
}

#[test]
fn in_zone_nameserver_needs_an_address() {
    assert_one_error(
        &BASE.replace(
            "nameservers = [\"ns1.gtm.example.net\"]",
            "nameservers = [\"ns1.apps.example.com\"]",
        ),
        "zones[0].nameservers[0]",
        "no A or AAAA record",
    );
}

#[test]
fn relative_name_that_repeats_the_origin() {
    let toml = BASE.replace(
        "[[clusters]]\nname = \"east\"",
        "[[zones.records]]\nname = \"www\"\ntype = \"CNAME\"\nvalue = \"shop.apps.example.com\"\n\
         [[clusters]]\nname = \"east\"",
    );
    assert_one_error(&toml, "zones[0].records[0].value", "add a trailing dot");
}

#[test]
fn environment_overrides_file_values() {
    let env = [
        ("GTMD__SERVER__MAX_UDP_PAYLOAD", "1400"),
        ("GTMD__SERVER__LISTEN", "127.0.0.1:1053,[::1]:1053"),
        ("GTMD__SERVER__TCP_IDLE_TIMEOUT", "3s"),
    ];
    let env_iter = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let config = gtmd::config::parse_with_env(Path::new("t.toml"), BASE, env_iter).unwrap();
    let loaded = gtmd::from_config(Path::new("t.toml"), &config).unwrap();
    assert_eq!(loaded.model.server.max_udp_payload, 1400);
    assert_eq!(
        loaded.model.server.listen,
        [
            "127.0.0.1:1053".parse().unwrap(),
            "[::1]:1053".parse().unwrap()
        ]
    );
    assert_eq!(loaded.model.server.tcp_idle_timeout.as_secs(), 3);

    // A bad override is reported at its key.
    let errs = errors_with_env(BASE, &[("GTMD__SERVER__MAX_UDP_PAYLOAD", "100")]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("server.max_udp_payload: "), "{errs:?}");
}

fn with_records(records: &str) -> String {
    BASE.replace(
        "[[clusters]]\nname = \"east\"",
        &format!("{records}\n[[clusters]]\nname = \"east\""),
    )
}

#[test]
fn quoted_txt_string_over_255_bytes() {
    let long = "q".repeat(300);
    assert_one_error(
        &with_records(&format!(
            "[[zones.records]]\nname = \"t\"\ntype = \"TXT\"\nvalue = '\"{long}\"'"
        )),
        "zones[0].records[0].value",
        "255-byte limit",
    );
}

#[test]
fn owner_that_repeats_the_origin() {
    assert_one_error(
        &with_records(
            "[[zones.records]]\nname = \"www.apps.example.com\"\ntype = \"A\"\nvalue = \"192.0.2.1\"",
        ),
        "zones[0].records[0].name",
        "or write it relative (\"www\")",
    );
}

#[test]
fn ttls_differ_within_an_rrset() {
    assert_one_error(
        &with_records(
            "[[zones.records]]\nname = \"m\"\ntype = \"A\"\nttl = 10\nvalue = \"192.0.2.1\"\n\
             [[zones.records]]\nname = \"m\"\ntype = \"A\"\nttl = 9999\nvalue = \"192.0.2.2\"",
        ),
        "zones[0].records[1].ttl",
        "RFC 2181",
    );
}

#[test]
fn wildcards_are_rejected() {
    assert_one_error(
        &with_records("[[zones.records]]\nname = \"*\"\ntype = \"A\"\nvalue = \"192.0.2.1\""),
        "zones[0].records[0].name",
        "wildcard",
    );
}

#[test]
fn single_label_nameserver() {
    assert_one_error(
        &BASE.replace(
            "nameservers = [\"ns1.gtm.example.net\"]",
            "nameservers = [\"ns1\"]",
        ),
        "zones[0].nameservers[0]",
        "single-label",
    );
}

#[test]
fn parent_may_delegate_to_a_child_zone_it_also_serves() {
    let toml = with_records(
        "[[zones.records]]\nname = \"eu\"\ntype = \"NS\"\nvalue = \"ns1.eu\"\n\
         [[zones.records]]\nname = \"ns1.eu\"\ntype = \"A\"\nvalue = \"192.0.2.9\"",
    ) + "\n[[zones]]\norigin = \"eu.apps.example.com\"\nnameservers = [\"ns1.eu.apps.example.com\"]\n\
         [zones.soa]\nmname = \"ns1.eu.apps.example.com\"\nrname = \"h@example.com\"\n\
         [[zones.records]]\nname = \"ns1\"\ntype = \"A\"\nvalue = \"192.0.2.9\"\n";
    assert_eq!(errors(&toml), Vec::<String>::new());
    // Other data of the parent inside the child zone is still an error.
    let toml = toml.replace(
        "name = \"ns1.eu\"\ntype = \"A\"",
        "name = \"x.eu\"\ntype = \"A\"",
    );
    let errs = errors(&toml);
    assert!(
        errs.iter().any(|e| e.starts_with(
            "zones[0].records[1].name: x.eu.apps.example.com. is inside the more specific zone"
        )),
        "{errs:#?}"
    );
}

#[test]
fn environment_overrides_are_named_in_errors() {
    let errs = errors_with_env(BASE, &[("GTMD__SERVER__LISTN", "1")]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("listn") && errs[0].contains("GTMD__SERVER__LISTN"),
        "{errs:?}"
    );
}

#[test]
fn override_names_that_are_key_paths_are_refused() {
    // `[N]` in a name would make the config crate grow a list to N entries (found by the
    // config fuzzer: a capacity-overflow panic; a smaller N exhausts memory instead).
    let errs = errors_with_env(
        BASE,
        &[
            ("GTMD__ZONES[99999999999999]__TTL", "1"),
            ("GTMD__SERVER.LISTEN", "x"),
        ],
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("GTMD__SERVER.LISTEN"), "{errs:?}");
    assert!(
        errs[1].contains("GTMD__ZONES[99999999999999]__TTL"),
        "{errs:?}"
    );
    assert!(errs.iter().all(|e| e.contains("letters")), "{errs:?}");
}

#[test]
fn probe_intervals_are_bounded() {
    let with = |probe: &str| {
        BASE.replace(
            "hostname = \"shop.apps.example.com\"",
            &format!(
                "hostname = \"shop.apps.example.com\"\nprobe = {{ kind = \"http\", {probe} }}"
            ),
        )
    };
    assert_one_error(
        &with("interval = \"2h\""),
        "apps[0].probe.interval",
        "out of range",
    );
    assert_one_error(
        &with("interval = \"100ms\""),
        "apps[0].probe.interval",
        "out of range",
    );
    assert_one_error(
        &with("interval = \"1s\", timeout = \"1s\""),
        "apps[0].probe.timeout",
        "must be below the interval",
    );
    assert_eq!(
        errors(&with("interval = \"1h\", timeout = \"5s\"")),
        Vec::<String>::new()
    );
}

#[test]
fn sizes_are_limited_with_clear_errors() {
    let targets: Vec<String> = (0..65)
        .map(|_| "{ cluster = \"east\" }".to_owned())
        .collect();
    let toml = BASE.replace(
        "targets = [{ cluster = \"east\", weight = 80 }, { cluster = \"west\", weight = 20 }]",
        &format!("targets = [{}]", targets.join(", ")),
    );
    assert_one_error(
        &toml,
        "apps[0].targets",
        "65 entries: at most 64 are supported",
    );
}

/// Issue 13 point 7: a boolean or a number must be written as one. The `config` crate alone
/// turned `drain = "yes"`, `drain = 1` and `weight = "50"` into values.
#[test]
fn booleans_and_numbers_of_the_wrong_type_are_refused_at_their_path() {
    let target = "{ cluster = \"east\", weight = 80 }";
    for (written, path, expected) in [
        (
            "{ cluster = \"east\", drain = \"yes\" }",
            "drain",
            "true or false",
        ),
        (
            "{ cluster = \"east\", drain = 1 }",
            "drain",
            "true or false",
        ),
        (
            "{ cluster = \"east\", weight = \"50\" }",
            "weight",
            "an integer",
        ),
        (
            "{ cluster = \"east\", priority = \"1\" }",
            "priority",
            "an integer",
        ),
    ] {
        let errs = errors(&BASE.replace(target, written));
        assert_eq!(errs.len(), 1, "{written}: {errs:?}");
        assert!(
            errs[0].starts_with(&format!("apps[0].targets[0].{path}: invalid type"))
                && errs[0].contains(expected)
                && errs[0].contains("(app shop.apps.example.com)"),
            "{written}: {errs:?}"
        );
    }
    for (key, written, expected) in [
        ("sticky", "\"true\"", "true or false"),
        ("ttl", "\"20\"", "an integer"),
        ("max_answers", "\"2\"", "an integer"),
        ("min_healthy_fraction", "\"0.5\"", "a number"),
    ] {
        let errs = errors(&BASE.replace(
            "hostname = \"shop.apps.example.com\"",
            &format!("hostname = \"shop.apps.example.com\"\n{key} = {written}"),
        ));
        assert_eq!(errs.len(), 1, "{key}: {errs:?}");
        assert!(
            errs[0].starts_with(&format!("apps[0].{key}: invalid type"))
                && errs[0].contains(expected),
            "{key}: {errs:?}"
        );
    }
    let errs = errors(&format!("[server]\nmax_udp_payload = \"1400\"\n{BASE}"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("server.max_udp_payload: invalid type"),
        "{errs:?}"
    );
    let errs = errors(&format!("[health.defaults]\ntls_verify = \"no\"\n{BASE}"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("health.defaults.tls_verify: invalid type"),
        "{errs:?}"
    );
    let errs = errors(&format!("[rrl]\nenabled = 1\n{BASE}"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("rrl.enabled: invalid type"), "{errs:?}");
    let errs = errors(&BASE.replace("name = \"west\"", "name = \"west\"\nlat = \"52.1\""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("clusters[1].lat: invalid type"),
        "{errs:?}"
    );
    // Right types still load, numbers for a float too.
    assert_eq!(
        errors(&BASE.replace(
            "name = \"west\"",
            "name = \"west\"\nlat = 52\nlon = 4.9\ndrain = false"
        )),
        Vec::<String>::new()
    );
}

/// Environment overrides arrive as text and are parsed (`true`/`false`, integers), so they
/// keep working for booleans and numbers; a value of the wrong kind is refused as in the file.
#[test]
fn environment_overrides_of_booleans_and_numbers_keep_working() {
    let env = [
        ("GTMD__SERVER__MAX_UDP_PAYLOAD", "1400"),
        ("GTMD__ADMIN__ENABLED", "false"),
        ("GTMD__RRL__ENABLED", "TRUE"),
        ("GTMD__RRL__SLIP", "0"),
        ("GTMD__HEALTH__MAX_CONCURRENT_PROBES", "64"),
    ];
    let env_iter = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let config = gtmd::config::parse_with_env(Path::new("t.toml"), BASE, env_iter).unwrap();
    let loaded = gtmd::from_config(Path::new("t.toml"), &config).unwrap();
    assert_eq!(loaded.model.server.max_udp_payload, 1400);
    assert_eq!(loaded.model.server.admin, None);
    assert_eq!(loaded.model.server.rrl.as_ref().map(|r| r.slip), Some(0));
    assert_eq!(loaded.model.health.max_concurrent_probes, 64);
    for (key, value, expected) in [
        (
            "GTMD__ADMIN__ENABLED",
            "yes",
            "admin.enabled: invalid type: string \"yes\"",
        ),
        (
            "GTMD__SERVER__MAX_UDP_PAYLOAD",
            "big",
            "server.max_udp_payload: invalid type",
        ),
    ] {
        let errs = errors_with_env(BASE, &[(key, value)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with(expected), "{errs:?}");
        assert!(
            errs[0].contains(&format!("environment overrides in effect: {key}")),
            "{errs:?}"
        );
    }
}

/// The warnings (settings with no effect) of a config that loads.
fn warnings(toml: &str) -> Vec<String> {
    let config = gtmd::config::parse_with_env(Path::new("t.toml"), toml, []).unwrap();
    let loaded = gtmd::from_config(Path::new("t.toml"), &config).unwrap();
    loaded
        .model
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect()
}

/// Issue 13 point 7: weights are read only by the weighted policy, priorities only by
/// failover; any other policy warns about each one written, at its path.
#[test]
fn settings_the_policy_ignores_are_warned_about_at_their_path() {
    // BASE: policy "all" (the default) with weights 80/20.
    assert_eq!(
        warnings(BASE),
        [
            "apps[0].targets[0].weight: is ignored: policy \"all\" does not use weights, only \
             the weighted policy does (app shop.apps.example.com)",
            "apps[0].targets[1].weight: is ignored: policy \"all\" does not use weights, only \
             the weighted policy does (app shop.apps.example.com)",
        ]
    );
    let weighted = BASE.replace("targets = [", "policy = \"weighted\"\ntargets = [");
    assert_eq!(warnings(&weighted), Vec::<String>::new());
    let with_priority = weighted.replace("weight = 20", "weight = 20, priority = 2");
    assert_eq!(
        warnings(&with_priority),
        [
            "apps[0].targets[1].priority: is ignored: policy \"weighted\" does not use \
          priorities, only the failover policy does (app shop.apps.example.com)"
        ]
    );
    let failover = BASE
        .replace("targets = [", "policy = \"failover\"\ntargets = [")
        .replace("weight = 80", "priority = 1")
        .replace("weight = 20", "priority = 2");
    assert_eq!(warnings(&failover), Vec::<String>::new());
    // Geo: a weight counts only in a weighted pool.
    let geo = BASE.replace(
        "targets = [{ cluster = \"east\", weight = 80 }, { cluster = \"west\", weight = 20 }]",
        "policy = \"geo\"\n\
         targets = [{ cluster = \"east\", weight = 80 }, { cluster = \"west\", weight = 20 }]\n\
         pools = [{ name = \"e\", clusters = [\"east\"], policy = \"weighted\" }, { name = \"w\", clusters = [\"west\"] }]\n\
         rules = [{ match = \"default\", pools = [\"e\", \"w\"] }]",
    );
    let w = warnings(&geo);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(
            "apps[0].targets[1].weight: is ignored: this target is in no weighted pool"
        ),
        "{w:?}"
    );
}

/// Issue 13 point 7: a problem of `[health.defaults]` itself is reported once at
/// `health.defaults.…`, not at every app that inherits it; an app whose own setting causes
/// the problem is still named.
#[test]
fn a_health_defaults_problem_is_reported_once_at_its_own_path() {
    let apps = (0..5)
        .map(|i| {
            format!(
                "[[apps]]\nhostname = \"a{i}.apps.example.com\"\ntargets = [{{ cluster = \"east\" }}]\n"
            )
        })
        .collect::<String>();
    let base = BASE.replace(
        "[[apps]]\nhostname = \"shop.apps.example.com\"\ntargets = [{ cluster = \"east\", weight = 80 }, { cluster = \"west\", weight = 20 }]\n",
        &apps,
    );
    assert!(base.contains("a4.apps"));
    let toml = format!(
        "[health.defaults]\nkind = \"http\"\ninterval = \"1s\"\ntimeout = \"2s\"\n{base}\
         [[apps]]\nhostname = \"own.apps.example.com\"\nprobe = {{ interval = \"500ms\" }}\n\
         targets = [{{ cluster = \"east\" }}]\n\
         [[apps]]\nhostname = \"fixed.apps.example.com\"\nprobe = {{ interval = \"5s\" }}\n\
         targets = [{{ cluster = \"east\" }}]\n"
    );
    assert_eq!(
        errors(&toml),
        [
            "health.defaults.timeout: 2s must be below the interval (1s)",
            "apps[5].probe.timeout: 2s must be below the interval (500ms)",
        ]
    );
}

/// The environment wins over the file for a key both set (the documented precedence), and
/// the override is reported with the file's value marked as replaced.
#[test]
fn the_environment_wins_over_a_value_the_file_sets() {
    let toml = format!("[server]\nmax_udp_payload = 1300\n{BASE}");
    let env = || {
        [(
            "GTMD__SERVER__MAX_UDP_PAYLOAD".to_owned(),
            "1400".to_owned(),
        )]
    };
    let config = gtmd::config::parse_with_env(Path::new("t.toml"), &toml, env()).unwrap();
    let loaded = gtmd::from_config(Path::new("t.toml"), &config).unwrap();
    assert_eq!(loaded.model.server.max_udp_payload, 1400);
    let o = gtmd::config::env_overrides(&toml, env());
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].key, "server.max_udp_payload");
    assert!(o[0].replaces_file);
    assert!(!gtmd::config::env_overrides(BASE, env())[0].replaces_file);
}

#[test]
fn shutdown_grace_is_bounded_and_zero_is_allowed() {
    let ok = format!("[server]\nshutdown_grace = \"0s\"\n{BASE}");
    let config = gtmd::config::parse_with_env(Path::new("t.toml"), &ok, []).unwrap();
    let loaded = gtmd::from_config(Path::new("t.toml"), &config).unwrap();
    assert!(loaded.model.server.shutdown_grace.is_zero());
    let default = gtmd::config::parse_with_env(Path::new("t.toml"), BASE, []).unwrap();
    let loaded = gtmd::from_config(Path::new("t.toml"), &default).unwrap();
    assert_eq!(loaded.model.server.shutdown_grace.as_secs(), 5);
    assert_one_error(
        &format!("[server]\nshutdown_grace = \"11m\"\n{BASE}"),
        "server.shutdown_grace",
        "out of range 0s..=10m",
    );
}
