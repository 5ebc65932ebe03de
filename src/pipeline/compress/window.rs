//! Context windows: what each target can take.
//!
//! A target's window is the smallest one its upstream has stated (in a
//! context-length error, or in a probe answer that holds one; remembered
//! here), else its `context_window` from routes.toml: a server knows its own
//! limit better than a configuration written for another one, so the next
//! request is compressed before it is sent.

use std::sync::Mutex;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::config::ProviderKind;
use crate::route::{ByTarget, Target};
use crate::upstream::Client;

/// Limits learned from context-length errors or asked of local servers,
/// per target. `None`: asked, and the server did not say.
#[derive(Debug, Default)]
pub struct Windows {
    learned: Mutex<ByTarget<Option<u32>>>,
}

/// A local server that does not answer a window probe within this is not waited for.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

impl Windows {
    /// Remembers a window the upstream stated; the smallest statement holds,
    /// since an upstream that refused a size once will refuse it again.
    pub fn learn(&self, provider: &str, model: &str, window: u32) {
        let mut map = self.lock();
        let known = map
            .entry(provider.to_owned())
            .or_default()
            .entry(model.to_owned())
            .or_default();
        *known = Some(known.map_or(window, |k| k.min(window)));
    }

    /// The window in force for `candidate` ([`Windows::of`]). A target on
    /// an OpenAI-wire server with no configured window is asked once, if
    /// the server is local (vLLM `/v1/models` `max_model_len`, llama.cpp
    /// `/props` `n_ctx`, Ollama `/api/show`); the answer, or its absence,
    /// is remembered, as is that a remote one was not asked.
    pub async fn window(&self, client: &Client, candidate: &Target) -> Option<u32> {
        let provider = &candidate.provider;
        let asked = self.stated(candidate);
        if asked.is_some()
            || candidate.context_window.is_some()
            || provider.kind != ProviderKind::OpenAi
        {
            return Self::in_force(asked.flatten(), candidate);
        }
        let found = match provider.base_url.as_deref().filter(|b| is_local(b)) {
            Some(base) => tokio::time::timeout(
                DISCOVERY_TIMEOUT,
                probe_window(client, base, &candidate.model),
            )
            .await
            .ok()
            .flatten(),
            None => None,
        };
        if let Some(window) = found {
            tracing::info!(provider = %provider.name, model = %candidate.model, window, "discovered the context window");
        }
        self.lock()
            .entry(provider.name.clone())
            .or_default()
            .entry(candidate.model.clone())
            .or_insert(found);
        self.of(candidate)
    }

    /// The window in force: a stated one smaller than the configured one wins.
    pub fn of(&self, candidate: &Target) -> Option<u32> {
        Self::in_force(self.stated(candidate).flatten(), candidate)
    }

    /// What is remembered for the target: `None` if never asked or told.
    fn stated(&self, candidate: &Target) -> Option<Option<u32>> {
        let map = self.lock();
        map.get(&candidate.provider.name)?
            .get(&candidate.model)
            .copied()
    }

    fn in_force(stated: Option<u32>, candidate: &Target) -> Option<u32> {
        match (stated, candidate.context_window) {
            (Some(s), Some(c)) => Some(s.min(c)),
            (s, c) => s.or(c),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByTarget<Option<u32>>> {
        self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Loopback and private addresses: where vLLM, llama.cpp and Ollama run.
fn is_local(base_url: &str) -> bool {
    let host = base_url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    host == "localhost"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_private())
}

/// Ollama's default `num_ctx`: it truncates prompts beyond it silently.
const OLLAMA_DEFAULT_NUM_CTX: u64 = 4096;

/// Only a positive window that fits a u32 is a statement; 0 or an overflow
/// is a server saying nothing useful.
fn window_of(n: u64) -> Option<u32> {
    u32::try_from(n).ok().filter(|&n| n > 0)
}

async fn probe_window(client: &Client, base: &str, model: &str) -> Option<u32> {
    let root = base.strip_suffix("/v1").unwrap_or(base);
    // vLLM
    if let Some(v) = get_json(client, Method::GET, &format!("{base}/models"), None).await {
        let listed = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == model);
        if let Some(n) = listed.and_then(|m| m["max_model_len"].as_u64()) {
            return window_of(n);
        }
    }
    // llama.cpp
    if let Some(v) = get_json(client, Method::GET, &format!("{root}/props"), None).await {
        let n = v["default_generation_settings"]["n_ctx"]
            .as_u64()
            .or_else(|| v["n_ctx"].as_u64());
        if let Some(n) = n {
            return window_of(n);
        }
    }
    // Ollama: the window in effect is num_ctx (set in the Modelfile, else the
    // default), never more than what the model was trained for.
    let v = get_json(
        client,
        Method::POST,
        &format!("{root}/api/show"),
        Some(json!({"model": model})),
    )
    .await?;
    ollama_window(&v)
}

/// The window an `/api/show` answer states. Ollama's default `num_ctx`
/// applies only to an answer that is Ollama's (it names the trained
/// length): any other JSON on that path states nothing.
fn ollama_window(v: &Value) -> Option<u32> {
    let trained = v["model_info"]
        .as_object()
        .and_then(|info| info.iter().find(|(k, _)| k.ends_with(".context_length")))
        .and_then(|(_, n)| n.as_u64());
    let num_ctx = v["parameters"].as_str().and_then(|p| {
        p.lines()
            .find_map(|l| l.trim().strip_prefix("num_ctx")?.trim().parse::<u64>().ok())
    });
    let window = match (trained, num_ctx) {
        (None, None) => return None,
        (Some(t), n) => t.min(n.unwrap_or(OLLAMA_DEFAULT_NUM_CTX)),
        (None, Some(n)) => n,
    };
    window_of(window)
}

async fn get_json(
    client: &Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Option<Value> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(crate::body::full(bytes))
        .ok()?;
    let resp = client.send(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// The context limit a provider's error message states, if it states one
/// (the wordings of OpenAI, vLLM, OpenRouter, llama.cpp, Kimi and Anthropic).
pub fn stated_limit(message: &str) -> Option<u32> {
    let lower = message.to_ascii_lowercase();
    let after = |anchor: &str| {
        let i = lower.find(anchor)? + anchor.len();
        first_number(&lower[i..])
    };
    after("maximum context length is")
        .or_else(|| after("available context size ("))
        .or_else(|| after("token limit"))
        .or_else(|| after("context window of"))
        .or_else(|| {
            // Anthropic: "208310 tokens > 200000 maximum"
            let i = lower.find(" maximum")?;
            let before = &lower[..i];
            let gt = before.rfind('>')?;
            first_number(&before[gt + 1..])
        })
}

fn first_number(s: &str) -> Option<u32> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    // Only a number that follows closely belongs to the anchor.
    if start > 4 {
        return None;
    }
    let digits: String = s[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ollama_answer_states_a_window_and_other_json_does_not() {
        let show = |v: Value| ollama_window(&v);
        assert_eq!(
            show(json!({"model_info": {"llama.context_length": 131072}})),
            Some(4096)
        );
        assert_eq!(
            show(
                json!({"model_info": {"llama.context_length": 8192}, "parameters": "num_ctx 32768"})
            ),
            Some(8192)
        );
        assert_eq!(show(json!({"parameters": "num_ctx 16384"})), Some(16384));
        assert_eq!(show(json!({"status": "ok"})), None);
        assert_eq!(
            show(json!({"model_info": {}, "parameters": "stop x"})),
            None
        );
        assert_eq!(show(json!({"parameters": "num_ctx 0"})), None);
    }

    #[test]
    fn the_smallest_stated_window_holds() {
        let windows = Windows::default();
        windows.learn("p", "m", 16384);
        windows.learn("p", "m", 32768);
        let map = windows.learned.lock().unwrap();
        assert_eq!(map["p"]["m"], Some(16384));
    }

    #[test]
    fn reads_the_limit_each_provider_states() {
        let cases = [
            ("This model's maximum context length is 4097 tokens. However, your messages resulted in 4294 tokens.", Some(4097)),
            ("'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778).", Some(4096)),
            ("request (4476 tokens) exceeds the available context size (4096 tokens), try increasing it", Some(4096)),
            ("Invalid request: Your request exceeded model token limit : 262144", Some(262144)),
            ("This endpoint's maximum context length is 32768 tokens. However, you requested about 42832 tokens", Some(32768)),
            ("prompt is too long: 208310 tokens > 200000 maximum", Some(200000)),
            ("prompt too long; exceeded max context length by 4 tokens", None),
            ("Your input exceeds the context window of this model.", None),
        ];
        for (message, expected) in cases {
            assert_eq!(stated_limit(message), expected, "{message}");
        }
    }
}
