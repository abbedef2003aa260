"""Every route of the emulated router, per version, checked against TGI's own OpenAPI spec.

2.0.4 has no spec file here; it is checked against openapi-2.4.1.json except where 2.0.x
documentedly differs (/info: `max_input_length` instead of `max_input_tokens`, docs/tgi.md §5).
"""

from __future__ import annotations

import json
import signal

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .conftest import VERSIONS, start_emulator

INFO_FIELDS_2_3 = {
    "model_id",
    "model_sha",
    "model_pipeline_tag",
    "max_concurrent_requests",
    "max_best_of",
    "max_stop_sequences",
    "max_input_tokens",
    "max_total_tokens",
    "validation_workers",
    "max_client_batch_size",
    "router",
    "version",
    "sha",
    "docker_label",
}
INFO_FIELDS_2_0 = (INFO_FIELDS_2_3 - {"max_input_tokens"}) | {
    "max_input_length",
    "model_dtype",
    "model_device_type",
    "waiting_served_ratio",
    "max_batch_total_tokens",
    "max_waiting_tokens",
    "max_batch_size",
}


@pytest.fixture(scope="module", params=VERSIONS)
def served(request, tmp_path_factory):
    version = request.param
    emulator = start_emulator(
        tmp_path_factory.mktemp(f"api-{version}"),
        version=version,
        args=[
            "--max-input-tokens" if version != "2.0.4" else "--max-input-length",
            "64",
            "--max-total-tokens",
            "128",
            "--max-batch-prefill-tokens",
            "128",
        ],
    )
    emulator.wait_ready()
    yield version, emulator
    emulator.proc.send_signal(signal.SIGTERM)
    assert emulator.wait_exit() == 0


def sse_events(response) -> list[str]:
    return [
        line[len("data:") :]
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data:")
    ]


def post(emulator, path, payload, **kw):
    return requests.post(emulator.url + path, json=payload, timeout=10, **kw)


def test_health_is_200_with_empty_body(served):
    _, emulator = served
    response = requests.get(emulator.url + "/health", timeout=10)
    assert response.status_code == 200
    assert response.content == b""


def test_info_has_exactly_the_version_field_set_and_validates(served, openapi):
    version, emulator = served
    info = requests.get(emulator.url + "/info", timeout=10).json()
    expected = INFO_FIELDS_2_0 if version == "2.0.4" else INFO_FIELDS_2_3
    assert set(info) == expected
    assert info["max_total_tokens"] == 128
    if version == "2.0.4":
        assert info["max_input_length"] == 64
        # The only documented 2.0 difference: validate with the 2.3+ name.
        info = {**info, "max_input_tokens": info.pop("max_input_length")}
    else:
        assert info["max_input_tokens"] == 64
    assert info["version"] == {"2.0.4": "2.0.4", "2.4.1": "2.4.1", "3.3.7": "3.3.6-dev0"}[version]
    assert openapi[version].errors_for_response("/info", "get", 200, "application/json", info) == []


def test_v1_models_lists_the_model(served, openapi):
    version, emulator = served
    body = requests.get(emulator.url + "/v1/models", timeout=10).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["tgiops-test/tiny-llama"]
    # TGI's spec documents ModelInfo for this route but the router returns a list of them
    # (docs/tgi.md §5): each element is checked against ModelInfo.
    for model in body["data"]:
        assert openapi[version].errors("ModelInfo", model) == []


def test_generate_details_and_max_new_tokens(served, openapi):
    version, emulator = served
    words = " ".join(f"w{i}" for i in range(20))
    response = post(
        emulator,
        "/generate",
        {
            "inputs": words,
            "parameters": {
                "max_new_tokens": 5,
                "details": True,
                "decoder_input_details": True,
                "top_n_tokens": 2,
            },
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        openapi[version].errors_for_response("/generate", "post", 200, "application/json", body)
        == []
    )
    assert body["generated_text"] == "w0 w1 w2 w3 w4"
    assert body["details"]["generated_tokens"] == 5
    assert body["details"]["finish_reason"] == "length"
    assert len(body["details"]["prefill"]) == 20
    assert response.headers["x-generated-tokens"] == "5"


def test_generate_without_details_and_compat_route(served, openapi):
    version, emulator = served
    body = post(
        emulator, "/generate", {"inputs": "short prompt", "parameters": {"max_new_tokens": 50}}
    ).json()
    assert body == {"generated_text": "short prompt"}  # echo then EOS; details only on request
    compat = post(
        emulator,
        "/",
        {"inputs": "short prompt", "parameters": {"max_new_tokens": 50, "details": True}},
    )
    data = compat.json()
    assert openapi[version].errors_for_response("/", "post", 200, "application/json", data) == []
    assert data[0]["details"]["finish_reason"] == "eos_token"


def test_generate_best_of_sequences_validate(served, openapi):
    version, emulator = served
    body = post(
        emulator,
        "/generate",
        {
            "inputs": "a b c",
            "parameters": {
                "max_new_tokens": 2,
                "details": True,
                "best_of": 2,
                "do_sample": True,
                "seed": 7,
            },
        },
    ).json()
    assert len(body["details"]["best_of_sequences"]) == 1
    assert openapi[version].errors("GenerateResponse", body) == []


def test_generate_stream_events_validate(served, openapi):
    version, emulator = served
    response = post(
        emulator,
        "/generate_stream",
        {"inputs": "one two three", "parameters": {"max_new_tokens": 10, "details": True}},
        stream=True,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(e) for e in sse_events(response)]
    assert len(events) == 4  # three echoed words and EOS
    for event in events:
        assert (
            openapi[version].errors_for_response(
                "/generate_stream", "post", 200, "text/event-stream", event
            )
            == []
        )
    assert [e["generated_text"] for e in events[:-1]] == [None, None, None]
    assert events[-1]["generated_text"] == "one two three"
    assert events[-1]["details"]["input_length"] == 3
    assert events[-1]["token"]["special"] is True


def test_validation_error_shape_for_too_long_input(served, openapi):
    version, emulator = served
    long_input = " ".join(["x"] * 65)  # max_input_tokens is 64
    response = post(
        emulator, "/generate", {"inputs": long_input, "parameters": {"max_new_tokens": 1}}
    )
    assert response.status_code == 422
    body = response.json()
    assert body == {
        "error": "Input validation error: `inputs` must have less than 64 tokens. Given: 65",
        "error_type": "validation",
    }
    assert (
        openapi[version].errors_for_response("/generate", "post", 422, "application/json", body)
        == []
    )
    total = post(emulator, "/generate", {"inputs": "a b", "parameters": {"max_new_tokens": 127}})
    assert total.status_code == 422
    assert "must be <= 128" in total.json()["error"]


def test_stream_validation_error_is_an_event(served, openapi):
    version, emulator = served
    response = post(
        emulator,
        "/generate_stream",
        {"inputs": "a", "parameters": {"max_new_tokens": 0}},
        stream=True,
    )
    events = [json.loads(e) for e in sse_events(response)]
    assert events == [
        {
            "error": "Input validation error: `max_new_tokens` must be strictly positive",
            "error_type": "validation",
        }
    ]
    assert (
        openapi[version].errors_for_response(
            "/generate_stream", "post", 422, "text/event-stream", events[0]
        )
        == []
    )


def test_chat_completion_and_stream(served, openapi):
    version, emulator = served
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping pong"}]
    response = post(
        emulator, "/v1/chat/completions", {"model": "tgi", "messages": messages, "max_tokens": 20}
    )
    body = response.json()
    assert (
        openapi[version].errors_for_response(
            "/v1/chat/completions", "post", 200, "application/json", body
        )
        == []
    )
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "ping pong"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3
    short = post(emulator, "/v1/chat/completions", {"messages": messages, "max_tokens": 1}).json()
    assert short["choices"][0]["finish_reason"] == "length"

    stream = post(
        emulator,
        "/v1/chat/completions",
        {
            "messages": messages,
            "max_tokens": 20,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        stream=True,
    )
    events = sse_events(stream)
    done = events[-1] == "[DONE]"
    assert done == (version != "2.0.4")
    chunks = [json.loads(e) for e in (events[:-1] if done else events)]
    for chunk in chunks:
        assert (
            openapi[version].errors_for_response(
                "/v1/chat/completions", "post", 200, "text/event-stream", chunk
            )
            == []
        )
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"])
    assert text == "ping pong"
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_completions_and_stream(served, openapi):
    version, emulator = served
    body = post(
        emulator, "/v1/completions", {"prompt": ["alpha beta", "gamma"], "max_tokens": 1}
    ).json()
    assert (
        openapi[version].errors_for_response(
            "/v1/completions", "post", 200, "application/json", body
        )
        == []
    )
    assert [c["text"] for c in body["choices"]] == ["alpha", "gamma"]
    stream = post(
        emulator,
        "/v1/completions",
        {"prompt": "alpha beta", "max_tokens": 5, "stream": True},
        stream=True,
    )
    events = [e for e in sse_events(stream) if e != "[DONE]"]
    chunks = [json.loads(e) for e in events]
    for chunk in chunks:
        assert (
            openapi[version].errors_for_response(
                "/v1/completions", "post", 200, "text/event-stream", chunk
            )
            == []
        )
    # The stream's last event is a CompletionFinal carrying usage and FinishReason's Display
    # text ("eos_token"), unlike the non-stream response's OpenAI-style "stop".
    assert chunks[-1]["choices"][0]["finish_reason"] == "eos_token"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert openapi[version].errors("CompletionFinal", chunks[-1]) == []
    too_many = post(emulator, "/v1/completions", {"prompt": ["a"] * 5, "max_tokens": 1})
    assert too_many.status_code == 422


def test_tokenize(served, openapi):
    version, emulator = served
    body = post(emulator, "/tokenize", {"inputs": "hello  world"}).json()
    assert (
        openapi[version].errors_for_response("/tokenize", "post", 200, "application/json", body)
        == []
    )
    assert [(t["text"], t["start"], t["stop"]) for t in body] == [("hello", 0, 5), ("world", 7, 12)]


def test_body_errors_like_axum(served):
    _, emulator = served
    no_type = requests.post(emulator.url + "/generate", data=b'{"inputs":"x"}', timeout=10)
    assert no_type.status_code == 415
    missing = post(emulator, "/generate", {"parameters": {}})
    assert missing.status_code == 422
    assert "missing field `inputs`" in missing.text
    assert requests.get(emulator.url + "/nope", timeout=10).status_code == 404


def test_metrics_move_and_parse_as_prometheus(served):
    _, emulator = served

    def families():
        text = requests.get(emulator.url + "/metrics", timeout=10).text
        return {f.name: f for f in text_string_to_metric_families(text)}

    before = families()
    post(emulator, "/generate", {"inputs": "count me", "parameters": {"max_new_tokens": 1}})
    after = families()
    for name in (
        "tgi_request_count",
        "tgi_request_success",
        "tgi_queue_size",
        "tgi_batch_current_size",
        "tgi_request_duration",
        "tgi_batch_max_total_tokens",
    ):
        assert name in after, name

    def value(fams, name):
        return next(s.value for s in fams[name].samples if s.name in (name, name + "_total"))

    assert value(after, "tgi_request_count") == value(before, "tgi_request_count") + 1
    assert value(after, "tgi_request_success") == value(before, "tgi_request_success") + 1
    assert value(after, "tgi_batch_max_total_tokens") > 128


def test_huggingface_hub_inference_client(served):
    from huggingface_hub import InferenceClient

    _, emulator = served
    client = InferenceClient(base_url=emulator.url, timeout=10)
    # text_generation posts to `/`, whose return_full_text defaults to true for
    # text-generation models (server.rs compat_return_full_text) when the client omits it.
    assert (
        client.text_generation("alpha beta gamma", max_new_tokens=2) == "alpha beta gammaalpha beta"
    )
    assert (
        client.text_generation("alpha beta gamma", max_new_tokens=2, return_full_text=False)
        == "alpha beta"
    )
    details = client.text_generation(
        "alpha beta", max_new_tokens=10, details=True, return_full_text=False
    )
    assert details.generated_text == "alpha beta"
    assert details.details.finish_reason == "eos_token"
    # The client yields every token's text, the special EOS token included (as with real TGI).
    streamed = "".join(client.text_generation("one two", max_new_tokens=5, stream=True))
    assert streamed == "one two</s>"
    chat = client.chat_completion([{"role": "user", "content": "hi there"}], max_tokens=10)
    assert chat.choices[0].message.content == "hi there"
    # TGI ends OpenAI streams with axum's `data:[DONE]` (no space). Client versions that only
    # recognise `data: [DONE]` raise JSONDecodeError on that last line (huggingface_hub issue
    # #4536): the chunks before it are what matters here, with either client behaviour.
    texts = []
    try:
        for chunk in client.chat_completion(
            [{"role": "user", "content": "hi there"}], max_tokens=10, stream=True
        ):
            texts.extend(c.delta.content or "" for c in chunk.choices)
    except json.JSONDecodeError as exc:
        assert exc.doc == "[DONE]"
    assert "".join(texts) == "hi there"
