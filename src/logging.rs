//! Log setup: human-readable lines on stderr, filtered by `RUST_LOG`.
//!
//! hickory-server logs every request at INFO; at ~2 µs per line that would dominate the
//! query path, so its crates default to WARN unless `RUST_LOG` says otherwise.

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn";

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: journald and container log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
