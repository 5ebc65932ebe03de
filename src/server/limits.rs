//! What one client may hold: a connection slot, and a connection only while
//! it is doing something.
//!
//! A connection is in one of three phases: busy (a request is being served;
//! its body has `body_read_timeout`, enforced where it is read), awaiting a
//! request's headers (from accept, or from the first byte after an idle
//! spell: `header_read_timeout`), or idle between requests (`idle_timeout`).
//! hyper's own `header_read_timeout` is not used: its clock starts whenever
//! the connection waits for a request, idle keep-alives included, so it
//! would close every keep-alive connection after the header timeout and
//! `idle_timeout` could never be longer.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::body::{self, Body};
use crate::http::edge::Inner;
use crate::runtime::State;

/// One connection's phase, shared by its socket, its service and its watchdog.
pub(super) struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

struct Phase {
    /// Requests handed to the service whose answers are not yet sent.
    busy: usize,
    /// Whether bytes of a next request have arrived (or the connection is new).
    awaiting_head: bool,
    /// When the current phase began.
    since: Instant,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Activity {
            phase: Mutex::new(Phase {
                busy: 0,
                awaiting_head: true,
                since: Instant::now(),
            }),
            changed: Notify::new(),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Phase) -> R) -> R {
        f(&mut self.phase.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn bytes_arrived(&self) {
        let started = self.with(|p| {
            let idle = p.busy == 0 && !p.awaiting_head;
            if idle {
                p.awaiting_head = true;
                p.since = Instant::now();
            }
            idle
        });
        if started {
            self.changed.notify_one();
        }
    }

    /// Not told to the watchdog: a busy connection has no deadline, and a
    /// watchdog that wakes at the old one finds it busy and waits on.
    /// (Every wake-up cost a request a timer's reregistration.)
    fn begin(self: &Arc<Self>) -> Ticket {
        self.with(|p| {
            p.busy += 1;
            p.awaiting_head = false;
        });
        Ticket(self.clone())
    }

    /// Resolves when the connection should be closed, with the reason; the
    /// limits are read from the config serving at each change of phase.
    pub(super) async fn expired(&self, state: &State) -> &'static str {
        // One timer, moved rather than made anew at each change of phase,
        // and boxed: kept inline it made every open stream a kilobyte
        // larger (`bench.py streams`).
        let mut timer = Box::pin(tokio::time::sleep_until(Instant::now()));
        loop {
            let deadline = self.with(|p| {
                (p.busy == 0).then(|| {
                    let server = &state.current().config.server;
                    if p.awaiting_head {
                        (
                            p.since + server.header_read_timeout,
                            "request headers too slow",
                        )
                    } else {
                        (p.since + server.idle_timeout, "idle")
                    }
                })
            });
            match deadline {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    if timer.deadline() != at {
                        timer.as_mut().reset(at);
                    }
                    tokio::select! {
                        () = self.changed.notified() => {}
                        () = timer.as_mut() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request in service until its answer has been sent (or dropped).
struct Ticket(Arc<Activity>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.with(|p| {
            p.busy -= 1;
            if p.busy == 0 {
                p.since = Instant::now();
            }
        });
        self.0.changed.notify_one();
    }
}

/// The service for one connection: `inner`, with each request counted busy
/// from the moment its headers are parsed until its answer's last byte.
pub(super) fn tracked<S: Inner + Clone>(
    inner: S,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone {
    hyper::service::service_fn(move |req| {
        let ticket = activity.begin();
        let answer = inner.clone().oneshot(req);
        // Boxed: hyper keeps a slot for this future for the connection's
        // whole life, and the future is 4 KiB: an open stream would hold it
        // long after its answer's head went out.
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|b| body::with_guard(b, ticket)))
        })
    })
}

/// A socket that tells its connection's [`Activity`] when bytes arrive.
pub(super) struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub(super) fn new(io: T, activity: Arc<Activity>) -> Self {
        Watched { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How often a full accept loop looks again at `max_connections`, so a
/// reload that raises it takes effect without waiting for a close.
const RECHECK: Duration = Duration::from_secs(1);

/// `max_connections` slots, one set for all the accept loops of a process.
/// A slot is taken before `accept`, so beyond the cap new connections wait
/// in the kernel's backlog rather than costing a descriptor and a task each.
pub(super) struct Cap {
    slots: Arc<Semaphore>,
    sizing: Mutex<Sizing>,
}

#[derive(Default)]
struct Sizing {
    size: usize,
    /// Slots a lowered cap still has to take back as connections close.
    owed: usize,
}

impl Cap {
    pub(super) fn new() -> Self {
        Cap {
            slots: Arc::new(Semaphore::new(0)),
            sizing: Mutex::default(),
        }
    }

    /// Sizes the cap to `target`; whether slots are still owed after.
    fn resize(&self, target: usize) -> bool {
        let mut sizing = self.sizing.lock().unwrap_or_else(PoisonError::into_inner);
        if target > sizing.size {
            let more = target - sizing.size;
            let repaid = more.min(sizing.owed);
            sizing.owed -= repaid;
            self.slots.add_permits(more - repaid);
        } else {
            sizing.owed += sizing.size - target;
        }
        sizing.size = target;
        if sizing.owed > 0 {
            sizing.owed -= self.slots.forget_permits(sizing.owed);
        }
        sizing.owed > 0
    }

    /// A free slot, under the `max_connections` serving now.
    pub(super) async fn slot(&self, state: &State) -> OwnedSemaphorePermit {
        loop {
            let max = state.current().config.server.max_connections;
            let owed = self.resize(
                usize::try_from(max)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            );
            // While slots are owed none is free: wait for closes to repay them.
            if owed {
                tokio::time::sleep(RECHECK).await;
                continue;
            }
            let free = self.slots.clone().acquire_owned();
            if let Ok(Ok(slot)) = tokio::time::timeout(RECHECK, free).await {
                return slot;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Cap {
        fn owed(&self) -> usize {
            self.sizing.lock().unwrap().owed
        }
    }

    #[test]
    fn a_lowered_cap_takes_its_slots_back_as_they_are_returned() {
        let cap = Cap::new();
        assert!(!cap.resize(3));
        let held: Vec<_> = (0..3)
            .map(|_| cap.slots.clone().try_acquire_owned().unwrap())
            .collect();
        assert!(cap.resize(1));
        assert_eq!(cap.owed(), 2);
        drop(held);
        assert!(!cap.resize(1));
        assert_eq!((cap.owed(), cap.slots.available_permits()), (0, 1));
        cap.resize(4);
        assert_eq!(cap.slots.available_permits(), 4);
    }

    #[test]
    fn a_raised_cap_first_cancels_what_is_owed() {
        let cap = Cap::new();
        cap.resize(2);
        let held: Vec<_> = (0..2)
            .map(|_| cap.slots.clone().try_acquire_owned().unwrap())
            .collect();
        cap.resize(0);
        assert!(cap.resize(1));
        assert_eq!((cap.owed(), cap.slots.available_permits()), (1, 0));
        drop(held);
        assert!(!cap.resize(1));
        assert_eq!((cap.owed(), cap.slots.available_permits()), (0, 1));
    }
}
