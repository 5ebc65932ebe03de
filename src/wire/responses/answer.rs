//! A chat completion (already normalized: usage in OpenAI's fields,
//! reasoning as `reasoning_content`) becomes the Response object OpenAI's
//! clients parse: output items, status, usage under the Responses names, and
//! the request's settings echoed back.

use serde_json::{json, Value};

use super::{new_id, Request};
use crate::wire::agent::ToolStep;

/// What the Response says about itself beyond the upstream's answer.
pub struct Meta<'a> {
    /// `resp_...`
    pub id: &'a str,
    /// Unix seconds.
    pub created_at: u64,
    /// The Responses request as the client sent it: `model` as asked, and the
    /// settings a Response echoes.
    pub request: &'a Request<'a>,
}

/// The Response object for `completion`.
pub fn from_chat(completion: &Value, meta: &Meta) -> Value {
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let mut output = vec![];
    if let Some(text) = message["reasoning_content"]
        .as_str()
        .filter(|t| !t.is_empty())
    {
        output.push(json!({
            "type": "reasoning",
            "id": new_id("rs"),
            "summary": [{"type": "summary_text", "text": text}],
        }));
    }
    let text = match &message["content"] {
        Value::String(text) => text.clone(),
        // Some upstreams answer in content parts.
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    };
    if !text.is_empty() {
        output.push(json!({
            "type": "message",
            "id": new_id("msg"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        output.push(json!({
            "type": "function_call",
            "id": new_id("fc"),
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"].as_str().unwrap_or("{}"),
            "status": "completed",
        }));
    }
    let incomplete = match choice["finish_reason"].as_str() {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    };
    let mut response = envelope(meta);
    response["status"] = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    }
    .into();
    response["incomplete_details"] = incomplete.map_or(Value::Null, |r| json!({"reason": r}));
    response["output"] = Value::Array(output);
    response["usage"] = usage(&completion["usage"]);
    response
}

/// The agent loop's built-in calls, as the items before the answer's own:
/// a `function_call` and its `function_call_output` each.
pub fn with_steps(response: &mut Value, steps: &[ToolStep]) {
    if steps.is_empty() {
        return;
    }
    let mut output: Vec<Value> = steps
        .iter()
        .flat_map(|step| {
            [
                json!({"type": "function_call", "id": new_id("fc"), "call_id": step.call_id,
                    "name": step.name, "arguments": step.arguments, "status": "completed"}),
                json!({"type": "function_call_output", "id": new_id("fco"),
                    "call_id": step.call_id, "output": step.output, "status": "completed"}),
            ]
        })
        .collect();
    if let Some(Value::Array(own)) = response.get_mut("output") {
        output.append(own);
    }
    response["output"] = Value::Array(output);
}

/// Chat usage under the Responses names.
pub fn usage(chat: &Value) -> Value {
    if !chat.is_object() {
        return Value::Null;
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (input, output) = (n(&chat["prompt_tokens"]), n(&chat["completion_tokens"]));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n(&chat["prompt_tokens_details"]["cached_tokens"])},
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": n(&chat["completion_tokens_details"]["reasoning_tokens"]),
        },
        "total_tokens": chat["total_tokens"].as_u64().unwrap_or(input + output),
    })
}

/// Everything of a Response but its outcome (`status`, `output`, `usage`,
/// `incomplete_details`): also what a stream's first events carry.
pub fn envelope(meta: &Meta) -> Value {
    let r = meta.request;
    let or = |key: &str, default: Value| r.setting(key).unwrap_or(default);
    json!({
        "id": meta.id,
        "object": "response",
        "created_at": meta.created_at,
        "status": "in_progress",
        "error": null,
        "incomplete_details": null,
        "instructions": or("instructions", Value::Null),
        "max_output_tokens": or("max_output_tokens", Value::Null),
        "model": or("model", Value::Null),
        "output": [],
        "parallel_tool_calls": or("parallel_tool_calls", true.into()),
        "previous_response_id": or("previous_response_id", Value::Null),
        "reasoning": {"effort": r.setting("reasoning").map_or(Value::Null, |x| x["effort"].clone()), "summary": null},
        "store": or("store", true.into()),
        "temperature": or("temperature", 1.0.into()),
        "text": or("text", json!({"format": {"type": "text"}})),
        "tool_choice": or("tool_choice", "auto".into()),
        "tools": or("tools", json!([])),
        "top_p": or("top_p", 1.0.into()),
        "truncation": "disabled",
        "usage": null,
        "user": or("user", Value::Null),
        "metadata": or("metadata", json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(completion: Value) -> Value {
        let body =
            json!({"model": "main", "input": "hi", "instructions": "sys", "metadata": {"k": "v"},
            "tools": [{"type": "function", "name": "f"}], "temperature": 0.2})
            .to_string();
        let request = Request::parse(body.as_bytes()).unwrap();
        from_chat(
            &completion,
            &Meta {
                id: "resp_1",
                created_at: 1_700_000_000,
                request: &request,
            },
        )
    }

    #[test]
    fn a_text_answer_with_reasoning_and_usage() {
        let r = respond(
            json!({"model": "kimi-k2", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 3}}}),
        );
        assert_eq!(r["id"], "resp_1");
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "main", "the model as the client asked");
        assert_eq!(r["instructions"], "sys");
        assert_eq!(r["metadata"], json!({"k": "v"}));
        assert_eq!(r["temperature"], 0.2);
        assert_eq!(r["incomplete_details"], Value::Null);
        let output = r["output"].as_array().unwrap();
        assert_eq!(output[0]["type"], "reasoning");
        assert_eq!(output[0]["summary"][0]["text"], "2+2");
        assert!(output[0]["id"].as_str().unwrap().starts_with("rs_"));
        assert_eq!(output[1]["type"], "message");
        assert_eq!(
            output[1]["content"][0],
            json!({"type": "output_text", "text": "4", "annotations": []})
        );
        assert!(output[1]["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(
            r["usage"],
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
                "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 15})
        );
    }

    #[test]
    fn tool_calls_become_function_call_items() {
        let r = respond(
            json!({"choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ]}}]}),
        );
        let output = r["output"].as_array().unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["type"], "function_call");
        assert_eq!(output[0]["call_id"], "call_1");
        assert_eq!(output[0]["name"], "f");
        assert_eq!(output[0]["arguments"], "{\"a\":1}");
        assert!(output[0]["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(output[1]["call_id"], "call_2");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["usage"], Value::Null);
    }

    #[test]
    fn an_answer_cut_for_length_is_incomplete() {
        let r = respond(json!({"choices": [{"finish_reason": "length",
            "message": {"role": "assistant", "content": "Once upon"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}}));
        assert_eq!(r["status"], "incomplete");
        assert_eq!(
            r["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(r["usage"]["total_tokens"], 5);
    }
}
