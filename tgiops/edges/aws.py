"""The AWS edge (boto3): EC2 targets, Auto Scaling groups, Elastic IPs, Secrets Manager, prices.

Credentials, region and endpoint come from boto3's standard chain (profile, environment,
instance role; ``AWS_ENDPOINT_URL`` is honoured by boto3 itself, which is how the tests reach
moto). botocore errors are translated into ``AWSError`` subclasses whose messages name the IAM
action that was refused, the value looked up and the next step.

Secrets: the secret's value never appears in a message or a log line. botocore logs request
and response bodies at DEBUG (``botocore.endpoint`` "Making request ... with params",
``botocore.parsers`` "Response body"); a filter on those loggers redacts any record that
carries a Secrets Manager value, so ``tgiops -v`` cannot leak the token.

boto3 is imported on first use so that ``tgiops --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tgiops.core.errors import AWSError, InputError, SecretError, TargetNotFoundError
from tgiops.core.stack import CacheVolume

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

_REDACTED = "[tgiops: log record redacted: it carried a Secrets Manager value]"
# Loggers that may print request or response bodies at DEBUG.
_BODY_LOGGERS = (
    "botocore.endpoint",
    "botocore.parsers",
    "botocore.auth",
    "botocore.hooks",
    "botocore.httpsession",
    "botocore.retryhandler",
    "botocore.retries.standard",
    "urllib3.connectionpool",
)


class _SecretRedactor(logging.Filter):
    """Blank out log records that carry a Secrets Manager value (or any value we handled)."""

    _MARKERS = ("SecretString", "SecretBinary")

    def __init__(self) -> None:
        super().__init__("tgiops-secret-redactor")
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, value: str) -> None:
        if value:
            with self._lock:
                self._values.add(value)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        with self._lock:
            values = tuple(self._values)
        if any(marker in text for marker in self._MARKERS) or any(v in text for v in values):
            record.msg = _REDACTED
            record.args = ()
        return True


_redactor = _SecretRedactor()


def _install_redactor() -> None:
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if _redactor not in logger.filters:
            logger.addFilter(_redactor)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


@dataclass(frozen=True)
class AwsSettings:
    """Where to talk to AWS; None means boto3's standard chain decides."""

    region: str | None = None
    profile: str | None = None


@dataclass(frozen=True)
class Ec2Instance:
    instance_id: str
    instance_type: str
    lifecycle: str  # "spot" | "on-demand" (| "scheduled" | "capacity-block", as EC2 reports)
    state: str
    availability_zone: str
    public_ip: str | None
    private_ip: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    launch_time: str | None = None

    @property
    def name(self) -> str | None:
        return self.tags.get("Name")

    @property
    def is_spot(self) -> bool:
        return self.lifecycle == "spot"


def _instance_from_api(raw: Mapping[str, Any]) -> Ec2Instance:
    launch = raw.get("LaunchTime")
    return Ec2Instance(
        instance_id=raw["InstanceId"],
        instance_type=raw.get("InstanceType", ""),
        # EC2 omits InstanceLifecycle for on-demand instances.
        lifecycle=raw.get("InstanceLifecycle") or "on-demand",
        state=raw.get("State", {}).get("Name", "unknown"),
        availability_zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        public_ip=raw.get("PublicIpAddress"),
        private_ip=raw.get("PrivateIpAddress"),
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
        launch_time=launch.isoformat() if isinstance(launch, datetime) else launch,
    )


class Aws:
    """Lazy boto3 clients for one region/profile, with tgiops' error translation."""

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

            _install_redactor()
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

    # -- Secrets Manager -------------------------------------------------------------------

    def get_secret(self, name: str) -> str:
        """The secret's string value (the Hugging Face token). Throttling is retried."""
        response = self.call(
            "secretsmanager",
            "get_secret_value",
            what=f"reading secret {name!r}",
            iam_action="secretsmanager:GetSecretValue",
            error=SecretError,
            retry_throttling=True,
            messages={
                "ResourceNotFoundException": (
                    f"secret {name} not found in {self.region}; create it with "
                    f"`tgiops secret set --secret-name {name}`."
                ),
                "DecryptionFailure": (
                    f"secret {name} could not be decrypted: the AWS identity needs kms:Decrypt "
                    "on the secret's KMS key as well as secretsmanager:GetSecretValue."
                ),
                "InvalidRequestException": (
                    f"secret {name} cannot be read now (it is probably scheduled for deletion); "
                    f"restore it with `aws secretsmanager restore-secret --secret-id {name}`."
                ),
            },
            SecretId=name,
        )
        return self._secret_value(response, name)

    def _secret_value(self, response: Mapping[str, Any], name: str) -> str:
        if response.get("SecretString") is not None:
            value = str(response["SecretString"])
        elif response.get("SecretBinary") is not None:
            try:
                value = bytes(response["SecretBinary"]).decode("utf-8")
            except UnicodeDecodeError:
                raise SecretError(
                    f"secret {name} holds binary data that is not UTF-8 text; store the token "
                    f"as a string with `tgiops secret set --secret-name {name}`."
                ) from None
        else:
            raise SecretError(f"secret {name} has no value; set one with `tgiops secret set`.")
        _redactor.remember(value)
        if not value.strip():
            raise SecretError(f"secret {name} is empty; set it with `tgiops secret set`.")
        return value

    def put_secret(self, name: str, value: str, tags: Mapping[str, str] | None = None) -> str:
        """Store ``value`` under ``name``: a new version if it exists, else a new secret
        carrying ``tags`` (an existing secret's tags are left as they are: it may not be ours).

        Returns "created" or "updated".
        """
        import botocore.exceptions

        _redactor.remember(value)
        what = f"storing secret {name!r}"
        try:
            self.call(
                "secretsmanager",
                "put_secret_value",
                what=what,
                iam_action="secretsmanager:PutSecretValue",
                error=SecretError,
                secret=value,
                SecretId=name,
                SecretString=value,
            )
            return "updated"
        except SecretError as exc:
            cause = exc.__cause__
            if not (
                isinstance(cause, botocore.exceptions.ClientError)
                and cause.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
            ):
                raise
        self.call(
            "secretsmanager",
            "create_secret",
            what=what,
            iam_action="secretsmanager:CreateSecret",
            error=SecretError,
            secret=value,
            Name=name,
            SecretString=value,
            Tags=[{"Key": key, "Value": val} for key, val in (tags or {}).items()],
        )
        log.info("created secret %s in %s", name, self.region)
        return "created"

    def describe_secret(self, name: str) -> SecretInfo | None:
        """What Secrets Manager says of a secret (never its value); None when it does not
        exist."""
        import botocore.exceptions

        try:
            response = self.call(
                "secretsmanager",
                "describe_secret",
                what=f"looking up secret {name!r}",
                iam_action="secretsmanager:DescribeSecret",
                error=SecretError,
                SecretId=name,
            )
        except SecretError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, botocore.exceptions.ClientError)
                and cause.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
            ):
                return None
            raise
        return _secret_info(response)

    def list_secrets(self, tag_key: str) -> list[SecretInfo]:
        """Every secret carrying the tag ``tag_key`` (names and dates only), by name."""
        found: list[SecretInfo] = []
        next_token: str | None = None
        while True:
            params: dict[str, Any] = {"Filters": [{"Key": "tag-key", "Values": [tag_key]}]}
            if next_token:
                params["NextToken"] = next_token
            page = self.call(
                "secretsmanager",
                "list_secrets",
                what=f"listing the secrets tagged {tag_key}",
                iam_action="secretsmanager:ListSecrets",
                error=SecretError,
                **params,
            )
            found += [_secret_info(raw) for raw in page.get("SecretList", [])]
            next_token = page.get("NextToken")
            if not next_token:
                break
        # The filter matches tag keys by prefix (AWS: "tag-key: Prefix match"): keep exact ones.
        return sorted((i for i in found if tag_key in i.tags), key=lambda i: i.name)

    def delete_secret(self, name: str) -> str | None:
        """Schedule the secret's deletion with Secrets Manager's default recovery window
        (30 days; restorable until then). Returns the deletion date (ISO 8601)."""
        response = self.call(
            "secretsmanager",
            "delete_secret",
            what=f"deleting secret {name!r}",
            iam_action="secretsmanager:DeleteSecret",
            error=SecretError,
            SecretId=name,
        )
        return _iso(response.get("DeletionDate"))

    def secret_exists(self, name: str) -> bool:
        """True when the secret exists and is not scheduled for deletion (DescribeSecret)."""
        info = self.describe_secret(name)
        return info is not None and info.deleted is None

    # -- EC2 / Auto Scaling ----------------------------------------------------------------

    def find_instances(
        self,
        *,
        instance_ids: Iterable[str] = (),
        name_tag: str | None = None,
        asg_name: str | None = None,
        tag_filters: Mapping[str, str] | None = None,
        states: Iterable[str] = ("running",),
    ) -> list[Ec2Instance]:
        """Instances matching every given criterion, oldest launch first.

        ``asg_name`` means the group's InService instances. Nothing found -> TargetNotFoundError.
        """
        ids = list(instance_ids)
        wanted_states = list(states)
        described = []
        if ids:
            described.append("id " + ", ".join(ids))
        if name_tag is not None:
            described.append(f"Name tag {name_tag!r}")
        for key, value in (tag_filters or {}).items():
            described.append(f"tag {key}={value!r}")
        if asg_name is not None:
            described.append(f"Auto Scaling group {asg_name!r}")
            in_service = self._asg_in_service_ids(asg_name)
            ids = [i for i in ids if i in in_service] if ids else in_service
            if not ids:
                raise TargetNotFoundError(
                    f"no InService instance of Auto Scaling group {asg_name!r} matches "
                    f"{', '.join(described)} in {self.region}."
                )
        filters = []
        if wanted_states:
            filters.append({"Name": "instance-state-name", "Values": wanted_states})
        if name_tag is not None:
            filters.append({"Name": "tag:Name", "Values": [name_tag]})
        for key, value in (tag_filters or {}).items():
            filters.append({"Name": f"tag:{key}", "Values": [value]})
        params: dict[str, Any] = {"Filters": filters}
        if ids:
            params["InstanceIds"] = ids
        query = " and ".join(described) or "any instance"
        found: list[Ec2Instance] = []
        next_token: str | None = None
        while True:
            page_params = dict(params, NextToken=next_token) if next_token else params
            try:
                page = self.call(
                    "ec2",
                    "describe_instances",
                    what=f"looking up instances ({query})",
                    iam_action="ec2:DescribeInstances",
                    **page_params,
                )
            except AWSError as exc:
                if _client_error_code(exc).startswith("InvalidInstanceID"):
                    raise TargetNotFoundError(
                        f"instance {', '.join(ids)} does not exist in {self.region} "
                        f"({_client_error_message(exc)}). Check the id and --region."
                    ) from exc
                raise
            for reservation in page.get("Reservations", []):
                found.extend(_instance_from_api(raw) for raw in reservation.get("Instances", []))
            next_token = page.get("NextToken")
            if not next_token:
                break
        if not found:
            state_text = "/".join(wanted_states) if wanted_states else "any-state"
            raise TargetNotFoundError(
                f"no {state_text} instance matches {query} in {self.region}. Check --region and "
                "the target (`aws ec2 describe-instances` lists them), or start the instance."
            )
        found.sort(key=lambda i: (i.launch_time or "", i.instance_id))
        log.debug("found %d instance(s) for %s", len(found), query)
        return found

    def _asg_in_service_ids(self, asg_name: str) -> list[str]:
        response = self.call(
            "autoscaling",
            "describe_auto_scaling_groups",
            what=f"looking up Auto Scaling group {asg_name!r}",
            iam_action="autoscaling:DescribeAutoScalingGroups",
            AutoScalingGroupNames=[asg_name],
        )
        groups = response.get("AutoScalingGroups", [])
        if not groups:
            raise TargetNotFoundError(
                f"Auto Scaling group {asg_name!r} not found in {self.region}. Check the name and "
                "--region (`aws autoscaling describe-auto-scaling-groups`)."
            )
        group = groups[0]
        instances = group.get("Instances", [])
        in_service = [i["InstanceId"] for i in instances if i.get("LifecycleState") == "InService"]
        if not in_service:
            states = ", ".join(f"{i['InstanceId']}: {i.get('LifecycleState')}" for i in instances)
            raise TargetNotFoundError(
                f"Auto Scaling group {asg_name!r} has no InService instance (desired capacity "
                f"{group.get('DesiredCapacity')}; {states or 'no instances'}). Wait for it to "
                "scale out, or raise its desired capacity."
            )
        return in_service

    def tag_instance(self, instance_id: str, tags: Mapping[str, str]) -> None:
        self.call(
            "ec2",
            "create_tags",
            what=f"tagging instance {instance_id}",
            iam_action="ec2:CreateTags",
            Resources=[instance_id],
            Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
        )

    def untag_instance(self, instance_id: str, keys: Sequence[str]) -> None:
        self.call(
            "ec2",
            "delete_tags",
            what=f"removing tags from instance {instance_id}",
            iam_action="ec2:DeleteTags",
            Resources=[instance_id],
            Tags=[{"Key": key} for key in keys],
        )

    def associate_elastic_ip(self, allocation_id: str, instance_id: str) -> str:
        """Point the Elastic IP at the instance (re-association allowed); the association id."""
        response = self.call(
            "ec2",
            "associate_address",
            what=f"associating Elastic IP {allocation_id} with {instance_id}",
            iam_action="ec2:AssociateAddress",
            AllocationId=allocation_id,
            InstanceId=instance_id,
            AllowReassociation=True,
        )
        return str(response["AssociationId"])

    def describe_elastic_ip(self, allocation_id: str) -> dict[str, str | None]:
        """{"allocation_id", "public_ip", "instance_id", "association_id"} (None when free)."""
        try:
            response = self.call(
                "ec2",
                "describe_addresses",
                what=f"looking up Elastic IP {allocation_id}",
                iam_action="ec2:DescribeAddresses",
                AllocationIds=[allocation_id],
            )
        except AWSError as exc:
            if _client_error_code(exc).startswith("InvalidAllocationID"):
                raise TargetNotFoundError(
                    f"Elastic IP allocation {allocation_id} not found in {self.region}. Check the "
                    "id (eipalloc-...) and --region."
                ) from exc
            raise
        addresses = response.get("Addresses", [])
        if not addresses:
            raise TargetNotFoundError(
                f"Elastic IP allocation {allocation_id} not found in {self.region}."
            )
        address = addresses[0]
        return {
            "allocation_id": allocation_id,
            # Normalised: an unassociated address has no (or an empty) InstanceId.
            "public_ip": address.get("PublicIp") or None,
            "instance_id": address.get("InstanceId") or None,
            "association_id": address.get("AssociationId") or None,
        }

    def world_open_ingress(
        self, instance_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, int, int]]]:
        """instance id -> (group id, from port, to port) of every inbound rule of its security
        groups that is open to 0.0.0.0/0 or ::/0 (all protocols count as ports 0-65535)."""
        if not instance_ids:
            return {}
        reservations = self.call(
            "ec2",
            "describe_instances",
            what="looking up security groups",
            iam_action="ec2:DescribeInstances",
            InstanceIds=list(instance_ids),
        ).get("Reservations", [])
        groups_of = {
            inst["InstanceId"]: [g["GroupId"] for g in inst.get("SecurityGroups", [])]
            for r in reservations
            for inst in r.get("Instances", [])
        }
        group_ids = sorted({g for groups in groups_of.values() for g in groups})
        open_rules: dict[str, list[tuple[str, int, int]]] = {}
        if group_ids:
            described = self.call(
                "ec2",
                "describe_security_groups",
                what="reading security group rules",
                iam_action="ec2:DescribeSecurityGroups",
                GroupIds=group_ids,
            ).get("SecurityGroups", [])
            for group in described:
                for perm in group.get("IpPermissions", []):
                    world = any(r.get("CidrIp") == "0.0.0.0/0" for r in perm.get("IpRanges", []))
                    world |= any(r.get("CidrIpv6") == "::/0" for r in perm.get("Ipv6Ranges", []))
                    if not world:
                        continue
                    if perm.get("IpProtocol") == "-1":
                        low, high = 0, 65535
                    else:
                        low, high = perm.get("FromPort", 0), perm.get("ToPort", 65535)
                    open_rules.setdefault(group["GroupId"], []).append(
                        (group["GroupId"], low, high)
                    )
        return {
            iid: [rule for g in groups for rule in open_rules.get(g, [])]
            for iid, groups in groups_of.items()
        }

    # --- monitor (issue 17) ---
    # CloudWatch for `tgiops monitor`: the on-host loop's PutMetricData (instance role) and
    # `monitor show`'s ListMetrics + GetMetricData. Limits: docs/aws.md §5.

    def put_metric_data(self, namespace: str, data: Sequence[Mapping[str, Any]]) -> None:
        """One PutMetricData request (at most 1000 MetricDatum dicts: core.monitor batches)."""
        self.call(
            "cloudwatch",
            "put_metric_data",
            what=f"sending {len(data)} metric points to CloudWatch ({namespace})",
            iam_action="cloudwatch:PutMetricData",
            Namespace=namespace,
            MetricData=list(data),
        )

    def list_metrics(
        self, namespace: str, dimensions: Sequence[Mapping[str, str]] = ()
    ) -> list[dict[str, Any]]:
        """Every metric of ``namespace`` that has ``dimensions`` (name and value each)."""
        metrics: list[dict[str, Any]] = []
        seen: set[str] = set()
        token: str | None = None
        for _ in range(100):  # a bound on pages: 500 metrics each
            params: dict[str, Any] = {"Namespace": namespace}
            if dimensions:
                params["Dimensions"] = [dict(d) for d in dimensions]
            if token:
                params["NextToken"] = token
            response = self.call(
                "cloudwatch",
                "list_metrics",
                what=f"listing the CloudWatch metrics of {namespace}",
                iam_action="cloudwatch:ListMetrics",
                **params,
            )
            for m in response.get("Metrics", []):
                metric = {
                    "MetricName": m["MetricName"],
                    "Dimensions": list(m.get("Dimensions") or []),
                }
                # Each metric once: a reader that sums per metric (cost's tokens) must not count
                # one twice (moto's ListMetrics repeats a metric per batch it was sent in).
                key = json.dumps(metric, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    metrics.append(metric)
            token = response.get("NextToken") or None
            if not token:
                break
        return metrics

    def get_metric_data(
        self, queries: Sequence[Mapping[str, Any]], *, start: float, end: float
    ) -> dict[str, tuple[list[float], list[float]]]:
        """query id -> (epoch timestamps, values), for up to any number of queries (GetMetricData
        takes 500 a request, API_GetMetricData)."""
        out: dict[str, tuple[list[float], list[float]]] = {}
        begin = datetime.fromtimestamp(start, timezone.utc)
        until = datetime.fromtimestamp(end, timezone.utc)
        for first in range(0, len(queries), 500):
            token: str | None = None
            for _ in range(100):
                params: dict[str, Any] = {
                    "MetricDataQueries": [dict(q) for q in queries[first : first + 500]],
                    "StartTime": begin,
                    "EndTime": until,
                    "ScanBy": "TimestampDescending",
                }
                if token:
                    params["NextToken"] = token
                response = self.call(
                    "cloudwatch",
                    "get_metric_data",
                    what="reading CloudWatch metric data",
                    iam_action="cloudwatch:GetMetricData",
                    **params,
                )
                for result in response.get("MetricDataResults", []):
                    stamps, values = out.setdefault(result["Id"], ([], []))
                    stamps += [_timestamp(t) for t in result.get("Timestamps", [])]
                    values += [float(v) for v in result.get("Values", [])]
                token = response.get("NextToken") or None
                if not token:
                    break
        return out

    def spot_price(self, instance_type: str, availability_zone: str) -> float | None:
        """The current Linux spot price in USD/hour, or None when EC2 reports none."""
        response = self.call(
            "ec2",
            "describe_spot_price_history",
            what=f"looking up the spot price of {instance_type} in {availability_zone}",
            iam_action="ec2:DescribeSpotPriceHistory",
            InstanceTypes=[instance_type],
            AvailabilityZone=availability_zone,
            ProductDescriptions=["Linux/UNIX"],
            StartTime=datetime.now(timezone.utc),
        )
        history = [
            entry
            for entry in response.get("SpotPriceHistory", [])
            if entry.get("InstanceType") == instance_type
            and entry.get("AvailabilityZone", availability_zone) == availability_zone
        ]
        if not history:
            return None
        latest = max(history, key=lambda e: _timestamp(e.get("Timestamp")))
        return float(latest["SpotPrice"])

    def has_credentials(self) -> bool:
        """Whether boto3's chain finds credentials (without calling AWS)."""
        return self._boto_session().get_credentials() is not None

    def lowest_spot_prices(self, instance_types: Sequence[str]) -> dict[str, tuple[float, str]]:
        """Per instance type, the lowest current Linux spot price (USD/h) over the region's
        availability zones and that zone: one paginated ``DescribeSpotPriceHistory`` with
        ``StartTime`` now, which returns the price in force in each zone
        (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSpotPriceHistory.html).
        Types EC2 reports no price for are absent (never guessed)."""
        entries: list[Mapping[str, Any]] = []
        token: str | None = None
        now = datetime.now(timezone.utc)
        for _ in range(100):  # a bound on pages: 1000 entries each
            params: dict[str, Any] = {
                "InstanceTypes": list(instance_types),
                "ProductDescriptions": ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                "StartTime": now,
                "MaxResults": 1000,
            }
            if token:
                params["NextToken"] = token
            response = self.call(
                "ec2",
                "describe_spot_price_history",
                what=f"reading spot prices in {self.region}",
                iam_action="ec2:DescribeSpotPriceHistory",
                **params,
            )
            entries.extend(response.get("SpotPriceHistory", []))
            token = response.get("NextToken") or None
            if not token:
                break
        return lowest_spot_by_type(entries, set(instance_types))


@dataclass(frozen=True)
class SecretInfo:
    """A secret as DescribeSecret / ListSecrets report it: never its value."""

    name: str
    arn: str | None
    created: str | None
    changed: str | None
    accessed: str | None
    deleted: str | None  # the planned deletion date when scheduled for deletion
    tags: Mapping[str, str] = field(default_factory=dict)


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return None if value is None else str(value)


def _secret_info(raw: Mapping[str, Any]) -> SecretInfo:
    return SecretInfo(
        name=str(raw.get("Name", "")),
        arn=raw.get("ARN"),
        created=_iso(raw.get("CreatedDate")),
        changed=_iso(raw.get("LastChangedDate")),
        accessed=_iso(raw.get("LastAccessedDate")),
        deleted=_iso(raw.get("DeletedDate")),
        tags={t["Key"]: t.get("Value", "") for t in raw.get("Tags", []) or []},
    )


def lowest_spot_by_type(
    history: Iterable[Mapping[str, Any]], wanted: set[str]
) -> dict[str, tuple[float, str]]:
    """(lowest price, its zone) per instance type from SpotPriceHistory entries: the latest
    entry of each (type, zone) is the price in force there; ties go to the first zone by name."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for entry in history:
        key = (str(entry.get("InstanceType", "")), str(entry.get("AvailabilityZone", "")))
        if key[0] not in wanted or not key[1]:
            continue
        seen = latest.get(key)
        if seen is None or _timestamp(entry.get("Timestamp")) > _timestamp(seen.get("Timestamp")):
            latest[key] = entry
    lowest: dict[str, tuple[float, str]] = {}
    for (itype, zone), entry in sorted(latest.items()):
        try:
            price = float(entry["SpotPrice"])
        except (KeyError, TypeError, ValueError):
            continue  # an entry without a readable price is no price
        if itype not in lowest or price < lowest[itype][0]:
            lowest[itype] = (price, zone)
    return lowest


def _timestamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


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


def _client_error_code(exc: BaseException) -> str:
    return _aws_error_code(exc.__cause__)


def _client_error_message(exc: BaseException) -> str:
    response = getattr(exc.__cause__, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", ""))
    return ""


# -- stacks: `tgiops up` / `tgiops down` (tgiops.core.stack) ------------------------------------
# Every resource here carries the tag tgiops:stack=NAME; lookups go by that tag (IAM, which has
# no tag filter, by name and then the tag), so `down` never finds what it did not create.


def _tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _tag_filter(stack_tag: str, stack: str | None) -> list[dict[str, Any]]:
    if stack is None:
        return [{"Name": "tag-key", "Values": [stack_tag]}]
    return [{"Name": f"tag:{stack_tag}", "Values": [stack]}]


def _tag_map(raw: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in raw or []}


class StackEdge:
    """The AWS calls of a stack, over ``Aws.call`` (same error translation)."""

    def __init__(self, aws: Aws, stack_tag: str) -> None:
        self.aws = aws
        self.tag = stack_tag

    def _ec2(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call("ec2", op, what=what, iam_action=f"ec2:{action}", **params)

    def _code(self, exc: BaseException) -> str:
        return _client_error_code(exc)

    # identity, network, AMI -----------------------------------------------------------------

    def account_id(self) -> str:
        return str(
            self.aws.call(
                "sts",
                "get_caller_identity",
                what="finding the AWS account",
                iam_action="sts:GetCallerIdentity",
            )["Account"]
        )

    def subnets(self, ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """(subnet id, zone, VPC id) of ``ids``, or of the default VPC's default subnets."""
        params: dict[str, Any] = (
            {"SubnetIds": list(ids)}
            if ids
            else {"Filters": [{"Name": "default-for-az", "Values": ["true"]}]}
        )
        try:
            found = self._ec2(
                "describe_subnets", "looking up subnets", "DescribeSubnets", **params
            ).get("Subnets", [])
        except AWSError as exc:
            if self._code(exc).startswith("InvalidSubnetID"):
                raise InputError(f"--subnets: {_client_error_message(exc)}") from exc
            raise
        return sorted((s["SubnetId"], s["AvailabilityZone"], s["VpcId"]) for s in found)

    def ssm_parameter(self, name: str) -> str:
        return str(
            self.aws.call(
                "ssm",
                "get_parameter",
                what=f"reading the public SSM parameter {name}",
                iam_action="ssm:GetParameter",
                messages={
                    "ParameterNotFound": f"the SSM parameter {name} does not exist in "
                    f"{self.aws.region}; give an AMI with --ami"
                },
                Name=name,
            )["Parameter"]["Value"]
        )

    def image_root_device(self, ami: str) -> str:
        try:
            images = self._ec2(
                "describe_images", f"looking up AMI {ami}", "DescribeImages", ImageIds=[ami]
            ).get("Images", [])
        except AWSError as exc:
            if self._code(exc).startswith("InvalidAMIID"):
                images = []
            else:
                raise
        if not images:
            raise InputError(f"AMI {ami} does not exist in {self.aws.region} (check --ami)")
        return str(images[0].get("RootDeviceName") or "/dev/sda1")

    def service_quota(self, code: str) -> float:
        response = self.aws.call(
            "service-quotas",
            "get_service_quota",
            what=f"reading the EC2 quota {code}",
            iam_action="servicequotas:GetServiceQuota",
            ServiceCode="ec2",
            QuotaCode=code,
        )
        return float(response["Quota"]["Value"])

    # security group ----------------------------------------------------------------------------

    def find_security_groups(self, stack: str | None) -> list[dict[str, Any]]:
        groups = self._ec2(
            "describe_security_groups",
            "looking up the stack's security groups",
            "DescribeSecurityGroups",
            Filters=_tag_filter(self.tag, stack),
        ).get("SecurityGroups", [])
        return [dict(g) for g in groups]

    @staticmethod
    def ingress_cidrs(group: Mapping[str, Any], port: int) -> list[str]:
        return sorted(
            r["CidrIp"]
            for p in group.get("IpPermissions", [])
            if p.get("FromPort") == port and p.get("ToPort") == port
            for r in p.get("IpRanges", [])
        )

    def create_security_group(self, name: str, vpc_id: str, tags: Mapping[str, str]) -> str:
        return str(
            self._ec2(
                "create_security_group",
                f"creating security group {name}",
                "CreateSecurityGroup",
                GroupName=name,
                Description=f"{name}: created by tgiops up",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(tags)}],
            )["GroupId"]
        )

    def set_ingress(
        self, group_id: str, port: int, add: Sequence[str], remove: Sequence[str]
    ) -> None:
        def perms(cidrs: Sequence[str]) -> list[dict[str, Any]]:
            return [
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "IpRanges": [{"CidrIp": c, "Description": "tgiops up"} for c in cidrs],
                }
            ]

        if add:
            self._ec2(
                "authorize_security_group_ingress",
                f"opening port {port} on {group_id}",
                "AuthorizeSecurityGroupIngress",
                GroupId=group_id,
                IpPermissions=perms(add),
            )
        if remove:
            self._ec2(
                "revoke_security_group_ingress",
                f"closing port {port} on {group_id}",
                "RevokeSecurityGroupIngress",
                GroupId=group_id,
                IpPermissions=perms(remove),
            )

    def delete_security_group(self, group_id: str) -> None:
        self._ec2(
            "delete_security_group",
            f"deleting security group {group_id}",
            "DeleteSecurityGroup",
            GroupId=group_id,
        )

    # Elastic IP, key pair, volumes ----------------------------------------------------------

    def find_addresses(self, stack: str | None) -> list[dict[str, Any]]:
        return [
            dict(a)
            for a in self._ec2(
                "describe_addresses",
                "looking up the stack's Elastic IPs",
                "DescribeAddresses",
                Filters=_tag_filter(self.tag, stack),
            ).get("Addresses", [])
        ]

    def allocate_address(self, tags: Mapping[str, str]) -> tuple[str, str]:
        r = self._ec2(
            "allocate_address",
            "allocating an Elastic IP",
            "AllocateAddress",
            Domain="vpc",
            TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": _tags(tags)}],
        )
        return str(r["AllocationId"]), str(r.get("PublicIp", ""))

    def release_address(self, address: Mapping[str, Any]) -> None:
        if address.get("AssociationId"):
            self._ec2(
                "disassociate_address",
                f"detaching Elastic IP {address['AllocationId']}",
                "DisassociateAddress",
                AssociationId=address["AssociationId"],
            )
        self._ec2(
            "release_address",
            f"releasing Elastic IP {address['AllocationId']}",
            "ReleaseAddress",
            AllocationId=address["AllocationId"],
        )

    def find_key_pairs(self, stack: str) -> list[str]:
        pairs = self._ec2(
            "describe_key_pairs",
            "looking up the stack's key pair",
            "DescribeKeyPairs",
            Filters=_tag_filter(self.tag, stack),
        ).get("KeyPairs", [])
        return sorted(str(k["KeyName"]) for k in pairs)

    def create_key_pair(self, name: str, tags: Mapping[str, str]) -> str:
        """The private key (PEM): kept only by the caller, never logged."""
        r = self._ec2(
            "create_key_pair",
            f"creating key pair {name}",
            "CreateKeyPair",
            KeyName=name,
            KeyType="ed25519",
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": _tags(tags)}],
        )
        return str(r["KeyMaterial"])

    def delete_key_pair(self, name: str) -> None:
        self._ec2("delete_key_pair", f"deleting key pair {name}", "DeleteKeyPair", KeyName=name)

    def find_volumes(self, stack: str) -> list[str]:
        vols = self._ec2(
            "describe_volumes",
            "looking up the stack's volumes",
            "DescribeVolumes",
            Filters=[*_tag_filter(self.tag, stack), {"Name": "status", "Values": ["available"]}],
        ).get("Volumes", [])
        return sorted(str(v["VolumeId"]) for v in vols)

    def delete_volume(self, volume_id: str) -> None:
        self._ec2(
            "delete_volume", f"deleting volume {volume_id}", "DeleteVolume", VolumeId=volume_id
        )

    # the model cache volume (tgiops.core.stack.choose_cache_volume; docs/aws.md §3.5) -------

    @staticmethod
    def _cache_volume(raw: Mapping[str, Any]) -> CacheVolume:
        created = raw.get("CreateTime")
        return CacheVolume(
            volume_id=str(raw["VolumeId"]),
            zone=str(raw.get("AvailabilityZone", "")),
            state=str(raw.get("State", "")),
            tags=_tag_map(raw.get("Tags")),
            attached_to=tuple(
                str(a["InstanceId"])
                for a in raw.get("Attachments") or []
                if a.get("State") in ("attaching", "attached", "busy") and a.get("InstanceId")
            ),
            size_gib=int(raw.get("Size", 0)),
            created=created.isoformat() if isinstance(created, datetime) else str(created or ""),
        )

    def find_cache_volumes(self, stack: str | None, role_tag: str, role: str) -> list[CacheVolume]:
        """The volumes tagged ``tgiops:stack=stack`` (any stack's with None) and
        ``role_tag=role``, in every state but deleted, as core.stack.CacheVolume."""
        filters = [*_tag_filter(self.tag, stack), {"Name": f"tag:{role_tag}", "Values": [role]}]
        found: list[CacheVolume] = []
        token: str | None = None
        for _ in range(100):
            page = self._ec2(
                "describe_volumes",
                "looking up the stack's model cache volumes",
                "DescribeVolumes",
                Filters=filters,
                **({"NextToken": token} if token else {}),
            )
            found.extend(self._cache_volume(v) for v in page.get("Volumes", []))
            token = page.get("NextToken")
            if not token:
                break
        return [v for v in found if v.state not in ("deleting", "deleted")]

    def cache_volume(self, volume_id: str) -> CacheVolume | None:
        try:
            vols = self._ec2(
                "describe_volumes",
                f"looking up volume {volume_id}",
                "DescribeVolumes",
                VolumeIds=[volume_id],
            ).get("Volumes", [])
        except AWSError as exc:
            if self._code(exc).startswith("InvalidVolume"):
                return None
            raise
        return self._cache_volume(vols[0]) if vols else None

    def create_cache_volume(
        self, zone: str, gib: int, throughput: int, tags: Mapping[str, str]
    ) -> str:
        """An encrypted gp3 volume, tagged in the same call (the role may tag only then)."""
        return str(
            self._ec2(
                "create_volume",
                f"creating the model cache volume in {zone}",
                "CreateVolume",
                AvailabilityZone=zone,
                Size=gib,
                VolumeType="gp3",
                Iops=3000,
                Throughput=throughput,
                Encrypted=True,
                TagSpecifications=[{"ResourceType": "volume", "Tags": _tags(tags)}],
            )["VolumeId"]
        )

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None:
        """AttachVolume; AWSError with the code (VolumeInUse, IncorrectState) when another
        instance took it first."""
        self._ec2(
            "attach_volume",
            f"attaching volume {volume_id} to {instance_id}",
            "AttachVolume",
            VolumeId=volume_id,
            InstanceId=instance_id,
            Device=device,
        )

    def live_instances(self, stack: str) -> list[Ec2Instance]:
        try:
            return self.aws.find_instances(
                tag_filters={self.tag: stack},
                states=("pending", "running", "stopping", "stopped", "shutting-down"),
            )
        except TargetNotFoundError:
            return []

    # IAM ----------------------------------------------------------------------------------

    def _iam(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call("iam", op, what=what, iam_action=f"iam:{action}", **params)

    def role_tags(self, name: str) -> dict[str, str] | None:
        """The role's tags, or None when there is no such role."""
        try:
            role = self._iam("get_role", f"looking up role {name}", "GetRole", RoleName=name)
        except AWSError as exc:
            if self._code(exc) == "NoSuchEntity":
                return None
            raise
        tags = _tag_map(role["Role"].get("Tags"))
        if not tags:  # GetRole omits tags on some implementations
            tags = _tag_map(
                self._iam("list_role_tags", f"reading role {name}'s tags", "ListRoleTags",
                          RoleName=name).get("Tags")
            )  # fmt: skip
        return tags

    def role_policy(self, role: str, policy: str) -> dict[str, Any] | None:
        try:
            doc = self._iam(
                "get_role_policy",
                f"reading role {role}'s policy",
                "GetRolePolicy",
                RoleName=role,
                PolicyName=policy,
            )["PolicyDocument"]
        except AWSError as exc:
            if self._code(exc) == "NoSuchEntity":
                return None
            raise
        if isinstance(doc, str):  # the API returns it URL-encoded JSON; boto3 decodes it
            import json
            from urllib.parse import unquote

            doc = json.loads(unquote(doc))
        return dict(doc)

    def create_role(self, name: str, trust: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        import json

        self._iam(
            "create_role",
            f"creating role {name}",
            "CreateRole",
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description="tgiops up: the instance role of the stack",
            Tags=_tags(tags),
        )

    def put_role_policy(self, role: str, policy: str, document: Mapping[str, Any]) -> None:
        import json

        self._iam(
            "put_role_policy",
            f"setting role {role}'s policy",
            "PutRolePolicy",
            RoleName=role,
            PolicyName=policy,
            PolicyDocument=json.dumps(document),
        )

    def instance_profile(self, name: str) -> dict[str, Any] | None:
        """{"arn", "roles", "tags"} or None."""
        try:
            p = self._iam(
                "get_instance_profile",
                f"looking up instance profile {name}",
                "GetInstanceProfile",
                InstanceProfileName=name,
            )["InstanceProfile"]
        except AWSError as exc:
            if self._code(exc) == "NoSuchEntity":
                return None
            raise
        return {
            "arn": p["Arn"],
            "roles": [r["RoleName"] for r in p.get("Roles", [])],
            "tags": _tag_map(p.get("Tags")),
        }

    def create_instance_profile(self, name: str, tags: Mapping[str, str]) -> None:
        self._iam(
            "create_instance_profile",
            f"creating instance profile {name}",
            "CreateInstanceProfile",
            InstanceProfileName=name,
            Tags=_tags(tags),
        )

    def add_role_to_profile(self, profile: str, role: str) -> None:
        self._iam(
            "add_role_to_instance_profile",
            f"adding role {role} to instance profile {profile}",
            "AddRoleToInstanceProfile",
            InstanceProfileName=profile,
            RoleName=role,
        )

    def delete_instance_profile(self, name: str, roles: Sequence[str]) -> None:
        for role in roles:
            self._iam(
                "remove_role_from_instance_profile",
                f"removing role {role} from instance profile {name}",
                "RemoveRoleFromInstanceProfile",
                InstanceProfileName=name,
                RoleName=role,
            )
        self._iam(
            "delete_instance_profile",
            f"deleting instance profile {name}",
            "DeleteInstanceProfile",
            InstanceProfileName=name,
        )

    def delete_role(self, name: str) -> None:
        policies = self._iam(
            "list_role_policies", f"listing role {name}'s policies", "ListRolePolicies",
            RoleName=name,
        ).get("PolicyNames", [])  # fmt: skip
        for policy in policies:
            self._iam(
                "delete_role_policy",
                f"deleting role {name}'s policy {policy}",
                "DeleteRolePolicy",
                RoleName=name,
                PolicyName=policy,
            )
        self._iam("delete_role", f"deleting role {name}", "DeleteRole", RoleName=name)

    # launch template ------------------------------------------------------------------------

    def find_launch_templates(self, stack: str) -> list[dict[str, Any]]:
        """[{"id", "name", "latest", "digest"}]: digest = the latest version's description."""
        found = self._ec2(
            "describe_launch_templates",
            "looking up the stack's launch template",
            "DescribeLaunchTemplates",
            Filters=_tag_filter(self.tag, stack),
        ).get("LaunchTemplates", [])
        out = []
        for lt in found:
            versions = self._ec2(
                "describe_launch_template_versions",
                f"reading launch template {lt['LaunchTemplateName']}",
                "DescribeLaunchTemplateVersions",
                LaunchTemplateId=lt["LaunchTemplateId"],
                Versions=["$Latest"],
            ).get("LaunchTemplateVersions", [])
            latest = versions[0] if versions else {}
            out.append(
                {
                    "id": lt["LaunchTemplateId"],
                    "name": lt["LaunchTemplateName"],
                    "latest": int(latest.get("VersionNumber", lt.get("LatestVersionNumber", 1))),
                    "digest": latest.get("VersionDescription"),
                }
            )
        return out

    def create_launch_template(
        self, name: str, data: Mapping[str, Any], digest: str, tags: Mapping[str, str]
    ) -> str:
        return str(
            self._ec2(
                "create_launch_template",
                f"creating launch template {name}",
                "CreateLaunchTemplate",
                LaunchTemplateName=name,
                VersionDescription=digest,
                LaunchTemplateData=dict(data),
                TagSpecifications=[{"ResourceType": "launch-template", "Tags": _tags(tags)}],
            )["LaunchTemplate"]["LaunchTemplateId"]
        )

    def create_launch_template_version(
        self, template_id: str, data: Mapping[str, Any], digest: str
    ) -> int:
        r = self._ec2(
            "create_launch_template_version",
            f"adding a version to launch template {template_id}",
            "CreateLaunchTemplateVersion",
            LaunchTemplateId=template_id,
            VersionDescription=digest,
            LaunchTemplateData=dict(data),
        )
        return int(r["LaunchTemplateVersion"]["VersionNumber"])

    def delete_launch_template(self, template_id: str) -> None:
        self._ec2(
            "delete_launch_template",
            f"deleting launch template {template_id}",
            "DeleteLaunchTemplate",
            LaunchTemplateId=template_id,
        )

    # Auto Scaling ---------------------------------------------------------------------------

    def _asg(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call(
            "autoscaling", op, what=what, iam_action=f"autoscaling:{action}", **params
        )

    def find_groups(self, stack: str | None) -> list[dict[str, Any]]:
        """The stack's groups (every stack's with ``stack=None``), as AWS describes them."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(100):
            params: dict[str, Any] = {
                "Filters": [{"Name": "tag-key", "Values": [self.tag]}]
                if stack is None
                else [{"Name": f"tag:{self.tag}", "Values": [stack]}]
            }
            if token:
                params["NextToken"] = token
            page = self._asg(
                "describe_auto_scaling_groups",
                "looking up the stack's Auto Scaling groups",
                "DescribeAutoScalingGroups",
                **params,
            )
            found.extend(dict(g) for g in page.get("AutoScalingGroups", []))
            token = page.get("NextToken")
            if not token:
                break
        return found

    @staticmethod
    def group_settings(group: Mapping[str, Any]) -> dict[str, Any]:
        """core.stack.Desired.group_settings' shape, read back from AWS."""
        mip = group.get("MixedInstancesPolicy") or {}
        dist = mip.get("InstancesDistribution") or {}
        overrides = (mip.get("LaunchTemplate") or {}).get("Overrides") or []
        return {
            "types": [o["InstanceType"] for o in overrides],
            "subnets": sorted(s for s in (group.get("VPCZoneIdentifier") or "").split(",") if s),
            "on_demand_base": int(dist.get("OnDemandBaseCapacity", 0)),
            "on_demand_percent": int(dist.get("OnDemandPercentageAboveBaseCapacity", 100)),
            "capacity_rebalance": bool(group.get("CapacityRebalance", False)),
            "load_balanced": bool(group.get("TargetGroupARNs")),
        }

    @staticmethod
    def _mixed_policy(template_id: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": template_id,
                    "Version": "$Latest",
                },
                "Overrides": [{"InstanceType": t} for t in settings["types"]],
            },
            "InstancesDistribution": {
                "OnDemandAllocationStrategy": "lowest-price",
                "OnDemandBaseCapacity": settings["on_demand_base"],
                "OnDemandPercentageAboveBaseCapacity": settings["on_demand_percent"],
                "SpotAllocationStrategy": "price-capacity-optimized",
            },
        }

    def create_group(
        self,
        name: str,
        template_id: str,
        settings: Mapping[str, Any],
        tags: Mapping[str, str],
        target_groups: Sequence[str] = (),
    ) -> None:
        extra: dict[str, Any] = {}
        if target_groups:
            # ELB health checks replace an unhealthy endpoint, after the load's grace period.
            extra = {
                "TargetGroupARNs": list(target_groups),
                "HealthCheckType": "ELB",
                "HealthCheckGracePeriod": 1800,
            }
        self._asg(
            "create_auto_scaling_group",
            f"creating Auto Scaling group {name}",
            "CreateAutoScalingGroup",
            **extra,
            AutoScalingGroupName=name,
            MinSize=1,
            MaxSize=1,
            DesiredCapacity=1,
            VPCZoneIdentifier=",".join(settings["subnets"]),
            CapacityRebalance=settings["capacity_rebalance"],
            MixedInstancesPolicy=self._mixed_policy(template_id, settings),
            Tags=[
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": k,
                    "Value": v,
                    "PropagateAtLaunch": True,
                }
                for k, v in sorted(tags.items())
            ],
        )

    def update_group(self, name: str, template_id: str, settings: Mapping[str, Any]) -> None:
        self._asg(
            "update_auto_scaling_group",
            f"updating Auto Scaling group {name}",
            "UpdateAutoScalingGroup",
            AutoScalingGroupName=name,
            VPCZoneIdentifier=",".join(settings["subnets"]),
            CapacityRebalance=settings["capacity_rebalance"],
            MixedInstancesPolicy=self._mixed_policy(template_id, settings),
        )

    def start_instance_refresh(self, name: str, min_healthy_percentage: int) -> str:
        return str(
            self._asg(
                "start_instance_refresh",
                f"starting an instance refresh of {name}",
                "StartInstanceRefresh",
                AutoScalingGroupName=name,
                Strategy="Rolling",
                Preferences={"MinHealthyPercentage": min_healthy_percentage},
            )["InstanceRefreshId"]
        )

    def scaling_activities(self, name: str) -> list[dict[str, Any]]:
        return [
            dict(a)
            for a in self._asg(
                "describe_scaling_activities",
                f"reading {name}'s scaling activities",
                "DescribeScalingActivities",
                AutoScalingGroupName=name,
                MaxRecords=20,
            ).get("Activities", [])
        ]

    def delete_group(self, name: str) -> None:
        self._asg(
            "delete_auto_scaling_group",
            f"deleting Auto Scaling group {name}",
            "DeleteAutoScalingGroup",
            AutoScalingGroupName=name,
            ForceDelete=True,
        )

    def attach_target_group(self, name: str, target_group_arn: str) -> None:
        self._asg(
            "attach_load_balancer_target_groups",
            f"attaching the target group to {name}",
            "AttachLoadBalancerTargetGroups",
            AutoScalingGroupName=name,
            TargetGroupARNs=[target_group_arn],
        )

    # ELBv2 (--alb): no tag filter in the API, so by name, then the tag must match ----------

    def _elb(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call(
            "elbv2", op, what=what, iam_action=f"elasticloadbalancing:{action}", **params
        )

    def _elb_ours(self, arn: str, stack: str) -> bool:
        described = self._elb(
            "describe_tags", "reading load balancer tags", "DescribeTags", ResourceArns=[arn]
        ).get("TagDescriptions", [])
        return any(_tag_map(d.get("Tags")).get(self.tag) == stack for d in described)

    def find_load_balancer(self, name: str, stack: str) -> dict[str, Any] | None:
        try:
            found = self._elb(
                "describe_load_balancers",
                f"looking up load balancer {name}",
                "DescribeLoadBalancers",
                Names=[name],
            ).get("LoadBalancers", [])
        except AWSError as exc:
            if self._code(exc) == "LoadBalancerNotFound":
                return None
            raise
        lb = found[0] if found else None
        if lb is None or not self._elb_ours(lb["LoadBalancerArn"], stack):
            return None
        listeners = self._elb(
            "describe_listeners",
            f"looking up {name}'s listeners",
            "DescribeListeners",
            LoadBalancerArn=lb["LoadBalancerArn"],
        ).get("Listeners", [])
        return {
            "arn": lb["LoadBalancerArn"],
            "dns": lb.get("DNSName"),
            "listeners": [x["ListenerArn"] for x in listeners],
        }

    def find_target_group(self, name: str, stack: str) -> str | None:
        try:
            found = self._elb(
                "describe_target_groups",
                f"looking up target group {name}",
                "DescribeTargetGroups",
                Names=[name],
            ).get("TargetGroups", [])
        except AWSError as exc:
            if self._code(exc) == "TargetGroupNotFound":
                return None
            raise
        if not found or not self._elb_ours(found[0]["TargetGroupArn"], stack):
            return None
        return str(found[0]["TargetGroupArn"])

    def create_target_group(
        self, name: str, vpc_id: str, port: int, health_path: str, tags: Mapping[str, str]
    ) -> str:
        return str(
            self._elb(
                "create_target_group",
                f"creating target group {name}",
                "CreateTargetGroup",
                Name=name,
                Protocol="HTTP",
                Port=port,
                VpcId=vpc_id,
                TargetType="instance",
                HealthCheckProtocol="HTTP",
                HealthCheckPath=health_path,
                Matcher={"HttpCode": "200"},
                Tags=_tags(tags),
            )["TargetGroups"][0]["TargetGroupArn"]
        )

    def create_load_balancer(
        self, name: str, subnets: Sequence[str], security_group: str, tags: Mapping[str, str]
    ) -> tuple[str, str]:
        lb = self._elb(
            "create_load_balancer",
            f"creating load balancer {name}",
            "CreateLoadBalancer",
            Name=name,
            Subnets=list(subnets),
            SecurityGroups=[security_group],
            Scheme="internet-facing",
            Type="application",
            Tags=_tags(tags),
        )["LoadBalancers"][0]
        return str(lb["LoadBalancerArn"]), str(lb.get("DNSName", ""))

    def create_listener(
        self, lb_arn: str, port: int, target_group_arn: str, tags: Mapping[str, str]
    ) -> str:
        return str(
            self._elb(
                "create_listener",
                "creating the load balancer's listener",
                "CreateListener",
                LoadBalancerArn=lb_arn,
                Protocol="HTTP",
                Port=port,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group_arn}],
                Tags=_tags(tags),
            )["Listeners"][0]["ListenerArn"]
        )

    def healthy_targets(self, target_group_arn: str) -> list[str]:
        described = self._elb(
            "describe_target_health",
            "reading the target group's health",
            "DescribeTargetHealth",
            TargetGroupArn=target_group_arn,
        ).get("TargetHealthDescriptions", [])
        return [
            d["Target"]["Id"]
            for d in described
            if d.get("TargetHealth", {}).get("State") == "healthy"
        ]

    def delete_load_balancer(self, arn: str) -> None:
        self._elb(
            "delete_load_balancer",
            "deleting the load balancer",
            "DeleteLoadBalancer",
            LoadBalancerArn=arn,
        )

    def delete_target_group(self, arn: str) -> None:
        self._elb(
            "delete_target_group",
            "deleting the target group",
            "DeleteTargetGroup",
            TargetGroupArn=arn,
        )

    def admit_group(self, group_id: str, port: int, source_group: str) -> None:
        """Ingress on ``port`` from the members of ``source_group`` only."""
        self._ec2(
            "authorize_security_group_ingress",
            f"admitting port {port} from {source_group} on {group_id}",
            "AuthorizeSecurityGroupIngress",
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "UserIdGroupPairs": [{"GroupId": source_group}],
                }
            ],
        )

    @staticmethod
    def admits_group(group: Mapping[str, Any], port: int, source_group: str) -> bool:
        return any(
            p.get("FromPort") == port
            and any(u.get("GroupId") == source_group for u in p.get("UserIdGroupPairs", []))
            for p in group.get("IpPermissions", [])
        )


# --- alarms (issue 17) ---
# `tgiops alarms` (tgiops.commands.alarms, specs in tgiops.core.alarms): CloudWatch alarms, the
# SNS topic they notify, an AWS Budget, and the billing metric's presence. Same error
# translation as every call here (Aws.call); "not found" answers become None.


class AlarmsEdge:
    """The AWS calls of `tgiops alarms` in one region (the billing alarm's: us-east-1)."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws

    @property
    def region(self) -> str:
        return self.aws.region

    def account_id(self) -> str:
        return str(
            self.aws.call(
                "sts",
                "get_caller_identity",
                what="finding the AWS account",
                iam_action="sts:GetCallerIdentity",
            )["Account"]
        )

    # CloudWatch -------------------------------------------------------------------------------

    def _cw(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call(
            "cloudwatch", op, what=what, iam_action=f"cloudwatch:{action}", **params
        )

    def alarms(self, prefix: str) -> list[dict[str, Any]]:
        """The metric alarms whose name starts with ``prefix``, each with its ``Tags`` (a dict)."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._cw(
                "describe_alarms",
                f"listing the alarms named {prefix}*",
                "DescribeAlarms",
                AlarmNamePrefix=prefix,
                AlarmTypes=["MetricAlarm"],
                **({"NextToken": token} if token else {}),
            )
            found.extend(page.get("MetricAlarms", []))
            token = page.get("NextToken")
            if not token:
                break
        for alarm in found:
            alarm["Tags"] = self.alarm_tags(alarm["AlarmArn"])
        return found

    def alarm_tags(self, arn: str) -> dict[str, str]:
        answer = self._cw(
            "list_tags_for_resource",
            f"reading the tags of {arn}",
            "ListTagsForResource",
            ResourceARN=arn,
        )
        return _tag_map(answer.get("Tags"))

    def put_alarm(self, params: Mapping[str, Any]) -> None:
        """Create or overwrite (by name) one alarm. An overwrite keeps the alarm's tags as they
        are: PutMetricAlarm ignores Tags when the alarm exists (docs/aws.md §9)."""
        self._cw(
            "put_metric_alarm",
            f"setting the alarm {params['AlarmName']}",
            "PutMetricAlarm",
            **params,
        )

    def delete_alarms(self, names: Sequence[str]) -> None:
        for i in range(0, len(names), 100):  # DeleteAlarms takes up to 100 names
            self._cw(
                "delete_alarms",
                f"deleting the alarms {', '.join(names[i : i + 100])}",
                "DeleteAlarms",
                AlarmNames=list(names[i : i + 100]),
            )

    def has_metric(self, namespace: str, name: str, dims: Sequence[Mapping[str, str]]) -> bool:
        """True when CloudWatch has the metric with (at least) these dimensions: the billing
        metric exists only once billing alerts are enabled (docs/aws.md §9); the monitor's
        only once a host of the group sends."""
        answer = self._cw(
            "list_metrics",
            f"looking for the {namespace} {name} metric",
            "ListMetrics",
            Namespace=namespace,
            MetricName=name,
            Dimensions=[dict(d) for d in dims],
        )
        return bool(answer.get("Metrics"))

    # SNS --------------------------------------------------------------------------------------

    def _sns(self, op: str, what: str, action: str, **params: Any) -> Any:
        # SNS spells an IAM denial AuthorizationError (403), not AccessDenied.
        denied = (
            f"{what} was denied (AuthorizationError): the AWS identity needs the IAM "
            f"permission sns:{action} in {self.region}. Grant it, or use --profile with one "
            "that has it."
        )
        return self.aws.call(
            "sns", op, what=what, iam_action=f"sns:{action}",
            messages={"AuthorizationError": denied}, **params,
        )  # fmt: skip

    def topic_tags(self, arn: str) -> dict[str, str] | None:
        """The topic's tags; None when there is no such topic."""
        try:
            self._sns(
                "get_topic_attributes",
                f"looking up the topic {arn}",
                "GetTopicAttributes",
                TopicArn=arn,
            )
        except AWSError as exc:
            if _client_error_code(exc) in ("NotFound", "NotFoundException"):
                return None
            raise
        answer = self._sns(
            "list_tags_for_resource",
            f"reading the tags of {arn}",
            "ListTagsForResource",
            ResourceArn=arn,
        )
        return _tag_map(answer.get("Tags"))

    def create_topic(self, name: str, tags: Mapping[str, str]) -> str:
        answer = self._sns(
            "create_topic", f"creating the topic {name}", "CreateTopic", Name=name, Tags=_tags(tags)
        )
        return str(answer["TopicArn"])

    def set_topic_policy(self, arn: str, policy: Mapping[str, Any]) -> None:
        import json

        self._sns(
            "set_topic_attributes",
            f"setting the access policy of {arn}",
            "SetTopicAttributes",
            TopicArn=arn,
            AttributeName="Policy",
            AttributeValue=json.dumps(policy, sort_keys=True),
        )

    def topic_policy(self, arn: str) -> dict[str, Any] | None:
        import json

        answer = self._sns(
            "get_topic_attributes", f"reading the topic {arn}", "GetTopicAttributes", TopicArn=arn
        )
        text = answer.get("Attributes", {}).get("Policy")
        return json.loads(text) if text else None

    def subscriptions(self, arn: str) -> list[tuple[str, str]]:
        """(protocol, endpoint) of each subscription of the topic."""
        found: list[tuple[str, str]] = []
        token: str | None = None
        while True:
            page = self._sns(
                "list_subscriptions_by_topic",
                f"listing the subscriptions of {arn}",
                "ListSubscriptionsByTopic",
                TopicArn=arn,
                **({"NextToken": token} if token else {}),
            )
            found.extend((s["Protocol"], s["Endpoint"]) for s in page.get("Subscriptions", []))
            token = page.get("NextToken")
            if not token:
                break
        return found

    def subscribe_email(self, arn: str, address: str) -> None:
        self._sns(
            "subscribe",
            f"subscribing {address} to {arn}",
            "Subscribe",
            TopicArn=arn,
            Protocol="email",
            Endpoint=address,
        )

    def delete_topic(self, arn: str) -> None:
        """Deletes its subscriptions too (SNS does)."""
        self._sns("delete_topic", f"deleting the topic {arn}", "DeleteTopic", TopicArn=arn)

    # Budgets ----------------------------------------------------------------------------------

    def _budgets(self, op: str, what: str, action: str, **params: Any) -> Any:
        return self.aws.call("budgets", op, what=what, iam_action=f"budgets:{action}", **params)

    def budget(self, account: str, name: str) -> dict[str, Any] | None:
        try:
            answer = self._budgets(
                "describe_budget",
                f"looking up the budget {name}",
                "ViewBudget",
                AccountId=account,
                BudgetName=name,
            )
        except AWSError as exc:
            if _client_error_code(exc) == "NotFoundException":
                return None
            raise
        return dict(answer["Budget"])

    def create_budget(
        self,
        account: str,
        budget: Mapping[str, Any],
        notifications: Sequence[Mapping[str, Any]],
        tags: Mapping[str, str],
    ) -> None:
        self._budgets(
            "create_budget",
            f"creating the budget {budget['BudgetName']}",
            "ModifyBudget",  # CreateBudget is authorised by budgets:ModifyBudget
            AccountId=account,
            Budget=dict(budget),
            NotificationsWithSubscribers=[dict(n) for n in notifications],
            ResourceTags=_tags(tags),
        )

    def update_budget(self, account: str, budget: Mapping[str, Any]) -> None:
        self._budgets(
            "update_budget",
            f"changing the budget {budget['BudgetName']}",
            "ModifyBudget",
            AccountId=account,
            NewBudget=dict(budget),
        )

    def delete_budget(self, account: str, name: str) -> None:
        self._budgets(
            "delete_budget",
            f"deleting the budget {name}",
            "ModifyBudget",
            AccountId=account,
            BudgetName=name,
        )
