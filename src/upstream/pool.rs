//! Idle upstream connections, kept per thread and per origin.
//!
//! Written here rather than taken from hyper_util's legacy client: per
//! request that client hashed its (scheme, authority) key with SipHash three
//! times, raced a lazily built connect against the checkout, and spawned a
//! task to hand an HTTP/1 connection back once it was idle, about 8,000 of
//! a proxied request's 93,000 instructions (benches/README.md). Here a
//! thread's few origins are a short list compared as strings, with nothing
//! hashed or allocated, and an HTTP/1 connection goes back when its
//! answer's body ends ([`Returning`]).

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::{http1, http2};
use thread_local::ThreadLocal;
use tokio::time::Instant;

use crate::body::{Body, BoxError};

/// An origin as a request's URI names it: scheme and authority.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Origin {
    scheme: Box<str>,
    authority: Box<str>,
}

impl Origin {
    fn matches(&self, scheme: &str, authority: &str) -> bool {
        *self.authority == *authority && *self.scheme == *scheme
    }
}

/// One connection's handle: HTTP/1 takes one request at a time, HTTP/2 is
/// shared by every request to its origin.
pub(super) enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }
}

struct Host {
    origin: Arc<Origin>,
    /// Oldest first; taken from the back, where connections are warmest.
    idle: Vec<(Conn, Instant)>,
}

/// The idle connections of each thread.
pub(super) struct Pool {
    per_thread: ThreadLocal<RefCell<Vec<Host>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

/// Beyond this many origins a thread forgets those without idle
/// connections (`web_fetch` visits many; providers are a handful).
const ORIGINS_KEPT: usize = 32;

impl Pool {
    pub(super) fn new(max_idle_per_host: usize, idle_timeout: Duration) -> Self {
        Pool {
            per_thread: ThreadLocal::new(),
            max_idle_per_host,
            idle_timeout,
        }
    }

    /// An idle connection still worth keeping: open, and not idle too long.
    fn usable(&self, conn: &Conn, idle_since: Instant, now: Instant) -> bool {
        !conn.is_closed() && now.duration_since(idle_since) < self.idle_timeout
    }

    fn hosts(&self) -> &RefCell<Vec<Host>> {
        self.per_thread.get_or(Default::default)
    }

    /// `uri`'s origin, and an idle connection to it that is still open, if
    /// this thread has one. `None` for a URI without scheme or authority.
    pub(super) fn checkout(&self, uri: &Uri) -> Option<(Arc<Origin>, Option<Conn>)> {
        let (scheme, authority) = (uri.scheme_str()?, uri.authority()?.as_str());
        let mut hosts = self.hosts().borrow_mut();
        let at = match hosts
            .iter()
            .position(|h| h.origin.matches(scheme, authority))
        {
            Some(at) => at,
            None => {
                if hosts.len() >= ORIGINS_KEPT {
                    hosts.retain(|h| !h.idle.is_empty());
                }
                hosts.push(Host {
                    origin: Arc::new(Origin {
                        scheme: scheme.into(),
                        authority: authority.into(),
                    }),
                    idle: Vec::new(),
                });
                hosts.len() - 1
            }
        };
        let host = &mut hosts[at];
        let now = Instant::now();
        while let Some((conn, since)) = host.idle.pop() {
            if !self.usable(&conn, since, now) {
                continue;
            }
            // HTTP/2 serves this request and stays for the next ones, its
            // idle time counted from now: a busy connection does not age out.
            if let Conn::H2(shared) = &conn {
                host.idle.push((Conn::H2(shared.clone()), now));
            }
            return Some((host.origin.clone(), Some(conn)));
        }
        Some((host.origin.clone(), None))
    }

    /// Keeps `conn` for `origin`'s next request on this thread.
    pub(super) fn put(&self, origin: &Arc<Origin>, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let mut hosts = self.hosts().borrow_mut();
        let Some(host) = hosts.iter_mut().find(|h| Arc::ptr_eq(&h.origin, origin)) else {
            return; // forgotten meanwhile: let the connection close
        };
        let now = Instant::now();
        host.idle.retain(|(c, since)| self.usable(c, *since, now));
        if let Conn::H2(_) = conn {
            // One shared handle per connection is enough.
            if host.idle.iter().any(|(c, _)| matches!(c, Conn::H2(_))) {
                return;
            }
        }
        if host.idle.len() < self.max_idle_per_host {
            host.idle.push((conn, now));
        }
    }
}

/// An HTTP/1 answer's body that hands its connection back to the pool when
/// it ends. Dropped before its end, it closes the connection instead (hyper
/// cannot reuse a connection with an answer half read).
pub(super) struct Returning {
    inner: hyper::body::Incoming,
    to: Option<(Arc<Pool>, Arc<Origin>, http1::SendRequest<Body>)>,
}

impl Returning {
    pub(super) fn new(
        inner: hyper::body::Incoming,
        pool: Arc<Pool>,
        origin: Arc<Origin>,
        conn: http1::SendRequest<Body>,
    ) -> Self {
        let mut body = Returning {
            inner,
            to: Some((pool, origin, conn)),
        };
        // An empty answer (a 204, a HEAD) is over already.
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        if let Some((pool, origin, conn)) = self.to.take() {
            pool.put(&origin, Conn::H1(conn));
        }
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.to = None,
            _ => {}
        }
        polled.map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_of(pool: &Pool, uri: &str) -> Arc<Origin> {
        pool.checkout(&uri.parse().unwrap()).unwrap().0
    }

    #[test]
    fn an_origin_is_its_scheme_and_authority_and_is_made_once_per_thread() {
        let pool = Pool::new(4, Duration::from_secs(90));
        let a = origin_of(&pool, "http://127.0.0.1:8080/v1/chat/completions");
        let again = origin_of(&pool, "http://127.0.0.1:8080/v1/models");
        assert!(Arc::ptr_eq(&a, &again));
        let https = origin_of(&pool, "https://127.0.0.1:8080/v1/models");
        let port = origin_of(&pool, "http://127.0.0.1:8081/v1/models");
        assert!(!Arc::ptr_eq(&a, &https) && !Arc::ptr_eq(&a, &port));
        assert!(pool.checkout(&"/v1/models".parse().unwrap()).is_none());
        // On another thread, another list.
        let elsewhere = std::thread::scope(|s| {
            s.spawn(|| origin_of(&pool, "http://127.0.0.1:8080/v1/models"))
                .join()
                .unwrap()
        });
        assert!(!Arc::ptr_eq(&a, &elsewhere));
        assert_eq!(*a, *elsewhere);
    }

    #[test]
    fn past_its_limit_a_thread_forgets_origins_without_idle_connections() {
        let pool = Pool::new(4, Duration::from_secs(90));
        for port in 0..ORIGINS_KEPT + 5 {
            origin_of(&pool, &format!("http://127.0.0.1:{}/", 10_000 + port));
        }
        assert!(pool.hosts().borrow().len() <= ORIGINS_KEPT);
    }
}
