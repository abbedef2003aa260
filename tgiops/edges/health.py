"""The HTTP edge: is the TGI endpoint up, does it serve what the plan says, what do its metrics say.

Port lifecycle (docs/tgi.md §5): TGI binds its port only after download, load and warmup, so
a refused connection means "loading" while the engine is alive and "crashed" when it is not.
Behind ``docker run -p`` the docker-proxy accepts TCP before the router listens and then drops
the connection, so empty replies, resets and timeouts mean "not ready yet" just like refused.
``/health`` answers 200 (empty body) when healthy, 503 ``{"error":"unhealthy",...}`` when its
liveness generation fails.

requests, tenacity and prometheus_client are imported on first use (``tgiops --help`` stays fast).
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from tgiops.core.errors import HealthError
from tgiops.core.metrics import parse_metrics

log = logging.getLogger(__name__)

ProbeState = Literal["ready", "loading", "unhealthy"]
_BODY_EXCERPT_CHARS = 200


@dataclass(frozen=True)
class Probe:
    """One look at ``/health``."""

    state: ProbeState
    detail: str
    status_code: int | None


def _url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests -> urllib3 -> socket errors)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend([getattr(current, "reason", None), current.__cause__, current.__context__])
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))


def _why_not_connected(exc: BaseException) -> str:
    causes = list(_causes(exc))
    checks: list[tuple[type[BaseException], str]] = [
        (
            http.client.RemoteDisconnected,
            "empty reply (something accepts TCP, nothing answers yet)",
        ),
        (ConnectionRefusedError, "connection refused (the port opens after loading and warmup)"),
        (ConnectionResetError, "connection reset (nothing behind the port yet)"),
        (TimeoutError, "no answer in time"),
    ]
    for kind, text in checks:
        if any(isinstance(cause, kind) for cause in causes):
            return text
    return f"{type(exc).__name__}: {exc}"


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _BODY_EXCERPT_CHARS else text[:_BODY_EXCERPT_CHARS] + "..."


def probe_health(base_url: str, *, timeout_s: float = 3.0, session: Any = None) -> Probe:
    """GET /health once and classify the answer; never raises for a not-ready server."""
    import requests

    url = _url(base_url, "/health")
    get = session.get if session is not None else requests.get
    try:
        # A fresh connection each time: a pooled keep-alive connection that the server closed
        # would read as "not ready" and reset the run of successes.
        response = get(url, timeout=timeout_s, headers={"Connection": "close"})
    except (
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
        requests.exceptions.InvalidURL,
    ) as exc:
        raise HealthError(f"invalid endpoint URL {base_url!r}: {exc}") from exc
    except requests.exceptions.RequestException as exc:
        # Refused, reset, empty reply, timeout, a truncated body: the engine is not up yet.
        return Probe("loading", f"GET {url}: {_why_not_connected(exc)}", None)
    if response.status_code == 200:
        return Probe("ready", f"GET {url}: 200", 200)
    body = _excerpt(response.text)
    return Probe(
        "unhealthy",
        f"GET {url}: {response.status_code}" + (f" {body}" if body else ""),
        response.status_code,
    )


class _NotReady(Exception):
    """Internal: one more probe is needed."""


def wait_until_healthy(
    base_url: str,
    *,
    timeout_s: float,
    interval_s: float = 2.0,
    consecutive_successes: int = 2,
    is_alive: Callable[[], bool] | None = None,
    on_progress: Callable[[Probe, float], None] | None = None,
) -> None:
    """Probe until ``consecutive_successes`` healthy answers in a row, or fail.

    ``is_alive`` (e.g. "the unit and its container still run") is asked whenever the endpoint is
    not ready: False means the engine crashed, and waiting on would only burn the timeout.
    ``on_progress(probe, elapsed_s)`` sees every probe.
    """
    import requests
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay

    if consecutive_successes < 1:
        raise ValueError("consecutive_successes must be >= 1")
    started = time.monotonic()
    successes = 0
    probes = 0
    ready_probes = 0
    last: Probe | None = None
    probe_timeout_s = max(0.5, min(3.0, timeout_s))

    def attempt(session: Any) -> None:
        nonlocal successes, last, probes, ready_probes
        probe = probe_health(base_url, timeout_s=probe_timeout_s, session=session)
        last = probe
        probes += 1
        elapsed_s = time.monotonic() - started
        log.debug("health %s after %.1f s: %s", probe.state, elapsed_s, probe.detail)
        if on_progress is not None:
            on_progress(probe, elapsed_s)
        if probe.state == "ready":
            ready_probes += 1
            successes += 1
            if successes >= consecutive_successes:
                return
            raise _NotReady
        successes = 0
        if is_alive is not None and not is_alive():
            raise HealthError(
                f"the engine crashed: it stopped running while TGI was not ready yet "
                f"(after {elapsed_s:.0f} s; last probe: {probe.detail}). Its last log lines say "
                "why (`tgiops logs`, or `tgiops status`)."
            )
        raise _NotReady

    def wait_s(retry_state: Any) -> float:
        # Never sleep past the deadline: the final probe happens at timeout_s, not after it.
        return max(0.0, min(interval_s, timeout_s - (time.monotonic() - started)))

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_s,
        retry=retry_if_exception_type(_NotReady),
        reraise=True,
    )
    with requests.Session() as session:
        try:
            retrying(attempt, session)
        except _NotReady:
            raise HealthError(
                _timeout_message(base_url, timeout_s, last, ready_probes, probes)
            ) from None
    log.info("%s healthy after %.1f s", base_url, time.monotonic() - started)


def _timeout_message(
    base_url: str, timeout_s: float, last: Probe | None, ready_probes: int, probes: int
) -> str:
    detail = last.detail if last else "no probe answered"
    head = f"TGI did not become healthy within {timeout_s:g} s (via {base_url}: {detail})."
    if ready_probes:
        return head + (
            f" It answered healthy only intermittently ({ready_probes} of {probes} probes, "
            "never enough in a row): check the engine logs for errors between answers."
        )
    if last is not None and last.state == "unhealthy":
        return head + (
            " The server answers but its health check fails: look for CUDA or out-of-memory "
            "errors in the engine logs."
        )
    return head + (
        " The port is still closed: the model may still be downloading or loading (large "
        "models take many minutes): raise the health timeout, or follow the engine logs."
    )


def _request(method: str, base_url: str, path: str, *, timeout_s: float, **kwargs: Any) -> Any:
    import requests

    url = _url(base_url, path)
    try:
        response = requests.request(method, url, timeout=timeout_s, **kwargs)
    except requests.exceptions.RequestException as exc:
        raise HealthError(
            f"{method} {url} failed: {_why_not_connected(exc)}. Is the endpoint up "
            "(`tgiops status`)?"
        ) from exc
    return response


def _tgi_error(response: Any) -> str:
    """TGI's error JSON ({"error": ..., "error_type": ...}) or a body excerpt."""
    try:
        payload = response.json()
    except ValueError:
        return _excerpt(response.text)
    if isinstance(payload, dict) and "error" in payload:
        kind = payload.get("error_type")
        return f"{payload['error']}" + (f" ({kind})" if kind else "")
    return _excerpt(response.text)


def _json_object(response: Any, request: str, *, hint: str = "") -> dict[str, Any]:
    """The JSON object ``response`` carries; HealthError naming ``request`` (``hint``: what to
    check) when it carries none."""
    try:
        payload = response.json()
    except ValueError as exc:
        raise HealthError(
            f"{request} did not answer JSON ({_excerpt(response.text)!r}).{hint}"
        ) from exc
    if not isinstance(payload, dict):
        raise HealthError(f"{request} answered {type(payload).__name__}, not an object.")
    return payload


def get_info(base_url: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """TGI's ``/info`` as a dict."""
    url = _url(base_url, "/info")
    response = _request("GET", base_url, "/info", timeout_s=timeout_s)
    if response.status_code != 200:
        raise HealthError(
            f"GET {url} answered {response.status_code}: "
            f"{_tgi_error(response)}. Is this a TGI endpoint?"
        )
    return _json_object(response, f"GET {url}", hint=" Is this a TGI endpoint?")


def smoke_generate(
    base_url: str, *, api_key: str | None = None, prompt: str = "Hello", timeout_s: float = 120.0
) -> str:
    """Generate one token through ``/generate``; returns the generated text."""
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 1}}
    url = _url(base_url, "/generate")
    response = _request(
        "POST", base_url, "/generate", timeout_s=timeout_s, json=body, headers=_bearer(api_key)
    )
    if response.status_code in (401, 403):
        raise _refused_key(f"POST {url}", response.status_code, api_key, flag="")
    if response.status_code != 200:
        raise HealthError(
            f"one-token generation failed: POST {url} answered {response.status_code}: "
            f"{_tgi_error(response)}. The engine logs have the details."
        )
    try:
        payload = response.json()
        text = payload["generated_text"]
    except (ValueError, KeyError, TypeError) as exc:
        raise HealthError(
            f"POST {url} answered without generated_text ({_excerpt(response.text)!r})."
        ) from exc
    if not isinstance(text, str):
        raise HealthError(f"POST {url}: generated_text is {type(text).__name__}, not text.")
    return text


def get_metrics(base_url: str, *, timeout_s: float = 10.0) -> dict[str, float]:
    """``/metrics`` fetched and parsed with :func:`parse_metrics`."""
    response = _request("GET", base_url, "/metrics", timeout_s=timeout_s)
    if response.status_code != 200:
        raise HealthError(
            f"GET {_url(base_url, '/metrics')} answered {response.status_code}: "
            f"{_tgi_error(response)}."
        )
    return parse_metrics(response.text)


# --- vLLM's OpenAI-compatible server (tgiops.core.engines.vllm) ------------------------------
# vLLM has no /info or /generate: what it serves is /v1/models, and a one-token completion is
# /v1/completions (vllm/entrypoints/openai/api_server.py). With --api-key (VLLM_API_KEY) every
# /v1/* route wants "Authorization: Bearer KEY"; /health and /metrics do not.


def _bearer(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _refused_key(
    request: str, status: int, api_key: str | None, *, flag: str = " (--api-key-secret)"
) -> HealthError:
    """A 401/403 answer to ``request``; ``flag``: where the user gives the key."""
    return HealthError(
        f"{request} answered {status}: the endpoint wants an API key"
        + (" and refused the one given" if api_key else "")
        + f". Pass the key the server was started with{flag}."
    )


def get_models(
    base_url: str, *, api_key: str | None = None, timeout_s: float = 10.0
) -> dict[str, Any]:
    """vLLM's ``/v1/models`` as a dict ({"object": "list", "data": [...]})."""
    url = _url(base_url, "/v1/models")
    response = _request(
        "GET", base_url, "/v1/models", timeout_s=timeout_s, headers=_bearer(api_key)
    )
    if response.status_code in (401, 403):
        raise _refused_key(f"GET {url}", response.status_code, api_key)
    if response.status_code != 200:
        raise HealthError(
            f"GET {url} answered {response.status_code}: {_tgi_error(response)}. Is this a "
            "vLLM endpoint?"
        )
    return _json_object(response, f"GET {url}")


def served_names(models: dict[str, Any]) -> list[str]:
    """The ``id`` of every model /v1/models lists (vLLM: the --served-model-name values)."""
    data = models.get("data")
    if not isinstance(data, list):
        return []
    return [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")]


def smoke_completion(
    base_url: str,
    model: str,
    *,
    api_key: str | None = None,
    prompt: str = "Hello",
    timeout_s: float = 120.0,
) -> str:
    """One token through ``/v1/completions`` for served model ``model``; returns its text."""
    url = _url(base_url, "/v1/completions")
    body = {"model": model, "prompt": prompt, "max_tokens": 1}
    response = _request(
        "POST", base_url, "/v1/completions", timeout_s=timeout_s, json=body,
        headers=_bearer(api_key),
    )  # fmt: skip
    if response.status_code in (401, 403):
        raise _refused_key(f"POST {url}", response.status_code, api_key)
    if response.status_code != 200:
        raise HealthError(
            f"one-token completion failed: POST {url} answered {response.status_code}: "
            f"{_openai_error(response)}. The engine logs have the details."
        )
    try:
        text = response.json()["choices"][0]["text"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise HealthError(
            f"POST {url} answered without choices[0].text ({_excerpt(response.text)!r})."
        ) from exc
    if not isinstance(text, str):
        raise HealthError(f"POST {url}: choices[0].text is {type(text).__name__}, not text.")
    return text


def _openai_error(response: Any) -> str:
    """The OpenAI error object ({"error": {"message": ...}} or vLLM's older flat one)."""
    try:
        payload = response.json()
    except ValueError:
        return _excerpt(response.text)
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    if isinstance(payload, dict) and "message" in payload:
        return str(payload["message"])
    return _tgi_error(response)
