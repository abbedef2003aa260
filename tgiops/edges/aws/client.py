"""``Aws``: one region/profile's client with every call of the service modules. Commands take
one (cli.args.aws_from builds it); the stack and alarms edges wrap one."""

from __future__ import annotations

from tgiops.edges.aws.elastic_ip import ElasticIpCalls
from tgiops.edges.aws.instances import InstanceCalls
from tgiops.edges.aws.metrics import MetricCalls
from tgiops.edges.aws.secrets import SecretCalls
from tgiops.edges.aws.spot import SpotCalls


class Aws(SecretCalls, InstanceCalls, ElasticIpCalls, MetricCalls, SpotCalls):
    """Lazy boto3 clients for one region/profile, with tgiops' error translation
    (tgiops.edges.aws.base) and the calls of each service module."""
