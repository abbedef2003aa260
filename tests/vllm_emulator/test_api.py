"""The OpenAI-compatible API, driven by the official `openai` client unchanged."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import openai
import pytest

from .conftest import TINY


def client(emulator, api_key: str = "EMPTY") -> openai.OpenAI:
    return openai.OpenAI(base_url=emulator.url + "/v1", api_key=api_key, max_retries=0)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} ([\d.e+-]+)$", text, re.M)
    assert match, f"{name} missing from /metrics:\n{text}"
    return float(match.group(1))


@pytest.fixture
def served(vllm):
    emulator = vllm(args=["--served-model-name", "tiny"])
    emulator.wait_ready()
    return emulator


def test_models_lists_the_served_name(served) -> None:
    models = client(served).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert models.data[0].owned_by == "vllm"


def test_completion_and_chat(served) -> None:
    api = client(served)
    completion = api.completions.create(model="tiny", prompt="one two three", max_tokens=2)
    assert completion.choices[0].text == "one two"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 2

    chat = api.chat.completions.create(
        model="tiny",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
        max_tokens=8,
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == "hello there"
    assert chat.choices[0].finish_reason == "stop"


def test_streaming_chat_and_completion(served) -> None:
    api = client(served)
    stream = api.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "alpha beta gamma"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha beta gamma"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3

    pieces = list(api.completions.create(model="tiny", prompt="x y z", max_tokens=5, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == "x y z"


def test_errors_the_client_raises(served) -> None:
    api = client(served)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.completions.create(model=TINY, prompt="hi", max_tokens=1)  # not the served name
    with pytest.raises(openai.BadRequestError, match="maximum context length is 2048"):
        api.completions.create(model="tiny", prompt="hi", max_tokens=4096)


def test_api_key_guards_v1_only(vllm) -> None:
    emulator = vllm(args=["--api-key", "sk-test-1"])
    emulator.wait_ready()
    with pytest.raises(openai.AuthenticationError):
        client(emulator, "wrong").models.list()
    assert [m.id for m in client(emulator, "sk-test-1").models.list().data] == [TINY]
    # AuthenticationMiddleware checks only /v1 paths: probes work without the key.
    assert get(emulator.url + "/health")[0] == 200
    assert get(emulator.url + "/metrics")[0] == 200
    assert get(emulator.url + "/v1/models")[0] == 401
    # The key never reaches the log.
    assert "sk-test-1" not in emulator.output


def test_vllm_api_key_from_the_environment(vllm) -> None:
    emulator = vllm(env={"VLLM_API_KEY": "sk-env"})
    emulator.wait_ready()
    assert get(emulator.url + "/v1/models")[0] == 401
    status, _ = get(emulator.url + "/v1/models", {"Authorization": "Bearer sk-env"})
    assert status == 200


def test_health_version_and_metrics(served) -> None:
    status, body = get(served.url + "/health")
    assert (status, body) == (200, "")
    assert json.loads(get(served.url + "/version")[1]) == {"version": "0.20.0"}
    client(served).completions.create(model="tiny", prompt="a b c d", max_tokens=3)
    text = get(served.url + "/metrics")[1]
    assert metric(text, "vllm:generation_tokens_total") == 3
    assert metric(text, "vllm:prompt_tokens_total") == 4
    assert metric(text, "vllm:num_requests_running") == 0
    assert metric(text, "vllm:num_requests_waiting") == 0
    assert metric(text, "vllm:kv_cache_usage_perc") == 0
    assert "vllm:gpu_cache_usage_perc" not in text  # removed after the 0.11 line
    info = re.search(r"^vllm:cache_config_info\{([^}]*)\} 1.0$", text, re.M)
    assert info and 'block_size="16"' in info.group(1)
    blocks = int(re.search(r'num_gpu_blocks="(\d+)"', info.group(1)).group(1))
    kv_line = next(line for line in served.lines if "GPU KV cache size" in line)
    assert f"{blocks * 16:,} tokens" in kv_line


def test_the_011_line_still_exports_the_deprecated_cache_metric(vllm) -> None:
    emulator = vllm(version="0.11.0")
    emulator.wait_ready()
    text = get(emulator.url + "/metrics")[1]
    assert metric(text, "vllm:gpu_cache_usage_perc") == metric(text, "vllm:kv_cache_usage_perc")


def test_metrics_count_a_request_in_flight(vllm) -> None:
    emulator = vllm(
        args=["--served-model-name", "tiny"], env={"VLLM_EMULATOR_TOKEN_SECONDS": "0.3"}
    )
    emulator.wait_ready()
    stream = client(emulator).completions.create(
        model="tiny", prompt="one two three four five six", max_tokens=6, stream=True
    )
    next(iter(stream))  # the first token is out; the rest are being generated
    text = get(emulator.url + "/metrics")[1]
    assert metric(text, "vllm:num_requests_running") == 1
    assert metric(text, "vllm:kv_cache_usage_perc") > 0
    list(stream)
    text = get(emulator.url + "/metrics")[1]
    assert metric(text, "vllm:num_requests_running") == 0
    assert metric(text, "vllm:generation_tokens_total") == 6
