//! The pooled HTTP client every provider request goes through: rustls with
//! webpki roots, HTTP/2 where the upstream offers it by ALPN, and a pool of
//! connections per thread. A pooled connection is driven by a task of the
//! runtime that opened it; with one pool per worker thread
//! ([`crate::server::run_workers`]) a request's upstream connection is
//! served by its own thread, as nginx's workers keep their own keep-alive
//! pools, rather than waking another thread for every exchange.
//!
//! The agent's `web_fetch` uses the same client type with a
//! [`FilteredResolver`]: the addresses a name resolves to are checked before
//! the connector sees them, so it connects only to addresses that passed.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use thread_local::ThreadLocal;

use crate::body::{from_incoming, Body, BoxError};

/// Providers use the system resolver as it is (`R` defaults to it); only
/// `web_fetch` plugs in a [`FilteredResolver`].
#[derive(Clone)]
pub struct Client<R: Send + 'static = GaiResolver> {
    connector: HttpsConnector<HttpConnector<R>>,
    max_idle_per_host: usize,
    /// Made on a thread's first request.
    per_thread: Arc<ThreadLocal<HyperClient<HttpsConnector<HttpConnector<R>>, Body>>>,
}

/// Why a request never produced a response.
#[derive(Debug)]
pub enum SendError {
    Connect(String),
    /// A [`FilteredResolver`] refused every address the host resolved to.
    Refused(String),
    Other(String),
}

impl Client {
    pub fn new(connect_timeout: Duration) -> Self {
        Client::with_resolver(connect_timeout, GaiResolver::new(), 256)
    }
}

impl<R: Send + 'static> Client<R>
where
    R: Clone,
    HttpsConnector<HttpConnector<R>>: Connect + Clone + Send + Sync + 'static,
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
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Client {
            connector: https,
            max_idle_per_host,
            per_thread: Arc::new(ThreadLocal::new()),
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, SendError> {
        let client = self.per_thread.get_or(|| {
            HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(self.max_idle_per_host)
                .build(self.connector.clone())
        });
        match client.request(req).await {
            Ok(resp) => Ok(resp.map(from_incoming)),
            Err(e) => Err(match refusal(&e) {
                Some(message) => SendError::Refused(message),
                None if e.is_connect() => SendError::Connect(error_chain(&e)),
                None => SendError::Other(error_chain(&e)),
            }),
        }
    }
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
