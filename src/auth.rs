//! Client keys: who is calling, what they may use, and how fast.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::HeaderMap;

use crate::cluster::gcra::Limit;
use crate::cluster::Cluster;
use crate::config::{ClientKey, Secret};
use crate::error::ApiError;

pub struct Auth {
    keys: Vec<Key>,
    /// With `[cluster]`, a key's `rpm` is counted across the replicas.
    cluster: Option<Arc<Cluster>>,
}

struct Key {
    name: String,
    secret: Option<Secret>,
    rpm: Option<NonZeroU32>,
    limiter: Option<DefaultDirectRateLimiter>,
    routes: Option<Vec<String>>,
}

/// The caller, once its key matched.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub name: &'a str,
    routes: Option<&'a [String]>,
}

impl Principal<'_> {
    /// `label` is a route name or `provider/*`; `*` in the allowlist admits all.
    pub fn may_use(&self, label: &str) -> bool {
        self.routes
            .is_none_or(|routes| routes.iter().any(|r| r == "*" || r == label))
    }

    /// Whether a model id as listed (`route` or `provider/model`) is usable.
    pub fn may_see(&self, model_id: &str) -> bool {
        match model_id.split_once('/') {
            Some((provider, _)) => self.may_use(&format!("{provider}/*")),
            None => self.may_use(model_id),
        }
    }
}

impl Auth {
    pub fn new(keys: &[ClientKey], cluster: Option<Arc<Cluster>>) -> Self {
        let keys = keys
            .iter()
            .map(|k| {
                let rpm = k.rpm.and_then(NonZeroU32::new);
                Key {
                    name: k.name.clone(),
                    secret: k.key.clone(),
                    rpm,
                    limiter: rpm.map(|rpm| RateLimiter::direct(Quota::per_minute(rpm))),
                    routes: k.routes.clone(),
                }
            })
            .collect();
        Auth { keys, cluster }
    }

    /// `Ok(None)`: no keys are configured, so the proxy is open (which config
    /// validation allows only on a loopback address).
    pub async fn check(&self, headers: &HeaderMap) -> Result<Option<Principal<'_>>, ApiError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let presented = presented_key(headers).ok_or(ApiError::InvalidApiKey)?;
        // Compare against every key so timing does not reveal which one matched.
        let mut found = None;
        for key in &self.keys {
            if let Some(secret) = &key.secret {
                if secret.matches(presented) {
                    found = Some(key);
                }
            }
        }
        let key = found.ok_or(ApiError::InvalidApiKey)?;
        if let Err(wait) = self.admit(key).await {
            return Err(ApiError::KeyRateLimited {
                retry_after: wait.max(Duration::from_millis(1)),
            });
        }
        Ok(Some(Principal {
            name: &key.name,
            routes: key.routes.as_deref(),
        }))
    }
}

impl Auth {
    /// One request against `key`'s `rpm`: counted in Redis with `[cluster]`,
    /// locally without it or while Redis is away.
    async fn admit(&self, key: &Key) -> Result<(), Duration> {
        let (Some(rpm), Some(limiter)) = (key.rpm, &key.limiter) else {
            return Ok(());
        };
        if let Some(cluster) = &self.cluster {
            let per_minute = u64::from(rpm.get());
            let limit = Limit {
                key: cluster.key("key_limit", &[&key.name]),
                per_minute,
                burst: per_minute,
                cost: 1,
            };
            if let Some(verdict) = cluster.admit(&[limit]).await {
                return verdict;
            }
        }
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        return bearer_token(headers);
    }
    const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");
    headers.get(&X_API_KEY)?.to_str().ok().map(str::trim)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rpm: Option<u32>, routes: Option<Vec<&str>>) -> ClientKey {
        ClientKey {
            name: "team-a".into(),
            key_env: "K".into(),
            key: Some(Secret::new("sk-team-a".into())),
            rpm,
            routes: routes.map(|r| r.into_iter().map(String::from).collect()),
        }
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn accepts_bearer_and_x_api_key_and_rejects_others() {
        let auth = Auth::new(&[key(None, None)], None);
        assert!(auth
            .check(&headers("authorization", "Bearer sk-team-a"))
            .await
            .unwrap()
            .is_some());
        assert!(auth
            .check(&headers("x-api-key", "sk-team-a"))
            .await
            .unwrap()
            .is_some());
        assert!(matches!(
            auth.check(&headers("authorization", "Bearer sk-team-b"))
                .await,
            Err(ApiError::InvalidApiKey)
        ));
        assert!(matches!(
            auth.check(&HeaderMap::new()).await,
            Err(ApiError::InvalidApiKey)
        ));
    }

    #[tokio::test]
    async fn limits_each_key_to_its_rpm_with_a_retry_hint() {
        let auth = Auth::new(&[key(Some(2), None)], None);
        let h = headers("x-api-key", "sk-team-a");
        assert!(auth.check(&h).await.is_ok());
        assert!(auth.check(&h).await.is_ok());
        match auth.check(&h).await {
            Err(ApiError::KeyRateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(30))
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn allowlist_admits_only_listed_routes() {
        let auth = Auth::new(&[key(None, Some(vec!["default"]))], None);
        let p = auth
            .check(&headers("x-api-key", "sk-team-a"))
            .await
            .unwrap()
            .unwrap();
        assert!(p.may_use("default"));
        assert!(!p.may_use("premium"));
    }
}
