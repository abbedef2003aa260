"""Throttling in front of moto: an HTTP relay that answers the first N requests for one AWS
operation the way AWS answers a throttled request, and forwards everything else to moto.

moto cannot throttle (moto 5.2's /moto-api has no error injection), yet throttling is the one
AWS failure a deploy must ride out rather than report. Like delay_proxy's connection resets,
this is a fault in the path to the AWS double, not a stand-in for it: every answer other than
the injected error comes from moto, byte for byte. The injected answer is what JSON-protocol
services document for throttling: HTTP 400 with the error code in ``x-amzn-ErrorType`` and in
the body's ``__type`` (AWS Secrets Manager API Reference, "Common Errors": ThrottlingException,
HTTP 400), which botocore parses into ``ClientError`` code ``ThrottlingException``.

    with ThrottlingRelay(moto_url, "secretsmanager.GetSecretValue", throttle_first=4) as relay:
        os.environ["AWS_ENDPOINT_URL"] = relay.url
        ...
        relay.answers          # [(monotonic time, HTTP status), ...] for that operation
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones http.server or this relay set themselves.
_NOT_RELAYED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
)


class ThrottlingRelay:
    def __init__(self, upstream_url: str, operation: str, *, throttle_first: int) -> None:
        upstream = urlparse(upstream_url)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self.operation = operation  # the X-Amz-Target of JSON-protocol calls
        self.throttle_first = throttle_first
        self.answers: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ThrottlingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _throttle_now(self, target: str | None) -> bool:
        """Whether this request gets the injected error; counts the operation's requests."""
        if target != self.operation:
            return False
        with self._lock:
            throttled = sum(1 for _, status in self.answers if status == 400)
            return throttled < self.throttle_first

    def _record(self, status: int) -> None:
        with self._lock:
            self.answers.append((time.monotonic(), status))

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
                target = self.headers.get("X-Amz-Target")
                if relay._throttle_now(target):
                    code = "ThrottlingException"
                    self._answer(
                        400,
                        {"x-amzn-ErrorType": code, "Content-Type": "application/x-amz-json-1.1"},
                        json.dumps({"__type": code, "message": "Rate exceeded"}).encode(),
                    )
                    relay._record(400)
                    return
                # The Host header is part of the SigV4 signature: it travels unchanged.
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
                if target == relay.operation:
                    relay._record(response.status)

            def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: pytest shows what a test prints

        return Handler
