//! The routed summarizer: a summary is itself a routed request, sent down a
//! route's stack like any other (the `[compression] summarizer` route, else
//! the request's own). Its requests are never compressed themselves; a
//! middle too long for the summarizer goes in chunks.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::time::Instant;
use tower::ServiceExt;

use super::{count, summary_request, Summarizer};
use crate::pipeline::exchange::{Exchange, RouteTable};
use crate::pipeline::Handles;
use crate::provider::Answer;
use crate::wire::chat::Endpoint;

/// Summary output is capped at this many tokens.
const SUMMARY_MAX_TOKENS: u32 = 1024;

pub struct RoutedSummarizer<'a> {
    pub handles: &'a Handles,
    pub routes: &'a Arc<RouteTable>,
    /// The `[compression] summarizer` route, if one is set.
    pub route: Option<&'a str>,
    /// The request's own model name, the default summarizer route.
    pub model: &'a str,
    pub deadline: Instant,
}

impl Summarizer for RoutedSummarizer<'_> {
    fn cached(&self, key: u64) -> Option<String> {
        self.handles.summaries.get(&key)
    }

    async fn summarize(&mut self, middle: Vec<Value>, key: u64) -> Result<String, String> {
        let target = self.route.unwrap_or(self.model);
        let (plan, service) = self.routes.resolve(target).map_err(|e| e.to_string())?;
        let mut plan = (*plan).clone();
        plan.compression = false;
        // Chunks sized for the smallest known window among the summarizer's targets.
        let window = plan
            .targets
            .iter()
            .filter_map(|t| self.handles.windows.of(t))
            .min();
        let plan = Arc::new(plan);
        let chunk_budget = window.map_or(u32::MAX, |w| {
            (w / 2).saturating_sub(SUMMARY_MAX_TOKENS).max(256)
        });
        let mut parts = vec![];
        for chunk in chunks(&middle, chunk_budget) {
            let body = json!({"model": target, "messages": summary_request(chunk),
                "max_tokens": SUMMARY_MAX_TOKENS, "temperature": 0.2});
            let Value::Object(body) = body else {
                unreachable!("json! object")
            };
            let exchange = Exchange {
                endpoint: Endpoint::Chat,
                body,
                plan: plan.clone(),
                deadline: self.deadline,
                routes: self.routes.clone(),
                caller: None,
            };
            let served = service
                .clone()
                .oneshot(exchange)
                .await
                .map_err(|e| e.to_string())?;
            let Answer::Json { body, .. } = served.answer else {
                return Err("the summarizer answered with a stream".into());
            };
            let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let text = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_owned();
            if text.is_empty() {
                return Err("the summarizer returned an empty summary".into());
            }
            parts.push(text);
        }
        let summary = parts.join("\n\n");
        self.handles.summaries.insert(key, summary.clone());
        Ok(summary)
    }
}

/// Splits messages into runs of at most `budget` tokens (a single larger
/// message is a run of its own).
fn chunks(messages: &[Value], budget: u32) -> Vec<&[Value]> {
    let mut out = vec![];
    let (mut start, mut size) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let n = count(std::slice::from_ref(m));
        if i > start && size + n > budget {
            out.push(&messages[start..i]);
            (start, size) = (i, 0);
        }
        size += n;
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_budget() {
        let messages: Vec<Value> = (0..10)
            .map(|i| json!({"role": "user", "content": format!("{i} {}", "word ".repeat(100))}))
            .collect();
        let parts = chunks(&messages, 250);
        assert!(parts.len() >= 4);
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 10);
        assert!(parts.iter().all(|p| p.len() == 1 || count(p) <= 250 + 10));
    }
}
