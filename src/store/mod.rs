//! Stored responses: what `previous_response_id` continues from and what
//! `GET /v1/responses/{id}` returns. Behind one small trait so the embedded
//! file ([`embedded`]) and a shared backend for several replicas are
//! interchangeable (`cluster::store` keeps them in Redis for several
//! replicas).
//!
//! Beside responses it keeps the agent loop's records ([`Kind`]): sessions
//! and memory notes, one text value per key.
//!
//! A stored response (and a record) belongs to the client key that made it:
//! every read and delete names its owner, and another owner's id reads as
//! absent, so a key never learns that someone else's response exists.

pub mod embedded;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::wire::responses;

/// One stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// `resp_...`
    pub id: String,
    /// The name of the client key that made it ("" when the proxy has no keys).
    pub owner: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The full input that produced it (the continued conversation
    /// included): a JSON array of Responses input items, as the client sent
    /// them ([`responses::stored::items`] gives each its `id`).
    pub input: String,
    /// The response object as the client got it (JSON).
    pub response: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the store failed: {0}")]
    Failed(String),
}

pub trait ResponseStore: Send + Sync {
    /// Keeps `response`, replacing one with the same id. The write is placed
    /// when `put` is called, not when the future is first polled: a `get`
    /// called after `put` returned sees the response, so a client that
    /// continues its answer at once finds it. The future tells whether the
    /// write lasted.
    fn put(&self, response: StoredResponse) -> BoxFuture<'static, Result<(), StoreError>>;

    /// The response `id` of `owner`, if it is there and not expired.
    fn get<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, StoreError>>;

    /// Forgets the response `id` of `owner`; false when there was none.
    fn delete<'a>(&'a self, owner: &'a str, id: &'a str)
        -> BoxFuture<'a, Result<bool, StoreError>>;

    /// One page of the input that produced response `id`, in OpenAI's list
    /// shape; None when there is no such response.
    fn input_items<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
        page: Page,
    ) -> BoxFuture<'a, Result<Option<Value>, StoreError>> {
        Box::pin(async move {
            let stored = self.get(owner, id).await?;
            Ok(stored.map(|r| page.of(&responses::stored::items(&r.id, &r.input))))
        })
    }

    /// The `kind` record `key` of `owner`, if it is there and not expired.
    fn load<'a>(
        &'a self,
        kind: Kind,
        owner: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Keeps `value` as the `kind` record `key` of `owner`, replacing the one
    /// there; queued when called, like `put`.
    fn save(
        &self,
        kind: Kind,
        owner: &str,
        key: &str,
        value: String,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Whether other replicas read what this store writes. Then a client's
    /// next request may reach another replica, so a response's answer waits
    /// for its `put` (the local one is seen at once either way).
    fn shared(&self) -> bool {
        false
    }
}

/// The agent loop's record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A session's conversation (`X-Hermes-Session-Id`).
    Session,
    /// A memory scope's notes.
    Memory,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Memory => "memory",
        }
    }
}

/// Which items of a list to return, as OpenAI's list endpoints take it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Start after the item with this id.
    pub after: Option<String>,
    /// 1 to 100.
    pub limit: usize,
    pub order: Order,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Default for Page {
    /// OpenAI's defaults: the newest 20 first.
    fn default() -> Self {
        Page {
            after: None,
            limit: 20,
            order: Order::Desc,
        }
    }
}

impl Page {
    /// `{"object": "list", "data", "first_id", "last_id", "has_more"}` over `items`
    /// (given oldest first).
    pub fn of(&self, items: &[Value]) -> Value {
        let mut ordered: Vec<&Value> = items.iter().collect();
        if self.order == Order::Desc {
            ordered.reverse();
        }
        let start = match &self.after {
            Some(after) => ordered
                .iter()
                .position(|item| item["id"] == after.as_str())
                .map_or(ordered.len(), |at| at + 1),
            None => 0,
        };
        let limit = self.limit.clamp(1, 100);
        let rest = &ordered[start.min(ordered.len())..];
        let data: Vec<&Value> = rest.iter().take(limit).copied().collect();
        json!({
            "object": "list",
            "first_id": data.first().map(|item| &item["id"]),
            "last_id": data.last().map(|item| &item["id"]),
            "has_more": rest.len() > data.len(),
            "data": data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Value> {
        (1..=n)
            .map(|i| json!({"id": format!("msg_{i}"), "type": "message"}))
            .collect()
    }

    fn ids(page: &Value) -> Vec<&str> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn pages_newest_first_by_default_and_continue_after_a_cursor() {
        let items = items(5);
        let first = Page {
            limit: 2,
            ..Page::default()
        }
        .of(&items);
        assert_eq!(ids(&first), ["msg_5", "msg_4"]);
        assert_eq!(first["first_id"], "msg_5");
        assert_eq!(first["last_id"], "msg_4");
        assert_eq!(first["has_more"], true);
        assert_eq!(first["object"], "list");

        let next = Page {
            after: Some("msg_4".into()),
            limit: 2,
            order: Order::Desc,
        }
        .of(&items);
        assert_eq!(ids(&next), ["msg_3", "msg_2"]);
        let last = Page {
            after: Some("msg_2".into()),
            limit: 2,
            order: Order::Desc,
        }
        .of(&items);
        assert_eq!(ids(&last), ["msg_1"]);
        assert_eq!(last["has_more"], false);
    }

    #[test]
    fn pages_oldest_first_on_request_and_bounds_the_limit() {
        let items = items(150);
        let asc = Page {
            after: None,
            limit: 1000,
            order: Order::Asc,
        }
        .of(&items);
        assert_eq!(ids(&asc).len(), 100);
        assert_eq!(ids(&asc)[0], "msg_1");
        assert_eq!(asc["has_more"], true);
        // An unknown cursor is past the end, not the start.
        let unknown = Page {
            after: Some("msg_x".into()),
            ..Page::default()
        }
        .of(&items);
        assert_eq!(ids(&unknown), Vec::<&str>::new());
        assert_eq!(unknown["first_id"], Value::Null);
        assert_eq!(unknown["has_more"], false);
    }
}
