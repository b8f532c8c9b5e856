//! Probe settings: checking each layer once, merging the layers, resolving one probe.
//!
//! An app probe of one cluster is the field-by-field merge of built-in defaults,
//! `[health.defaults]`, the cluster's `app_probe` and the app's `probe` (later wins). Each
//! layer is checked on its own, so a bad value in `[health.defaults]` is reported once at its
//! own path, not once per app; rules that need the merged result (timeout < interval, a TCP
//! probe needs a port) are reported at the app.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use crate::config::{
    Errors,
    file::{ProbeConfig, StatusSpec},
};

/// What a probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Http,
    Https,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Head,
}

/// One fully resolved probe: where, how, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    /// The address probed: the cluster's ingress unless overridden.
    pub addr: SocketAddr,
    /// Host header and TLS SNI (the app hostname by default; none for cluster probes).
    pub host: Option<String>,
    pub path: String,
    pub method: HttpMethod,
    /// Accepted status codes as inclusive ranges.
    pub expect_status: Vec<(u16, u16)>,
    pub expect_body: Option<String>,
    pub headers: Vec<(String, String)>,
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
    /// Hash of the CA file's content at load: a changed file restarts the probe on reload.
    pub ca_fingerprint: Option<u64>,
    pub interval: Duration,
    pub timeout: Duration,
    pub fast_interval: Duration,
    pub rise: u32,
    pub fall: u32,
    /// The state assumed before the first results settle.
    pub initial_up: bool,
    /// Flap damping: when a target whose verdict keeps changing is held out.
    pub flap: FlapSpec,
    /// An `http` probe takes an open connection from the pool of its address when it may
    /// (`health::pool`); always false for https and tcp probes.
    pub reuse_connections: bool,
    /// The User-Agent of http(s) probes when the probe does not set one: in a fleet it
    /// names the instance (`gtmd/… health-probe (fleet node a)`), so that an ingress's
    /// logs tell which instance probed. None: the default agent.
    pub agent: Option<std::sync::Arc<str>>,
}

impl ProbeSpec {
    /// These settings for an app's target: the Host header (and TLS SNI) is the app's
    /// hostname `host` unless the settings name one.
    pub fn for_host(&self, host: &str) -> ProbeSpec {
        let mut spec = self.clone();
        if spec.host.is_none() {
            spec.host = Some(host.to_owned());
        }
        spec
    }
}

/// The User-Agent of http(s) probes that do not set one.
pub const DEFAULT_AGENT: &str = concat!("gtmd/", env!("CARGO_PKG_VERSION"), " health-probe");

/// Flap damping settings of a probe (what they do: `health::flap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlapSpec {
    /// More verdict changes than this within `window` is flapping; 0 turns damping off.
    pub changes: u32,
    pub window: Duration,
    /// How long a flapping target must be stable before it is answered again.
    pub hold: Duration,
}

/// One change within the window is an ordinary outage or recovery; the second (a return
/// soon after a loss, or a loss soon after a return) is flapping. Any higher count lets
/// the answer change `flap_changes` or more times before damping starts, and a flapping
/// backend changes it that often per episode.
pub const DEFAULT_FLAP_CHANGES: u32 = 1;
/// Each target keeps at most this many + 1 change times (bounded memory per target).
pub const MAX_FLAP_CHANGES: u32 = 20;
/// A target down for longer than this returns normally (after `rise` successes): outages
/// of a minute or more are not mistaken for flapping.
pub const DEFAULT_FLAP_WINDOW: Duration = Duration::from_secs(60);
/// A flapping target (or one back within the window) returns after a minute of stability.
pub const DEFAULT_FLAP_HOLD: Duration = Duration::from_secs(60);

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
const DEFAULT_PATH: &str = "/";

/// Checks the fields of one layer on their own; errors are reported at `path`.
pub fn check_layer(p: &ProbeConfig, path: &str, errors: &mut Errors) {
    if let Some(k) = &p.kind
        && let Err(e) = parse_kind(k)
    {
        errors.push(format!("{path}.kind"), e);
    }
    if p.port == Some(0) {
        errors.push(format!("{path}.port"), "port 0 is not a valid port");
    }
    if let Some(pa) = &p.path {
        if !pa.starts_with('/') {
            errors.push(
                format!("{path}.path"),
                format!("{pa:?} must start with '/'"),
            );
        } else if let Err(e) = hyper::Uri::try_from(pa.as_str()) {
            // Sent as written (no percent-encoding on the way): it must be a valid target.
            errors.push(
                format!("{path}.path"),
                format!("{pa:?} is not a valid request path: {e}"),
            );
        }
    }
    if let Some(m) = &p.method
        && let Err(e) = parse_method(m)
    {
        errors.push(format!("{path}.method"), e);
    }
    if let Some(h) = &p.host
        && (h.trim().is_empty() || h.contains(char::is_whitespace))
    {
        errors.push(format!("{path}.host"), format!("invalid host {h:?}"));
    }
    if let Some(list) = &p.expect_status {
        if list.is_empty() {
            errors.push(format!("{path}.expect_status"), "empty list");
        }
        for (i, s) in list.iter().enumerate() {
            if let Err(e) = parse_status(s) {
                errors.push(format!("{path}.expect_status[{i}]"), e);
            }
        }
    }
    if let Some(b) = &p.expect_body
        && b.is_empty()
    {
        errors.push(
            format!("{path}.expect_body"),
            "empty string matches everything",
        );
    }
    if let Some(headers) = &p.headers {
        for (k, v) in headers {
            if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                errors.push(
                    format!("{path}.headers"),
                    format!("invalid header name {k:?}"),
                );
            }
            if hyper::header::HeaderValue::from_str(v).is_err() {
                errors.push(
                    format!("{path}.headers.{k}"),
                    format!("invalid header value {v:?}"),
                );
            }
        }
    }
    if let Some(f) = &p.ca_file
        && let Err(e) = crate::health::tls::read_ca_file(std::path::Path::new(f))
    {
        errors.push(format!("{path}.ca_file"), e);
    }
    if let Some(i) = p.interval
        && !(MIN_INTERVAL..=MAX_INTERVAL).contains(&i)
    {
        errors.push(
            format!("{path}.interval"),
            format!("{i:?} is out of range {MIN_INTERVAL:?}..={MAX_INTERVAL:?}"),
        );
    }
    if let Some(f) = p.fast_interval
        && f > MAX_INTERVAL
    {
        errors.push(
            format!("{path}.fast_interval"),
            format!("{f:?} is above the maximum of {MAX_INTERVAL:?}"),
        );
    }
    if p.timeout.is_some_and(|t| t.is_zero()) {
        errors.push(format!("{path}.timeout"), "must be above 0");
    }
    if p.fast_interval
        .is_some_and(|f| f < Duration::from_millis(50))
    {
        errors.push(format!("{path}.fast_interval"), "must be at least 50ms");
    }
    if let Some(v) = p.flap_changes
        && v > MAX_FLAP_CHANGES
    {
        errors.push(
            format!("{path}.flap_changes"),
            format!("{v} is out of range 0..={MAX_FLAP_CHANGES} (0 turns flap damping off)"),
        );
    }
    for (field, v) in [("flap_window", p.flap_window), ("flap_hold", p.flap_hold)] {
        if let Some(d) = v
            && !(MIN_INTERVAL..=MAX_INTERVAL).contains(&d)
        {
            errors.push(
                format!("{path}.{field}"),
                format!("{d:?} is out of range {MIN_INTERVAL:?}..={MAX_INTERVAL:?}"),
            );
        }
    }
    for (field, v) in [("rise", p.rise), ("fall", p.fall)] {
        if let Some(v) = v
            && !(1..=100).contains(&v)
        {
            errors.push(
                format!("{path}.{field}"),
                format!("{v} is out of range 1..=100"),
            );
        }
    }
    if let Some(i) = &p.initial
        && let Err(e) = parse_up_down(i)
    {
        errors.push(format!("{path}.initial"), e);
    }
    // Within one layer, asking for reuse on a kind that never reuses is a mistake worth
    // saying; across layers (reuse in `[health.defaults]`, https in an app) it is not, and
    // `resolve` leaves such a probe on fresh connections.
    if p.reuse_connections == Some(true)
        && let Some(Ok(Some(kind @ (ProbeKind::Https | ProbeKind::Tcp)))) =
            p.kind.as_deref().map(parse_kind)
    {
        let (name, why) = if kind == ProbeKind::Https {
            ("https", "the SNI is per connection and routers route by it")
        } else {
            ("tcp", "a connect is what they test")
        };
        errors.push(
            format!("{path}.reuse_connections"),
            format!(
                "applies to http probes only: {name} probes open a fresh connection each time ({why})"
            ),
        );
    }
}

/// Field-by-field merge: later layers win.
pub fn merge<'a>(layers: impl IntoIterator<Item = &'a ProbeConfig>) -> ProbeConfig {
    let mut m = ProbeConfig::default();
    for l in layers {
        macro_rules! take {
            ($($f:ident),*) => { $( if l.$f.is_some() { m.$f = l.$f.clone(); } )* };
        }
        take!(
            kind,
            port,
            path,
            method,
            host,
            expect_status,
            expect_body,
            headers,
            tls_verify,
            ca_file,
            interval,
            timeout,
            fast_interval,
            rise,
            fall,
            initial,
            flap_changes,
            flap_window,
            flap_hold,
            reuse_connections
        );
    }
    m
}

/// Resolves a merged probe against `ip`. `None` when the kind is absent or `none` (not
/// probed). Field errors were reported by [`check_layer`]; here only the rules that need
/// the merged whole are reported, at `path`.
pub fn resolve(
    p: &ProbeConfig,
    ip: IpAddr,
    default_host: Option<String>,
    path: &str,
    errors: &mut Errors,
) -> Option<ProbeSpec> {
    let kind = parse_kind(p.kind.as_deref()?).ok()??;
    let port = match (p.port, kind) {
        (Some(port), _) => port,
        (None, ProbeKind::Http) => 80,
        (None, ProbeKind::Https) => 443,
        (None, ProbeKind::Tcp) => {
            errors.push(format!("{path}.port"), "a tcp probe needs a port");
            0
        }
    };
    let interval = p.interval.unwrap_or(DEFAULT_INTERVAL);
    let timeout = p.timeout.unwrap_or(DEFAULT_TIMEOUT.min(interval / 2));
    if timeout >= interval {
        errors.push(
            format!("{path}.timeout"),
            format!("{timeout:?} must be below the interval ({interval:?})"),
        );
    }
    let fast_interval = p
        .fast_interval
        .unwrap_or((interval / 5).max(Duration::from_millis(50)));
    if fast_interval > interval {
        errors.push(
            format!("{path}.fast_interval"),
            format!("{fast_interval:?} must not exceed the interval ({interval:?})"),
        );
    }
    let method = p
        .method
        .as_deref()
        .and_then(|m| parse_method(m).ok())
        .unwrap_or(HttpMethod::Get);
    if method == HttpMethod::Head && p.expect_body.is_some() {
        errors.push(
            format!("{path}.expect_body"),
            "a HEAD response has no body to match: use GET",
        );
    }
    let expect_status = match &p.expect_status {
        Some(list) => list.iter().filter_map(|s| parse_status(s).ok()).collect(),
        None => vec![(200, 399)],
    };
    Some(ProbeSpec {
        kind,
        addr: SocketAddr::new(ip, port),
        host: p.host.clone().or(default_host),
        path: p.path.clone().unwrap_or_else(|| DEFAULT_PATH.to_owned()),
        method,
        expect_status,
        expect_body: p.expect_body.clone(),
        headers: p
            .headers
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tls_verify: p.tls_verify.unwrap_or(true),
        ca_file: p.ca_file.as_ref().map(PathBuf::from),
        ca_fingerprint: p
            .ca_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .map(|bytes| crate::policy::stable_hash(&bytes)),
        interval,
        timeout,
        fast_interval,
        rise: p.rise.unwrap_or(DEFAULT_RISE),
        fall: p.fall.unwrap_or(DEFAULT_FALL),
        initial_up: p
            .initial
            .as_deref()
            .and_then(|i| parse_up_down(i).ok())
            .unwrap_or(true),
        flap: FlapSpec {
            changes: p.flap_changes.unwrap_or(DEFAULT_FLAP_CHANGES),
            window: p.flap_window.unwrap_or(DEFAULT_FLAP_WINDOW),
            hold: p.flap_hold.unwrap_or(DEFAULT_FLAP_HOLD),
        },
        reuse_connections: kind == ProbeKind::Http && p.reuse_connections.unwrap_or(true),
        agent: None,
    })
}

/// `Ok(None)` for `none`.
fn parse_kind(s: &str) -> Result<Option<ProbeKind>, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "http" => Ok(Some(ProbeKind::Http)),
        "https" => Ok(Some(ProbeKind::Https)),
        "tcp" => Ok(Some(ProbeKind::Tcp)),
        "none" => Ok(None),
        other => Err(format!(
            "unknown probe kind {other:?} (expected http, https, tcp or none)"
        )),
    }
}

fn parse_method(s: &str) -> Result<HttpMethod, String> {
    match s.trim().to_ascii_uppercase().as_str() {
        "GET" => Ok(HttpMethod::Get),
        "HEAD" => Ok(HttpMethod::Head),
        other => Err(format!(
            "unsupported method {other:?} (expected GET or HEAD)"
        )),
    }
}

/// `"up"` → true, `"down"` → false.
pub fn parse_up_down(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "up" => Ok(true),
        "down" => Ok(false),
        other => Err(format!("{other:?} is neither \"up\" nor \"down\"")),
    }
}

fn parse_status(s: &StatusSpec) -> Result<(u16, u16), String> {
    let code = |v: u64| -> Result<u16, String> {
        u16::try_from(v)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("{v} is not an HTTP status code (100-599)"))
    };
    match s {
        StatusSpec::Code(c) => code(*c).map(|c| (c, c)),
        StatusSpec::Text(t) => {
            let t = t.trim();
            let parse = |x: &str| {
                x.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("invalid status {t:?} (expected e.g. 200 or \"200-399\")"))
                    .and_then(code)
            };
            match t.split_once('-') {
                None => parse(t).map(|c| (c, c)),
                Some((a, b)) => {
                    let (a, b) = (parse(a)?, parse(b)?);
                    if a > b {
                        return Err(format!("empty range {t:?}"));
                    }
                    Ok((a, b))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_specs() {
        assert_eq!(parse_status(&StatusSpec::Code(204)), Ok((204, 204)));
        assert_eq!(
            parse_status(&StatusSpec::Text("200-299".into())),
            Ok((200, 299))
        );
        assert_eq!(
            parse_status(&StatusSpec::Text("301".into())),
            Ok((301, 301))
        );
        assert!(parse_status(&StatusSpec::Text("399-200".into())).is_err());
        assert!(parse_status(&StatusSpec::Code(42)).is_err());
        assert!(parse_status(&StatusSpec::Text("2xx".into())).is_err());
    }

    #[test]
    fn later_layers_win_field_by_field() {
        let global = ProbeConfig {
            kind: Some("http".into()),
            interval: Some(Duration::from_secs(2)),
            path: Some("/healthz".into()),
            ..ProbeConfig::default()
        };
        let app = ProbeConfig {
            path: Some("/ready".into()),
            ..ProbeConfig::default()
        };
        let m = merge([&global, &app]);
        assert_eq!(m.kind.as_deref(), Some("http"));
        assert_eq!(m.interval, Some(Duration::from_secs(2)));
        assert_eq!(m.path.as_deref(), Some("/ready"));
    }

    #[test]
    fn defaults_are_derived_from_the_interval() {
        let mut e = Errors::default();
        let p = ProbeConfig {
            kind: Some("http".into()),
            interval: Some(Duration::from_secs(1)),
            ..ProbeConfig::default()
        };
        let s = resolve(&p, "127.0.0.1".parse().unwrap(), None, "x", &mut e).unwrap();
        assert!(e.is_empty());
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.fast_interval, Duration::from_millis(200));
        assert_eq!((s.rise, s.fall, s.initial_up), (2, 3, true));
        assert_eq!(s.expect_status, [(200, 399)]);
        assert_eq!(s.addr.port(), 80);
    }

    #[test]
    fn flap_damping_has_documented_defaults_and_merges_like_the_rest() {
        let mut e = Errors::default();
        let http = ProbeConfig {
            kind: Some("http".into()),
            ..ProbeConfig::default()
        };
        let s = resolve(&http, "127.0.0.1".parse().unwrap(), None, "x", &mut e).unwrap();
        assert!(e.is_empty());
        let minute = Duration::from_secs(60);
        assert_eq!(
            s.flap,
            FlapSpec {
                changes: 1,
                window: minute,
                hold: minute
            }
        );
        let defaults = ProbeConfig {
            flap_changes: Some(3),
            flap_hold: Some(Duration::from_secs(10)),
            ..http
        };
        let app = ProbeConfig {
            flap_changes: Some(0),
            ..ProbeConfig::default()
        };
        let m = merge([&defaults, &app]);
        let s = resolve(&m, "127.0.0.1".parse().unwrap(), None, "x", &mut e).unwrap();
        assert!(e.is_empty());
        assert_eq!(
            s.flap,
            FlapSpec {
                changes: 0,
                window: minute,
                hold: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn flap_settings_out_of_range_are_errors_at_their_path() {
        let mut e = Errors::default();
        let p = ProbeConfig {
            flap_changes: Some(21),
            flap_window: Some(Duration::from_millis(100)),
            flap_hold: Some(Duration::from_secs(7200)),
            ..ProbeConfig::default()
        };
        check_layer(&p, "health.defaults", &mut e);
        let errors: Vec<String> = e.into_vec().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("health.defaults.flap_changes: 21 is out of range 0..=20"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("health.defaults.flap_window: 100ms is out of range"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("health.defaults.flap_hold: 7200s is out of range"),
            "{errors:?}"
        );
        let mut e = Errors::default();
        let p = ProbeConfig {
            flap_changes: Some(0),
            flap_window: Some(Duration::from_millis(250)),
            flap_hold: Some(Duration::from_secs(3600)),
            ..ProbeConfig::default()
        };
        check_layer(&p, "apps[0].probe", &mut e);
        assert!(e.is_empty());
    }

    #[test]
    fn reuse_connections_is_on_by_default_and_only_for_http() {
        let ip = "127.0.0.1".parse().unwrap();
        let layer = |kind: &str, reuse: Option<bool>| ProbeConfig {
            kind: Some(kind.into()),
            port: Some(80),
            reuse_connections: reuse,
            ..ProbeConfig::default()
        };
        let resolved = |p: &ProbeConfig| {
            let mut e = Errors::default();
            let s = resolve(p, ip, None, "x", &mut e).unwrap();
            assert!(e.is_empty());
            s.reuse_connections
        };
        assert!(resolved(&layer("http", None)));
        assert!(resolved(&layer("http", Some(true))));
        assert!(!resolved(&layer("http", Some(false))));
        // https and tcp probes always connect fresh, by default too.
        assert!(!resolved(&layer("https", None)));
        assert!(!resolved(&layer("tcp", None)));
        // Set in [health.defaults] and merged into an https or tcp probe: fresh connections.
        for kind in ["https", "tcp"] {
            let defaults = layer("http", Some(true));
            let app = ProbeConfig {
                kind: Some(kind.into()),
                ..ProbeConfig::default()
            };
            assert!(!resolved(&merge([&defaults, &app])), "{kind}");
        }
        // Asked for in the very layer that makes the probe https or tcp: an error.
        for kind in ["https", "tcp"] {
            let mut e = Errors::default();
            check_layer(&layer(kind, Some(true)), "apps[0].probe", &mut e);
            let errors: Vec<String> = e.into_vec().iter().map(|e| e.to_string()).collect();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with(&format!(
                    "apps[0].probe.reuse_connections: applies to http probes only: {kind} probes"
                )),
                "{errors:?}"
            );
        }
        let mut e = Errors::default();
        check_layer(&layer("https", Some(false)), "apps[0].probe", &mut e);
        assert!(e.is_empty());
    }

    #[test]
    fn a_path_must_be_a_valid_request_target() {
        let check = |path: &str| {
            let mut e = Errors::default();
            let p = ProbeConfig {
                path: Some(path.into()),
                ..ProbeConfig::default()
            };
            check_layer(&p, "health.defaults", &mut e);
            e.is_empty()
        };
        assert!(check("/healthz?full=1"));
        assert!(!check("healthz"));
        assert!(!check("/health z"));
    }
}
