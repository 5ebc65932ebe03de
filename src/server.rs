//! The accept loop: HTTP/1.1 and h2c on one port, and a graceful stop.
//!
//! Stopping is told in three steps: `shutdown` resolves, so the loop stops
//! accepting and drops the listener; every open connection is asked to
//! finish what it is serving (streams included) and then close; the loop
//! waits for them at most `drain` before returning anyway.
//!
//! Clients are held to `[server]`'s limits (see [`limits`]): at most
//! `max_connections` at once, and none kept open while it sends nothing.

mod limits;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use crate::http;
use crate::runtime::State;
use limits::{Activity, Cap, Watched};
pub use workers::{run_workers, worker_count};

/// Serves `listener` on the calling runtime (the tests' way; the binary
/// serves on worker threads, [`run_workers`]).
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let shared = Arc::new(Shared::new(state));
    let connections = Connections::new(shared.clone());
    accept(listener, &shared, shutdown, |stream, peer, slot| {
        connections.serve(stream, peer, slot);
    })
    .await;
    stopping(drain);
    drained(connections.drain(drain).await);
}

/// What a stop logs as it begins, and as it ends.
fn stopping(drain: Duration) {
    tracing::info!("stopped accepting; draining in-flight requests (up to {drain:?})");
}

fn drained(in_time: bool) {
    if !in_time {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}

/// What every accept loop and worker of a process shares: the
/// `max_connections` slots above all.
struct Shared {
    state: Arc<State>,
    builders: Builders,
    cap: Cap,
}

impl Shared {
    fn new(state: Arc<State>) -> Self {
        Shared {
            state,
            builders: Builders::new(),
            cap: Cap::new(),
        }
    }
}

/// Takes connections off `listener` until `shutdown`, each with its
/// `max_connections` slot, and hands them to `serve`; drops the listener
/// when it stops.
async fn accept(
    listener: TcpListener,
    shared: &Shared,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = shared.cap.slot(&shared.state) => slot,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        serve(stream, peer, slot);
    }
}

/// The connections one runtime serves, and their graceful stop.
struct Connections<S> {
    shared: Arc<Shared>,
    service: S,
    /// Taken at the stop: a connection whose first bytes come later is
    /// closed instead of served, and the stop does not wait for one that
    /// never sends any.
    graceful: Arc<Mutex<Option<GracefulShutdown>>>,
}

impl Connections<()> {
    fn new(shared: Arc<Shared>) -> Connections<impl http::edge::Inner + Clone> {
        Connections {
            service: http::service(shared.state.clone()),
            shared,
            graceful: Arc::new(Mutex::new(Some(GracefulShutdown::new()))),
        }
    }
}

impl<S: http::edge::Inner + Clone> Connections<S> {
    /// Serves `stream` in a task of the calling runtime; `held` (its slot)
    /// is kept for as long as the connection is open.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, held: impl Send + 'static) {
        let activity = Activity::new();
        let (shared, service) = (self.shared.clone(), self.service.clone());
        let graceful = self.graceful.clone();
        tokio::spawn(async move {
            let _held = held;
            // Built here rather than by the caller: the connection's future
            // lives in this task's, not in both.
            let serve = async {
                let builder = shared.builders.for_stream(&stream).await;
                let conn = builder
                    .serve_connection(
                        TokioIo::new(Watched::new(stream, activity.clone())),
                        limits::tracked(service, activity.clone()),
                    )
                    .into_owned();
                let watched = lock(&graceful).as_ref().map(|g| g.watch(conn));
                match watched {
                    Some(served) => served.await,
                    None => Ok(()),
                }
            };
            tokio::select! {
                ended = serve => if let Err(e) = ended {
                    tracing::debug!(%peer, "connection ended: {e}");
                },
                why = activity.expired(&shared.state) => {
                    tracing::debug!(%peer, "connection closed: {why}");
                }
            }
        });
    }

    /// Asks every connection to finish what it is serving and close, and
    /// waits up to `drain` for them; whether they all ended in time.
    async fn drain(&self, drain: Duration) -> bool {
        let Some(graceful) = lock(&self.graceful).take() else {
            return true;
        };
        tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_ok()
    }
}

fn lock(graceful: &Mutex<Option<GracefulShutdown>>) -> MutexGuard<'_, Option<GracefulShutdown>> {
    graceful.lock().unwrap_or_else(|e| e.into_inner())
}

/// A builder for each HTTP version a connection's first bytes may announce.
/// The auto builder hands the bytes it peeks at (looking for HTTP/2's
/// preface) to HTTP/1 as a read of their own, which doubles HTTP/1's read
/// buffer to 16 KiB a connection: a third of an open stream's memory. A
/// connection whose first bytes already tell is served by a one-version
/// builder instead.
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
    either: auto::Builder<TokioExecutor>,
}

/// What an HTTP/2 connection without TLS (h2c, prior knowledge) opens with.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Builders {
    fn new() -> Self {
        let either = || auto::Builder::new(TokioExecutor::new());
        Builders {
            http1: either().http1_only(),
            http2: either().http2_only(),
            either: either(),
        }
    }

    /// Waits for the connection's first bytes (without reading them).
    async fn for_stream(&self, stream: &tokio::net::TcpStream) -> &auto::Builder<TokioExecutor> {
        let mut first = [0u8; PREFACE.len()];
        match stream.peek(&mut first).await {
            Ok(n) if n > 0 && first[..n] != PREFACE[..n] => &self.http1,
            Ok(n) if n == PREFACE.len() => &self.http2,
            // Closed, failed, or a preface cut short: let hyper tell.
            _ => &self.either,
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
