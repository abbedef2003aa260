"""The shared base of the AWS edge: sessions and clients, the error translation and the
throttling retry policy, and the small helpers every service module uses.

Credentials, region and endpoint come from boto3's standard chain (profile, environment,
instance role; ``AWS_ENDPOINT_URL`` is honoured by boto3 itself, which is how the tests reach
moto). botocore errors are translated into ``AWSError`` subclasses whose messages name the IAM
action that was refused, the value looked up and the next step.

boto3 is imported on first use so that ``tgiops --help`` stays fast.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tgiops.core.errors import AWSError, InputError
from tgiops.edges.aws.redact import install_redactor

log = logging.getLogger(__name__)

# Error codes that mean "slow down" (EC2, Secrets Manager, Auto Scaling spell it differently).
_THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}
)
_EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_BAD_CREDENTIALS_CODES = frozenset(
    {"InvalidClientTokenId", "UnrecognizedClientException", "AuthFailure", "SignatureDoesNotMatch"}
)
THROTTLE_RETRY_ATTEMPTS = 5


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


@dataclass(frozen=True)
class AwsSettings:
    """Where to talk to AWS; None means boto3's standard chain decides."""

    region: str | None = None
    profile: str | None = None


class AwsBase:
    """Lazy boto3 clients for one region/profile, with tgiops' error translation. The service
    modules add their calls to it; tgiops.edges.aws.client.Aws is all of them."""

    def __init__(self, settings: AwsSettings) -> None:
        self.settings = settings
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------

    def _boto_session(self) -> Any:
        if self._session is None:
            import boto3
            import botocore.exceptions

            install_redactor()
            try:
                session = boto3.session.Session(
                    profile_name=self.settings.profile, region_name=self.settings.region
                )
            except botocore.exceptions.ProfileNotFound as exc:
                raise AWSError(
                    f"AWS profile {self.settings.profile!r} not found in the AWS config. List "
                    "profiles with `aws configure list-profiles`, or drop --profile."
                ) from exc
            if not session.region_name:
                raise AWSError(
                    "no AWS region configured: pass --region, or set AWS_REGION (or a region in "
                    "the AWS profile)."
                )
            self._session = session
        return self._session

    @property
    def region(self) -> str:
        return str(self._boto_session().region_name)

    def _client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                import botocore.exceptions
                from botocore.config import Config

                session = self._boto_session()
                # Standard retry mode (throttling and transient errors, with backoff); the number
                # of attempts stays configurable through AWS_MAX_ATTEMPTS / the profile.
                config = Config(
                    retries={"mode": "standard"},
                    connect_timeout=10,
                    read_timeout=30,
                )
                try:
                    self._clients[service] = session.client(service, config=config)
                except botocore.exceptions.InvalidRegionError as exc:
                    raise InputError(
                        f"--region {session.region_name!r} is not an AWS region name like "
                        "us-east-1 (`aws ec2 describe-regions` lists them)"
                    ) from exc
            return self._clients[service]

    def call(
        self,
        service: str,
        operation: str,
        *,
        what: str,
        iam_action: str,
        error: type[AWSError] = AWSError,
        secret: str | None = None,
        retry_throttling: bool = False,
        messages: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Any:
        """Call one API operation; translate botocore failures into ``error``.

        Public for operations without a method of their own (Auto Scaling tags, target
        groups, bulk Elastic IP lookups): the error messages still name the IAM action.

        ``messages`` maps an AWS error code to the message to raise instead of the generic one.
        ``retry_throttling`` adds a bounded exponential backoff (tenacity) on top of botocore's
        own retries, for calls a deploy cannot do without.
        """
        import botocore.exceptions
        import botocore.parsers

        client = self._client(service)

        def once() -> Any:
            return getattr(client, operation)(**params)

        try:
            return retry_when_throttled(once, what=what) if retry_throttling else once()
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if messages and code in messages:
                translated = error(messages[code])
            else:
                translated = self._translated(exc, what, iam_action, error, secret)
            # Chain the botocore error for debugging, unless its text carries the secret.
            raise translated from (None if secret and secret in str(exc) else exc)
        except (
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError,
        ) as exc:
            raise error(
                f"{what} needs AWS credentials and none were found: use --profile or AWS_PROFILE, "
                "environment variables, or run on an instance with a role."
            ) from exc
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
        ) as exc:
            raise error(
                f"{what} failed: cannot reach the AWS endpoint ({exc}). Check the network and the "
                f"region ({self.region})."
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            text = _scrub(str(exc), secret)
            raise error(f"{what} failed: {text}") from (None if text != str(exc) else exc)
        except botocore.parsers.ResponseParserError as exc:
            # Not a BotoCoreError: an answer botocore cannot parse (an HTML 500 page from an
            # overloaded endpoint or a proxy) after its own retries. AWS failed, not tgiops.
            raise error(
                f"{what} failed: AWS answered with something that is not an AWS response "
                "(an error page); try again, or check a proxy between here and AWS"
            ) from exc

    def _translated(
        self,
        exc: Any,
        what: str,
        iam_action: str,
        error: type[AWSError],
        secret: str | None,
    ) -> AWSError:
        code = exc.response.get("Error", {}).get("Code", "")
        message = _scrub(exc.response.get("Error", {}).get("Message", "") or str(exc), secret)
        # botocore files a 403 whose body it cannot parse under the bare status code (moto
        # answers a JSON-protocol service's AccessDenied in XML; so may a proxy): still a denial.
        if code in _DENIED_CODES or code == "403":
            return error(
                f"{what} was denied ({code}): the AWS identity needs the IAM permission "
                f"{iam_action} in {self.region}. Grant it, or use --profile with one that has it."
            )
        if code in _EXPIRED_CODES:
            return error(
                f"{what} failed: the AWS credentials have expired ({code}). Refresh them "
                "(e.g. `aws sso login`) and retry."
            )
        if code in _BAD_CREDENTIALS_CODES:
            return error(
                f"{what} failed: AWS rejected the credentials ({code}). Check the access key / "
                "profile in use (`aws sts get-caller-identity`)."
            )
        if code in _THROTTLE_CODES:
            return error(f"{what} was throttled by AWS ({code}) after retries; try again shortly.")
        return error(f"{what} failed: {code}: {message}")

    def has_credentials(self) -> bool:
        """Whether boto3's chain finds credentials (without calling AWS)."""
        return self._boto_session().get_credentials() is not None

    def account_id(self) -> str:
        """The account of the credentials in use (STS GetCallerIdentity)."""
        return str(
            self.call(
                "sts",
                "get_caller_identity",
                what="finding the AWS account",
                iam_action="sts:GetCallerIdentity",
            )["Account"]
        )


class AwsEdge:
    """An edge over ``AwsBase.call`` (same error translation): a stack's or the alarms'."""

    def __init__(self, aws: AwsBase) -> None:
        self.aws = aws

    @property
    def region(self) -> str:
        return self.aws.region

    def account_id(self) -> str:
        return self.aws.account_id()


@functools.cache
def known_regions() -> frozenset[str]:
    """Every region of every partition the installed botocore knows, from the endpoint data it
    ships (``botocore/data/endpoints.json``): no network, no credentials, no profile read."""
    from botocore.loaders import create_loader

    data = create_loader().load_data("endpoints")
    return frozenset(region for partition in data["partitions"] for region in partition["regions"])


def botocore_version() -> str:
    import botocore

    return str(botocore.__version__)


def retry_when_throttled(
    operation: Callable[[], Any],
    *,
    what: str = "an AWS call",
    sleep: Callable[[float], None] | None = None,
) -> Any:
    """Run ``operation``, again after 0.5, 1, 2, 4 s while AWS answers with a throttling error
    (botocore's standard mode has already retried inside each attempt); other errors and the
    last throttling error propagate. Each wait is logged as a warning naming ``what``, so a
    pause is never silent. ``sleep`` is for tests that record the backoff."""
    import time

    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    def say_why(state: Any) -> None:
        log.warning(
            "%s was throttled by AWS (%s); retrying in %.1f s (attempt %d of %d)",
            what,
            _aws_error_code(state.outcome.exception()),
            state.next_action.sleep,
            state.attempt_number + 1,
            THROTTLE_RETRY_ATTEMPTS,
        )

    retrying = Retrying(
        stop=stop_after_attempt(THROTTLE_RETRY_ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=8),
        retry=retry_if_exception(_is_throttle),
        before_sleep=say_why,
        reraise=True,
        sleep=sleep or time.sleep,
    )
    return retrying(operation)


def _aws_error_code(exc: BaseException | None) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _is_throttle(exc: BaseException) -> bool:
    return _aws_error_code(exc) in _THROTTLE_CODES


def client_error_code(exc: BaseException) -> str:
    return _aws_error_code(exc.__cause__)


def client_error_message(exc: BaseException) -> str:
    response = getattr(exc.__cause__, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", ""))
    return ""


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_filter(stack_tag: str, stack: str | None) -> list[dict[str, Any]]:
    if stack is None:
        return [{"Name": "tag-key", "Values": [stack_tag]}]
    return [{"Name": f"tag:{stack_tag}", "Values": [stack]}]


def tag_map(raw: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in raw or []}


def iso_date(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return None if value is None else str(value)


def epoch_seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0
