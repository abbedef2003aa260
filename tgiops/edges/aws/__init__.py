"""The AWS edge (boto3): every boto call of tgiops lives in this package, one module per
service or concern. Import from the module that defines a thing:

- base: sessions and clients, error translation (AwsBase.call), the throttling retry policy,
  AwsSettings, AwsEdge (the base of the stack and alarms edges), tag helpers
- redact: keeps Secrets Manager values out of log lines
- secrets, instances, elastic_ip, metrics, spot: the calls of ``Aws`` per service
- client: ``Aws``, all of the above in one object (what commands take)
- stack (StackEdge) over stack_base, iam, asg, elb, cache_volumes: `tgiops up` / `down`
- alarms: AlarmsEdge (CloudWatch alarms, SNS, Budgets)
"""
