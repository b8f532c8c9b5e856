//! Log setup: human-readable lines on stderr, filtered by `RUST_LOG`.
//!
//! hickory-server logs every request at INFO; at ~2 µs per line that would dominate the
//! query path, so its crates default to WARN unless `RUST_LOG` says otherwise.

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn";

/// Installs the global subscriber: text lines, or one JSON object per line (`json`).
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: journald and container log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_ansi(ansi).try_init()
    };
}
