//! What an agent request works on: the session's conversation
//! (`X-Hermes-Session-Id`) before the client's new messages, and the memory
//! scope's notes in the system prompt; and what is kept when it ends.
//!
//! A session keeps two lists: every message (tool steps included), which is
//! what goes upstream, and the transcript as the client has it (built-in
//! steps left out), which is how a resent transcript is told from new
//! messages. Nothing reaches the upstream twice.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::pipeline::exchange::Caller;
use crate::store::{Kind, ResponseStore};
use crate::tools::Memory;

const MEMORY_HEADING: &str = "## Memory";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Session {
    messages: Vec<Value>,
    seen: Vec<Value>,
}

pub struct Conversation {
    store: Arc<dyn ResponseStore>,
    owner: String,
    session: Option<String>,
    scope: String,
    /// Every message so far, tool steps included.
    pub messages: Vec<Value>,
    /// The transcript as the client has it.
    seen: Vec<Value>,
    pub memory: Memory,
}

impl Conversation {
    /// The conversation `request` continues, and its scope's memory.
    pub async fn open(
        store: Arc<dyn ResponseStore>,
        caller: &Caller,
        request: Vec<Value>,
    ) -> Result<Conversation, ApiError> {
        let owner = caller.owner.clone();
        let scope = caller
            .memory_scope
            .clone()
            .or_else(|| (!owner.is_empty()).then(|| owner.clone()))
            .unwrap_or_else(|| "default".into());
        let notes = match store.load(Kind::Memory, &owner, &scope).await {
            Ok(notes) => notes.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("agent memory unavailable, answering without it: {e}");
                String::new()
            }
        };
        let stored = match &caller.session {
            None => Session::default(),
            Some(id) => match store.load(Kind::Session, &owner, id).await {
                Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
                Ok(None) => Session::default(),
                Err(e) => return Err(ApiError::Unavailable(format!("agent session: {e}"))),
            },
        };
        let (messages, seen) = continue_session(stored, request);
        Ok(Conversation {
            store,
            owner,
            session: caller.session.clone(),
            scope,
            messages,
            seen,
            memory: Memory::new(notes),
        })
    }

    /// The messages for the next step: the memory notes under their heading
    /// in the system prompt.
    pub fn upstream(&self) -> Vec<Value> {
        let mut messages = self.messages.clone();
        let notes = self.memory.notes();
        if notes.trim().is_empty() {
            return messages;
        }
        let section = format!("{MEMORY_HEADING}\n{notes}");
        match messages.iter_mut().find(|m| m["role"] == "system") {
            Some(system) => match &mut system["content"] {
                Value::String(text) => *text = format!("{text}\n\n{section}"),
                Value::Array(parts) => parts.push(json!({"type": "text", "text": section})),
                other => *other = section.into(),
            },
            None => messages.insert(0, json!({"role": "system", "content": section})),
        }
        messages
    }

    /// Keeps the memory notes if a tool changed them.
    pub async fn remember(&self) {
        if let Some(notes) = self.memory.changed() {
            let saved = self
                .store
                .save(Kind::Memory, &self.owner, &self.scope, notes);
            if let Err(e) = saved.await {
                tracing::warn!("cannot keep agent memory: {e}");
            }
        }
    }

    /// Keeps the session: every message (`full` last, when the last reply
    /// is not in yet, with the reasoning the upstream needs back) and the
    /// transcript with `answer`, the assistant message as the client got it.
    /// Once: the session is taken.
    pub async fn close(&mut self, full: Option<Value>, answer: Value) {
        let Some(id) = self.session.take() else {
            return;
        };
        let mut messages = std::mem::take(&mut self.messages);
        messages.extend(full);
        let mut seen = std::mem::take(&mut self.seen);
        seen.push(answer);
        let session = Session { messages, seen };
        let text = serde_json::to_string(&session).unwrap_or_default();
        if let Err(e) = self.store.save(Kind::Session, &self.owner, &id, text).await {
            tracing::warn!("cannot keep agent session: {e}");
        }
    }
}

/// (every message, the transcript as the client has it) once `request` is
/// added to `stored`: a request that begins with the client's transcript
/// resends it, and only what follows is new; another transcript (one that
/// begins like it, or carries an assistant turn: an edit, a regenerated
/// answer, a system prompt with today's date) replaces the session, so
/// nothing is sent twice; anything else is only new messages.
fn continue_session(stored: Session, request: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let Session { mut messages, seen } = stored;
    if seen.is_empty() {
        return (request.clone(), request);
    }
    let resent = request.len() >= seen.len() && seen.iter().zip(&request).all(|(a, b)| same(a, b));
    if resent {
        messages.extend_from_slice(&request[seen.len()..]);
        return (messages, request);
    }
    let transcript = request.first().is_some_and(|first| same(first, &seen[0]))
        || request.iter().any(|m| m["role"] == "assistant");
    if transcript {
        return (request.clone(), request);
    }
    let mut seen = seen;
    messages.extend_from_slice(&request);
    seen.extend(request);
    (messages, seen)
}

/// Whether two messages say the same, however a client re-serialized them
/// (string or text parts, absent or null fields).
fn same(a: &Value, b: &Value) -> bool {
    let calls = |m: &Value| -> Vec<Value> {
        m["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| json!([c["id"], c["function"]["name"]]))
            .collect()
    };
    a["role"] == b["role"]
        && text(&a["content"]) == text(&b["content"])
        && a["tool_call_id"].as_str() == b["tool_call_id"].as_str()
        && calls(a) == calls(b)
}

fn text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    fn stored() -> Session {
        let call = json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_1",
            "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]});
        Session {
            messages: vec![
                user("read a.md"),
                call,
                json!({"role": "tool", "tool_call_id": "call_1", "content": "A"}),
                json!({"role": "assistant", "content": "It says A."}),
            ],
            seen: vec![
                user("read a.md"),
                json!({"role": "assistant", "content": "It says A."}),
            ],
        }
    }

    #[test]
    fn a_resent_transcript_adds_only_what_follows_it() {
        let request = vec![
            json!({"role": "user", "content": [{"type": "text", "text": "read a.md"}]}),
            json!({"role": "assistant", "content": "It says A.", "tool_calls": null}),
            user("and b.md?"),
        ];
        let (messages, seen) = continue_session(stored(), request.clone());
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[2]["role"], "tool");
        assert_eq!(messages[4], user("and b.md?"));
        assert_eq!(seen, request);
    }

    #[test]
    fn new_messages_alone_follow_the_whole_session() {
        let (messages, seen) = continue_session(stored(), vec![user("and b.md?")]);
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[4], user("and b.md?"));
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_transcript_whose_system_prompt_changed_is_not_sent_twice() {
        let mut stored = stored();
        stored
            .seen
            .insert(0, json!({"role": "system", "content": "Today is Monday."}));
        let request = vec![
            json!({"role": "system", "content": "Today is Tuesday."}),
            user("read a.md"),
            json!({"role": "assistant", "content": "It says A."}),
            user("and b.md?"),
        ];
        let (messages, _) = continue_session(stored, request.clone());
        assert_eq!(messages, request);
    }

    #[test]
    fn a_rewritten_transcript_replaces_the_session() {
        let request = vec![user("read a.md"), user("no, read c.md")];
        let (messages, seen) = continue_session(stored(), request.clone());
        assert_eq!(messages, request);
        assert_eq!(seen, request);
    }
}
