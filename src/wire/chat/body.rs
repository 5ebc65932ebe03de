//! The canonical request body: the client's bytes as they came, parsed into
//! a tree only when a layer needs more than routing reads. Most requests
//! are routed and sent on without one: `model` is replaced by splicing its
//! bytes, so the upstream gets the client's body otherwise byte for byte
//! (a re-serialized one reorders keys and reformats numbers, and prompt
//! caching hashes the bytes it is sent).

use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value};

/// A request body in the Chat Completions schema.
#[derive(Debug, Clone)]
pub struct ChatBody {
    /// The client's bytes, for as long as they are what would be sent
    /// (`model` aside); gone once a layer changes the tree.
    raw: Option<Raw>,
    /// Parsed on first need from `raw` (which was checked as strictly as a
    /// parse, so it cannot fail); always there once `raw` is gone.
    tree: OnceLock<Map<String, Value>>,
}

#[derive(Debug, Clone)]
struct Raw {
    bytes: Bytes,
    /// Where the `model` value (quotes included) is in `bytes`.
    model_at: Range<usize>,
    /// The model to send: the client's, until a target's replaces it.
    model: String,
    stream: bool,
    reserved: Option<(&'static str, u64)>,
}

impl ChatBody {
    /// A checked body: `model_at` is where its (only) `model` string is.
    pub(super) fn raw(
        bytes: Bytes,
        model_at: Range<usize>,
        model: String,
        stream: bool,
        reserved: Option<(&'static str, u64)>,
    ) -> Self {
        ChatBody {
            raw: Some(Raw {
                bytes,
                model_at,
                model,
                stream,
                reserved,
            }),
            tree: OnceLock::new(),
        }
    }

    pub fn model(&self) -> &str {
        match &self.raw {
            Some(raw) => &raw.model,
            None => self
                .tree()
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        }
    }

    pub fn set_model(&mut self, model: &str) {
        if let Some(tree) = self.tree.get_mut() {
            tree.insert("model".into(), Value::String(model.to_owned()));
        }
        if let Some(raw) = &mut self.raw {
            model.clone_into(&mut raw.model);
        }
    }

    pub fn stream(&self) -> bool {
        match &self.raw {
            Some(raw) => raw.stream,
            None => self.tree().get("stream").and_then(Value::as_bool) == Some(true),
        }
    }

    /// The output the request reserves: `max_completion_tokens`, else
    /// `max_tokens`, with the key that said so.
    pub fn reserved_output(&self) -> Option<(&'static str, u64)> {
        match &self.raw {
            Some(raw) => raw.reserved,
            None => reserved_output(self.tree()),
        }
    }

    /// The client's body size, while it is what will be sent: a cheap bound
    /// for estimates that would otherwise need the tree.
    pub fn raw_len(&self) -> Option<usize> {
        self.raw.as_ref().map(|raw| raw.bytes.len())
    }

    /// Whether the body may hold `needle` (a quoted key): a tree may, the
    /// client's bytes do only if the needle is in them. Lets a layer skip
    /// parsing for what most requests do not have.
    pub fn may_hold(&self, needle: &memchr::memmem::Finder) -> bool {
        self.raw
            .as_ref()
            .is_none_or(|raw| needle.find(&raw.bytes).is_some())
    }

    /// The tree to change, if the body may hold `needle`: most requests
    /// lack what a rewrite looks for, and keep their bytes.
    pub fn tree_mut_if(
        &mut self,
        needle: &memchr::memmem::Finder,
    ) -> Option<&mut Map<String, Value>> {
        if self.may_hold(needle) {
            Some(self.tree_mut())
        } else {
            None
        }
    }

    /// The tree, parsed on first need.
    pub fn tree(&self) -> &Map<String, Value> {
        self.tree.get_or_init(|| {
            let Some(raw) = &self.raw else {
                return Map::new();
            };
            // Checked when it came in: a parse of it does not fail.
            let mut tree: Map<String, Value> =
                serde_json::from_slice(&raw.bytes).unwrap_or_default();
            tree.insert("model".into(), Value::String(raw.model.clone()));
            tree
        })
    }

    /// The tree, to change: from now on it is what will be sent.
    pub fn tree_mut(&mut self) -> &mut Map<String, Value> {
        self.tree();
        self.raw = None;
        self.tree.get_mut().expect("parsed just above")
    }

    pub fn into_tree(mut self) -> Map<String, Value> {
        self.tree();
        self.tree.take().unwrap_or_default()
    }

    /// The body to send: the client's bytes with `model` spliced in, or the
    /// tree serialized.
    pub fn to_vec(&self) -> Vec<u8> {
        let Some(raw) = &self.raw else {
            return serde_json::to_vec(self.tree()).unwrap_or_default();
        };
        let (bytes, at) = (&raw.bytes, &raw.model_at);
        let mut out = Vec::with_capacity(bytes.len() + raw.model.len() + 2);
        out.extend_from_slice(&bytes[..at.start]);
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &raw.model);
        out.extend_from_slice(&bytes[at.end..]);
        out
    }
}

impl From<Map<String, Value>> for ChatBody {
    fn from(tree: Map<String, Value>) -> Self {
        ChatBody {
            raw: None,
            tree: OnceLock::from(tree),
        }
    }
}

/// [`ChatBody::reserved_output`] of a tree.
pub fn reserved_output(tree: &Map<String, Value>) -> Option<(&'static str, u64)> {
    reserved_by(|key| tree.get(key)?.as_u64())
}

/// The output a request reserves, whatever holds its fields: the first of
/// `max_completion_tokens` (the newer name), `max_tokens` that is a count.
pub(super) fn reserved_by(
    count: impl Fn(&'static str) -> Option<u64>,
) -> Option<(&'static str, u64)> {
    ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find_map(|key| Some((key, count(key)?)))
}
