//! The `gtmd` command line: `serve`, `check`, `--version`. All logic lives in the library.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use gtmd::server::Listeners;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "gtmd",
    version,
    about = "Global traffic manager: health-steered authoritative DNS for app zones"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS for the configured zones.
    Serve {
        #[arg(long, short, default_value = "config/gtmd.toml")]
        config: PathBuf,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Do not watch the config directory (reload on SIGHUP only).
        #[arg(long)]
        no_watch: bool,
    },
    /// Check a config file (the same parse, validation and build as serve) and exit.
    Check {
        #[arg(long, short, default_value = "config/gtmd.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve {
            config,
            log_format,
            no_watch,
        } => serve(&config, log_format, !no_watch),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match gtmd::load(path) {
        Ok(loaded) => {
            for w in &loaded.model.warnings {
                eprintln!("{}: warning: {w}", path.display());
            }
            for o in &loaded.overrides {
                let kind = if o.replaces_file { "warning" } else { "note" };
                eprintln!("{}: {kind}: {}", path.display(), override_line(o));
            }
            let s = loaded.summary;
            println!(
                "{}: ok: {} zone{}, {} record{}, {} app{}, {} cluster{}",
                path.display(),
                s.zones,
                plural(s.zones),
                s.records,
                plural(s.records),
                s.apps,
                plural(s.apps),
                s.clusters,
                plural(s.clusters),
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.errors {
                eprintln!("{}: {e}", errors.file.display());
            }
            eprintln!(
                "{}: {} error{}",
                errors.file.display(),
                errors.errors.len(),
                plural(errors.errors.len())
            );
            ExitCode::FAILURE
        }
    }
}

/// How an environment override is reported: the environment wins over the file.
fn override_line(o: &gtmd::config::EnvOverride) -> String {
    if o.replaces_file {
        format!(
            "{}: the file's value is not used: the environment variable {} overrides it (the environment wins over the file)",
            o.key, o.var
        )
    } else {
        format!("{}: set by the environment variable {}", o.key, o.var)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn serve(path: &std::path::Path, log_format: LogFormat, watch: bool) -> ExitCode {
    // Before any thread exists (see `heap::one_arena`).
    gtmd::heap::one_arena();
    // First, so the descriptor budget at start sees the raised limit; logged once logging
    // is up.
    let raised = gtmd::fdbudget::raise_soft_limit();
    // Startup failures are plain lines on stderr (one per problem), before logging starts.
    let loaded = match gtmd::load(path) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors.errors {
                eprintln!("gtmd: {}: {e}", errors.file.display());
            }
            return ExitCode::FAILURE;
        }
    };
    let listeners = match Listeners::bind(&loaded.model.server) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gtmd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Held to the end: the last log lines are written before gtmd exits.
    let _flush = gtmd::logging::init(matches!(log_format, LogFormat::Json));
    match raised {
        Ok(r) => info!(
            soft_before = r.soft_before,
            soft = r.soft,
            hard = r.hard,
            "file descriptor limit (RLIMIT_NOFILE): soft raised to the hard limit"
        ),
        Err(e) => warn!(error = %e, "cannot raise the file descriptor limit (RLIMIT_NOFILE)"),
    }
    let source = gtmd::server::ReloadSource {
        path: Some(path.to_path_buf()),
        sighup: true,
        watch,
    };
    for w in &loaded.model.warnings {
        warn!(config = %path.display(), "config warning: {w}");
    }
    for o in &loaded.overrides {
        if o.replaces_file {
            warn!(config = %path.display(), "{}", override_line(o));
        } else {
            info!(config = %path.display(), "{}", override_line(o));
        }
    }
    let s = loaded.summary;
    info!(
        config = %path.display(),
        zones = s.zones,
        records = s.records,
        apps = s.apps,
        clusters = s.clusters,
        "config loaded"
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            stderr_line(format_args!("gtmd: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        gtmd::server::run(loaded, listeners, source, stop_signals()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            stderr_line(format_args!("gtmd: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// A line on stderr once logging runs: unlike `eprintln!`, no panic when stderr is closed.
fn stderr_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One message per SIGINT or SIGTERM: the first starts the graceful stop, a second ends
/// its grace period at once. The handlers are installed here, before serving starts, so no
/// signal between the two is lost.
fn stop_signals() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    tokio::spawn(async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                error!("cannot listen for SIGTERM: {e}; stopping on Ctrl-C (SIGINT) only");
                while tokio::signal::ctrl_c().await.is_ok() {
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
                // Not even SIGINT: keep the channel open rather than stop at once.
                std::future::pending::<()>().await;
                return;
            }
        };
        loop {
            tokio::select! {
                Some(()) = term.recv() => {}
                Some(()) = int.recv() => {}
                else => return,
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    rx
}
