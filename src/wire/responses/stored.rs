//! A stored response read back: the conversation a `previous_response_id`
//! continues, and the input items `GET /v1/responses/{id}/input_items` lists.
//!
//! The store keeps the input as the client sent it, and clients often send
//! items without an `id`; so ids are given where the items are read, made
//! from the response's id and the item's place. The same item has the same
//! id on every read, which is what paging `after` an id needs.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The items a continued response stands for: its input, then its output.
/// `input` is the stored input (a JSON array), `response` the stored Response.
pub fn history<'s>(input: &'s str, response: &'s str) -> Vec<&'s RawValue> {
    #[derive(Deserialize)]
    struct Output<'a> {
        #[serde(borrow, default)]
        output: Vec<&'a RawValue>,
    }
    let mut items: Vec<&RawValue> = serde_json::from_str(input).unwrap_or_default();
    if let Ok(response) = serde_json::from_str::<Output>(response) {
        items.extend(response.output);
    }
    items
}

/// The stored input of response `id` as Responses items, each with a `type`
/// and an `id`.
pub fn items(id: &str, input: &str) -> Vec<Value> {
    let mut items: Vec<Value> = serde_json::from_str(input).unwrap_or_default();
    let tag = id.strip_prefix("resp_").unwrap_or(id);
    for (at, item) in items.iter_mut().enumerate() {
        let Some(fields) = item.as_object_mut() else {
            continue;
        };
        if !fields.contains_key("type") && fields.contains_key("role") {
            fields.insert("type".into(), "message".into());
        }
        if fields.get("id").is_none_or(Value::is_null) {
            let prefix = match fields.get("type").and_then(Value::as_str) {
                Some("function_call") => "fc",
                Some("function_call_output") => "fco",
                Some("reasoning") => "rs",
                _ => "msg",
            };
            fields.insert("id".into(), format!("{prefix}_{tag}_{at}").into());
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_history_is_the_input_then_the_output() {
        let input = r#"[{"role":"user","content":"hi"}]"#;
        let response =
            r#"{"id":"resp_1","output":[{"type":"message","role":"assistant","content":[]}]}"#;
        let items: Vec<&str> = history(input, response).iter().map(|i| i.get()).collect();
        assert_eq!(
            items,
            [
                r#"{"role":"user","content":"hi"}"#,
                r#"{"type":"message","role":"assistant","content":[]}"#
            ]
        );
    }

    #[test]
    fn items_without_an_id_get_one_that_is_the_same_on_every_read() {
        let input = r#"[{"role":"user","content":"hi"},{"id":"fc_own","type":"function_call"},
            {"type":"function_call_output","call_id":"c","output":"x"}]"#;
        let first = items("resp_abc", input);
        assert_eq!(first, items("resp_abc", input));
        assert_eq!(first[0]["id"], "msg_abc_0");
        assert_eq!(first[0]["type"], "message");
        assert_eq!(first[1]["id"], "fc_own");
        assert_eq!(first[2]["id"], "fco_abc_2");
        assert_eq!(items("resp_other", input)[0]["id"], json!("msg_other_0"));
    }
}
