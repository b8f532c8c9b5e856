//! Fixtures shared by the library's unit tests (the integration tests have
//! `tests/common/`).

use std::{path::Path, sync::Arc};

use crate::{metrics::Metrics, snapshot::Snapshot};

/// The zone `t.test` alone, as a literal (for `concat!` in test configs that are
/// constants, and as the first argument of `format!`).
macro_rules! t_test_zone {
    () => {
        r#"
[[zones]]
origin = "t.test"
nameservers = ["ns.outside.net"]
[zones.soa]
mname = "ns.outside.net"
rname = "h.t.test"
"#
    };
}
pub(crate) use t_test_zone;

/// The zone `t.test` alone: the start of a test config that adds its clusters and apps.
pub const ZONE: &str = t_test_zone!();

/// One zone with a static name and one app on one cluster.
pub const ONE_APP: &str = concat!(
    t_test_zone!(),
    r#"[[zones.records]]
name = "static"
type = "A"
value = "192.0.2.1"
[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[apps]]
hostname = "app.t.test"
targets = [{ cluster = "a" }]
"#
);

/// `app.t.test` and `static.t.test` in wire form.
pub const APP: &[u8] = b"\x03app\x01t\x04test\x00";
pub const STATIC: &[u8] = b"\x06static\x01t\x04test\x00";

/// A wire-format query (ID 0x1234, RD) for `name` (wire form) of type `qtype`, class IN.
pub fn query(name: &[u8], qtype: u8) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(name);
    q.extend_from_slice(&[0, qtype, 0, 1]);
    q
}

/// The model of a valid configuration text.
pub fn model(toml: &str) -> crate::model::Model {
    crate::from_text(Path::new("t.toml"), toml).unwrap().model
}

/// The snapshot of `toml` with every target in its initial state, and its metrics.
pub fn snapshot(toml: &str) -> (Snapshot, Metrics) {
    let model = Arc::new(model(toml));
    let metrics = Metrics::new();
    (Snapshot::initial(&model, &metrics), metrics)
}

/// A tcp probe's settings, the defaults otherwise (interval 5 s).
pub fn probe_spec_for_tests() -> crate::model::ProbeSpec {
    let text = concat!(
        t_test_zone!(),
        r#"[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
[[apps]]
hostname = "app.t.test"
probe = { kind = "tcp", port = 80 }
targets = [{ cluster = "a" }]
"#
    );
    let model = model(text);
    (*model.apps[0].targets[0].probe.clone().unwrap()).clone()
}
