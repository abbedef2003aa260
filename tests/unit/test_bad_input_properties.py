"""Property-based tests of bad input (hypothesis): CLI arguments, catalog files, overrides.

The properties, for whatever a user types or writes:

- tgiops never shows a traceback: ``cli.main`` returns an exit code (argparse's own --help /
  --version exit is the one SystemExit allowed);
- bad input exits 2, with one ``tgiops: error:`` line that names the bad value (the value
  itself, its repr, or the file it came from and the field) — and nothing on stdout.

Everything here runs ``cli.main`` in-process on verbs that touch no host and no AWS (`plan`,
`models`, and `deploy` arguments that are checked before any connection, with an ssh_config
path that does not exist as a second guard: a value wrongly accepted ends in "no such file",
never on the network).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tgiops.cli import main as cli
from tgiops.core import hardware
from tgiops.core.catalog_file import ENTRY_FIELDS, REQUIRED_FIELDS
from tgiops.core.engines.tgi import parse_version
from tgiops.core.errors import TgiopsError

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,  # leaves no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow],
)
NO_SSH_CONFIG = "/nonexistent/tgiops-test-ssh-config"


def run(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``tgiops ARGV`` in-process: (exit code, stdout, stderr). A traceback fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with _environ(env or {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse's --help/--version: fine, but nothing else is
            code = exc.code if isinstance(exc.code, int) else 2
            assert code == 0, f"SystemExit({exc.code!r}) for {argv!r}: {err.getvalue()}"
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in [*values, "TGIOPS_MODELS"]}
    os.environ.pop("TGIOPS_MODELS", None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def names(value: object, text: str) -> bool:
    """Does ``text`` name ``value`` (as typed, as its repr, or as Python formats a number)?"""
    candidates = {str(value), repr(value), repr(str(value))}
    if isinstance(value, float):
        candidates |= {f"{value:g}", repr(float(value))}
    return any(c and c in text for c in candidates)


def assert_bad_input(code: int, out: str, err: str, *named: object) -> None:
    assert code == 2, f"exit {code}, stderr: {err!r}"
    assert err.startswith("tgiops: error: "), err
    assert "Traceback" not in err and out == "", (out, err)
    for value in named:
        assert names(value, err), f"{value!r} is not named in {err!r}"


# --- strategies --------------------------------------------------------------------------------

# Short text as a user might type it: printable, with shell and YAML metacharacters, no NUL
# (the OS cannot pass one in argv).
typed = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=24,
)
non_int_text = typed.filter(lambda s: not re.fullmatch(r"\s*[-+]?\d+\s*", s.replace("_", "")))
bad_ints = st.integers(max_value=0) | st.just(-(2**63))


def _is_known_instance_type(name: str) -> bool:
    try:
        hardware.find_instance_type(name)
        return True
    except TgiopsError:
        return False


def _is_known_gpu(name: str) -> bool:
    return hardware.lookup_gpu_model(name) is not None


def _is_version(text: str) -> bool:
    try:
        parse_version(text)
        return True
    except (TgiopsError, ValueError):
        return False


PLAN = ["plan", "llama-3.1-8b"]
HW = ["--instance-type", "g5.12xlarge"]


# --- plan: option values -----------------------------------------------------------------------


@SETTINGS
@given(
    option=st.sampled_from(
        ["--num-shard", "--max-input-tokens", "--max-total-tokens", "--max-batch-prefill-tokens"]
    ),
    value=bad_ints,
)
def test_non_positive_counts_exit_2_naming_the_value(option, value):
    code, out, err = run([*PLAN, *HW, f"{option}={value}"])
    assert_bad_input(code, out, err, option, value)


@SETTINGS
@given(
    option=st.sampled_from(
        ["--num-shard", "--max-input-tokens", "--max-total-tokens", "--gpus", "--port"]
    ),
    value=non_int_text,
)
def test_non_numbers_for_integer_options_exit_2_naming_the_value(option, value):
    argv = [*PLAN, *HW] if option != "--gpus" else [*PLAN, "--gpu", "A10G"]
    if option == "--port":
        argv = ["deploy", "phi-3-mini", "--no-token", "--host", "h", "--ssh-config", NO_SSH_CONFIG]
    code, out, err = run([*argv, f"{option}={value}"])
    assert_bad_input(code, out, err, option, value)


@SETTINGS
@given(
    value=st.floats(allow_nan=True, allow_infinity=True).filter(
        lambda f: math.isnan(f) or not 0 < f <= 1
    )
)
def test_cuda_memory_fraction_outside_0_1_exits_2(value):
    code, out, err = run([*PLAN, *HW, f"--cuda-memory-fraction={value!r}"])
    assert_bad_input(code, out, err, "--cuda-memory-fraction")


@SETTINGS
@given(
    memory=st.floats(allow_nan=True, allow_infinity=True).filter(
        lambda f: not math.isfinite(f * 1024) or f <= 0
    ),
    count=st.integers(max_value=0),
    which=st.sampled_from(["memory", "count"]),
)
@example(memory=float("nan"), count=1, which="memory")
@example(memory=float("inf"), count=1, which="memory")
@example(memory=1.0, count=0, which="count")
def test_bad_gpu_count_or_memory_exits_2(memory, count, which):
    if which == "memory":
        argv, option, value = [f"--gpu-memory-gib={memory!r}"], "--gpu-memory-gib", memory
    else:
        argv, option, value = [f"--gpus={count}"], "--gpus", count
    code, out, err = run([*PLAN, "--gpu", "A10G", *argv])
    assert_bad_input(code, out, err, option, value)


@SETTINGS
@given(name=typed)
@example(name="g5.12xlarge; rm -rf /")
@example(name="$(id)")
def test_unknown_instance_type_exits_2_naming_it(name):
    assume(not _is_known_instance_type(name) and not name.startswith("-"))
    code, out, err = run([*PLAN, "--instance-type", name])
    assert_bad_input(code, out, err, name)


@SETTINGS
@given(name=typed)
@example(name="A10G;rm")
def test_unknown_gpu_exits_2_naming_it(name):
    assume(not _is_known_gpu(name) and not name.startswith("-"))
    code, out, err = run([*PLAN, "--gpu", name, "--gpus", "1"])
    assert_bad_input(code, out, err, name)


@SETTINGS
@given(alias=typed)
@example(alias="llama-3.1-8b`reboot`")
def test_unknown_model_alias_exits_2_naming_it(alias):
    assume(not alias.startswith("-"))
    from tgiops.core.catalog import find_model
    from tgiops.edges import resources

    try:
        find_model(resources.load_catalog(), alias)
        assume(False)  # a real alias (or repo id): not bad input
    except TgiopsError:
        pass
    code, out, err = run(["plan", alias, *HW])
    assert_bad_input(code, out, err, alias)


@SETTINGS
@given(value=typed)
def test_unknown_quantize_or_engine_version_exits_2_naming_it(value):
    assume(not value.startswith("-"))
    assume(value.strip().lower() not in {"none", *hardware_quantize_values()})
    code, out, err = run([*PLAN, *HW, "--quantize", value])
    assert_bad_input(code, out, err, value)
    assume(not _is_version(value))
    code, out, err = run([*PLAN, *HW, "--tgi-version", value])
    assert_bad_input(code, out, err, value)


def hardware_quantize_values() -> set[str]:
    from tgiops.core.engines.tgi import TgiEngine

    return set(TgiEngine.release().accepted_quantize)


@SETTINGS
@given(argv=st.lists(typed, max_size=6))
def test_any_plan_arguments_never_show_a_traceback(argv):
    # Only `plan` (pure): random words after it must end in an answer or a one-line error.
    code, _, err = run(["plan", *argv])
    assert code in (0, 1, 2), code
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("tgiops: error: ") or err.startswith("usage:"), err


# --- deploy: values that would reach the host --------------------------------------------------

unit_names = typed.filter(lambda s: not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", s))
data_dirs = typed.filter(lambda s: not re.fullmatch(r"/[A-Za-z0-9_./-]*", s) or ".." in s)


@SETTINGS
@given(option=st.sampled_from(["--unit", "--data-dir", "--gpu-devices", "--port"]), data=st.data())
@example(option="--unit", data=None)
def test_deploy_values_are_refused_before_any_connection(option, data):
    if data is None:
        value = "x; touch /tmp/pwned"
    elif option == "--unit":
        value = data.draw(unit_names)
    elif option == "--data-dir":
        value = data.draw(data_dirs)
    elif option == "--gpu-devices":
        value = data.draw(typed.filter(lambda s: not re.fullmatch(r"\d+(,\d+)*", s)))
    else:
        value = str(data.draw(st.integers(max_value=0) | st.integers(min_value=65536)))
    argv = ["deploy", "phi-3-mini", "--no-token", "--host", "h", "--ssh-config", NO_SSH_CONFIG]
    code, out, err = run([*argv, f"{option}={value}"])
    assert_bad_input(code, out, err, value)
    assert "no such file" not in err  # refused for the value itself, not later


# --- catalogs: models.yaml content and overrides -----------------------------------------------

GOOD_ENTRY = yaml.safe_load((ROOT / "models.yaml").read_text())["models"]["llama-3.1-8b"]
yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | typed
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(typed, st.integers(), max_size=2)
)


def _write(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _plan_with_catalog(path: str, alias: str, *, via_env: bool) -> tuple[int, str, str]:
    if via_env:
        return run(["plan", alias, *HW], env={"TGIOPS_MODELS": path})
    return run(["plan", alias, *HW, "--catalog", path])


@SETTINGS
@given(field=st.sampled_from(sorted(set(ENTRY_FIELDS) - {"notes"})), value=yaml_scalars,
       via_env=st.booleans())  # fmt: skip
def test_a_bad_field_in_a_catalog_exits_2_naming_file_and_field(field, value, via_env):
    entry = dict(GOOD_ENTRY, **{field: value})
    text = yaml.safe_dump({"schema_version": 1, "models": {"mine": entry}})
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "models.yaml", text)
        code, out, err = _plan_with_catalog(path, "mine", via_env=via_env)
    if code != 2:
        # The value happened to be acceptable (e.g. another valid dtype): then it plans.
        assert code in (0, 1) and "Traceback" not in err, err
        return
    assert_bad_input(code, out, err, path)
    assert field in err or "mine" in err, err


@SETTINGS
@given(missing=st.sampled_from(REQUIRED_FIELDS), extra=st.sampled_from(["nmu_layers", "lol", "1"]),
       which=st.sampled_from(["missing", "extra"]), via_env=st.booleans())  # fmt: skip
def test_missing_or_unknown_fields_exit_2_naming_them(missing, extra, which, via_env):
    entry = dict(GOOD_ENTRY)
    if which == "missing":
        del entry[missing]
        named = missing
    else:
        entry[extra] = 1
        named = extra
    text = yaml.safe_dump({"schema_version": 1, "models": {"llama-3.1-8b": entry}})
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "override.yaml", text)  # overrides the built-in entry
        code, out, err = _plan_with_catalog(path, "llama-3.1-8b", via_env=via_env)
    assert_bad_input(code, out, err, path, named)


@SETTINGS
@given(text=st.text(max_size=200))
@example(text="models: [")
@example(text="schema_version: 2\nmodels: {}")
@example(text="- just\n- a list")
@example(text="models:\n  'x; rm -rf /':\n    repo_id: a/b")
@example(text="\t")
def test_any_catalog_text_is_a_catalog_or_an_error_naming_the_file(text):
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "models.yaml", text)
        code, out, err = run(["models", "--catalog", path, "--json"])
    assert "Traceback" not in err
    if code == 0:
        assert isinstance(json.loads(out), list)
    else:  # --json: the refusal is the one error object on stdout
        assert json.loads(out) == {
            "ok": False,
            "exit_code": 2,
            "error": {"type": "CatalogError", "message": err.removeprefix("tgiops: error: ")[:-1]},
        }
        assert_bad_input(code, "", err, path)


@SETTINGS
@given(config=st.dictionaries(st.sampled_from(["model_type", "num_hidden_layers", "hidden_size",
                                               "num_attention_heads", "vocab_size",
                                               "max_position_embeddings", "intermediate_size",
                                               "num_key_value_heads", "torch_dtype",
                                               "quantization_config", "_name_or_path"]),
                              yaml_scalars, max_size=11),
       repo=st.none() | typed)  # fmt: skip
def test_any_model_config_json_plans_or_exits_2_naming_the_file(config, repo):
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "config.json", json.dumps(config, default=str))
        argv = ["plan", "--model-config", path, *HW]
        if repo is not None:
            assume(not repo.startswith("-"))
            argv += ["--model-id", repo]
        code, out, err = run(argv)
    assert "Traceback" not in err
    if code == 2:
        assert_bad_input(code, out, err, path)
    else:
        assert code in (0, 1), err


def test_a_missing_catalog_file_exits_2_naming_it():
    code, out, err = run(["models", "--catalog", "/nonexistent/models.yaml"])
    assert_bad_input(code, out, err, "/nonexistent/models.yaml")


@pytest.mark.parametrize("option", ["--catalog", "--model-config"])
def test_a_directory_instead_of_a_file_exits_2(option, tmp_path):
    argv = ["models", "--catalog", str(tmp_path)] if option == "--catalog" else [
        "plan", "--model-config", str(tmp_path), *HW]  # fmt: skip
    code, out, err = run(argv)
    assert_bad_input(code, out, err, str(tmp_path))


def test_a_model_tgi_cannot_serve_is_refused_naming_its_catalog():
    """Found by the property above: `unsupported_by_tgi: '0'` in a user catalog refused the
    model without saying which file declared it."""
    entry = dict(GOOD_ENTRY, unsupported_by_tgi="0")
    text = yaml.safe_dump({"schema_version": 1, "models": {"mine": entry}})
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "models.yaml", text)
        code, out, err = _plan_with_catalog(path, "mine", via_env=False)
    assert_bad_input(code, out, err, path)
