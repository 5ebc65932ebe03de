//! `memory`: notes the model keeps for later requests of the same scope.
//! The caller loads them into a [`Memory`] before a step and saves
//! [`Memory::changed`] after it; the concurrent calls of one step share it.

use std::sync::{Mutex, MutexGuard};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Done, Fail};

/// Most bytes of notes one scope keeps.
pub const MEMORY_LIMIT: usize = 4096;

pub(super) fn schema() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "memory",
            "description": "Keep notes that persist across conversations (at most 4 KiB). \
                            add appends content as a new line; replace swaps old_text for \
                            content; remove deletes old_text. Answers the notes after the change.",
            "parameters": {
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["add", "replace", "remove"]},
                    "content": {"type": "string", "description": "The new text (add, replace)"},
                    "old_text": {"type": "string",
                                 "description": "Text now in the notes (replace, remove)"}
                },
                "required": ["action"]
            }
        }
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Add,
    Replace,
    Remove,
}

#[derive(Deserialize)]
pub(super) struct Args {
    action: Action,
    #[serde(default)]
    content: String,
    #[serde(default)]
    old_text: String,
}

/// One scope's memory notes, shared by the concurrent calls of a step.
pub struct Memory {
    state: Mutex<State>,
}

struct State {
    notes: String,
    changed: bool,
}

impl Memory {
    pub fn new(notes: String) -> Memory {
        Memory {
            state: Mutex::new(State {
                notes,
                changed: false,
            }),
        }
    }

    pub fn notes(&self) -> String {
        self.lock().notes.clone()
    }

    /// The new notes, if any call changed them.
    pub fn changed(&self) -> Option<String> {
        let state = self.lock();
        state.changed.then(|| state.notes.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain string: a panic mid-call cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn apply(&self, args: Args) -> Done {
        let mut state = self.lock();
        let content = args.content.trim();
        let new = match args.action {
            Action::Add => {
                if content.is_empty() {
                    return Err(Fail::error("add needs content"));
                }
                if state.notes.trim().is_empty() {
                    content.to_owned()
                } else {
                    format!("{}\n{content}", state.notes.trim_end())
                }
            }
            Action::Replace => {
                let at = find_once(&state.notes, &args.old_text)?;
                let mut new = state.notes.clone();
                new.replace_range(at..at + args.old_text.len(), content);
                tidy(&new)
            }
            Action::Remove => {
                let at = find_once(&state.notes, &args.old_text)?;
                let mut new = state.notes.clone();
                new.replace_range(at..at + args.old_text.len(), "");
                tidy(&new)
            }
        };
        if new.len() > MEMORY_LIMIT {
            return Err(Fail::error(format!(
                "the memory would be {} bytes, over its limit of {MEMORY_LIMIT}; replace or \
                 remove notes first",
                new.len()
            )));
        }
        if new != state.notes {
            state.notes = new;
            state.changed = true;
        }
        Ok(if state.notes.is_empty() {
            "[the memory is empty]".to_owned()
        } else {
            state.notes.clone()
        })
    }
}

/// Where `old` occurs in `notes`, when it occurs exactly once: a change to
/// the wrong one of two places would be silent.
fn find_once(notes: &str, old: &str) -> Result<usize, Fail> {
    if old.is_empty() {
        return Err(Fail::error("old_text is required to replace or remove"));
    }
    let mut found = notes.match_indices(old).map(|(at, _)| at);
    match (found.next(), found.next()) {
        (Some(at), None) => Ok(at),
        (None, _) => Err(Fail::error(format!(
            "old_text not found in the memory: {old}"
        ))),
        (Some(_), Some(_)) => Err(Fail::error(
            "old_text occurs more than once in the memory; give more of it",
        )),
    }
}

/// Drops the blank lines a removal leaves behind.
fn tidy(notes: &str) -> String {
    notes
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(memory: &Memory, args: Value) -> Done {
        memory.apply(serde_json::from_value(args).unwrap())
    }

    #[test]
    fn add_replace_remove() {
        let memory = Memory::new(String::new());
        assert_eq!(memory.changed(), None);
        let got = call(&memory, json!({"action": "add", "content": "likes tea"})).unwrap();
        assert_eq!(got, "likes tea");
        call(
            &memory,
            json!({"action": "add", "content": "lives in Oslo"}),
        )
        .unwrap();
        let got = call(
            &memory,
            json!({"action": "replace", "old_text": "tea", "content": "coffee"}),
        )
        .unwrap();
        assert_eq!(got, "likes coffee\nlives in Oslo");
        let got = call(
            &memory,
            json!({"action": "remove", "old_text": "likes coffee"}),
        )
        .unwrap();
        assert_eq!(got, "lives in Oslo");
        assert_eq!(memory.changed().as_deref(), Some("lives in Oslo"));
        let got = call(
            &memory,
            json!({"action": "remove", "old_text": "lives in Oslo"}),
        )
        .unwrap();
        assert_eq!(got, "[the memory is empty]");
    }

    #[test]
    fn missing_or_ambiguous_old_text_is_an_error() {
        let memory = Memory::new("a b a".to_owned());
        let fail = call(&memory, json!({"action": "remove", "old_text": "a"})).unwrap_err();
        assert!(fail.message.contains("more than once"));
        let fail = call(&memory, json!({"action": "remove", "old_text": "z"})).unwrap_err();
        assert!(fail.message.contains("not found"));
        assert_eq!(memory.changed(), None);
    }

    #[test]
    fn the_notes_never_exceed_the_limit() {
        let memory = Memory::new("x".repeat(MEMORY_LIMIT - 10));
        let fail = call(&memory, json!({"action": "add", "content": "y".repeat(20)})).unwrap_err();
        assert!(
            fail.message.contains("over its limit of 4096"),
            "{}",
            fail.message
        );
        assert_eq!(memory.notes().len(), MEMORY_LIMIT - 10);
        assert_eq!(memory.changed(), None);
        call(&memory, json!({"action": "add", "content": "12345678"})).unwrap();
        assert_eq!(memory.notes().len(), MEMORY_LIMIT - 1);
    }
}
