//! Loading the configuration: the TOML file, then `GTMD__SECTION__KEY` environment overrides.
//!
//! **The environment wins** over the file for every key it sets (12-factor: the platform
//! that runs gtmd decides addresses without editing a shared file). Never silently: each
//! override is listed by `gtmd check` and logged at start, with a warning when it replaces
//! a value the file sets ([`env_overrides`]).
//!
//! Layering goes through the `config` crate so that a container can change, say, the listen
//! addresses (`GTMD__SERVER__LISTEN=0.0.0.0:53,[::]:53`) without editing the mounted file.
//! Lists in the environment are comma-separated. Entries of arrays of tables (`[[apps]]`)
//! cannot be addressed from the environment; they live in the file.

mod duration;
mod error;
pub mod file;
mod read;
mod strict;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors, Errors};
pub use file::Config;
pub use read::{read, read_limited};

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The file read alone (the `toml` crate) and with an override (the `config` crate):
    /// `GTMD__SERVER__LISTEN` sets the value the file has, so both must read the same.
    fn both(text: &str) -> [Result<String, String>; 2] {
        let env = [(
            "GTMD__SERVER__LISTEN".to_owned(),
            "127.0.0.1:5353".to_owned(),
        )];
        let read = |env: &[(String, String)]| {
            super::parse_with_env(Path::new("t.toml"), text, env.iter().cloned())
                .map(|c| format!("{c:?}"))
                .map_err(|e| e.to_string())
        };
        [read(&[]), read(&env)]
    }

    #[test]
    fn the_file_alone_reads_as_through_the_config_crate() {
        let text = concat!(
            r#"
[server]
listen = ["127.0.0.1:5353"]
tcp_idle_timeout = 7
shutdown_grace = "1m 30s"
[health]
state_max_age = "2h"
[health.defaults]
kind = "http"
port = 8080
expect_status = [200, "300-399"]
headers = { "X-Probe.Id" = "gtmd", "accept" = "*/*" }
tls_verify = false
interval = "250ms"
[geo]
regions = [{ name = "eu", networks = ["10.0.0.0/8"] }]
"#,
            crate::test_support::t_test_zone!(),
            r#"[[clusters]]
name = "a"
ingress = ["192.0.2.10"]
lat = 50
lon = 8.5
[[apps]]
hostname = "X.t.test"
policy = "weighted"
targets = [{ cluster = "a", weight = 3, drain = true }]
pools = [{ name = "p", clusters = ["a"] }]
rules = [{ match = "region:eu", pools = ["p"] }, { match = ["default"], pools = ["p"] }]
"#
        );
        let [alone, layered] = both(text);
        assert!(alone.is_ok(), "{alone:?}");
        assert_eq!(alone, layered);
        // What only the `config` crate converts (a number where text is expected) is
        // still read as before, and what it refuses is refused with its message.
        let text = text.replace("path = ", "x = ").replace(
            "kind = \"http\"\nport = 8080",
            "kind = \"http\"\nport = 8080\npath = 5",
        );
        let [alone, layered] = both(&text);
        assert!(
            alone.as_ref().unwrap().contains("path: Some(\"5\")"),
            "{alone:?}"
        );
        assert_eq!(alone, layered);
        let quoted = text.replace("weight = 3", "weight = \"3\"");
        let [alone, layered] = both(&quoted);
        let alone = alone.unwrap_err();
        assert!(
            alone.contains("apps[0].targets[0].weight") && alone.contains("(app X.t.test)"),
            "{alone}"
        );
        assert!(layered.unwrap_err().starts_with(&alone));
    }

    #[test]
    fn overrides_name_their_key_and_whether_the_file_sets_it() {
        let env = [
            ("GTMD__SERVER__LISTEN".to_owned(), "0.0.0.0:53".to_owned()),
            ("GTMD__ADMIN__LISTEN".to_owned(), "0.0.0.0:9153".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let o = super::env_overrides("[server]\nlisten = [\"127.0.0.1:53\"]\n", env);
        assert_eq!(o.len(), 2);
        assert_eq!(
            (o[0].var.as_str(), o[0].key.as_str(), o[0].replaces_file),
            ("GTMD__ADMIN__LISTEN", "admin.listen", false)
        );
        assert_eq!(
            (o[1].var.as_str(), o[1].key.as_str(), o[1].replaces_file),
            ("GTMD__SERVER__LISTEN", "server.listen", true)
        );
    }
}

/// The environment variable prefix: `GTMD__SERVER__MAX_UDP_PAYLOAD=1400`.
pub const ENV_PREFIX: &str = "GTMD";

/// Keys whose environment value is a comma-separated list.
const ENV_LIST_KEYS: &[&str] = &["server.listen", "fleet.peers"];

/// Reads and deserializes the file at `path` with the process environment layered on top.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, std::env::vars())
}

/// Like [`load`], with an explicit environment (tests must not touch the process's own).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    // Read the file ourselves first: the `config` crate's message for a missing or unreadable
    // file is less clear than the OS error with the path.
    let text = read(path)?;
    parse_with_env(path, &text, env)
}

/// Deserializes `text` (the contents of `path`) with `env` layered on top.
pub fn parse_with_env(
    path: &Path,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    // The `config` crate reads an override's name as a key path, where `x[N]` grows a list
    // to N entries: `GTMD__ZONES[99999999999]` would exhaust memory. A name is letters,
    // digits and `_` (sections joined by `__`), as a shell variable's is; anything else is
    // refused before it reaches the crate.
    let mut names: Vec<&String> = env.keys().collect();
    names.sort_unstable();
    let bad: Vec<ConfigError> = names
        .into_iter()
        .filter(|k| !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|k| {
            ConfigError::new(
                "",
                format!(
                    "environment variable {k:?}: an override's name may hold only letters, \
                     digits and `_` (sections are joined by `__`)"
                ),
            )
        })
        .collect();
    if !bad.is_empty() {
        return Err(ConfigErrors {
            file: path.to_path_buf(),
            errors: bad,
        });
    }
    if env.is_empty()
        && let Ok(config) = toml::from_str::<Config>(text)
    {
        // The usual case, no override: the file alone, deserialized by the `toml` crate
        // (the parser the `config` crate uses too) without the `config` crate's value tree,
        // its copy and its merge: a third of the time of the path below at 10,000 apps.
        // Only a file that the path below accepts, with the same values, is accepted here:
        // both deserialize into the same types, with the same strictness (`strict`,
        // `duration`, `deny_unknown_fields`), and the `config` crate adds only conversions
        // (a number where a string is expected, a TOML date as text, a dotted top-level key
        // as a path), which this path refuses. A file refused here goes through the path
        // below, so every error, its key path and its app name are the ones it gives.
        return Ok(config);
    }
    // Errors cannot tell a value from the file from one set in the environment: say which
    // overrides were in effect so a bad one is not hunted for in the file.
    let hint = |mut e: ConfigError| {
        if !env.is_empty() {
            let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
            keys.sort_unstable();
            e.message = format!(
                "{} (environment overrides in effect: {})",
                e.message,
                keys.join(", ")
            );
        }
        e
    };
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .source(Some(env.clone()));
    for key in ENV_LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(environment)
        .build()
        .map_err(|e| ConfigErrors::single(path, hint(from_config_error(e))))?;
    // `try_deserialize` consumes the value: keep a copy to name the app of an error.
    let names = built.clone();
    built.try_deserialize::<Config>().map_err(|e| {
        let e = name_the_app(&names, from_config_error(e));
        ConfigErrors::single(path, hint(e))
    })
}

/// Adds the app's hostname to an error under `apps[N]`: an index alone is hard to find in
/// a file of hundreds of apps.
fn name_the_app(built: &config::Config, mut e: ConfigError) -> ConfigError {
    let index = e
        .path
        .strip_prefix("apps[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    if let Some(i) = index
        && let Ok(host) = built.get_string(&format!("apps[{i}].hostname"))
    {
        e.message = format!("{} (app {host})", e.message);
    }
    e
}

/// One `GTMD__…` environment variable in effect: the key it sets, and whether the file
/// sets that key too (the environment wins: the file's value is not used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOverride {
    /// The variable, e.g. `GTMD__SERVER__LISTEN`.
    pub var: String,
    /// The key it sets, e.g. `server.listen`.
    pub key: String,
    /// The file sets this key too, and its value is replaced.
    pub replaces_file: bool,
}

/// The environment overrides in `env` (sorted by name) for the file `text`: the
/// environment always wins over the file, so a key set in both is reported, for a log
/// line or `gtmd check`, never silently replaced.
pub fn env_overrides(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<EnvOverride> {
    let prefix = format!("{ENV_PREFIX}__");
    let vars: Vec<String> = env
        .into_iter()
        .map(|(var, _)| var)
        .filter(|var| var.starts_with(&prefix))
        .collect();
    if vars.is_empty() {
        // The usual case: no second parse of the file (at 10,000 apps it costs a third of
        // the load time and 40 MiB of peak memory).
        return Vec::new();
    }
    let file = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .ok();
    let mut out: Vec<EnvOverride> = vars
        .into_iter()
        .filter_map(|var| {
            let key = var
                .strip_prefix(&prefix)?
                .to_ascii_lowercase()
                .replace("__", ".");
            let replaces_file = file
                .as_ref()
                .is_some_and(|f| f.get::<config::Value>(&key).is_ok());
            Some(EnvOverride {
                var,
                key,
                replaces_file,
            })
        })
        .collect();
    out.sort_by(|a, b| a.var.cmp(&b.var));
    out
}

/// Turns the `config` crate's error into ours, keeping its key path when it has one.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    let mut e = from_config_error_raw(e);
    e.path = normalize_path(&e.path);
    e
}

/// The `config` crate writes `apps[0]targets[1]`; we write `apps[0].targets[1]` everywhere.
fn normalize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    let mut prev = None;
    for c in path.chars() {
        if prev == Some(']') && c != '.' && c != '[' {
            out.push('.');
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

fn from_config_error_raw(e: config::ConfigError) -> ConfigError {
    match e {
        config::ConfigError::Type {
            origin: _,
            unexpected,
            expected,
            key,
        } => ConfigError::new(
            key.unwrap_or_default(),
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        config::ConfigError::At {
            error,
            origin: _,
            key,
        } => {
            let inner = from_config_error_raw(*error);
            let path = match (key, inner.path.is_empty()) {
                (Some(k), true) => k,
                (Some(k), false) if !inner.path.starts_with(&k) => format!("{k}.{}", inner.path),
                _ => inner.path,
            };
            ConfigError::new(path, inner.message)
        }
        config::ConfigError::Message(m) => ConfigError::new("", m),
        config::ConfigError::NotFound(k) => ConfigError::new(k, "missing"),
        other => ConfigError::new("", other.to_string()),
    }
}
