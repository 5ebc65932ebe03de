#!/usr/bin/env python3
"""End-to-end test: the official OpenAI Python SDK against a running hermes-proxy.

The proxy must be serving the repository's routes.toml with no provider keys
set, so the built-in `demo` provider answers `"model": "default"`.

Environment:
    OPENAI_BASE_URL   e.g. http://127.0.0.1:8080/v1 (required)
    OPENAI_API_KEY    any value; the default config has no client keys

Runs as a plain script (not pytest): one line per case, then exactly one
summary line `N passed, M failed`. Exit status 1 if any case failed.
"""

import os
import sys

import openai
from openai import OpenAI

from harness import report, run_cases

BASE_URL = os.environ.get("OPENAI_BASE_URL")
if not BASE_URL:
    print("OPENAI_BASE_URL is not set (e.g. http://127.0.0.1:8080/v1)", file=sys.stderr)
    print("0 passed, 1 failed")
    sys.exit(1)

client = OpenAI(
    base_url=BASE_URL,
    api_key=os.environ.get("OPENAI_API_KEY") or "sk-e2e-dummy",
    max_retries=0,  # a retried failure must not look like a pass
    timeout=30.0,
)

SAID = "the quick brown fox e2e-7f3a"


def check_usage(usage, where):
    assert usage is not None, f"{where}: no usage"
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, field)
        assert isinstance(value, int) and value >= 0, f"{where}: usage.{field} = {value!r}"
    assert usage.prompt_tokens > 0, f"{where}: prompt_tokens = {usage.prompt_tokens}"
    assert usage.completion_tokens > 0, f"{where}: completion_tokens = {usage.completion_tokens}"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, (
        f"{where}: total {usage.total_tokens} != "
        f"{usage.prompt_tokens} + {usage.completion_tokens}"
    )


def error_code(exc):
    """The OpenAI `error.code` of an APIStatusError, whichever way the SDK kept the body."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    code = body.get("code") if isinstance(body, dict) else None
    return code or getattr(exc, "code", None)


def case_chat_non_stream():
    raw = client.chat.completions.with_raw_response.create(
        model="default",
        messages=[{"role": "user", "content": SAID}],
    )
    headers = raw.headers
    assert headers.get("x-hermes-route") == "default", f"x-hermes-route = {headers.get('x-hermes-route')!r}"
    assert headers.get("x-hermes-provider") == "demo", f"x-hermes-provider = {headers.get('x-hermes-provider')!r}"
    assert headers.get("x-request-id"), "x-request-id missing"
    completion = raw.parse()
    assert completion.object == "chat.completion", completion.object
    assert len(completion.choices) == 1, f"{len(completion.choices)} choices"
    message = completion.choices[0].message
    assert message.role == "assistant", message.role
    assert SAID in (message.content or ""), f"answer does not echo the prompt: {message.content!r}"
    assert completion.choices[0].finish_reason == "stop", completion.choices[0].finish_reason
    check_usage(completion.usage, "non-stream")


def case_request_id_passthrough():
    raw = client.chat.completions.with_raw_response.create(
        model="default",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": "e2e-req-42"},
    )
    assert raw.headers.get("x-request-id") == "e2e-req-42", raw.headers.get("x-request-id")


def case_chat_stream_usage():
    stream = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": SAID}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = []
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                text.append(choice.delta.content)
    assert chunks, "no chunks"
    answer = "".join(text)
    assert SAID in answer, f"streamed answer does not echo the prompt: {answer!r}"
    last = chunks[-1]
    assert last.choices == [], f"last chunk has choices: {last.choices!r}"
    check_usage(last.usage, "stream")
    assert all(c.usage is None for c in chunks[:-1]), "usage on a chunk before the last"


def case_models_list():
    ids = [m.id for m in client.models.list()]
    assert "default" in ids, f"'default' not in {ids}"
    assert "demo/demo" in ids, f"'demo/demo' not in {ids}"


def case_model_retrieve():
    for model_id in ("default", "demo/demo"):
        model = client.models.retrieve(model_id)
        assert model.id == model_id, f"retrieved {model.id!r} for {model_id!r}"
    try:
        client.models.retrieve("no-such-model-e2e")
    except openai.NotFoundError as e:
        assert error_code(e) == "model_not_found", f"code = {error_code(e)!r}, body = {e.body!r}"
        return
    raise AssertionError("no NotFoundError for an unknown model id")


def case_unknown_model():
    try:
        client.chat.completions.create(
            model="no-such-model-e2e",
            messages=[{"role": "user", "content": "hi"}],
        )
    except openai.NotFoundError as e:
        assert e.status_code == 404, e.status_code
        assert error_code(e) == "model_not_found", f"code = {error_code(e)!r}, body = {e.body!r}"
        return
    raise AssertionError("no NotFoundError for an unknown model")


def case_bad_request():
    try:
        client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"messages": "not a list"},
        )
    except openai.BadRequestError as e:
        assert e.status_code == 400, e.status_code
        assert error_code(e) == "invalid_request", f"code = {error_code(e)!r}, body = {e.body!r}"
        assert "messages" in str(e), f"message does not name the field: {e}"
        return
    raise AssertionError("no BadRequestError for messages that is not a list")


def case_embeddings():
    result = client.embeddings.create(model="demo/demo", input="hello embeddings")
    assert len(result.data) == 1, f"{len(result.data)} embeddings"
    vector = result.data[0].embedding
    assert isinstance(vector, list) and len(vector) > 0, f"embedding = {vector!r}"
    assert all(isinstance(x, float) for x in vector), "embedding has non-float values"
    # The demo vectors are deterministic: the same input embeds the same.
    again = client.embeddings.create(model="demo/demo", input="hello embeddings")
    assert again.data[0].embedding == vector, "equal inputs embedded differently"


def case_responses_create_and_continue():
    first = client.responses.create(model="default", input=SAID, instructions="Be brief.")
    assert first.id.startswith("resp_"), first.id
    assert first.status == "completed", first.status
    assert first.model == "default", first.model
    assert SAID in first.output_text, f"answer does not echo the prompt: {first.output_text!r}"
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0, first.usage
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    second = client.responses.create(model="default", input="and again", previous_response_id=first.id)
    assert second.previous_response_id == first.id, second.previous_response_id
    assert "and again" in second.output_text, second.output_text
    # The stored input of the second holds the whole conversation, oldest first.
    items = list(client.responses.input_items.list(second.id, order="asc"))
    texts = [part.text for item in items for part in (item.content or []) if hasattr(part, "text")]
    assert texts[0] == SAID and texts[-1] == "and again", texts


def case_responses_stream():
    kinds, deltas, numbers, final = [], [], [], None
    with client.responses.stream(model="default", input=SAID) as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds[:3]
    assert kinds[-1] == "response.completed", kinds[-1]
    assert numbers == list(range(len(numbers))), numbers
    assert len(deltas) > 1, f"text came in {len(deltas)} deltas"
    assert SAID in "".join(deltas), "".join(deltas)
    assert final.output_text == "".join(deltas), final.output_text
    assert final.usage and final.usage.output_tokens > 0, final.usage


def case_responses_retrieve_and_delete():
    made = client.responses.create(model="demo/demo", input="keep me")
    got = client.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    deleted = client.responses.delete(made.id)
    assert deleted is None or getattr(deleted, "deleted", True), deleted
    try:
        client.responses.retrieve(made.id)
    except openai.NotFoundError as e:
        assert error_code(e) == "not_found", f"code = {error_code(e)!r}"
    else:
        raise AssertionError("a deleted response was still retrieved")


def case_responses_errors():
    try:
        client.responses.create(model="default", input="x", previous_response_id="resp_unknown")
    except openai.BadRequestError as e:
        assert error_code(e) == "previous_response_not_found", f"code = {error_code(e)!r}"
    else:
        raise AssertionError("no BadRequestError for an unknown previous_response_id")
    try:
        client.responses.create(model="default", input="x", tools=[{"type": "web_search"}])
    except openai.BadRequestError as e:
        assert "web_search" in str(e), str(e)
    else:
        raise AssertionError("a hosted tool was accepted")


CASES = [
    ("chat non-stream: answer, usage, x-hermes-* headers", case_chat_non_stream),
    ("chat: client x-request-id is echoed", case_request_id_passthrough),
    ("chat stream with include_usage", case_chat_stream_usage),
    ("models.list includes default", case_models_list),
    ("models.retrieve, provider/model ids included", case_model_retrieve),
    ("unknown model -> NotFoundError model_not_found", case_unknown_model),
    ("messages not a list -> BadRequestError", case_bad_request),
    ("embeddings on demo/demo", case_embeddings),
    ("responses.create, previous_response_id, input_items.list", case_responses_create_and_continue),
    ("responses.stream: typed events, deltas, final response", case_responses_stream),
    ("responses.retrieve and delete", case_responses_retrieve_and_delete),
    ("responses errors: unknown previous id, hosted tool", case_responses_errors),
]


def main():
    print(f"openai SDK {openai.__version__} against {BASE_URL}")
    passed, failed = run_cases(CASES, lambda case: case())
    return report(passed, failed)


if __name__ == "__main__":
    sys.exit(main())
