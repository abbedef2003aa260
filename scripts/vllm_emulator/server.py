"""vLLM's OpenAI-compatible HTTP server, on the standard library.

Routes (vllm/entrypoints/openai/api_server.py): GET /health (200, empty body), GET /version
({"version": ...}), GET /metrics (Prometheus text, `vllm:` names, facts §1.3), GET /v1/models,
POST /v1/completions and /v1/chat/completions, both with `stream: true` as server-sent events
ending `data: [DONE]`. With `--api-key` / VLLM_API_KEY every path starting with /v1 needs
`Authorization: Bearer KEY`, else 401 `{"error": "Unauthorized"}`; /health, /metrics and
/version stay open (AuthenticationMiddleware, facts §1.2).

"Generation" echoes the words of the prompt (chat: the last user message), one whitespace word
per token, then stops ("stop"), or is cut at max_tokens ("length").
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tgi_emulator.textgen import count_tokens

from .versions import VersionProfile


@dataclass
class ServerState:
    profile: VersionProfile
    model: str
    served_names: tuple[str, ...]
    max_model_len: int
    api_keys: tuple[str, ...]
    kv_tokens: int
    num_gpu_blocks: int
    block_size: int
    gpu_memory_utilization: float
    cache_dtype: str
    token_seconds: float = 0.0
    health_flap_every: int | None = None  # test-double option: N x 200, N x 503, ...
    health_calls: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    running_tokens: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    success: dict = field(default_factory=dict)

    def next_health_ok(self) -> bool:
        with self.lock:
            n = self.health_calls
            self.health_calls += 1
        every = self.health_flap_every
        return not every or (n // every) % 2 == 0

    def metrics_text(self) -> str:
        name = self.served_names[0]
        labels = f'engine="0",model_name="{name}"'
        with self.lock:
            usage = min(1.0, self.running_tokens / self.kv_tokens) if self.kv_tokens else 0.0
            gauges = [
                (
                    "vllm:num_requests_running",
                    "Number of requests in model execution batches.",
                    float(self.running),
                ),
                ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", 0.0),
                ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage),
            ]
            if self.profile.legacy_cache_usage_metric:
                gauges.append(
                    (
                        "vllm:gpu_cache_usage_perc",
                        "GPU KV-cache usage. 1 means 100 percent usage.",
                        usage,
                    )
                )
            counters = [
                (
                    "vllm:prompt_tokens_total",
                    "Number of prefill tokens processed.",
                    float(self.prompt_tokens_total),
                ),
                (
                    "vllm:generation_tokens_total",
                    "Number of generation tokens processed.",
                    float(self.generation_tokens_total),
                ),
            ]
            success = dict(self.success)
        lines = []
        for metric, help_text, value in gauges:
            lines += [
                f"# HELP {metric} {help_text}",
                f"# TYPE {metric} gauge",
                f"{metric}{{{labels}}} {value}",
            ]
        for metric, help_text, value in counters:
            lines += [
                f"# HELP {metric} {help_text}",
                f"# TYPE {metric} counter",
                f"{metric}{{{labels}}} {value}",
            ]
        lines += [
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason in ("stop", "length", "abort"):
            lines.append(
                f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} '
                f"{float(success.get(reason, 0))}"
            )
        info = {
            "block_size": str(self.block_size),
            "cache_dtype": self.cache_dtype,
            "engine": "0",
            "gpu_memory_utilization": str(self.gpu_memory_utilization),
            "num_gpu_blocks": str(self.num_gpu_blocks),
        }
        rendered = ",".join(f'{k}="{v}"' for k, v in info.items())
        lines += [
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
            "# TYPE vllm:cache_config_info gauge",
            f"vllm:cache_config_info{{{rendered}}} 1.0",
        ]
        return "\n".join(lines) + "\n"


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": status}}


class VllmServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, state: ServerState, log) -> None:
        self.state = state
        self.log = log
        super().__init__(address, Handler)


def _words(text: str) -> list[str]:
    return text.split()


class Handler(BaseHTTPRequestHandler):
    server: VllmServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # uvicorn's access log line
        self.server.log.raw(
            f'INFO:     {self.client_address[0]}:{self.client_address[1]} - "{self.requestline}" '
            f"{args[1] if len(args) > 1 else ''}"
        )

    # ----------------------------------------------------------------- plumbing
    def _send_json(self, status: int, body, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def _send_text(self, status: int, text: str, content_type: str) -> None:
        raw = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _authorized(self) -> bool:
        keys = self.server.state.api_keys
        if not keys or not self.path.startswith("/v1"):
            return True
        header = self.headers.get("Authorization", "")
        return any(header == f"Bearer {key}" for key in keys)

    def _read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"JSON decode error: {exc}", "BadRequestError") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Input should be a valid dictionary", "BadRequestError")
        return body

    # ----------------------------------------------------------------- routes
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized():
            self._send_json(401, {"error": "Unauthorized"})
            return
        state = self.server.state
        if path == "/health":
            # 503 is what vLLM answers when the engine is dead (PR #24897, facts §1.3).
            self.send_response(200 if state.next_health_ok() else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/version":
            self._send_json(200, {"version": state.profile.version})
        elif path == "/metrics":
            self._send_text(200, state.metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/v1/models":
            data: list[dict] = [
                {
                    "id": name,
                    "object": "model",
                    "created": state.created,
                    "owned_by": "vllm",
                    "root": state.model,
                    "parent": None,
                    "max_model_len": state.max_model_len,
                    "permission": [],
                }
                for name in state.served_names
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized():
            self._send_json(401, {"error": "Unauthorized"})
            return
        try:
            body = self._read_json()
            if path == "/v1/completions":
                self._generate(body, chat=False)
            elif path == "/v1/chat/completions":
                self._generate(body, chat=True)
            else:
                self._send_json(404, {"detail": "Not Found"})
        except ApiError as exc:
            self._send_json(exc.status, exc.body)

    # ----------------------------------------------------------------- generation
    def _prompt_text(self, body: dict, chat: bool) -> str:
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise ApiError(400, "messages: Field required", "BadRequestError", "messages")
            text_parts = []
            for message in messages:
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, list):
                    content = " ".join(
                        part.get("text", "") for part in content if isinstance(part, dict)
                    )
                text_parts.append(str(content or ""))
            return "\n".join(text_parts)
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = " ".join(str(p) for p in prompt)
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt: Field required", "BadRequestError", "prompt")
        return prompt

    def _echo_source(self, body: dict, chat: bool, prompt_text: str) -> str:
        if chat:
            for message in reversed(body.get("messages") or []):
                if isinstance(message, dict) and message.get("role") == "user":
                    content = message.get("content")
                    if isinstance(content, list):
                        content = " ".join(
                            p.get("text", "") for p in content if isinstance(p, dict)
                        )
                    return str(content or "")
        return prompt_text

    def _generate(self, body: dict, chat: bool) -> None:
        state = self.server.state
        model = body.get("model")
        if model not in state.served_names:
            raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        prompt_text = self._prompt_text(body, chat)
        prompt_tokens = max(1, count_tokens(prompt_text))
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is None:
            limit = 16 if not chat else state.max_model_len - prompt_tokens
        if not isinstance(limit, int) or limit < 1:
            raise ApiError(
                400, f"max_tokens must be at least 1, got {limit}.", "BadRequestError", "max_tokens"
            )
        if prompt_tokens + limit > state.max_model_len:
            raise ApiError(
                400,
                f"This model's maximum context length is {state.max_model_len} tokens. However, "
                f"you requested {prompt_tokens + limit} tokens ({prompt_tokens} in the messages, "
                f"{limit} in the completion). Please reduce the length of the messages or "
                "completion.",
                "BadRequestError",
            )
        words = _words(self._echo_source(body, chat, prompt_text)) or ["ok"]
        finish = "stop"
        if len(words) > limit:
            words, finish = words[:limit], "length"
        request_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        with state.lock:
            state.running += 1
            state.running_tokens += prompt_tokens + len(words)
        try:
            if body.get("stream"):
                self._stream(body, chat, request_id, words, finish, prompt_tokens)
            else:
                time.sleep(state.token_seconds * len(words))
                self._send_json(
                    200, self._full(body, chat, request_id, words, finish, prompt_tokens)
                )
        finally:
            with state.lock:
                state.running -= 1
                state.running_tokens -= prompt_tokens + len(words)
                state.prompt_tokens_total += prompt_tokens
                state.generation_tokens_total += len(words)
                state.success[finish] = state.success.get(finish, 0) + 1

    def _usage(self, prompt_tokens: int, completion: int) -> dict:
        return {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion,
            "completion_tokens": completion,
            "prompt_tokens_details": None,
        }

    def _full(self, body, chat, request_id, words, finish, prompt_tokens) -> dict:
        state = self.server.state
        text = " ".join(words)
        if chat:
            choice = {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "tool_calls": [],
                    "reasoning_content": None,
                },
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
            kind = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
                "prompt_logprobs": None,
            }
            kind = "text_completion"
        return {
            "id": request_id,
            "object": kind,
            "created": int(time.time()),
            "model": body.get("model", state.served_names[0]),
            "choices": [choice],
            "usage": self._usage(prompt_tokens, len(words)),
        }

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, payload) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._write_chunk(f"data: {text}\n\n".encode())

    def _stream(self, body, chat, request_id, words, finish, prompt_tokens) -> None:
        state = self.server.state
        model = body.get("model")
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(choice: dict) -> dict:
            out = {
                "id": request_id,
                "object": kind,
                "created": created,
                "model": model,
                "choices": [choice],
            }
            if include_usage:
                out["usage"] = None
            return out

        if chat:
            self._event(
                chunk(
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
            )
        for index, word in enumerate(words):
            time.sleep(state.token_seconds)
            piece = word if index == 0 else " " + word
            last = index == len(words) - 1
            if chat:
                choice = {
                    "index": 0,
                    "delta": {"content": piece},
                    "logprobs": None,
                    "finish_reason": finish if last else None,
                }
            else:
                choice = {
                    "index": 0,
                    "text": piece,
                    "logprobs": None,
                    "finish_reason": finish if last else None,
                    "stop_reason": None,
                }
            self._event(chunk(choice))
        if include_usage:
            self._event(
                {
                    "id": request_id,
                    "object": kind,
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": self._usage(prompt_tokens, len(words)),
                }
            )
        self._event("[DONE]")
        self._write_chunk(b"")
