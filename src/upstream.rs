//! The pooled HTTP client every provider request goes through: one pool for
//! the whole process, rustls with webpki roots, HTTP/2 where the upstream
//! offers it by ALPN.

use std::time::Duration;

use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use crate::body::{from_incoming, Body};

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Body>,
}

/// Why a request never produced a response.
#[derive(Debug)]
pub enum SendError {
    Connect(String),
    Other(String),
}

impl Client {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
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
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Client { inner }
    }

    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, SendError> {
        match self.inner.request(req).await {
            Ok(resp) => Ok(resp.map(from_incoming)),
            Err(e) if e.is_connect() => Err(SendError::Connect(error_chain(&e))),
            Err(e) => Err(SendError::Other(error_chain(&e))),
        }
    }
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
