//! Thread per core: each worker thread runs a single-threaded runtime of
//! its own, accepts from the one listening socket, and serves a connection
//! whole on the thread that took it, its upstream connections included
//! (the upstream pool is per thread too, see [`crate::upstream::Client`]).
//!
//! On tokio's work-stealing runtime a proxied request hopped threads on its
//! way (the client's connection task, the answer's channel) and idle
//! threads were woken to look for work: a third of a request's CPU, user
//! and kernel time alike (benches/README.md, issue 15). nginx's workers and
//! pingora's no-steal runtime are built the same way. The price is that a
//! request busy on the CPU (counting a long conversation's tokens) delays
//! the other connections of its thread, not of the process.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::{serve, Shared};
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

/// Serves `listener` on `workers` threads until `shutdown`, then lets each
/// drain its connections for up to `drain`. Returns once every worker has.
/// Dropping the future stops the workers too.
pub async fn run_workers(
    listener: TcpListener,
    workers: usize,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let shared = Arc::new(Shared::new(state));
    let (stop, stopped) = watch::channel(false);
    let mut ended = Vec::with_capacity(workers);
    for n in 0..workers.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Each thread polls its own registration of the one socket.
        let listener = {
            let _in = runtime.enter();
            TcpListener::from_std(listener.try_clone()?)?
        };
        let (shared, mut stopped) = (shared.clone(), stopped.clone());
        let (done, end) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("hermes-worker-{n}"))
            .spawn(move || {
                // A dropped sender stops the worker as a sent stop does.
                let stop = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                let _ = done.send(runtime.block_on(serve(listener, shared, stop, drain)));
            })?;
        ended.push(end);
    }
    drop(listener);
    shutdown.await;
    tracing::info!("stopped accepting; draining in-flight requests (up to {drain:?})");
    let _ = stop.send(true);
    let mut in_time = true;
    for end in ended {
        // A worker that panicked has nothing left to drain.
        in_time &= end.await.unwrap_or(true);
    }
    if !in_time {
        tracing::warn!("drain timed out; closing remaining connections");
    }
    Ok(())
}
