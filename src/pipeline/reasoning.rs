//! Reasoning that survives the round trip. Thinking models (Kimi K2.x,
//! DeepSeek, Claude with thinking) want an assistant tool-call turn sent
//! back with the reasoning it was answered with, and most clients drop it
//! when they rebuild their history. The proxy saw the answer, so it keeps
//! each answer's reasoning (`reasoning_content`, Anthropic's signed
//! `thinking_blocks`, OpenRouter's `reasoning_details`) under its tool calls,
//! and puts it back when the conversation returns without it.
//!
//! Only when nothing was kept (history from before the proxy, or evicted)
//! does it fall back to what the provider accepts: an empty
//! `reasoning_content` for a server that said it needs one, a request
//! without thinking for a Messages upstream. The same hook downgrades a
//! forced `tool_choice` for a server that refuses one while thinking.
//! `hermes_reasoning_roundtrip_total{path}` counts which way each turn went.
//!
//! Replicas (`[cluster]`) share both through Redis: what one kept is found
//! by another on a local miss (one round trip for the request's turns), and
//! what one learned reaches the others within [`LEARNED_SYNC`]. A local hit
//! asks Redis nothing.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};

use super::failover::hooks::{AttemptHook, Ctx, Phase};
use crate::cluster::Cluster;
use crate::config::ProviderKind;
use crate::error::{ErrorKind, UpstreamError};
use crate::provider::{Answer, Success};
use crate::route::Target;
use crate::wire::chat::ChatBody;
use crate::wire::sse;

/// The fields that carry an answer's reasoning, whatever the upstream.
const FIELDS: [&str; 3] = ["reasoning_content", "thinking_blocks", "reasoning_details"];

/// How long kept reasoning waits for its conversation to come back.
const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);
/// At most this much reasoning text is kept (entries weigh their size).
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Built once: building a searcher costs more than searching an answer.
static TOOL_CALLS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("\"tool_calls\""));
static TOOL_CHOICE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("\"tool_choice\""));
/// Turns remembered as kept by no replica, at most, and for how long: a
/// turn's reasoning is written to Redis off the answer's path, so a client
/// quick enough to beat it is not shut out for longer than this.
const ABSENT_KEPT: u64 = 100_000;
const ABSENT_FOR: Duration = Duration::from_secs(300);
/// How often a replica reads what the others learned (when it is busy).
pub const LEARNED_SYNC: Duration = Duration::from_secs(30);
/// Where replicas keep kept reasoning and the learned sets (`Cluster` kinds).
const SHARED: &str = "reasoning";
const NEEDS_REASONING: &str = "needs_reasoning";
const REFUSES_FORCED_TOOLS: &str = "refuses_forced_tools";

/// What the proxy remembers across requests: each tool-call answer's
/// reasoning, and which targets refuse what.
pub struct Remembered {
    kept: moka::sync::Cache<u64, Arc<Map<String, Value>>>,
    /// Turns the other replicas were asked for and had not kept (turns of a
    /// model that does not reason, mostly): not asked again, so that a
    /// tool-using conversation does not cost a round trip on every request.
    absent: moka::sync::Cache<u64, ()>,
    /// (provider, model) pairs that said an assistant tool-call turn needs
    /// `reasoning_content`, or refused a forced `tool_choice`.
    needs_reasoning: Learned,
    refuses_forced_tools: Learned,
    /// The other replicas, if any: a second level under `kept`, and where
    /// the learned sets are shared.
    cluster: Option<Arc<Cluster>>,
    /// Milliseconds after `born` when the learned sets were last read from
    /// Redis (0: never).
    synced: AtomicU64,
    born: Instant,
}

/// Models by provider: looked up with borrowed names on every attempt, so
/// asking allocates nothing.
type Learned = Mutex<HashMap<String, HashSet<String>>>;

impl Default for Remembered {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Remembered {
    /// What one replica remembers; with `cluster`, shared with the others.
    pub fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Remembered {
            kept: moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|_, v: &Arc<Map<String, Value>>| {
                    serde_json::to_vec(&**v)
                        .map_or(u32::MAX, |b| b.len().min(u32::MAX as usize) as u32)
                })
                .time_to_live(KEPT_FOR)
                .build(),
            absent: moka::sync::Cache::builder()
                .max_capacity(ABSENT_KEPT)
                .time_to_live(ABSENT_FOR)
                .build(),
            needs_reasoning: Mutex::default(),
            refuses_forced_tools: Mutex::default(),
            cluster,
            synced: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// Keeps `message`'s reasoning under its tool calls, if it has both.
    pub fn keep(&self, owner: &str, message: &Value) {
        let Some(key) = key(owner, message) else {
            return;
        };
        let fields: Map<String, Value> = FIELDS
            .iter()
            .filter_map(|f| {
                let v = message.get(*f).filter(|v| present(v))?;
                Some(((*f).to_owned(), v.clone()))
            })
            .collect();
        if fields.is_empty() {
            return;
        }
        if let Some(cluster) = &self.cluster {
            let text = serde_json::to_string(&fields).unwrap_or_default();
            cluster.remember(SHARED, key, text, KEPT_FOR);
        }
        self.kept.insert(key, Arc::new(fields));
    }

    /// Asks the other replicas for the reasoning of `body`'s tool-call turns
    /// that came back without any and that this one did not keep: one round
    /// trip, and none when nothing is missing.
    async fn recall(&self, owner: &str, body: &Map<String, Value>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut missing: Vec<u64> = body
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| m["role"] == "assistant" && !FIELDS.iter().any(|f| present(&m[*f])))
            .filter_map(|m| key(owner, m))
            .filter(|k| !self.kept.contains_key(k) && !self.absent.contains_key(k))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return;
        }
        let Some(found) = cluster.recall(SHARED, &missing).await else {
            return;
        };
        for (key, text) in missing.into_iter().zip(found) {
            let fields = text.and_then(|t| serde_json::from_str::<Map<String, Value>>(&t).ok());
            match fields.filter(|f| !f.is_empty()) {
                Some(fields) => self.kept.insert(key, Arc::new(fields)),
                None => self.absent.insert(key, ()),
            }
        }
    }

    /// Reads what the other replicas learned: on this replica's first
    /// request (so it starts with what they know), then in the background
    /// at most once per [`LEARNED_SYNC`].
    async fn sync_learned(self: &Arc<Self>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let now = self.born.elapsed().as_millis() as u64 + 1;
        let last = self.synced.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LEARNED_SYNC.as_millis() as u64;
        if !due
            || self
                .synced
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let pull = self.clone().pull(cluster.clone());
        if last == 0 {
            pull.await;
        } else {
            tokio::spawn(pull);
        }
    }

    async fn pull(self: Arc<Self>, cluster: Arc<Cluster>) {
        for (kind, set) in [
            (NEEDS_REASONING, &self.needs_reasoning),
            (REFUSES_FORCED_TOOLS, &self.refuses_forced_tools),
        ] {
            let Some(members) = cluster.members(kind).await else {
                return;
            };
            let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
            for member in members {
                if let Ok((provider, model)) = serde_json::from_str::<(String, String)>(&member) {
                    set.entry(provider).or_default().insert(model);
                }
            }
        }
    }

    /// Puts back what was kept for `message`'s tool calls, where the client
    /// left it out. True when something was put back.
    fn restore(&self, owner: &str, message: &mut Value) -> bool {
        let Some(kept) = key(owner, message).and_then(|k| self.kept.get(&k)) else {
            return false;
        };
        let Some(message) = message.as_object_mut() else {
            return false;
        };
        let mut restored = false;
        for (field, value) in kept.iter() {
            let missing = message
                .get(field)
                .is_none_or(|v| v.is_null() || v.as_str() == Some(""));
            if missing {
                message.insert(field.clone(), value.clone());
                restored = true;
            }
        }
        restored
    }

    fn learned(set: &Learned, target: &Target) -> bool {
        let set = set.lock().unwrap_or_else(|e| e.into_inner());
        set.get(&target.provider.name)
            .is_some_and(|models| models.contains(&target.model))
    }

    /// Learns that `target` needs reasoning back (`NEEDS_REASONING`) or
    /// refuses a forced tool choice, and tells the other replicas.
    fn learn(&self, kind: &str, target: &Target) {
        let set = match kind {
            NEEDS_REASONING => &self.needs_reasoning,
            _ => &self.refuses_forced_tools,
        };
        let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
        let new = set
            .entry(target.provider.name.clone())
            .or_default()
            .insert(target.model.clone());
        if let Some(cluster) = self.cluster.as_ref().filter(|_| new) {
            let member = serde_json::to_string(&(&target.provider.name, &target.model));
            cluster.add_member(kind, member.unwrap_or_default(), KEPT_FOR);
        }
    }
}

/// Whether a reasoning field holds something.
fn present(v: &Value) -> bool {
    !(v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(Vec::is_empty))
}

/// The key of an assistant message's tool calls: who asked, and each call's
/// id, name and arguments (parsed, so a client that re-serializes them with
/// other spacing still matches; ids alone repeat, as Kimi's
/// `functions.name:0` do across conversations).
fn key(owner: &str, message: &Value) -> Option<u64> {
    let calls = message
        .get("tool_calls")?
        .as_array()
        .filter(|c| !c.is_empty())?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    owner.hash(&mut h);
    for call in calls {
        call["id"].as_str().unwrap_or_default().hash(&mut h);
        call["function"]["name"]
            .as_str()
            .unwrap_or_default()
            .hash(&mut h);
        let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
        match serde_json::from_str::<Value>(arguments) {
            Ok(parsed) => parsed.to_string().hash(&mut h),
            Err(_) => arguments.hash(&mut h),
        }
    }
    Some(h.finish())
}

/// The per-attempt hook that restores, falls back and keeps.
pub struct ReasoningHook {
    remembered: Arc<Remembered>,
    counted: prometheus::IntCounterVec,
}

/// Marks, in a request's hook state, what was already done for it.
#[derive(Clone)]
struct Restored;
#[derive(Clone)]
struct FilledEmpty;
#[derive(Clone)]
struct Downgraded;

impl ReasoningHook {
    pub fn new(remembered: Arc<Remembered>, counted: prometheus::IntCounterVec) -> Self {
        ReasoningHook {
            remembered,
            counted,
        }
    }

    fn count(&self, path: &str, n: usize) {
        if n > 0 {
            self.counted.with_label_values(&[path]).inc_by(n as u64);
        }
    }

    fn owner(ctx: &Ctx) -> Option<String> {
        ctx.exchange.caller.as_ref().map(|c| c.owner.clone())
    }
}

fn assistant_calls(body: &mut Map<String, Value>) -> impl Iterator<Item = &mut Value> {
    body.get_mut("messages")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|m| {
            m["role"] == "assistant" && m["tool_calls"].as_array().is_some_and(|c| !c.is_empty())
        })
}

/// Gives every assistant tool-call turn without reasoning an empty one.
fn fill_empty(body: &mut ChatBody) -> usize {
    let Some(body) = body.tree_mut_if(&TOOL_CALLS) else {
        return 0;
    };
    let mut filled = 0;
    for message in assistant_calls(body) {
        if message.get("reasoning_content").is_none_or(Value::is_null) {
            message["reasoning_content"] = Value::String(String::new());
            filled += 1;
        }
    }
    filled
}

/// A Messages upstream with thinking on refuses a conversation whose last
/// assistant turn calls tools without its signed thinking first: without
/// it, the request goes without thinking.
fn drop_unsigned_thinking(body: &mut Map<String, Value>) -> bool {
    let thinking = body.get("thinking").is_some_and(|t| t["type"] == "enabled")
        || body
            .get("reasoning_effort")
            .and_then(Value::as_str)
            .is_some_and(|e| matches!(e, "low" | "medium" | "high"));
    if !thinking {
        return false;
    }
    let last_assistant = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "assistant"));
    let unsigned = last_assistant.is_some_and(|m| {
        let calls = m["tool_calls"].as_array().is_some_and(|c| !c.is_empty());
        let signed = m["thinking_blocks"].as_array().is_some_and(|b| {
            b.iter().any(|b| {
                b["signature"].as_str().is_some_and(|s| !s.is_empty())
                    || b["type"] == "redacted_thinking"
            })
        });
        calls && !signed
    });
    if unsigned {
        body.remove("thinking");
        body.remove("reasoning_effort");
    }
    unsigned
}

/// A forced `tool_choice` (`required`, or a named function) made `auto`,
/// with the demand said in words instead: the documented downgrade for a
/// server that refuses to force a tool while thinking.
fn downgrade_tool_choice(body: &mut ChatBody) -> bool {
    let Some(body) = body.tree_mut_if(&TOOL_CHOICE) else {
        return false;
    };
    let demand = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => {
            "You must call one of the provided tools in this reply.".to_owned()
        }
        Some(choice) if choice["function"]["name"].is_string() => format!(
            "You must call the `{}` tool in this reply.",
            choice["function"]["name"].as_str().unwrap_or_default()
        ),
        _ => return false,
    };
    body.insert("tool_choice".into(), Value::String("auto".into()));
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
        messages.push(json!({"role": "system", "content": demand}));
    }
    true
}

/// Kimi's (and DeepSeek's) 400 for a tool-call turn sent back without its reasoning.
fn says_reasoning_missing(err: &UpstreamError) -> bool {
    err.kind == ErrorKind::ClientError && err.message.contains("reasoning_content is missing")
}

/// A 400 that refuses a forced tool choice because the model is thinking.
fn refuses_forced_tool(err: &UpstreamError) -> bool {
    let m = err.message.to_ascii_lowercase();
    err.kind == ErrorKind::ClientError && m.contains("tool_choice") && m.contains("thinking")
}

impl AttemptHook for ReasoningHook {
    fn before<'a>(&'a self, ctx: &'a mut Ctx, target: &'a Target) -> BoxFuture<'a, Phase> {
        Box::pin(async move {
            let owner = Self::owner(ctx);
            self.remembered.sync_learned().await;
            if ctx.state.get::<Restored>().is_none() {
                ctx.state.insert(Restored);
                // Only a conversation with tool calls has reasoning to restore.
                let body = &mut ctx.exchange.body;
                if let (Some(owner), true) = (&owner, body.may_hold(&TOOL_CALLS)) {
                    let remembered = &self.remembered;
                    remembered.recall(owner, body.tree()).await;
                    let restored = assistant_calls(body.tree_mut())
                        .map(|m| remembered.restore(owner, m))
                        .filter(|restored| *restored)
                        .count();
                    self.count("restored", restored);
                }
            }
            let body = &mut ctx.exchange.body;
            if Remembered::learned(&self.remembered.needs_reasoning, target) {
                self.count("empty", fill_empty(body));
            }
            if Remembered::learned(&self.remembered.refuses_forced_tools, target)
                && downgrade_tool_choice(body)
            {
                self.count("tool_choice_downgraded", 1);
            }
            if target.provider.kind == ProviderKind::Anthropic
                && drop_unsigned_thinking(body.tree_mut())
            {
                self.count("thinking_dropped", 1);
            }
            Phase::Go
        })
    }

    fn after_error<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        target: &'a Target,
        err: &'a UpstreamError,
    ) -> BoxFuture<'a, Phase> {
        Box::pin(async move {
            if says_reasoning_missing(err) && ctx.state.get::<FilledEmpty>().is_none() {
                ctx.state.insert(FilledEmpty);
                self.remembered.learn(NEEDS_REASONING, target);
                let filled = fill_empty(&mut ctx.exchange.body);
                self.count("empty", filled);
                if filled > 0 {
                    return Phase::Again;
                }
            }
            if refuses_forced_tool(err) && ctx.state.get::<Downgraded>().is_none() {
                ctx.state.insert(Downgraded);
                self.remembered.learn(REFUSES_FORCED_TOOLS, target);
                if downgrade_tool_choice(&mut ctx.exchange.body) {
                    self.count("tool_choice_downgraded", 1);
                    return Phase::Again;
                }
            }
            Phase::Go
        })
    }

    fn answered(&self, ctx: &Ctx, _target: &Target, success: &mut Success) {
        let Some(owner) = Self::owner(ctx).filter(|_| !success.native) else {
            return;
        };
        match &mut success.answer {
            Answer::Json { body, .. } => {
                // Most answers call no tool: look before parsing.
                if TOOL_CALLS.find(body).is_none() {
                    return;
                }
                if let Ok(completion) = serde_json::from_slice::<Value>(body) {
                    let message = &completion["choices"][0]["message"];
                    self.remembered.keep(&owner, message);
                }
            }
            Answer::Stream { first, rest } => {
                let mut memo = StreamMemo::default();
                for data in sse::payloads(first) {
                    memo.feed(&String::from_utf8_lossy(data));
                }
                let remembered = self.remembered.clone();
                match rest {
                    Some(reader) => reader.tap(Box::new(move |data| {
                        if memo.feed(data) {
                            remembered.keep(&owner, &memo.message());
                        }
                    })),
                    None => remembered.keep(&owner, &memo.message()),
                }
            }
        }
    }
}

/// A streamed answer's tool calls and reasoning, gathered as they pass.
#[derive(Default)]
struct StreamMemo {
    reasoning: String,
    thinking_blocks: Vec<Value>,
    details: Vec<Value>,
    /// By the chunk's tool-call index: id, name, arguments.
    calls: Vec<(String, String, String)>,
}

impl StreamMemo {
    /// One event's data; true when the answer just finished.
    fn feed(&mut self, data: &str) -> bool {
        let watched = [
            "\"reasoning",
            "\"thinking_blocks\"",
            "\"tool_calls\"",
            "\"finish_reason\":\"",
        ];
        if !watched.iter().any(|w| data.contains(w)) {
            return false;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return false;
        };
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["reasoning_content"]
            .as_str()
            .or(delta["reasoning"].as_str())
        {
            self.reasoning.push_str(text);
        }
        self.thinking_blocks.extend(
            delta["thinking_blocks"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
        self.details.extend(
            delta["reasoning_details"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or(0) as usize;
            if index > 64 {
                continue;
            }
            if self.calls.len() <= index {
                self.calls.resize(index + 1, Default::default());
            }
            let (id, name, arguments) = &mut self.calls[index];
            if let Some(s) = call["id"].as_str() {
                id.push_str(s);
            }
            if let Some(s) = call["function"]["name"].as_str() {
                name.push_str(s);
            }
            if let Some(s) = call["function"]["arguments"].as_str() {
                arguments.push_str(s);
            }
        }
        choice["finish_reason"].is_string()
    }

    /// The answer as a message, as it would have come whole.
    fn message(&self) -> Value {
        let calls: Vec<Value> = self
            .calls
            .iter()
            .map(|(id, name, arguments)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
            })
            .collect();
        json!({
            "role": "assistant",
            "tool_calls": calls,
            "reasoning_content": self.reasoning,
            "thinking_blocks": self.thinking_blocks,
            "reasoning_details": merge_details(&self.details),
        })
    }
}

/// OpenRouter streams `reasoning_details` in pieces that share an `index`:
/// the text of one block is the pieces' text joined.
fn merge_details(pieces: &[Value]) -> Vec<Value> {
    let mut merged: Vec<Value> = vec![];
    for piece in pieces {
        let same = merged
            .last_mut()
            .filter(|last| last["index"] == piece["index"] && last["type"] == piece["type"]);
        match same {
            Some(last) => {
                for field in ["text", "summary", "data"] {
                    if let Some(more) = piece[field].as_str() {
                        let joined = format!("{}{more}", last[field].as_str().unwrap_or_default());
                        last[field] = Value::String(joined);
                    }
                }
                if let Some(signature) = piece.get("signature").filter(|s| !s.is_null()) {
                    last["signature"] = signature.clone();
                }
            }
            None => merged.push(piece.clone()),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(arguments: &str) -> Value {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "functions.get_weather:0",
            "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]})
    }

    #[test]
    fn kept_reasoning_comes_back_for_the_same_calls_however_their_arguments_are_spaced() {
        let remembered = Remembered::default();
        let mut answer = turn(r#"{"city":"Paris","unit":"c"}"#);
        answer["reasoning_content"] = json!("Paris first");
        remembered.keep("team-a", &answer);

        let mut resent = turn(r#"{"unit": "c", "city": "Paris"}"#);
        assert!(remembered.restore("team-a", &mut resent));
        assert_eq!(resent["reasoning_content"], "Paris first");

        // Another key, or other arguments behind the same id: nothing.
        assert!(!remembered.restore("team-b", &mut turn(r#"{"city":"Paris","unit":"c"}"#)));
        assert!(!remembered.restore("team-a", &mut turn(r#"{"city":"Rome"}"#)));
        // What the client kept is left alone.
        let mut kept = turn(r#"{"city":"Paris","unit":"c"}"#);
        kept["reasoning_content"] = json!("the client's own");
        assert!(!remembered.restore("team-a", &mut kept));
        assert_eq!(kept["reasoning_content"], "the client's own");
    }

    #[test]
    fn an_answer_without_reasoning_or_tool_calls_keeps_nothing() {
        let remembered = Remembered::default();
        remembered.keep("", &turn("{}"));
        remembered.keep(
            "",
            &json!({"role": "assistant", "reasoning_content": "r", "content": "hi"}),
        );
        remembered.kept.run_pending_tasks();
        assert_eq!(remembered.kept.entry_count(), 0);
    }

    #[test]
    fn thinking_is_dropped_only_when_the_last_assistant_turn_calls_tools_unsigned() {
        let unsigned = json!([{"role": "user", "content": "q"}, turn("{}"),
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "21"}]);
        let mut body = Map::new();
        body.insert("messages".into(), unsigned.clone());
        body.insert("reasoning_effort".into(), json!("high"));
        assert!(drop_unsigned_thinking(&mut body));
        assert!(!body.contains_key("reasoning_effort"));

        let mut signed = turn("{}");
        signed["thinking_blocks"] =
            json!([{"type": "thinking", "thinking": "t", "signature": "sig"}]);
        let mut body = Map::new();
        body.insert("messages".into(), json!([signed]));
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": 2048}),
        );
        assert!(!drop_unsigned_thinking(&mut body));

        // A finished tool cycle followed by a plain answer needs nothing.
        let mut later = unsigned.as_array().unwrap().clone();
        later.push(json!({"role": "assistant", "content": "It is 21."}));
        let mut body = Map::new();
        body.insert("messages".into(), Value::Array(later));
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": 2048}),
        );
        assert!(!drop_unsigned_thinking(&mut body));
    }

    #[test]
    fn a_forced_tool_choice_becomes_auto_and_a_demand_in_words() {
        let mut body = Map::new();
        body.insert("messages".into(), json!([{"role": "user", "content": "q"}]));
        body.insert(
            "tool_choice".into(),
            json!({"type": "function", "function": {"name": "get_weather"}}),
        );
        let mut body = ChatBody::from(body);
        assert!(downgrade_tool_choice(&mut body));
        assert!(!downgrade_tool_choice(&mut body), "auto is left alone");
        let body = body.into_tree();
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(body["messages"][1]["role"], "system");
        assert!(body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("`get_weather`"));
    }

    #[test]
    fn a_streamed_answer_is_kept_as_it_would_have_come_whole() {
        let mut memo = StreamMemo::default();
        let chunks = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","reasoning":"Look "}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_details":[{"type":"reasoning.text","text":"it ","index":0}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_details":[{"type":"reasoning.text","text":"up","index":0,"signature":"s"}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"get_weather","arguments":"{\"city\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"ignored"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":\"Paris\"}"}}]}}]}"#,
        ];
        assert!(chunks.iter().all(|c| !memo.feed(c)));
        assert!(memo.feed(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#));
        let message = memo.message();
        assert_eq!(message["reasoning_content"], "Look ");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            message["reasoning_details"],
            json!([{"type": "reasoning.text", "text": "it up", "index": 0, "signature": "s"}])
        );
    }
}
