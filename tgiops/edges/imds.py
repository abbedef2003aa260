"""The instance metadata edge (IMDSv2): who am I, where am I, am I about to be reclaimed.

IMDSv2 is session based (AWS EC2 User Guide, "How Instance Metadata Service Version 2 works",
docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-metadata-v2-how-it-works.html):

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds: 1..21600`` returns a
  token (400 when the TTL header is missing or out of range);
- every ``GET`` carries ``X-aws-ec2-metadata-token``; a missing, invalid or expired token gets
  401 when IMDSv2 is required, so a 401 means "get a new token and retry once";
- an item that does not exist (yet) is 404: ``meta-data/spot/instance-action`` is 404 until
  EC2 schedules an interruption, then ``{"action": "terminate", "time": "...Z"}``
  (".../spot-instance-termination-notices.html"; AWS advises polling every 5 s), and
  ``meta-data/events/recommendations/rebalance`` is 404 until a rebalance recommendation, then
  ``{"noticeTime": "...Z"}`` (".../rebalance-recommendations.html").

The endpoint is ``http://169.254.169.254`` unless ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` says
otherwise, the variable botocore itself reads (tests point it at a stand-in on loopback).
Failures become ``AWSError`` naming the URL and what to check.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from typing import Any

from tgiops.core.errors import AWSError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_ENV_VAR = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
TOKEN_TTL_S = 21600
_REFRESH_MARGIN_S = 60


class Imds:
    """A small IMDSv2 client; the token is fetched on first use and renewed before it expires."""

    def __init__(self, endpoint: str | None = None, *, timeout_s: float = 2.0) -> None:
        chosen = endpoint or os.environ.get(ENDPOINT_ENV_VAR) or DEFAULT_ENDPOINT
        self.endpoint = chosen.rstrip("/")
        self.timeout_s = timeout_s
        self._token: str | None = None
        self._token_expires = 0.0
        # Never through a proxy: HTTPS_PROXY on an instance is for the internet, and IMDS is
        # link-local (a proxy would answer for another machine, or not at all).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- plumbing --------------------------------------------------------------------------

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self._opener.open(request, timeout=self.timeout_s) as reply:
                return reply.status, reply.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AWSError(
                f"instance metadata at {self.endpoint} does not answer ({reason}). Is this an "
                "EC2 instance with the metadata endpoint enabled (HttpEndpoint=enabled)?"
            ) from exc

    def _fresh_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        request = urllib.request.Request(
            f"{self.endpoint}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
        )
        status, body = self._open(request)
        if status != 200 or not body.strip():
            raise AWSError(
                f"instance metadata at {self.endpoint} refused an IMDSv2 session token "
                f"(HTTP {status}). Check the instance's metadata options (HttpEndpoint enabled; "
                "a container needs HttpPutResponseHopLimit >= 2)."
            )
        self._token = body.strip()
        self._token_expires = time.monotonic() + TOKEN_TTL_S - _REFRESH_MARGIN_S
        return self._token

    def get(self, path: str) -> str | None:
        """The text of ``/latest/<path>``; None when the item does not exist (404)."""
        url = f"{self.endpoint}/latest/{path.lstrip('/')}"
        for attempt in (1, 2):
            request = urllib.request.Request(
                url, headers={"X-aws-ec2-metadata-token": self._fresh_token()}
            )
            status, body = self._open(request)
            if status == 200:
                return body
            if status == 404:
                return None
            if status == 401 and attempt == 1:
                self._token = None  # expired or revoked: one more try with a new token
                continue
            raise AWSError(f"instance metadata GET {url} answered HTTP {status}: {body[:200]}")
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> Any:
        text = self.get(path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise AWSError(f"instance metadata {path} is not JSON: {text[:200]!r}") from exc

    # -- items tgiops uses -----------------------------------------------------------------

    def instance_id(self) -> str:
        value = self.get("meta-data/instance-id")
        if not value:
            raise AWSError(f"instance metadata at {self.endpoint} has no instance-id")
        return value.strip()

    def region(self) -> str:
        value = self.get("meta-data/placement/region")
        if not value:
            raise AWSError(f"instance metadata at {self.endpoint} has no placement/region")
        return value.strip()

    def availability_zone(self) -> str:
        value = self.get("meta-data/placement/availability-zone")
        if not value:
            raise AWSError(
                f"instance metadata at {self.endpoint} has no placement/availability-zone"
            )
        return value.strip()

    def user_data(self) -> str | None:
        return self.get("user-data")

    def tags(self) -> dict[str, str]:
        """The instance's tags, when the launch template allows tags in metadata
        (InstanceMetadataTags=enabled); {} when it does not (404)."""
        listing = self.get("meta-data/tags/instance")
        if not listing:
            return {}
        tags = {}
        for key in listing.split():
            value = self.get(f"meta-data/tags/instance/{key}")
            if value is not None:
                tags[key] = value
        return tags

    def instance_action(self) -> dict[str, Any] | None:
        """The scheduled spot interruption ({"action", "time"}), or None."""
        data = self.get_json("meta-data/spot/instance-action")
        return data if isinstance(data, dict) else None

    def rebalance_recommendation(self) -> dict[str, Any] | None:
        """The rebalance recommendation ({"noticeTime"}), or None."""
        data = self.get_json("meta-data/events/recommendations/rebalance")
        return data if isinstance(data, dict) else None
