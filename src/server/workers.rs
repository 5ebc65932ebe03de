//! Thread per core: each worker thread runs a single-threaded runtime of
//! its own and serves a connection whole on the thread it was handed to,
//! its upstream connections included (the upstream pool is per thread too,
//! see [`crate::upstream::Client`]).
//!
//! On tokio's work-stealing runtime a proxied request hopped threads on its
//! way (the client's connection task, the answer's channel) and idle
//! threads were woken to look for work: a third of a request's CPU, user
//! and kernel time alike (benches/README.md, issue 15). nginx's workers and
//! pingora's no-steal runtime are built the same way. The price is that a
//! request busy on the CPU (counting a long conversation's tokens) delays
//! the other connections of its thread, not of the process.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::{accept, drained, stopping, Connections, Shared};
use crate::runtime::State;

/// The variable tokio reads for its own runtime's thread count; the same
/// knob here.
const THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// How many worker threads serve: `TOKIO_WORKER_THREADS` if set, else one
/// per core.
pub fn worker_count() -> Result<usize, String> {
    match std::env::var(THREADS_VAR) {
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{THREADS_VAR} must be a whole number of threads above 0, not `{value}`"
            )),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, NonZeroUsize::get)),
    }
}

/// A connection handed to a worker: its socket (out of the accepting
/// runtime, into the worker's), and what it holds while open.
struct Handed {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    held: (OwnedSemaphorePermit, Open),
}

/// Counts a worker's open connections while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `listener` on `workers` threads until `shutdown`, then lets each
/// drain its connections for up to `drain`. Returns once every worker has.
/// Dropping the future stops the workers too.
///
/// The calling runtime accepts, and hands each connection to the worker
/// with the fewest open: workers that each accepted for themselves took
/// what came while they waited, and a run of connections arriving at once
/// could all land on one (a core saturated, the other idle).
pub async fn run_workers(
    listener: TcpListener,
    workers: usize,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(state));
    let mut handoffs = Vec::with_capacity(workers);
    let mut ended = Vec::with_capacity(workers);
    for n in 0..workers.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (handoff, mut handed) = mpsc::unbounded_channel::<Handed>();
        let (done, end) = oneshot::channel();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("hermes-worker-{n}"))
            .spawn(move || {
                let drained = runtime.block_on(async move {
                    let connections = Connections::new(shared);
                    // Until the accepting side stops (or is dropped).
                    while let Some(Handed { stream, peer, held }) = handed.recv().await {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => connections.serve(stream, peer, held),
                            Err(e) => tracing::warn!(%peer, "cannot serve a connection: {e}"),
                        }
                    }
                    connections.drain(drain).await
                });
                let _ = done.send(drained);
            })?;
        handoffs.push((handoff, Arc::new(AtomicUsize::new(0))));
        ended.push(end);
    }
    accept(listener, &shared, shutdown, |stream, peer, slot| {
        // A worker whose runtime died (it panicked) takes no more.
        let Some((handoff, open)) = handoffs
            .iter()
            .filter(|(handoff, _)| !handoff.is_closed())
            .min_by_key(|(_, open)| open.load(Ordering::Relaxed))
        else {
            return;
        };
        match stream.into_std() {
            Ok(stream) => {
                open.fetch_add(1, Ordering::Relaxed);
                let held = (slot, Open(open.clone()));
                let _ = handoff.send(Handed { stream, peer, held });
            }
            Err(e) => tracing::warn!(%peer, "cannot hand a connection over: {e}"),
        }
    })
    .await;
    stopping(drain);
    drop(handoffs);
    let mut in_time = true;
    for end in ended {
        // A worker that panicked has nothing left to drain.
        in_time &= end.await.unwrap_or(true);
    }
    drained(in_time);
    Ok(())
}
