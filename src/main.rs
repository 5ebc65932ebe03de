//! Thin: command line -> config -> server.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hermes_proxy::cli::{self, Cli, Command, ConfigAction, LogFormat};
use hermes_proxy::config::check_listen;
use hermes_proxy::http::lines::{Guard, Lines};
use hermes_proxy::runtime::reload::{self, ConfigSource};
use hermes_proxy::runtime::State;
use hermes_proxy::server;

/// Per-thread caches: glibc's malloc and free were a sixth of the
/// instructions of a proxied request (benches/README.md, issue 15).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long a stop waits for in-flight requests before closing them.
const DRAIN: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log = init_logging(cli.log_format);
    // Requests are served on the workers' own runtimes (server::run_workers);
    // this one runs the command, signals, reloads and background work.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    match code {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let source = cli.source()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => Ok(cli::check(&source)),
        Command::Models { probe } => match source.parse() {
            Ok(c) => Ok(cli::models(&c, probe).await),
            Err(errors) => Ok(report(&errors)),
        },
        Command::Config {
            action: ConfigAction::Show,
        } => match source.parse() {
            Ok(c) => {
                print!("{}", cli::show(&c));
                Ok(0)
            }
            Err(errors) => Ok(report(&errors)),
        },
        Command::Serve => serve(source, cli.listen).await,
    }
}
fn report(errors: &[hermes_proxy::config::ConfigError]) -> i32 {
    for e in errors {
        eprintln!("{e}");
    }
    2
}

async fn serve(source: cli::Source, listen: Option<std::net::SocketAddr>) -> anyhow::Result<i32> {
    let mut config = match source.parse() {
        Ok(c) => c,
        Err(errors) => return Ok(report(&errors)),
    };
    if let Some(addr) = listen {
        config.server.listen = addr;
    }
    if let Err(message) = check_listen(&config.server.listen, &config.server.keys) {
        eprintln!("error: {message}");
        return Ok(2);
    }
    let workers = match server::worker_count() {
        Ok(n) => n,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(2);
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let addr = config.server.listen;
    let enabled: Vec<String> = config
        .providers
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.name.clone())
        .collect();
    let routes: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
    let state = match State::with_source(config, source.path.clone().map(ConfigSource::from_env)) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: {e} (set `path` under [store] in the config)");
            return Ok(2);
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(
        "hermes-proxy listening on http://{}/v1 (config: {}; routes: {}; enabled providers: {}; {workers} worker threads)",
        listener.local_addr()?,
        source.label,
        routes.join(", "),
        enabled.join(", ")
    );
    // Kept alive for as long as the server runs: dropping it stops the watching.
    let _watcher = match reload::watch(state.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                "cannot watch {} for changes ({e}); reload with SIGHUP or POST /admin/reload",
                source.label
            );
            None
        }
    };
    reload::on_sighup(state.clone());
    server::run_workers(listener, workers, state, server::shutdown_signal(), DRAIN).await?;
    tracing::info!("stopped");
    Ok(0)
}

/// Every log line goes through one batching writer: a request never waits
/// on stderr (nor wakes a thread for it), and lines beyond its buffer are
/// dropped and counted rather than stalling requests. The guard writes what
/// is left at exit.
fn init_logging(format: LogFormat) -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (lines, guard) = Lines::start(std::io::stderr());
    let access = lines.clone();
    hermes_proxy::http::access::install(
        Box::new(move |line| access.push(line)),
        format == LogFormat::Json,
    );
    // Colour codes only for a terminal: a log file or pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || lines.clone())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
