//! Drive-by use from web pages. Any page a user visits can make the browser
//! send requests to `127.0.0.1`, and a `text/plain` POST needs no preflight,
//! so CORS headers alone do not stop a page from spending the user's
//! provider credit: the request is served, only the reading is blocked (and
//! with `cors_origins = ["*"]` not even that). So a proxy without client
//! keys refuses, on every endpoint, a request from a page whose origin is
//! not local unless `cors_origins` names it, and a request addressed to a
//! host name that is not loopback (DNS rebinding: a page whose name resolves
//! to 127.0.0.1 is same-origin with the proxy, but its requests still carry
//! its own name in `Host`). With client keys a page would need a key, so
//! `cors_origins` applies as written and `Host` is not checked.

use std::net::IpAddr;

use http::{header, HeaderMap, Uri};

use crate::config::Server;
use crate::error::ApiError;

/// Why a request from a browser is refused, if it is.
pub fn refusal(server: &Server, headers: &HeaderMap, uri: &Uri) -> Option<ApiError> {
    if !server.keys.is_empty() {
        return None;
    }
    let host = headers
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .or_else(|| uri.authority().map(|a| a.as_str().into()));
    if let Some(host) = host.filter(|h| !is_loopback_host(h)) {
        return Some(ApiError::HostNotAllowed(host.into_owned()));
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = String::from_utf8_lossy(origin.as_bytes());
    let listed = server.cors_origins.iter().any(|o| *o == origin);
    (!listed && !is_local_origin(&origin)).then(|| ApiError::OriginNotAllowed(origin.into_owned()))
}

/// `http(s)://` on a loopback host (any port), or a desktop app's own
/// scheme. `null` (a sandboxed frame, a redirect) is not local.
pub fn is_local_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" | "app" | "tauri" | "vscode-webview" => true,
        "http" | "https" => !rest.contains(['/', '@', '?', '#']) && is_loopback_host(rest),
        _ => false,
    }
}

/// `localhost`, `*.localhost`, `127.0.0.0/8` or `[::1]`, with or without a port.
pub fn is_loopback_host(host_and_port: &str) -> bool {
    let host = match host_and_port.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip, port)) if port.is_empty() || is_port(port) => ip,
            _ => return false,
        },
        None => match host_and_port.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => host_and_port,
        },
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // What nearly every local client sends, without parsing an address.
    if host == "127.0.0.1" {
        return true;
    }
    let named = host.as_bytes();
    let suffix = b".localhost";
    if named.eq_ignore_ascii_case(&suffix[1..])
        || named.len() > suffix.len()
            && named[named.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    {
        return true;
    }
    if host_and_port.starts_with('[') {
        return host
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(text: &str) -> bool {
    text.strip_prefix(':')
        .unwrap_or(text)
        .parse::<u16>()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_localhost_its_subdomains_and_loopback_addresses() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "app.localhost:3000",
            "App.LocalHost.",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.test",
            "evil.test:8080",
            "localhost.evil.test",
            "127.0.0.1.evil.test",
            "localhostx",
            "10.0.0.1:8080",
            "0.0.0.0:8080",
            "192.168.1.2",
            "[::2]:80",
            "[::ffff:8.8.8.8]",
            "[::1]x",
            "::1",
            "127.0.0.1:99999",
            "127.0.0.1:port",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn local_origins_are_loopback_pages_and_desktop_apps_but_not_null() {
        for origin in [
            "http://localhost:3000",
            "https://localhost",
            "http://chat.localhost:5173",
            "http://127.0.0.1:8080",
            "http://127.0.0.2",
            "http://[::1]:3000",
            "file://",
            "app://obsidian.md",
            "tauri://localhost",
            "vscode-webview://1abc",
        ] {
            assert!(is_local_origin(origin), "{origin}");
        }
        for origin in [
            "null",
            "https://evil.example",
            "http://evil.test:8080",
            "http://localhost.evil.example",
            "http://localhost@evil.example",
            "http://evil.example/localhost",
            "ftp://localhost",
            "chrome-extension://abcdef",
            "localhost",
            "",
        ] {
            assert!(!is_local_origin(origin), "{origin}");
        }
    }

    fn server(keys: bool, origins: &[&str]) -> Server {
        let text = format!(
            "[server]\ncors_origins = {origins:?}\n{}\
             [providers.demo]\nkind = \"mock\"\n\
             [routes.main]\ntargets = [{{ provider = \"demo\", model = \"demo\" }}]\n",
            if keys {
                "[[server.keys]]\nname = \"a\"\nkey_env = \"K\"\n"
            } else {
                ""
            }
        );
        crate::config::parse(&text, "t.toml", &|_| Some("sk-test-key".into()))
            .unwrap()
            .server
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    fn code(server: &Server, pairs: &[(&'static str, &str)]) -> Option<&'static str> {
        refusal(server, &headers(pairs), &Uri::from_static("/v1/models")).map(|e| e.code())
    }

    #[test]
    fn without_keys_a_foreign_origin_is_refused_unless_listed_by_name() {
        let star = server(false, &["*"]);
        let listed = server(false, &["*", "https://app.example"]);
        let page = [
            ("host", "127.0.0.1:8080"),
            ("origin", "https://app.example"),
        ];
        assert_eq!(code(&star, &page), Some("origin_not_allowed"));
        assert_eq!(code(&listed, &page), None);
        let null = [("host", "127.0.0.1:8080"), ("origin", "null")];
        assert_eq!(code(&star, &null), Some("origin_not_allowed"));
        let local = [
            ("host", "localhost:8080"),
            ("origin", "http://localhost:3000"),
        ];
        assert_eq!(code(&star, &local), None);
        assert_eq!(code(&star, &[("host", "127.0.0.1:8080")]), None);
        let message = refusal(&star, &headers(&page), &Uri::from_static("/"))
            .unwrap()
            .to_string();
        assert!(
            message.contains("`https://app.example`")
                && message.contains("cors_origins = [\"https://app.example\"]")
                && message.contains("[server]"),
            "{message}"
        );
    }

    #[test]
    fn without_keys_a_host_that_is_not_loopback_is_refused() {
        let star = server(false, &["*"]);
        assert_eq!(
            code(&star, &[("host", "evil.test:8080")]),
            Some("host_not_allowed")
        );
        // Listing the page's origin does not admit a rebound host name.
        let listed = server(false, &["http://evil.test:8080"]);
        let rebound = [
            ("host", "evil.test:8080"),
            ("origin", "http://evil.test:8080"),
        ];
        assert_eq!(code(&listed, &rebound), Some("host_not_allowed"));
        // HTTP/2 names the host in the authority instead.
        let h2 = refusal(
            &star,
            &HeaderMap::new(),
            &Uri::from_static("http://evil.test:8080/health"),
        );
        assert_eq!(h2.map(|e| e.code()), Some("host_not_allowed"));
    }

    #[test]
    fn with_keys_neither_origin_nor_host_is_refused_here() {
        let keyed = server(true, &["https://app.example"]);
        let foreign = [
            ("host", "proxy.internal:8080"),
            ("origin", "https://evil.example"),
        ];
        assert_eq!(code(&keyed, &foreign), None);
    }
}
