//! Stored responses as the store tests write them.

use hermes_proxy::store::StoredResponse;
use serde_json::json;

/// Response `id` of `owner`, made at `created_at`, with two input items.
pub fn response(id: &str, owner: &str, created_at: u64) -> StoredResponse {
    StoredResponse {
        id: id.into(),
        owner: owner.into(),
        created_at,
        input: json!([
            {"id": format!("{id}_in1"), "type": "message", "role": "user", "content": "hi"},
            {"id": format!("{id}_in2"), "type": "message", "role": "user", "content": "again"},
        ])
        .to_string(),
        response: json!({"id": id, "object": "response", "status": "completed"}).to_string(),
    }
}
