//! The routed summarizer: a summary is itself a routed request, sent down a
//! route's stack like any other (the `[compression] summarizer` route, else
//! the request's own). Its requests are never compressed themselves, so it
//! plans them itself against the window of the summarizer's targets: a
//! middle too long for one request goes in chunks, and summaries that are
//! together still too long are merged by summarizing them in turn.
//!
//! Summaries are kept in `Handles::summaries` and, with a cluster, in Redis
//! too: a replica that has not written one asks the others before writing it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tower::ServiceExt;

use super::{count, usable, Summarizer};
use crate::pipeline::exchange::{Exchange, RouteService, RouteTable};
use crate::pipeline::Handles;
use crate::provider::Answer;
use crate::route::Plan;
use crate::wire::chat::Endpoint;

/// How long a summary is kept unused (`Handles::summaries`), and in Redis
/// after it was written.
pub const SUMMARIES_KEPT_FOR: Duration = Duration::from_secs(3600);
/// Where replicas share summaries (a `Cluster` kind).
const SHARED: &str = "summary";
/// Summary output is capped at this many tokens.
const SUMMARY_MAX_TOKENS: u32 = 1024;
/// Rounds of summarizing summaries before the result is taken as it is.
const MAX_MERGES: u32 = 3;
/// Plans a refused summary may be redone with a window learned meanwhile.
const MAX_REPLANS: u32 = 2;

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

    async fn recall(&self, keys: &[u64]) {
        let Some(cluster) = &self.handles.cluster else {
            return;
        };
        let summaries = &self.handles.summaries;
        let missing: Vec<u64> = keys
            .iter()
            .copied()
            .filter(|key| !summaries.contains_key(key))
            .collect();
        if missing.is_empty() {
            return;
        }
        let Some(found) = cluster.recall(SHARED, &missing).await else {
            return;
        };
        for (key, summary) in missing.into_iter().zip(found) {
            if let Some(summary) = summary {
                summaries.insert(key, summary);
            }
        }
    }

    async fn summarize(
        &mut self,
        middle: Vec<Value>,
        key: u64,
        limit: u32,
    ) -> Result<String, String> {
        let name = self.route.unwrap_or(self.model);
        let (plan, service) = self.routes.resolve(name).map_err(|e| e.to_string())?;
        let mut plan = (*plan).clone();
        plan.compression = false;
        let plan = Arc::new(plan);
        let call = Call {
            summarizer: self,
            plan,
            service,
            name,
        };
        let lines: Vec<String> = middle.iter().map(transcript_line).collect();
        let mut replans = 0;
        let summary = loop {
            let window = call.window();
            match call.run(lines.clone(), window, limit).await {
                Ok(summary) => break summary,
                // A refusal that taught the summarizer's window (the attempt
                // loop learns what the upstream states) is worth a new plan.
                Err(e) if replans < MAX_REPLANS && call.window() != window => {
                    tracing::info!(window = call.window(), "summarizer: planning again: {e}");
                    replans += 1;
                }
                Err(e) => return Err(e),
            }
        };
        self.handles.summaries.insert(key, summary.clone());
        if let Some(cluster) = &self.handles.cluster {
            cluster.remember(SHARED, key, summary.clone(), SUMMARIES_KEPT_FOR);
        }
        Ok(summary)
    }
}

/// One summary's requests: where they go and how big they may be.
struct Call<'s, 'a> {
    summarizer: &'s RoutedSummarizer<'a>,
    plan: Arc<Plan>,
    service: RouteService,
    name: &'s str,
}

impl Call<'_, '_> {
    /// The smallest window among the summarizer's targets, if any is known.
    fn window(&self) -> Option<u32> {
        let windows = &self.summarizer.handles.windows;
        self.plan.targets.iter().filter_map(|t| windows.of(t)).min()
    }

    /// Summarizes `lines` in requests that fit `window`, then merges the
    /// parts until they fit `limit` tokens together.
    async fn run(
        &self,
        lines: Vec<String>,
        window: Option<u32>,
        limit: u32,
    ) -> Result<String, String> {
        let sizes = Sizes::for_window(window);
        let mut parts = self.summarize_all(&lines, &sizes).await?;
        for _ in 0..MAX_MERGES {
            if parts.len() < 2 || tokens(&parts.join("\n\n")) <= limit {
                break;
            }
            let merged = self.summarize_all(&parts, &sizes).await?;
            if merged.len() >= parts.len() {
                break; // each part already fills a request alone
            }
            parts = merged;
        }
        Ok(parts.join("\n\n"))
    }

    async fn summarize_all(&self, lines: &[String], sizes: &Sizes) -> Result<Vec<String>, String> {
        let mut parts = vec![];
        for chunk in chunks(lines, sizes.chunk) {
            parts.push(self.one(&chunk, sizes.max_tokens).await?);
        }
        Ok(parts)
    }

    async fn one(&self, transcript: &str, max_tokens: u32) -> Result<String, String> {
        let body = json!({"model": self.name, "messages": summary_prompt(transcript),
            "max_tokens": max_tokens, "temperature": 0.2});
        let Value::Object(body) = body else {
            unreachable!("json! object")
        };
        let exchange = Exchange {
            endpoint: Endpoint::Chat,
            body: body.into(),
            plan: self.plan.clone(),
            deadline: self.summarizer.deadline,
            routes: self.summarizer.routes.clone(),
            caller: None,
            native: None,
        };
        let served = self
            .service
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
        Ok(text)
    }
}

/// How big one summary request may be.
#[derive(Debug, PartialEq)]
struct Sizes {
    /// Transcript tokens per request.
    chunk: u32,
    max_tokens: u32,
}

impl Sizes {
    fn for_window(window: Option<u32>) -> Sizes {
        let Some(window) = window else {
            // Nothing known: one request, and a refusal teaches the window.
            return Sizes {
                chunk: u32::MAX,
                max_tokens: SUMMARY_MAX_TOKENS,
            };
        };
        let room = usable(window);
        let max_tokens = SUMMARY_MAX_TOKENS.min(room / 4).max(1);
        let overhead = count(&summary_prompt(""));
        Sizes {
            chunk: room.saturating_sub(max_tokens + overhead).max(1),
            max_tokens,
        }
    }
}

fn tokens(text: &str) -> u32 {
    let bpe = tiktoken_rs::o200k_base_singleton();
    bpe.encode_ordinary(text).len() as u32
}

/// Joins lines into transcripts of at most `budget` tokens; a line longer
/// than that is cut into pieces that fit, so no request exceeds the budget.
fn chunks(lines: &[String], budget: u32) -> Vec<String> {
    let mut out = vec![];
    let (mut current, mut size) = (String::new(), 0);
    for piece in lines.iter().flat_map(|l| pieces(l, budget)) {
        let n = tokens(&piece);
        if !current.is_empty() && size + n > budget {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push_str(&piece);
        size += n;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `line` cut in halves (at character boundaries) until each fits `budget`.
fn pieces(line: &str, budget: u32) -> Vec<String> {
    if budget == u32::MAX || tokens(line) <= budget || line.chars().count() < 2 {
        return vec![line.to_owned()];
    }
    let mid = line
        .char_indices()
        .nth(line.chars().count() / 2)
        .map_or(line.len(), |(i, _)| i);
    let mut out = pieces(&line[..mid], budget);
    out.extend(pieces(&line[mid..], budget));
    out
}

/// One message as a transcript line.
fn transcript_line(m: &Value) -> String {
    let role = m["role"].as_str().unwrap_or("?");
    let content = match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let calls = m
        .get("tool_calls")
        .map(|c| format!(" [tool calls: {c}]"))
        .unwrap_or_default();
    format!("{role}: {content}{calls}\n")
}

/// The summarizer's request messages for one part of the conversation.
fn summary_prompt(transcript: &str) -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "You compress conversations for an AI assistant that has run out of context. Write a faithful, dense summary so the assistant can continue without the original messages. Use these headings: Goal; Decisions made; Facts and results (numbers, names, paths verbatim); Files and code touched; Open questions and next steps. Do not invent anything."}),
        json!({"role": "user", "content": format!("Summarize this part of the conversation:\n\n{transcript}")}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_fits_the_window_even_for_one_huge_message() {
        let mut lines: Vec<String> = (0..10)
            .map(|i| {
                transcript_line(
                    &json!({"role": "user", "content": format!("{i} {}", "word ".repeat(300))}),
                )
            })
            .collect();
        lines.push(transcript_line(
            &json!({"role": "tool", "content": "data ".repeat(20000)}),
        ));
        let window = 4096;
        let sizes = Sizes::for_window(Some(window));
        let parts = chunks(&lines, sizes.chunk);
        assert!(parts.len() >= 7, "{} parts", parts.len());
        for part in &parts {
            let request = count(&summary_prompt(part)) + sizes.max_tokens;
            assert!(request <= usable(window), "{request} tokens");
        }
        let words: usize = parts.iter().map(|p| p.split_whitespace().count()).sum();
        let original: usize = lines.iter().map(|l| l.split_whitespace().count()).sum();
        assert!(words >= original, "text was lost");
    }

    #[test]
    fn without_a_known_window_everything_goes_in_one_request() {
        let lines = vec!["user: a\n".to_owned(), "assistant: b\n".to_owned()];
        let sizes = Sizes::for_window(None);
        assert_eq!(chunks(&lines, sizes.chunk), ["user: a\nassistant: b\n"]);
    }
}
