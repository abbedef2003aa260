"""The router's HTTP API on a ThreadingHTTPServer (docs/tgi.md §5, shared/tgi/openapi-*.json).

Routes (router/src/server.rs@737 l.2203-2244): GET /health, /ping, / (health), /info,
/metrics, /v1/models; POST / (compat generate), /generate, /generate_stream (SSE),
/v1/chat/completions, /v1/completions, /invocations, /tokenize. With --api-key (v2.3+)
every POST route needs `Authorization: Bearer <key>` (401, empty body); the GET routes stay
open. Request-body errors follow axum's extractors (415, 400, 422 as plain text).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import textgen
from .logs import TracingLog
from .metrics import Metrics
from .versions import VersionProfile

SERVER_TARGET = "text_generation_router::server"
_POST_ROUTES = (
    "/",
    "/generate",
    "/generate_stream",
    "/v1/chat/completions",
    "/v1/completions",
    "/invocations",
    "/tokenize",
    "/chat_tokenize",
)
_GET_ROUTES = ("/", "/health", "/ping", "/info", "/metrics", "/v1/models")


@dataclass
class ServerConfig:
    profile: VersionProfile
    model_id: str
    model_sha: str | None
    pipeline_tag: str | None
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int
    max_batch_prefill_tokens: int
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int
    max_client_batch_size: int
    validation_workers: int
    max_waiting_tokens: int
    waiting_served_ratio: float
    max_batch_size: int | None
    model_dtype: str
    api_key: str | None
    vocab_size: int
    compute_type: str
    health_flap_every: int | None = None
    compat_return_full_text: bool = True
    stream_token_delay_s: float = 0.001

    @property
    def limits(self) -> textgen.Limits:
        return textgen.Limits(
            max_input_tokens=self.max_input_tokens,
            max_total_tokens=self.max_total_tokens,
            max_best_of=self.max_best_of,
            max_stop_sequences=self.max_stop_sequences,
            max_top_n_tokens=self.max_top_n_tokens,
            default_max_new_tokens=self.profile.default_max_new_tokens,
        )

    @property
    def system_fingerprint(self) -> str:
        return f"{self.profile.info_version}-{self.profile.docker_label or 'native'}"

    def info(self) -> dict:
        """/info with exactly the release's field set (docs/tgi.md §5)."""
        p = self.profile
        if p.info_fields == "2.0":
            return {
                "model_id": self.model_id,
                "model_sha": self.model_sha,
                "model_dtype": f"torch.{self.model_dtype}",
                "model_device_type": "cuda",
                "model_pipeline_tag": self.pipeline_tag,
                "max_concurrent_requests": self.max_concurrent_requests,
                "max_best_of": self.max_best_of,
                "max_stop_sequences": self.max_stop_sequences,
                "max_input_length": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "waiting_served_ratio": self.waiting_served_ratio,
                "max_batch_total_tokens": self.max_batch_total_tokens,
                "max_waiting_tokens": self.max_waiting_tokens,
                "max_batch_size": self.max_batch_size,
                "validation_workers": self.validation_workers,
                "max_client_batch_size": self.max_client_batch_size,
                "router": "text-generation-router",
                "version": p.info_version,
                "sha": p.git_sha,
                "docker_label": p.docker_label,
            }
        return {
            "model_id": self.model_id,
            "model_sha": self.model_sha,
            "model_pipeline_tag": self.pipeline_tag,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_best_of": self.max_best_of,
            "max_stop_sequences": self.max_stop_sequences,
            "max_input_tokens": self.max_input_tokens,
            "max_total_tokens": self.max_total_tokens,
            "validation_workers": self.validation_workers,
            "max_client_batch_size": self.max_client_batch_size,
            "router": "text-generation-router",
            "version": p.info_version,
            "sha": p.git_sha,
            "docker_label": p.docker_label,
        }


class _BodyError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _Overloaded(Exception):
    pass


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address, config: ServerConfig, metrics: Metrics, log: TracingLog, metrics_only=False
    ):
        try:
            family = (
                socket.AF_INET6 if ipaddress.ip_address(address[0]).version == 6 else socket.AF_INET
            )
        except ValueError:
            family = socket.AF_INET
        self.address_family = family
        self.config = config
        self.metrics = metrics
        self.log = log
        self.metrics_only = metrics_only
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._health_calls = 0
        super().__init__(address, Handler)

    def acquire(self) -> None:
        with self._inflight_lock:
            if self._inflight >= self.config.max_concurrent_requests:
                raise _Overloaded()
            self._inflight += 1
        self.metrics.add_gauge("tgi_batch_current_size", 1)

    def release(self) -> None:
        with self._inflight_lock:
            self._inflight -= 1
        self.metrics.add_gauge("tgi_batch_current_size", -1)

    def next_health_ok(self) -> bool:
        with self._inflight_lock:
            n = self._health_calls
            self._health_calls += 1
        every = self.config.health_flap_every
        return not every or (n // every) % 2 == 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorServer
    server_version = "axum"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:
        return  # the router does not log access lines

    # ------------------------------------------------------------------ plumbing
    def _send(
        self, status: int, body: bytes = b"", content_type: str | None = None, headers=None
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, payload, headers=None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _error(self, status: int, message: str, error_type: str) -> None:
        self._json(status, {"error": message, "error_type": error_type})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self, required: tuple[str, ...]) -> dict:
        body = self._read_body()
        content_type = self.headers.get("Content-Type", "")
        if "application/json" not in content_type.lower():
            raise _BodyError(415, "Expected request with `Content-Type: application/json`")
        try:
            payload = json.loads(body or b"")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _BodyError(400, f"Failed to parse the request body as JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise _BodyError(
                422,
                "Failed to deserialize the JSON body into the target type: invalid type: "
                "expected struct at line 1 column 1",
            )
        for name in required:
            if name not in payload:
                raise _BodyError(
                    422,
                    f"Failed to deserialize the JSON body into the target type: missing field "
                    f"`{name}` at line 1 column {len(body)}",
                )
        return payload

    def _authorized(self) -> bool:
        key = self.server.config.api_key
        if key is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and token.strip() == key

    def _route(self) -> str:
        return self.path.split("?", 1)[0]

    # ------------------------------------------------------------------ GET
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self._route()
        cfg = self.server.config
        if self.server.metrics_only:
            if path == "/metrics":
                self._send(200, self.server.metrics.render().encode(), "text/plain; charset=utf-8")
            else:
                self._send(404)
            return
        if path in ("/health", "/", "/ping"):
            if self.server.next_health_ok():
                self._send(200)
            else:
                self._error(503, "unhealthy", "healthcheck")
        elif path == "/info":
            self._json(200, cfg.info())
        elif path == "/metrics":
            self._send(200, self.server.metrics.render().encode(), "text/plain; charset=utf-8")
        elif path == "/v1/models":
            self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": cfg.model_id,
                            "object": "model",
                            "created": 0,
                            "owned_by": cfg.model_id,
                        }
                    ],
                },
            )
        elif path in _POST_ROUTES:
            self._send(405)
        else:
            self._send(404)

    # ------------------------------------------------------------------ POST
    def do_POST(self) -> None:
        path = self._route()
        if self.server.metrics_only or path not in _POST_ROUTES:
            self._send(405 if path in _GET_ROUTES else 404)
            return
        if not self._authorized():
            self._read_body()
            self._send(401)
            return
        started = time.monotonic()
        try:
            if path == "/tokenize":
                self._tokenize(self._json_body(("inputs",)))
                return
            if path == "/chat_tokenize":
                self._chat_tokenize(self._json_body(("messages",)))
                return
            if path == "/invocations":
                payload = self._json_body(())
                if "messages" in payload:
                    path = "/v1/chat/completions"
                elif "prompt" in payload:
                    path = "/v1/completions"
                else:
                    path = "/"
            else:
                required = {
                    "/v1/chat/completions": ("messages",),
                    "/v1/completions": ("prompt",),
                }.get(path, ("inputs",))
                payload = self._json_body(required)
            self.server.metrics.inc("tgi_request_count")
            self.server.acquire()
        except _BodyError as exc:
            self._send(exc.status, exc.text.encode(), "text/plain; charset=utf-8")
            return
        except _Overloaded:
            self.server.metrics.fail("overloaded")
            self._error(429, "Model is overloaded", "overloaded")
            return
        try:
            if path == "/":
                # compat_generate: return_full_text defaults to (pipeline_tag == text-generation).
                params = payload.get("parameters")
                if isinstance(params, dict) and params.get("return_full_text") is None:
                    params["return_full_text"] = self.server.config.compat_return_full_text
                elif params is None:
                    payload["parameters"] = {
                        "return_full_text": self.server.config.compat_return_full_text
                    }
                if payload.get("stream"):
                    self._generate_stream(payload, started)
                else:
                    self._generate(payload, started, as_list=True)
            elif path == "/generate":
                self._generate(payload, started, as_list=False)
            elif path == "/generate_stream":
                self._generate_stream(payload, started)
            elif path == "/v1/chat/completions":
                self._chat(payload, started)
            elif path == "/v1/completions":
                self._completions(payload, started)
        except textgen.ValidationError as exc:
            self.server.metrics.fail("validation")
            self._error(422, str(exc), "validation")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.server.release()

    # ------------------------------------------------------------------ helpers
    def _vocab(self) -> int:
        return self.server.config.vocab_size

    def _success(
        self, input_length: int, gen: textgen.Generation, max_new: int, started: float
    ) -> dict:
        total = time.monotonic() - started
        self.server.metrics.record_request(input_length, gen.generated_tokens, max_new, total)
        ms = max(1, int(total * 1000))
        self.server.log.info(
            "Success",
            target=SERVER_TARGET,
            location="router/src/server.rs:422",
            fields={
                "total_time": f'"{ms}ms"',
                "validation_time": '"0ms"',
                "queue_time": '"0ms"',
                "inference_time": f'"{ms}ms"',
                "time_per_token": f'"{ms // max(1, gen.generated_tokens)}ms"',
            },
        )
        return {
            "x-compute-type": self.server.config.compute_type,
            "x-compute-time": f"{total:.6f}",
            "x-compute-characters": str(len(gen.text)),
            "x-total-time": str(ms),
            "x-validation-time": "0",
            "x-queue-time": "0",
            "x-inference-time": str(ms),
            "x-time-per-token": str(ms // max(1, gen.generated_tokens)),
            "x-prompt-tokens": str(input_length),
            "x-generated-tokens": str(gen.generated_tokens),
        }

    def _params(self, payload: dict) -> dict:
        params = payload.get("parameters") or {}
        if not isinstance(params, dict):
            raise textgen.ValidationError("`parameters` must be an object")
        return params

    def _run(self, prompt: str, echo: str, params: dict, *, stop=None, max_new=None, stream=False):
        cfg = self.server.config
        best_of = params.get("best_of")
        if stream and params.get("decoder_input_details"):
            raise textgen.ValidationError(
                "`decoder_input_details` == true is not supported when streaming tokens"
            )
        if best_of is not None and best_of > 1:
            if stream:
                raise textgen.ValidationError(
                    "`best_of` != 1 is not supported when streaming tokens"
                )
            if not params.get("do_sample") and params.get("seed") is None:
                raise textgen.ValidationError("you must use sampling when `best_of` is > 1")
        input_length = textgen.count_tokens(prompt)
        resolved = textgen.validate_and_resolve(
            input_length,
            cfg.limits,
            max_new_tokens=max_new,
            temperature=params.get("temperature"),
            top_p=params.get("top_p"),
            top_k=params.get("top_k"),
            best_of=best_of,
            stop=stop,
            top_n_tokens=params.get("top_n_tokens"),
            truncate=params.get("truncate"),
        )
        gen = textgen.generate(prompt, echo, resolved, stop, self._vocab())
        return input_length, resolved, gen

    def _details(self, gen: textgen.Generation, params: dict) -> dict:
        seed = params.get("seed") if params.get("do_sample") or params.get("seed") else None
        details: dict = {
            "finish_reason": gen.finish_reason,
            "generated_tokens": gen.generated_tokens,
            "seed": seed,
            "prefill": [],
            "tokens": [t.as_json() for t in gen.tokens],
        }
        if params.get("decoder_input_details"):
            details["prefill"] = [
                {"id": t.id, "text": t.text, "logprob": None if i == 0 else t.logprob}
                for i, t in enumerate(gen.input_tokens)
            ]
        top_n = params.get("top_n_tokens") or 0
        if top_n:
            details["top_tokens"] = [[t.as_json()] * top_n for t in gen.tokens]
        best_of = params.get("best_of") or 1
        if best_of > 1:
            details["best_of_sequences"] = [
                {
                    "generated_text": gen.text,
                    "finish_reason": gen.finish_reason,
                    "generated_tokens": gen.generated_tokens,
                    "seed": seed,
                    "prefill": details["prefill"],
                    "tokens": details["tokens"],
                }
                for _ in range(best_of - 1)
            ]
        return details

    # ------------------------------------------------------------------ generate
    def _generate(self, payload: dict, started: float, as_list: bool) -> None:
        params = self._params(payload)
        prompt = str(payload.get("inputs", ""))
        stop = params.get("stop") or []
        input_length, max_new, gen = self._run(
            prompt, prompt, params, stop=stop, max_new=params.get("max_new_tokens")
        )
        text = gen.text
        if params.get("return_full_text"):
            text = prompt + text
        body: dict = {"generated_text": text}
        if params.get("details") or params.get("decoder_input_details"):
            body["details"] = self._details(gen, params)
        headers = self._success(input_length, gen, max_new, started)
        self._json(200, [body] if as_list else body, headers)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _sse(self, data: str) -> None:
        chunk = f"data:{data}\n\n".encode()
        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.wfile.flush()

    def _end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _generate_stream(self, payload: dict, started: float) -> None:
        params = self._params(payload)
        prompt = str(payload.get("inputs", ""))
        stop = params.get("stop") or []
        try:
            input_length, max_new, gen = self._run(
                prompt, prompt, params, stop=stop, max_new=params.get("max_new_tokens"), stream=True
            )
        except textgen.ValidationError as exc:
            # The stream has already started when validation runs: the error is an event.
            self.server.metrics.fail("validation")
            self._start_sse()
            self._sse(json.dumps({"error": str(exc), "error_type": "validation"}))
            self._end_sse()
            return
        self._start_sse()
        delay = self.server.config.stream_token_delay_s
        for index, token in enumerate(gen.tokens, start=1):
            last = index == len(gen.tokens)
            event: dict = {
                "index": index,
                "token": token.as_json(),
                "generated_text": None,
                "details": None,
            }
            if params.get("top_n_tokens"):
                event["top_tokens"] = [token.as_json()] * params["top_n_tokens"]
            if last:
                text = gen.text
                if params.get("return_full_text"):
                    text = prompt + text
                event["generated_text"] = text
                if params.get("details"):
                    event["details"] = {
                        "finish_reason": gen.finish_reason,
                        "generated_tokens": gen.generated_tokens,
                        "seed": params.get("seed") if params.get("do_sample") else None,
                        "input_length": input_length,
                    }
            self._sse(json.dumps(event))
            if delay:
                time.sleep(delay)
        self._end_sse()
        self._success(input_length, gen, max_new, started)

    # ------------------------------------------------------------------ OpenAI
    @staticmethod
    def _content_text(content) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        return ""

    def _chat_prompt(self, messages) -> tuple[str, str]:
        if not isinstance(messages, list) or not messages:
            raise textgen.ValidationError("`messages` cannot be empty")
        prompt = ""
        last_user = ""
        for message in messages:
            if not isinstance(message, dict):
                raise textgen.ValidationError("each message must be an object")
            role = str(message.get("role", "user"))
            text = self._content_text(message.get("content"))
            prompt += f"<|{role}|>\n{text}\n"
            if role == "user":
                last_user = text
        prompt += "<|assistant|>\n"
        return prompt, last_user or self._content_text(messages[-1].get("content"))

    @staticmethod
    def _openai_finish(reason: str) -> str:
        return "length" if reason == "length" else "stop"

    @staticmethod
    def _stop_list(value) -> list[str]:
        if value is None:
            return []
        return [value] if isinstance(value, str) else [str(v) for v in value]

    def _chat(self, payload: dict, started: float) -> None:
        cfg = self.server.config
        prompt, echo = self._chat_prompt(payload.get("messages"))
        stop = self._stop_list(payload.get("stop"))
        params = {
            "temperature": payload.get("temperature"),
            "top_p": payload.get("top_p"),
            "seed": payload.get("seed"),
        }
        stream = bool(payload.get("stream"))
        input_length, max_new, gen = self._run(
            prompt, echo, params, stop=stop, max_new=payload.get("max_tokens"), stream=stream
        )
        created = int(time.time())
        base = {
            "id": "",
            "created": created,
            "model": cfg.model_id,
            "system_fingerprint": cfg.system_fingerprint,
        }
        usage = {
            "prompt_tokens": input_length,
            "completion_tokens": gen.generated_tokens,
            "total_tokens": input_length + gen.generated_tokens,
        }
        want_logprobs = bool(payload.get("logprobs"))
        if not stream:
            logprobs = None
            if want_logprobs:
                logprobs = {
                    "content": [
                        {"token": t.text, "logprob": t.logprob, "top_logprobs": []}
                        for t in gen.tokens
                        if not t.special
                    ]
                }
            body = {
                "object": "chat.completion",
                **base,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": gen.text},
                        "logprobs": logprobs,
                        "finish_reason": self._openai_finish(gen.finish_reason),
                    }
                ],
                "usage": usage,
            }
            self._json(200, body, self._success(input_length, gen, max_new, started))
            return
        self._start_sse()
        options = payload.get("stream_options") or {}
        final_usage = usage if options.get("include_usage") else None
        # One chunk per token; special tokens carry empty content; the last one carries the
        # finish reason, and usage with stream_options.include_usage
        # (server.rs create_event_from_stream_token).
        for i, token in enumerate(gen.tokens):
            last = i == len(gen.tokens) - 1
            text = "" if token.special else token.text
            chunk = self._chat_chunk(base, text, token, last, gen, want_logprobs)
            if last:
                chunk["usage"] = final_usage
            self._sse(json.dumps(chunk))
        if cfg.profile.sse_done_marker:
            self._sse("[DONE]")
        self._end_sse()
        self._success(input_length, gen, max_new, started)

    def _chat_chunk(
        self, base: dict, text: str, token, last: bool, gen, want_logprobs: bool
    ) -> dict:
        logprobs = None
        if want_logprobs and token is not None and not token.special:
            logprobs = {
                "content": [{"token": token.text, "logprob": token.logprob, "top_logprobs": []}]
            }
        return {
            "object": "chat.completion.chunk",
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": self._openai_finish(gen.finish_reason) if last else None,
                }
            ],
            "usage": None,
        }

    def _completions(self, payload: dict, started: float) -> None:
        cfg = self.server.config
        prompts = payload.get("prompt")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts:
            raise textgen.ValidationError("`prompt` cannot be empty")
        if payload.get("suffix") is not None:
            self._error(
                422,
                "Suffix is not supported and can be achieved by preprocessing the prompt.",
                "suffix not supported",
            )
            return
        if len(prompts) > cfg.max_client_batch_size:
            self._error(
                422,
                "Number of prompts exceeds the maximum allowed batch size of "
                f"{cfg.max_client_batch_size}",
                "batch size exceeded",
            )
            return
        stop = self._stop_list(payload.get("stop"))
        params = {
            "temperature": payload.get("temperature"),
            "top_p": payload.get("top_p"),
            "seed": payload.get("seed"),
        }
        stream = bool(payload.get("stream"))
        runs = [
            self._run(
                str(p), str(p), params, stop=stop, max_new=payload.get("max_tokens"), stream=stream
            )
            for p in prompts
        ]
        base = {
            "id": "",
            "created": int(time.time()),
            "model": cfg.model_id,
            "system_fingerprint": cfg.system_fingerprint,
        }
        prompt_tokens = sum(r[0] for r in runs)
        completion_tokens = sum(r[2].generated_tokens for r in runs)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if not stream:
            choices = [
                {
                    "index": i,
                    "text": gen.text,
                    "logprobs": None,
                    "finish_reason": self._openai_finish(gen.finish_reason),
                }
                for i, (_, _, gen) in enumerate(runs)
            ]
            headers = self._success(runs[0][0], runs[0][2], runs[0][1], started)
            self._json(
                200,
                {"object": "text_completion", **base, "choices": choices, "usage": usage},
                headers,
            )
            return
        self._start_sse()
        for index, (input_length, _, gen) in enumerate(runs):
            tokens = list(gen.tokens)
            for i, token in enumerate(tokens):
                last = i == len(tokens) - 1
                # Intermediate events are Chunk (finish_reason ""); the last one is a
                # CompletionFinal with usage and the raw FinishReason Display text.
                choice = {
                    "index": index,
                    "text": token.text,
                    "logprobs": None,
                    "finish_reason": gen.finish_reason if last else "",
                }
                event = {"object": "text_completion", **base, "choices": [choice]}
                if last:
                    event["usage"] = {
                        "prompt_tokens": input_length,
                        "completion_tokens": gen.generated_tokens,
                        "total_tokens": input_length + gen.generated_tokens,
                    }
                self._sse(json.dumps(event))
        if cfg.profile.sse_done_marker:
            self._sse("[DONE]")
        self._end_sse()
        self._success(runs[0][0], runs[0][2], runs[0][1], started)

    # ------------------------------------------------------------------ tokenize
    def _tokenize(self, payload: dict) -> None:
        tokens = textgen.tokenize(str(payload.get("inputs", "")), self._vocab())
        self._json(200, [{"id": i, "text": t, "start": s, "stop": e} for i, t, s, e in tokens])

    def _chat_tokenize(self, payload: dict) -> None:
        try:
            prompt, _ = self._chat_prompt(payload.get("messages"))
        except textgen.ValidationError as exc:
            self._error(422, str(exc), "validation")
            return
        tokens = textgen.tokenize(prompt, self._vocab())
        self._json(
            200,
            {
                "tokenize_response": [
                    {"id": i, "text": t, "start": s, "stop": e} for i, t, s, e in tokens
                ],
                "templated_text": prompt,
            },
        )


def bind_address(hostname: str, log: TracingLog) -> str:
    """router: an unparsable hostname falls back to 0.0.0.0 with a warning (§1 --hostname)."""
    try:
        ipaddress.ip_address(hostname)
        return hostname
    except ValueError:
        log.warn(
            "Invalid hostname, defaulting to 0.0.0.0",
            target=SERVER_TARGET,
            location="router/src/server.rs:1906",
        )
        return "0.0.0.0"
