//! `web_fetch`: a page as text, through the proxy's own HTTP client.
//!
//! The sandbox: names are resolved by a [`FilteredResolver`] that hands the
//! connector only addresses the [`WebPolicy`] allows, so the checked address
//! is the one connected to (a DNS answer that changes between a check and
//! the connect cannot slip through); IP-literal hosts, which the connector
//! never resolves, are checked here. Redirects are followed by hand, each
//! hop checked the same way.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE, LOCATION, USER_AGENT};
use http::{Request, Uri};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::web_policy::WebPolicy;
use super::{cap, Done, Fail};
use crate::body;
use crate::upstream::{AddrPolicy, Client, FilteredResolver, SendError};

const MAX_REDIRECTS: usize = 5;
/// Most bytes of a response body read; the rest is never downloaded.
const MAX_BODY: usize = 2 * 1024 * 1024;
/// Most bytes of text returned.
const MAX_TEXT: usize = 256 * 1024;
/// Columns html2text wraps at.
const WIDTH: usize = 100;

pub(super) fn schema() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "web_fetch",
            "description": "Fetch a web page (http or https) and answer its text; HTML is \
                            reduced to readable text, capped at 256 KiB.",
            "parameters": {
                "type": "object",
                "properties": {
                    "url": {"type": "string", "description": "An http:// or https:// URL"}
                },
                "required": ["url"]
            }
        }
    })
}

#[derive(Deserialize)]
pub(super) struct Args {
    url: String,
}

pub(super) struct Web {
    client: Client<FilteredResolver>,
    policy: WebPolicy,
}

impl Web {
    pub(super) fn new(policy: WebPolicy, connect_timeout: Duration) -> Web {
        let checked = policy.clone();
        let allow: AddrPolicy = Arc::new(move |ip| checked.allows(ip));
        let resolver = FilteredResolver::new(allow, policy.resolve.clone());
        Web {
            client: Client::with_resolver(connect_timeout, resolver, 4),
            policy,
        }
    }

    pub(super) async fn fetch(&self, args: Args) -> Done {
        let mut uri = start(&args.url)?;
        let mut hops = 0;
        loop {
            self.check_literal(&uri)?;
            let req = Request::get(uri.clone())
                .header(
                    USER_AGENT,
                    concat!("hermes-proxy/", env!("CARGO_PKG_VERSION")),
                )
                .header(ACCEPT, "text/html, text/plain;q=0.9, */*;q=0.5")
                .body(body::empty())
                .map_err(|e| Fail::error(format!("invalid url {uri}: {e}")))?;
            let resp = self.client.send(req).await.map_err(|e| match e {
                SendError::Refused(m) => Fail::refused(format!("{uri}: {m}")),
                SendError::Connect(m) => Fail::error(format!("cannot connect to {uri}: {m}")),
                SendError::Other(m) => Fail::error(format!("{uri}: {m}")),
            })?;
            let status = resp.status();
            let location = resp.headers().get(LOCATION).cloned();
            if status.is_redirection() {
                if let Some(location) = location {
                    if hops == MAX_REDIRECTS {
                        return Err(Fail::error(format!(
                            "more than {MAX_REDIRECTS} redirects, the last to {uri}"
                        )));
                    }
                    let location = location
                        .to_str()
                        .map_err(|_| Fail::error("a redirect to an unreadable location"))?;
                    uri = redirect(&uri, location)?;
                    hops += 1;
                    continue;
                }
            }
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let (bytes, cut) = read_capped(resp.into_body()).await?;
            // Reducing 2 MiB of HTML takes a while: not on an async worker,
            // where nothing (not even the tool's timeout) could interrupt it.
            let text = tokio::task::spawn_blocking(move || to_text(&bytes, &content_type))
                .await
                .map_err(|e| Fail::error(format!("reading the page failed: {e}")))??;
            let text = cap(text, MAX_TEXT, "the page");
            let text = if cut {
                format!("{text}\n[cut: only the first 2 MiB of the page were read]")
            } else {
                text
            };
            if !status.is_success() {
                return Err(Fail::error(format!("HTTP {status} from {uri}\n{text}")));
            }
            return Ok(text);
        }
    }

    /// The connector never resolves an IP-literal host, so the resolver's
    /// check does not see it: this one does.
    fn check_literal(&self, uri: &Uri) -> Result<(), Fail> {
        let host = uri.host().unwrap_or("");
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if !self.policy.allows(ip) {
                return Err(Fail::refused(format!(
                    "{uri}: {ip} is not a public address"
                )));
            }
        }
        Ok(())
    }
}

/// The URL the model gave: http or https, with a host.
fn start(url: &str) -> Result<Uri, Fail> {
    let url = url.trim();
    match scheme(url).as_deref() {
        Some("http") | Some("https") => {}
        Some(other) => {
            return Err(Fail::refused(format!(
                "only http and https URLs are fetched, not {other}:"
            )))
        }
        None => return Err(Fail::error(format!("not an absolute http(s) URL: {url}"))),
    }
    absolute(url)
}

fn absolute(url: &str) -> Result<Uri, Fail> {
    let without_fragment = url.split('#').next().unwrap_or(url);
    let uri: Uri = without_fragment
        .parse()
        .map_err(|e| Fail::error(format!("invalid url {url}: {e}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(Fail::error(format!("the url has no host: {url}")));
    }
    Ok(uri)
}

/// The lowercased scheme of an absolute URL, None for a relative reference.
fn scheme(url: &str) -> Option<String> {
    let (head, _) = url.split_once(':')?;
    let mut chars = head.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then(|| head.to_ascii_lowercase())
}

/// Where a redirect from `from` to `location` goes; never to another scheme
/// than http(s), never from https down to http.
fn redirect(from: &Uri, location: &str) -> Result<Uri, Fail> {
    let from_scheme = from.scheme_str().unwrap_or("http").to_ascii_lowercase();
    let authority = from.authority().map(|a| a.as_str()).unwrap_or("");
    let target = match scheme(location) {
        Some(_) => location.to_owned(),
        None if location.starts_with("//") => format!("{from_scheme}:{location}"),
        None if location.starts_with('/') => format!("{from_scheme}://{authority}{location}"),
        None => {
            let path = from.path();
            let base = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            let base = if base.is_empty() { "/" } else { base };
            let location = match location.strip_prefix('?') {
                Some(query) => {
                    return absolute(&format!("{from_scheme}://{authority}{path}?{query}"))
                }
                None => location,
            };
            format!("{from_scheme}://{authority}{base}{location}")
        }
    };
    match scheme(&target).as_deref() {
        Some("https") => {}
        Some("http") if from_scheme == "http" => {}
        Some("http") => {
            return Err(Fail::refused(format!(
                "redirect from https down to http: {target}"
            )))
        }
        other => {
            return Err(Fail::refused(format!(
                "redirect to a {}: URL: {target}",
                other.unwrap_or("relative")
            )))
        }
    }
    absolute(&target)
}

/// The body, at most [`MAX_BODY`] bytes of it; true when it was cut.
async fn read_capped(mut body: body::Body) -> Result<(Vec<u8>, bool), Fail> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Fail::error(format!("reading the page failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let room = MAX_BODY - bytes.len();
            if data.len() > room {
                bytes.extend_from_slice(&data[..room]);
                return Ok((bytes, true));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok((bytes, false))
}

fn to_text(bytes: &[u8], content_type: &str) -> Result<String, Fail> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let html = media.contains("html") || (media.is_empty() && looks_like_html(bytes));
    if html {
        return html2text::from_read(bytes, WIDTH)
            .map_err(|e| Fail::error(format!("cannot read the HTML: {e}")));
    }
    let textual = media.is_empty()
        || media.starts_with("text/")
        || ["json", "xml", "javascript", "yaml", "csv", "toml"]
            .iter()
            .any(|t| media.contains(t));
    if !textual {
        return Err(Fail::error(format!(
            "not a text page ({media}, {} bytes)",
            bytes.len()
        )));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn looks_like_html(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
    let head = head.trim_start();
    head.starts_with("<!doctype html") || head.starts_with("<html")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn redirects_resolve_like_a_browser() {
        let from = uri("https://a.example/docs/page?x=1");
        let to = |loc: &str| redirect(&from, loc).map(|u| u.to_string());
        assert_eq!(to("/root").unwrap(), "https://a.example/root");
        assert_eq!(to("other").unwrap(), "https://a.example/docs/other");
        assert_eq!(to("?y=2").unwrap(), "https://a.example/docs/page?y=2");
        assert_eq!(to("//b.example/x").unwrap(), "https://b.example/x");
        assert_eq!(to("https://c.example/#frag").unwrap(), "https://c.example/");
    }

    #[test]
    fn redirects_never_leave_http_nor_downgrade() {
        let from = uri("https://a.example/");
        for loc in [
            "http://a.example/",
            "file:///etc/passwd",
            "gopher://x/",
            "FILE:///x",
        ] {
            let fail = redirect(&from, loc).unwrap_err();
            assert_eq!(fail.outcome, super::super::Outcome::Refused, "{loc}");
        }
        assert!(redirect(&uri("http://a.example/"), "https://a.example/").is_ok());
    }

    #[test]
    fn html_becomes_text_and_binary_is_refused() {
        let text = to_text(
            b"<html><body><h1>Title</h1><p>Some <b>bold</b> words</p></body></html>",
            "text/html; charset=utf-8",
        )
        .unwrap();
        assert!(
            text.contains("Title") && text.contains("bold") && !text.contains("<b>"),
            "{text}"
        );
        assert_eq!(to_text(b"plain", "text/plain").unwrap(), "plain");
        assert!(to_text(b"\x89PNG", "image/png").is_err());
        assert!(to_text(b"<!DOCTYPE html><p>x</p>", "")
            .unwrap()
            .contains('x'));
    }
}
