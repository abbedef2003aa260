"""What `tgiops bootstrap` and `tgiops reconcile` print for people (tgiops.cli.output)."""

from __future__ import annotations

from tgiops.cli import output
from tgiops.commands.bootstrap import BootstrapResult, EipOutcome, Restored
from tgiops.commands.reconcile import InstanceOutcome, ReconcileResult, TargetGroupOutcome

EIP = "eipalloc-0abc12345"


def restored(**changes) -> Restored:
    facts = dict(unit="tgiops-phi-3-mini", model="phi-3-mini", port=8080, action="unchanged",
                 healthy=True, offline=True, cache="complete", record_source="the data volume",
                 boot_to_healthy_s=11.25)  # fmt: skip
    return Restored(**{**facts, **changes})


def test_bootstrap_text_says_what_came_back_how_and_where_the_address_went():
    result = BootstrapResult(
        instance_id="i-0b",
        region="us-east-1",
        record_source="the data volume",
        units=(restored(action="deployed"),),
        elastic_ip=EipOutcome(EIP, "192.0.2.7", before="i-0a", after="i-0b", changed=True),
        elapsed_s=12.04,
        notes=("the model cache was on the data volume",),
    )
    assert output.bootstrap_as_text(result).splitlines() == [
        "i-0b (us-east-1): record from the data volume",
        "  tgiops-phi-3-mini (phi-3-mini): deployed, healthy, started offline (HF_HUB_OFFLINE=1), "
        "model cache complete, healthy 11.2 s after boot",
        f"  Elastic IP {EIP} (192.0.2.7): moved from i-0a to i-0b",
        "  note: the model cache was on the data volume",
        "  changed; took 12.0 s",
    ]


def test_reconcile_text_names_each_instance_its_failures_and_the_target_group():
    broken = restored(action="failed", healthy=False, offline=False, cache="absent",
                      boot_to_healthy_s=None, failure="out of GPU memory")  # fmt: skip
    result = ReconcileResult(
        selector="ASG spot-llm",
        instances=(
            InstanceOutcome("i-0b", "10.0.0.7", units=(restored(),), record_source="tags"),
            InstanceOutcome(
                "i-0c",
                None,
                units=(broken,),
                record_source="tags",
                failure="1 unit not healthy",
            ),
        ),
        elastic_ip=EipOutcome(EIP, None, before="i-0b", after="i-0b", changed=False),
        target_group=TargetGroupOutcome("arn:tg", registered=("i-0b:8080",)),
        elapsed_s=3.0,
    )
    assert output.reconcile_as_text(result).splitlines() == [
        "ASG spot-llm: 2 live instance(s)",
        "i-0b via 10.0.0.7: record from tags",
        "  tgiops-phi-3-mini (phi-3-mini): unchanged, healthy, started offline "
        "(HF_HUB_OFFLINE=1), model cache complete, healthy 11.2 s after boot",
        "i-0c via -: record from tags",
        "  tgiops-phi-3-mini (phi-3-mini): failed, NOT healthy, started online, model cache absent",
        "    why: out of GPU memory",
        "  failed: 1 unit not healthy",
        f"  Elastic IP {EIP}: stays on i-0b",
        "  target group: registered i-0b:8080; deregistered none",
        "  changed; NOT healthy; took 3.0 s",
    ]
