//! Conversation compression: (messages, budget) -> messages that fit, the
//! cheapest step first, stopping as soon as the request fits with margin.
//!
//! 1. `max_tokens`: only the output reservation is too big -> lower it.
//! 2. `tool_outputs`: old tool results (all but the latest few) -> a placeholder.
//! 3. `summary`: the middle of the conversation -> one summary message,
//!    written by a summarizer the caller injects (a routed request), in
//!    chunks when the middle is too long for one call.
//! 4. `dropped`: no summary could be had -> the oldest middle turns go.
//!
//! Invariants: system messages, the first user message and the last user
//! message stay verbatim; a tool result never loses its assistant tool call
//! (cuts fall only before a user message); user and assistant keep alternating.
//! Pure apart from the injected summarizer, so every rule is unit-tested.
//!
//! Around the pure core: [`window`] (what each target can take), [`fit`]
//! (the attempt loop's hook), [`summarizer`] (summaries as routed requests).

pub mod fit;
pub mod summarizer;
pub mod window;

use std::future::Future;

use serde_json::{json, Map, Value};

use crate::wire::chat::{reserved_output, ChatBody};

/// Tokens reserved for the answer when the client set no `max_tokens`.
const DEFAULT_OUTPUT_RESERVE: u32 = 1024;
/// Tokenizers differ between providers; leave this share of the window free.
const SAFETY_MARGIN: f64 = 0.05;
const TOOL_PLACEHOLDER: &str = "[tool output cleared by hermes-proxy to fit the context window]";
pub const SUMMARY_PREFIX: &str =
    "[Summary of the earlier conversation, written by hermes-proxy to fit the context window]\n";

pub use super::exchange::Report;
pub use crate::config::CompressionSettings as Settings;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the conversation needs {needed} tokens ({prompt} prompt + {reserve} reserved for the answer) but the context window is {window} tokens; compression brought the prompt from {before} down to {prompt} tokens")]
pub struct TooLong {
    /// The prompt before compression.
    pub before: u32,
    pub prompt: u32,
    pub reserve: u32,
    pub needed: u32,
    pub window: u32,
}

/// Tokens of a message list: the content's BPE tokens plus OpenAI's
/// per-message framing.
pub fn count(messages: &[Value]) -> u32 {
    messages.iter().map(count_message).sum::<u32>() + 3
}

fn count_message(m: &Value) -> u32 {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let mut n = 4u32;
    let mut text = |s: &str| n += bpe.encode_ordinary(s).len() as u32;
    match &m["content"] {
        Value::String(s) => text(s),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .for_each(&mut text),
        _ => {}
    }
    for key in ["reasoning_content", "name"] {
        if let Some(s) = m[key].as_str() {
            text(s);
        }
    }
    if let Some(calls) = m["tool_calls"].as_array() {
        for call in calls {
            text(call["function"]["name"].as_str().unwrap_or_default());
            text(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    n
}

/// The messages' size as JSON: at about three bytes a token, a cheap
/// upper-ish bound that skips exact counting for requests nowhere near
/// their window.
fn rough_bytes(messages: &[Value]) -> usize {
    messages.iter().map(|m| m.to_string().len()).sum()
}

fn reserve_of(body: &Map<String, Value>) -> (Option<&'static str>, u32) {
    reserve(reserved_output(body))
}

fn reserve(reserved: Option<(&'static str, u64)>) -> (Option<&'static str>, u32) {
    match reserved {
        Some((key, n)) => (Some(key), n.min(u64::from(u32::MAX)) as u32),
        None => (None, DEFAULT_OUTPUT_RESERVE),
    }
}

/// Whether the request fits `window` with margin, without counting exactly
/// unless it might not.
pub fn fits(body: &ChatBody, window: u32) -> bool {
    let usable = usable(window);
    let (_, reserve) = reserve(body.reserved_output());
    // The client's bytes bound the conversation's size without a tree.
    let rough = |bytes: usize| (bytes / 3) as u32 + reserve <= usable / 2;
    if body.raw_len().is_some_and(rough) {
        return true;
    }
    let Some(messages) = body.tree().get("messages").and_then(Value::as_array) else {
        return true;
    };
    if rough(rough_bytes(messages)) {
        return true;
    }
    count(messages) + reserve <= usable
}

pub(crate) fn usable(window: u32) -> u32 {
    (f64::from(window) * (1.0 - SAFETY_MARGIN)) as u32
}

/// Writes summaries; injected so the compressor stays a pure function.
pub trait Summarizer {
    /// A summary written earlier for the messages with this key.
    fn cached(&self, key: u64) -> Option<String>;
    /// Looks for the summaries of `keys` that `cached` does not have
    /// elsewhere (the other replicas), so that `cached` has them next.
    fn recall(&self, _keys: &[u64]) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
    /// Summarizes `middle` in about `limit` tokens; `key` identifies it for `cached`.
    fn summarize(
        &mut self,
        middle: Vec<Value>,
        key: u64,
        limit: u32,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// Compresses `body["messages"]` (and `max_tokens`) until the request fits
/// `window`. `summarize` turns a list of messages into summary text.
pub async fn compress(
    body: &mut Map<String, Value>,
    window: u32,
    settings: &Settings,
    summarizer: &mut impl Summarizer,
) -> Result<Report, TooLong> {
    let usable = usable(window);
    let mut messages: Vec<Value> = match body.get("messages") {
        Some(Value::Array(m)) => m.clone(),
        _ => return Ok(Report::default()),
    };
    let (reserve_key, reserve) = reserve_of(body);
    let before = count(&messages);
    let mut report = Report {
        before,
        after: before,
        steps: vec![],
    };
    let done = |messages: Vec<Value>, body: &mut Map<String, Value>, mut report: Report| {
        report.after = count(&messages);
        body.insert("messages".into(), Value::Array(messages));
        Ok(report)
    };

    // 1. The prompt fits and leaves room for a useful answer: shrink the reservation.
    if let Some(key) = reserve_key {
        let room = usable.saturating_sub(before);
        if before + reserve > usable && room >= DEFAULT_OUTPUT_RESERVE.min(reserve) {
            body.insert(key.into(), room.into());
            report.steps.push("max_tokens");
            return Ok(report);
        }
    }
    let fits_now = |messages: &[Value]| count(messages) + reserve <= usable;

    // 2. Old tool outputs.
    if clear_tool_outputs(&mut messages, settings.keep_tool_outputs) {
        report.steps.push("tool_outputs");
        if fits_now(&messages) {
            return done(messages, body, report);
        }
    }

    // 3. Summarize the middle, aiming well under the window.
    let target = ((f64::from(window) * settings.target_ratio) as u32)
        .saturating_sub(reserve)
        .max(1);
    let recent_budget = settings.recent_tokens.min(target / 2);
    if let Some(split) = split(&messages, recent_budget) {
        let keys = prefix_keys(&messages, split);
        // A summary of a prefix written for an earlier, shorter version of
        // this conversation is reused while the rest still fits; one that
        // is not here may have been written by another replica.
        let reuse = |summarizer: &dyn Fn(u64) -> Option<String>| {
            keys.iter().rev().find_map(|&(end, key)| {
                let summary = summarizer(key)?;
                let next = with_summary(&messages, split.head, end, &summary);
                fits_now(&next).then_some(next)
            })
        };
        let mut reused = reuse(&|key| summarizer.cached(key));
        if reused.is_none() && !keys.is_empty() {
            let wanted: Vec<u64> = keys.iter().map(|&(_, key)| key).collect();
            summarizer.recall(&wanted).await;
            reused = reuse(&|key| summarizer.cached(key));
        }
        let summarized = match reused {
            Some(next) => Some(next),
            None => {
                let key = keys.last().map_or(0, |&(_, key)| key);
                let middle = messages[split.head..split.tail].to_vec();
                // What the kept head and recent turns leave of the target.
                let kept = count(&messages[..split.head]) + count(&messages[split.tail..]);
                let limit = target.saturating_sub(kept).max(256);
                match summarizer.summarize(middle, key, limit).await {
                    Ok(summary) => Some(with_summary(&messages, split.head, split.tail, &summary)),
                    Err(e) => {
                        tracing::warn!("summarizer failed, dropping the oldest turns instead: {e}");
                        None
                    }
                }
            }
        };
        if let Some(next) = summarized {
            report.steps.push("summary");
            if fits_now(&next) {
                return done(next, body, report);
            }
            messages = next;
        }
    }

    // 4. Drop the oldest middle turns, one turn at a time.
    if let Some(dropped) = drop_oldest(&mut messages, usable.saturating_sub(reserve)) {
        report.steps.push("dropped");
        tracing::warn!("dropped {dropped} messages to fit a {window}-token window");
        if fits_now(&messages) {
            return done(messages, body, report);
        }
    }
    let prompt = count(&messages);
    Err(TooLong {
        before,
        prompt,
        reserve,
        needed: prompt + reserve,
        window,
    })
}

fn with_summary(messages: &[Value], head: usize, end: usize, summary: &str) -> Vec<Value> {
    let mut next = messages[..head].to_vec();
    next.push(json!({"role": "assistant", "content": format!("{SUMMARY_PREFIX}{summary}")}));
    next.extend_from_slice(&messages[end..]);
    next
}

/// Keys of the summarizable prefixes `[head..end]`, one per user message
/// `end` in `(head, tail]`: the same conversation prefix always gets the
/// same key, however the conversation has grown since.
fn prefix_keys(messages: &[Value], split: Split) -> Vec<(usize, u64)> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut keys = vec![];
    for (i, m) in messages
        .iter()
        .enumerate()
        .take(split.tail + 1)
        .skip(split.head)
    {
        if i > split.head && m["role"] == "user" {
            keys.push((i, hasher.finish()));
        }
        m.to_string().hash(&mut hasher);
    }
    keys
}

/// Replaces all but the newest `keep` tool results with a placeholder.
pub fn clear_tool_outputs(messages: &mut [Value], keep: usize) -> bool {
    let tool_indexes: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m["role"] == "tool")
        .map(|(i, _)| i)
        .collect();
    let old = tool_indexes.len().saturating_sub(keep);
    let mut changed = false;
    for &i in &tool_indexes[..old] {
        if messages[i]["content"] != TOOL_PLACEHOLDER {
            messages[i]["content"] = TOOL_PLACEHOLDER.into();
            changed = true;
        }
    }
    changed
}

/// Where a conversation splits for summarizing: `[..head]` stays (system
/// messages and the first user message), `[head..tail]` is summarized,
/// `[tail..]` stays (recent turns within `recent_budget`, always from the
/// last user message on, always starting at a user message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub head: usize,
    pub tail: usize,
}

pub fn split(messages: &[Value], recent_budget: u32) -> Option<Split> {
    let first_user = messages.iter().position(|m| m["role"] == "user")?;
    let head = first_user + 1;
    let user_starts: Vec<usize> = (head..messages.len())
        .filter(|&i| messages[i]["role"] == "user")
        .collect();
    let last_user = *user_starts.last()?;
    // Walk back from the last user message while the recent turns fit the budget.
    let mut tail = last_user;
    for &start in user_starts.iter().rev().skip(1) {
        if count(&messages[start..]) > recent_budget {
            break;
        }
        tail = start;
    }
    (tail > head).then_some(Split { head, tail })
}

/// Drops whole turns after the head, oldest first, until the prompt is at
/// most `budget` tokens or only the last user turn is left; one note stands
/// where they were. Returns how many messages went.
fn drop_oldest(messages: &mut Vec<Value>, budget: u32) -> Option<usize> {
    let head = messages.iter().position(|m| m["role"] == "user")? + 1;
    let mut total = count(messages);
    let mut dropped = 0;
    while total > budget {
        let start = if dropped > 0 { head + 1 } else { head }; // after our note
        let last_user = messages.iter().rposition(|m| m["role"] == "user")?;
        if start >= last_user {
            break;
        }
        // One turn: up to the next user message, so tool calls and their
        // results go together.
        let end = (start + 1..=last_user)
            .find(|&i| messages[i]["role"] == "user")
            .unwrap_or(last_user);
        total -= messages
            .drain(start..end)
            .map(|m| count_message(&m))
            .sum::<u32>();
        let note = json!({"role": "assistant", "content": format!(
            "[{} earlier messages were dropped by hermes-proxy to fit the context window]",
            dropped + end - start
        )});
        total += count_message(&note);
        if dropped == 0 {
            messages.insert(head, note);
        } else {
            total -= count_message(&messages[head]);
            messages[head] = note;
        }
        dropped += end - start;
    }
    (dropped > 0).then_some(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Value {
        json!({"role": "user", "content": s})
    }
    fn assistant(s: &str) -> Value {
        json!({"role": "assistant", "content": s})
    }
    fn tool_call(id: &str) -> Value {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.txt\"}"}}]})
    }
    fn tool_result(id: &str, s: &str) -> Value {
        json!({"role": "tool", "tool_call_id": id, "content": s})
    }

    /// An agent conversation: system, task, then `turns` of user -> tool call -> tool result -> answer.
    fn conversation(turns: usize) -> Vec<Value> {
        let mut m = vec![
            json!({"role": "system", "content": "You are a careful agent."}),
            user("Refactor the parser."),
        ];
        for i in 0..turns {
            m.push(assistant(&format!("Working on step {i}.")));
            m.push(user(&format!(
                "Continue with step {i}. {}",
                "details ".repeat(40)
            )));
            m.push(tool_call(&format!("call_{i}")));
            m.push(tool_result(
                &format!("call_{i}"),
                &"file contents ".repeat(200),
            ));
        }
        m.push(assistant("Done with the steps."));
        m.push(user("Now write the summary of the changes."));
        m
    }

    fn body(messages: Vec<Value>) -> Map<String, Value> {
        json!({"model": "m", "messages": messages})
            .as_object()
            .unwrap()
            .clone()
    }

    /// Every tool result is preceded (within its turn) by the assistant call with its id.
    fn assert_tool_pairs(messages: &[Value]) {
        for (i, m) in messages.iter().enumerate() {
            if m["role"] == "tool" {
                let id = &m["tool_call_id"];
                let called = messages[..i]
                    .iter()
                    .rev()
                    .take_while(|p| p["role"] != "user")
                    .any(|p| {
                        p["tool_calls"]
                            .as_array()
                            .is_some_and(|c| c.iter().any(|c| &c["id"] == id))
                    });
                assert!(called, "orphan tool result {id} at {i}");
            }
        }
    }

    /// A summarizer that answers from a script and remembers what it wrote.
    #[derive(Default)]
    struct Scripted {
        fail: bool,
        calls: Vec<usize>,
        written: std::collections::HashMap<u64, String>,
    }

    impl Summarizer for Scripted {
        fn cached(&self, key: u64) -> Option<String> {
            self.written.get(&key).cloned()
        }
        fn summarize(
            &mut self,
            middle: Vec<Value>,
            key: u64,
            _limit: u32,
        ) -> impl Future<Output = Result<String, String>> + Send {
            self.calls.push(middle.len());
            let result = if self.fail {
                Err("summarizer down".to_string())
            } else {
                let text = format!(
                    "Goal: refactor the parser. {} messages summarized.",
                    middle.len()
                );
                self.written.insert(key, text.clone());
                Ok(text)
            };
            async move { result }
        }
    }

    #[tokio::test]
    async fn lowers_only_max_tokens_when_the_prompt_fits() {
        let mut b = body(vec![user(&"word ".repeat(500))]);
        b.insert("max_tokens".into(), 8000.into());
        let report = compress(&mut b, 4096, &Settings::default(), &mut Scripted::default())
            .await
            .unwrap();
        assert_eq!(report.steps, ["max_tokens"]);
        let max = b["max_tokens"].as_u64().unwrap() as u32;
        assert!(max + count(b["messages"].as_array().unwrap()) <= 4096);
    }

    #[tokio::test]
    async fn clears_old_tool_outputs_first_and_keeps_the_latest() {
        let messages = conversation(8);
        let before = count(&messages);
        let mut b = body(messages);
        b.insert("max_tokens".into(), 10.into());
        // A window that tool-output clearing alone satisfies.
        let report = compress(
            &mut b,
            before * 2 / 3,
            &Settings::default(),
            &mut Scripted::default(),
        )
        .await
        .unwrap();
        assert_eq!(report.steps, ["tool_outputs"]);
        let m = b["messages"].as_array().unwrap();
        let tools: Vec<&Value> = m.iter().filter(|m| m["role"] == "tool").collect();
        assert_eq!(tools.len(), 8);
        assert!(tools[..5].iter().all(|t| t["content"] == TOOL_PLACEHOLDER));
        assert!(tools[5..].iter().all(|t| t["content"] != TOOL_PLACEHOLDER));
        assert!(report.after < report.before);
    }

    #[tokio::test]
    async fn summarizes_the_middle_keeping_system_first_and_last_messages_verbatim() {
        let messages = conversation(100);
        let original = messages.clone();
        let mut b = body(messages);
        let window = 8192;
        let mut summarizer = Scripted::default();
        let report = compress(&mut b, window, &Settings::default(), &mut summarizer)
            .await
            .unwrap();
        assert_eq!(summarizer.calls.len(), 1);
        assert_eq!(report.steps, ["tool_outputs", "summary"]);
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0], original[0]); // system
        assert_eq!(m[1], original[1]); // first user message
        assert!(m[2]["content"]
            .as_str()
            .unwrap()
            .starts_with(SUMMARY_PREFIX));
        assert_eq!(m.last(), original.last()); // last user message
        assert!(count(m) + DEFAULT_OUTPUT_RESERVE <= usable(window));
        assert_tool_pairs(m);
        // roles alternate around the summary: user, assistant(summary), user
        assert_eq!(m[3]["role"], "user");
    }

    #[tokio::test]
    async fn a_growing_conversation_reuses_its_earlier_summary() {
        let mut summarizer = Scripted::default();
        let mut conversation = conversation(100);
        let mut b = body(conversation.clone());
        compress(&mut b, 8192, &Settings::default(), &mut summarizer)
            .await
            .unwrap();
        // The client sends the whole history again, one turn longer.
        let n = conversation.len();
        conversation.insert(n - 1, assistant("Here is the summary."));
        conversation.insert(n, user("Thanks. One more change, please."));
        let mut b = body(conversation);
        let report = compress(&mut b, 8192, &Settings::default(), &mut summarizer)
            .await
            .unwrap();
        assert_eq!(summarizer.calls.len(), 1, "summarized again");
        assert!(report.steps.contains(&"summary"));
        assert!(count(b["messages"].as_array().unwrap()) + DEFAULT_OUTPUT_RESERVE <= usable(8192));
    }

    #[tokio::test]
    async fn drops_the_oldest_turns_when_the_summarizer_fails() {
        let messages = conversation(100);
        let last = messages.last().cloned();
        let mut b = body(messages);
        let report = compress(
            &mut b,
            8192,
            &Settings::default(),
            &mut Scripted {
                fail: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(report.steps, ["tool_outputs", "dropped"]);
        let m = b["messages"].as_array().unwrap();
        assert!(m[2]["content"]
            .as_str()
            .unwrap()
            .contains("earlier messages were dropped"));
        assert_eq!(m.last().cloned(), last);
        assert!(count(m) + DEFAULT_OUTPUT_RESERVE <= usable(8192));
        assert_tool_pairs(m);
    }

    #[tokio::test]
    async fn an_impossible_request_says_its_sizes() {
        let mut b = body(vec![user(&"word ".repeat(5000))]);
        let err = compress(&mut b, 1000, &Settings::default(), &mut Scripted::default())
            .await
            .unwrap_err();
        assert_eq!(err.window, 1000);
        assert!(err.prompt > 1000);
        assert!(err.before >= err.prompt);
        assert!(err.to_string().contains("context window is 1000 tokens"));
    }

    #[test]
    fn split_starts_the_recent_part_at_a_user_message_and_keeps_the_last_turn() {
        let m = conversation(10);
        let s = split(&m, 2000).unwrap();
        assert_eq!(s.head, 2);
        assert_eq!(m[s.tail]["role"], "user");
        assert!(s.tail <= m.iter().rposition(|x| x["role"] == "user").unwrap());
        assert!(count(&m[s.tail..]) <= 2000 || s.tail == m.len() - 1);
    }

    #[test]
    fn fits_skips_exact_counting_for_small_requests() {
        let b = ChatBody::from(body(vec![user("hello")]));
        assert!(fits(&b, 8192));
        let big = ChatBody::from(body(conversation(100)));
        assert!(!fits(&big, 8192));
    }
}
