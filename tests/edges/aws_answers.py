"""A relay in front of moto that answers chosen AWS operations itself: the answers and errors
moto cannot give (Service Quotas for EC2, a failed scaling activity, an instance refresh, a
failure halfway through `up`). Everything else goes to moto byte for byte, as with the
throttling relay (tests/e2e/aws_faults.py): a fault in the path to the AWS double, not a
stand-in for it.

    # operation: "ServiceQuotasV20190624.GetServiceQuota" (JSON) or "CreateAutoScalingGroup"
    def answer(operation, body):
        return (400, {"Content-Type": "text/xml"}, b"...") or None (relay to moto)
    with AnsweringRelay(moto_url, answer) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        relay.seen  # [(operation, body bytes), ...] every request, in order
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_NOT_RELAYED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
)
Answer = tuple[int, dict[str, str], bytes]


def operation_of(headers: dict[str, str], body: bytes) -> str:
    """JSON protocols name it in X-Amz-Target; query protocols (EC2, Auto Scaling) in Action."""
    target = headers.get("X-Amz-Target") or headers.get("x-amz-target")
    if target:
        return target
    try:
        return parse_qs(body.decode()).get("Action", [""])[0]
    except UnicodeDecodeError:
        return ""


def json_answer(status: int, payload: dict, error_type: str | None = None) -> Answer:
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
        payload = {"__type": error_type, **payload}
    return status, headers, json.dumps(payload).encode()


def query_error(code: str, message: str, status: int = 400) -> Answer:
    body = (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>relay</RequestId></ErrorResponse>"
    )
    return status, {"Content-Type": "text/xml"}, body.encode()


def query_answer(action: str, result_xml: str) -> Answer:
    ns = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
    body = (
        f'<{action}Response xmlns="{ns}"><{action}Result>{result_xml}</{action}Result>'
        f"<ResponseMetadata><RequestId>relay</RequestId></ResponseMetadata></{action}Response>"
    )
    return 200, {"Content-Type": "text/xml"}, body.encode()


class AnsweringRelay:
    def __init__(self, upstream_url: str, answer: Callable[[str, bytes], Answer | None]) -> None:
        upstream = urlparse(upstream_url)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self.answer = answer
        self.seen: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def operations(self) -> list[str]:
        with self._lock:
            return [op for op, _ in self.seen]

    def __enter__(self) -> AnsweringRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self._relay()

            def do_GET(self) -> None:
                self._relay()

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                operation = operation_of(dict(self.headers), body)
                with relay._lock:
                    relay.seen.append((operation, body))
                injected = relay.answer(operation, body)
                if injected is not None:
                    self._answer(*injected)
                    return
                upstream = http.client.HTTPConnection(*relay._upstream, timeout=30)
                try:
                    upstream.request(self.command, self.path, body, headers=dict(self.headers))
                    response = upstream.getresponse()
                    payload = response.read()
                    headers = {
                        k: v for k, v in response.getheaders() if k.lower() not in _NOT_RELAYED
                    }
                    self._answer(response.status, headers, payload)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
