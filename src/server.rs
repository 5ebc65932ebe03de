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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::http;
use crate::runtime::State;
use limits::{Activity, Cap, Watched};

pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let service = http::service(state.clone());
    let mut cap = Cap::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = cap.slot(&state) => slot,
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
        let activity = Activity::new();
        let conn = builder
            .serve_connection(
                TokioIo::new(Watched::new(stream, activity.clone())),
                limits::tracked(service.clone(), activity.clone()),
            )
            .into_owned();
        let conn = graceful.watch(conn);
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(%peer, "connection ended: {e}");
                },
                why = activity.expired(&state) => {
                    tracing::debug!(%peer, "connection closed: {why}");
                }
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; draining in-flight requests (up to {drain:?})");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
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
