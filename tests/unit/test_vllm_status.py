"""status for vLLM units (issue 15): the unit's plan, /v1/models instead of /info, vLLM's
metrics in status' columns, verdicts naming vLLM."""

from __future__ import annotations

from tgiops.core import status
from tgiops.core.catalog import find_model
from tgiops.core.engines import vllm
from tgiops.core.hardware import inventory_for_instance_type
from tgiops.core.render import UnitOptions
from tgiops.edges import resources

CATALOG = resources.load_catalog(environ={})
TEMPLATE = (resources.shipped_path("unit_templates") / "vllm.service.j2").read_text()


def vllm_unit_text() -> tuple[vllm.VllmPlan, str]:
    inventory = inventory_for_instance_type("g5.12xlarge")
    inventory = type(inventory)(**{**inventory.__dict__, "driver_version": "550.54.15"})
    plan = vllm.plan_vllm(find_model(CATALOG, "llama-3.1-70b-awq"), inventory)
    opts = UnitOptions("tgiops-llama-3.1-70b-awq", secret_env=("HF_TOKEN", "VLLM_API_KEY"))
    return plan, vllm.render_unit(plan, opts, TEMPLATE, tgiops_version="test")


def test_the_plan_of_a_vllm_unit_is_read_back() -> None:
    plan, text = vllm_unit_text()
    unit = status.parse_unit_plan(text)
    assert unit.model_id == "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
    assert unit.num_shard == 4 == plan.tensor_parallel_size
    assert unit.max_total_tokens == plan.max_model_len
    assert unit.data_dir == "/var/lib/tgiops/data/cache"
    assert unit.port == 8080 and unit.bind_address == "127.0.0.1"
    assert unit.engine == ("vllm", vllm.DEFAULT_VLLM_VERSION)
    assert unit.image == plan.image and plan.image.endswith("-cu129")


def test_the_status_script_asks_vllm_units_for_v1_models() -> None:
    script = status.status_script()
    assert "/v1/models" in script and "vllm/vllm-openai:" in script


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 1234.0
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 5.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0
"""


def test_vllm_metrics_fill_the_same_columns() -> None:
    metrics, error = status.parse_metrics_text(VLLM_METRICS)
    assert error is None and metrics is not None
    assert (metrics.batch_size, metrics.queue_size) == (3.0, 2.0)
    assert metrics.kv_cache_usage == 0.25 and metrics.generation_tokens == 1234.0
    assert metrics.request_count == 7.0


def test_kv_usage_falls_back_to_the_old_name() -> None:
    old = VLLM_METRICS.replace("kv_cache_usage_perc", "gpu_cache_usage_perc")
    metrics, _ = status.parse_metrics_text(old)
    assert metrics is not None and metrics.kv_cache_usage == 0.25
    # Releases between the rename and the removal export both: the new name wins.
    both = VLLM_METRICS + (
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.99\n'
    )
    metrics, _ = status.parse_metrics_text(both)
    assert metrics is not None and metrics.kv_cache_usage == 0.25


def test_tgi_metrics_have_no_kv_usage() -> None:
    metrics, _ = status.parse_metrics_text("# TYPE tgi_queue_size gauge\ntgi_queue_size 4\n")
    assert metrics is not None and metrics.queue_size == 4 and metrics.kv_cache_usage is None


def test_models_section_with_and_without_a_key() -> None:
    body = '{"object":"list","data":[{"id":"a","root":"x/y","max_model_len":8}]}'
    info, error, guarded = status.parse_models(body + "\n" + status.MODELS_CODE_MARK + "200")
    assert info is not None and info["data"][0]["id"] == "a" and error is None and not guarded
    info, error, guarded = status.parse_models(
        '{"error":"Unauthorized"}\n' + status.MODELS_CODE_MARK + "401"
    )
    assert info is None and error is None and guarded
    info, error, guarded = status.parse_models("oops\n" + status.MODELS_CODE_MARK + "500")
    assert info is None and error and "500" in error and not guarded
