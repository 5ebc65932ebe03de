//! The pooled HTTP client every provider request goes through: rustls with
//! webpki roots (and `SSL_CERT_FILE`'s, [`trust`]), HTTP/2 where the
//! upstream offers it by ALPN, and a pool of connections per thread. A
//! pooled connection is driven by a task of the runtime that opened it; with
//! one pool per worker thread ([`crate::server::run_workers`]) a request's
//! upstream connection is served by its own thread, as nginx's workers keep
//! their own keep-alive pools, rather than waking another thread for every
//! exchange.
//!
//! The agent's `web_fetch` uses the same client type with a
//! [`FilteredResolver`]: the addresses a name resolves to are checked before
//! the connector sees them, so it connects only to addresses that passed.

mod pool;
pub mod trust;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Parts, PathAndQuery};
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

use crate::body::{from_incoming, Body, BoxError};
use pool::{Conn, Origin, Pool, Returning};

/// Providers use the system resolver as it is (`R` defaults to it); only
/// `web_fetch` plugs in a [`FilteredResolver`].
#[derive(Clone)]
pub struct Client<R = GaiResolver> {
    connector: HttpsConnector<HttpConnector<R>>,
    pool: Arc<Pool>,
}

/// Why a request never produced a response.
#[derive(Debug)]
pub enum SendError {
    Connect(String),
    /// A [`FilteredResolver`] refused every address the host resolved to.
    Refused(String),
    Other(String),
}

/// How long an idle upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

impl Client {
    pub fn new(connect_timeout: Duration) -> Self {
        Client::with_resolver(connect_timeout, GaiResolver::new(), 256)
    }
}

/// What went wrong with one try on one connection.
enum Failed {
    /// The connection was closed before the request went out: it can go
    /// on another connection.
    Unsent(Box<Request<Body>>),
    Other(String),
}

impl<R> Client<R>
where
    R: tower::Service<Name> + Clone + Send + Sync + 'static,
    HttpsConnector<HttpConnector<R>>: tower::Service<
            Uri,
            Response = hyper_rustls::MaybeHttpsStream<
                hyper_util::rt::TokioIo<tokio::net::TcpStream>,
            >,
            Error = BoxError,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    pub fn with_resolver(connect_timeout: Duration, resolver: R, max_idle_per_host: usize) -> Self {
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(trust::roots())
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Client {
            connector: https,
            pool: Arc::new(Pool::new(max_idle_per_host, IDLE_TIMEOUT)),
        }
    }

    /// Sends `req` (an absolute URI) on an idle connection of this thread's
    /// pool, else on a new one. A request that a pooled connection closed
    /// under before sending it goes once more, on a new connection.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Body>, SendError> {
        let target = req.uri().clone();
        let Some((origin, idle)) = self.pool.checkout(&target) else {
            return Err(SendError::Other(format!(
                "cannot send to `{target}`: the URL has no scheme or host"
            )));
        };
        let (mut conn, mut reused) = match idle {
            Some(conn) => (conn, true),
            None => (self.connect(&target, &origin).await?, false),
        };
        loop {
            match self.try_send(conn, req, &target, &origin).await {
                Ok(resp) => return Ok(resp),
                Err(Failed::Unsent(back)) if reused => {
                    req = *back;
                    conn = self.connect(&target, &origin).await?;
                    reused = false;
                }
                Err(Failed::Unsent(_)) => {
                    return Err(SendError::Other(
                        "the upstream closed a new connection before the request was sent".into(),
                    ))
                }
                Err(Failed::Other(message)) => return Err(SendError::Other(message)),
            }
        }
    }

    async fn try_send(
        &self,
        conn: Conn,
        mut req: Request<Body>,
        target: &Uri,
        origin: &Arc<Origin>,
    ) -> Result<Response<Body>, Failed> {
        match conn {
            Conn::H1(mut sender) => {
                if sender.ready().await.is_err() {
                    return Err(Failed::Unsent(Box::new(req)));
                }
                // HTTP/2 names the host in `:authority`; HTTP/1 needs the header.
                if !req.headers().contains_key(header::HOST) {
                    let host = host_header(target).map_err(Failed::Other)?;
                    req.headers_mut().insert(header::HOST, host);
                }
                *req.uri_mut() = origin_form(target);
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        let pool = self.pool.clone();
                        Ok(resp
                            .map(|body| Returning::new(body, pool, origin.clone(), sender).boxed()))
                    }
                    Err(mut e) => Err(unsent_or(e.take_message(), target, e.error())),
                }
            }
            // The pool holds the connection's handle still: nothing goes back.
            Conn::H2(mut sender) => {
                if sender.ready().await.is_err() {
                    return Err(Failed::Unsent(Box::new(req)));
                }
                match sender.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(from_incoming)),
                    Err(mut e) => Err(unsent_or(e.take_message(), target, e.error())),
                }
            }
        }
    }

    /// A new connection to `target`'s origin, HTTP/2 when TLS's ALPN says
    /// so (then shared through the pool at once), driven by a task of this
    /// thread's runtime. Boxed: its TLS and HTTP/2 handshakes would make every request's
    /// future kilobytes larger, copied whenever it moves, for a path that
    /// a pooled request never takes.
    fn connect<'a>(
        &'a self,
        target: &'a Uri,
        origin: &'a Arc<Origin>,
    ) -> Pin<Box<dyn Future<Output = Result<Conn, SendError>> + Send + 'a>> {
        Box::pin(self.open(target, origin))
    }

    async fn open(&self, target: &Uri, origin: &Arc<Origin>) -> Result<Conn, SendError> {
        let connect_error = |e: &(dyn std::error::Error + 'static)| match refusal(e) {
            Some(message) => SendError::Refused(message),
            None => SendError::Connect(error_chain(e)),
        };
        let io = self
            .connector
            .clone()
            .oneshot(target.clone())
            .await
            .map_err(|e| connect_error(&*e))?;
        if io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| connect_error(&e))?;
            drive(conn);
            self.pool.put(origin, Conn::H2(sender.clone()));
            Ok(Conn::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(|e| connect_error(&e))?;
            drive(conn);
            Ok(Conn::H1(sender))
        }
    }
}

/// Runs a connection's I/O in a task of this thread's runtime until it closes.
fn drive(conn: impl Future<Output = Result<(), hyper::Error>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
}

/// The request back when it never went out (with the absolute URI the next
/// connection needs), else the error.
fn unsent_or(unsent: Option<Request<Body>>, target: &Uri, error: &hyper::Error) -> Failed {
    match unsent {
        Some(mut req) => {
            *req.uri_mut() = target.clone();
            Failed::Unsent(Box::new(req))
        }
        None => Failed::Other(error_chain(error)),
    }
}

/// `/path?query`, what an HTTP/1 request line carries.
fn origin_form(uri: &Uri) -> Uri {
    let mut parts = Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_default()
}

/// The `Host` header for `uri`: the port only when it is not the scheme's own.
pub(crate) fn host_header(uri: &Uri) -> Result<HeaderValue, String> {
    let host = uri
        .host()
        .ok_or_else(|| format!("cannot send to `{uri}`: the URL has no host"))?;
    match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), scheme)
            if !matches!((scheme, port), (Some("http"), 80) | (Some("https"), 443)) =>
        {
            HeaderValue::try_from(format!("{host}:{port}"))
        }
        _ => HeaderValue::try_from(host),
    }
    .map_err(|e| format!("cannot send to `{uri}`: {e}"))
}

/// The [`AddressRefused`] somewhere in an error's chain, as its message
/// alone: the layers above it ("client error (Connect): dns error") say
/// nothing a reader needs.
fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<AddressRefused>() {
            return Some(refused.to_string());
        }
        source = s.source();
    }
    None
}

/// The error and its causes on one line: hyper's top-level message alone
/// ("client error (Connect)") tells a user nothing.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Whether a resolved address may be connected to.
pub type AddrPolicy = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Resolves a name (through `overrides` first, else the system resolver)
/// and keeps only the addresses `allow` accepts. Literal IP hosts never reach
/// a resolver (the connector parses them itself): callers check those.
#[derive(Clone)]
pub struct FilteredResolver {
    allow: AddrPolicy,
    overrides: Arc<[(String, IpAddr)]>,
}

impl FilteredResolver {
    pub fn new(allow: AddrPolicy, overrides: Vec<(String, IpAddr)>) -> Self {
        FilteredResolver {
            allow,
            overrides: overrides.into(),
        }
    }

    async fn resolve(self, host: String) -> Result<std::vec::IntoIter<SocketAddr>, BoxError> {
        let found: Vec<IpAddr> = match self
            .overrides
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&host))
        {
            Some((_, ip)) => vec![*ip],
            None => tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect(),
        };
        let kept: Vec<SocketAddr> = found
            .iter()
            .filter(|ip| (self.allow)(**ip))
            .map(|ip| SocketAddr::new(*ip, 0))
            .collect();
        if kept.is_empty() && !found.is_empty() {
            return Err(Box::new(AddressRefused { host, found }));
        }
        Ok(kept.into_iter())
    }
}

impl tower::Service<Name> for FilteredResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(self.clone().resolve(name.as_str().to_owned()))
    }
}

/// Every address a host resolved to was refused by the policy.
#[derive(Debug)]
pub struct AddressRefused {
    pub host: String,
    pub found: Vec<IpAddr>,
}

impl std::fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let found: Vec<String> = self.found.iter().map(IpAddr::to_string).collect();
        write!(
            f,
            "{} resolves only to refused addresses ({})",
            self.host,
            found.join(", ")
        )
    }
}

impl std::error::Error for AddressRefused {}
