"""Secrets Manager: the Hugging Face token (`tgiops secret`, deploy). The value never appears
in a message or a log line (tgiops.edges.aws.redact)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tgiops.core.errors import SecretError
from tgiops.edges.aws.base import AwsBase, iso_date
from tgiops.edges.aws.redact import remember_secret

log = logging.getLogger(__name__)


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

    def as_dict(self) -> dict[str, Any]:
        """One secret of `tgiops secret list --json`: names and dates only."""
        return {
            "name": self.name,
            "arn": self.arn,
            "created": self.created,
            "changed": self.changed,
            "accessed": self.accessed,
            "deletion_date": self.deleted,
        }


def _secret_info(raw: Mapping[str, Any]) -> SecretInfo:
    return SecretInfo(
        name=str(raw.get("Name", "")),
        arn=raw.get("ARN"),
        created=iso_date(raw.get("CreatedDate")),
        changed=iso_date(raw.get("LastChangedDate")),
        accessed=iso_date(raw.get("LastAccessedDate")),
        deleted=iso_date(raw.get("DeletedDate")),
        tags={t["Key"]: t.get("Value", "") for t in raw.get("Tags", []) or []},
    )


class SecretCalls(AwsBase):
    """The Secrets Manager calls of ``Aws``."""

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
        remember_secret(value)
        if not value.strip():
            raise SecretError(f"secret {name} is empty; set it with `tgiops secret set`.")
        return value

    def put_secret(self, name: str, value: str, tags: Mapping[str, str] | None = None) -> str:
        """Store ``value`` under ``name``: a new version if it exists, else a new secret
        carrying ``tags`` (an existing secret's tags are left as they are: it may not be ours).

        Returns "created" or "updated".
        """
        import botocore.exceptions

        remember_secret(value)
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
        return iso_date(response.get("DeletionDate"))

    def secret_exists(self, name: str) -> bool:
        """True when the secret exists and is not scheduled for deletion (DescribeSecret)."""
        info = self.describe_secret(name)
        return info is not None and info.deleted is None
