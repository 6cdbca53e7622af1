"""The Argo CD resource actions (Lua) approve, suspend, resume and abort a PromptExperiment, run by a real Lua.

Argo CD runs ``discovery.lua`` to list the actions (and which are disabled) and an action's ``action.lua`` to get
the changed object back, which it patches into the cluster. Here each script runs under ``lua5.1`` on an object
built from the API models; a small JSON encoder in the Lua prelude hands the returned table back to Python.
"""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from canopy_operator.api.spec import ChallengerSpec, ChampionSpec, PromotionSpec, PromptExperimentSpec
from canopy_operator.api.status import Phase, PromptExperimentStatus, VoteCounts
from canopy_operator.api.status import TestIdentity as ActiveTest  # not Test*: pytest would collect it
from tests.unit.test_argocd_health import ARGOCD, LUA, SANDBOX, SCRIPT, cond, lua_string, needs_lua, to_lua

ACTIONS = ARGOCD / "actions"
DISCOVERY = ACTIONS / "discovery.lua"
NAMES = ("approve", "suspend", "resume", "abort")
README_KEY = "resource.customizations.actions.canopy.genaiops.io_PromptExperiment"
TEST_ID = "t-4f2a9c01d3e7"
NOW = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
TRACKED = "canopy.genaiops.io/PromptExperiment:genai/summary-ab"

#: Lua 5.1 has no JSON: this encoder turns the script's result back into JSON for Python. It keeps its own
#: references to the libraries it needs, as the sandbox (``SANDBOX``) removes them before the script runs. A table
#: whose keys are exactly 1..n is an array; an empty table is ``{}`` (Lua cannot tell ``[]`` from ``{}``, nor can
#: Argo CD, which puts the original's empty lists back; :func:`lua_view` does the same to the expectations).
PRELUDE = r"""
local gsub, format, byte, concat = string.gsub, string.format, string.byte, table.concat
local floor, abs = math.floor, math.abs
local write, stderr, exit = io.write, io.stderr, os.exit
local function quote(s)
  return '"' .. (gsub(s, '[%c"\\]', function(c) return format("\\u%04x", byte(c)) end)) .. '"'
end
local function encode(v)
  local kind = type(v)
  if kind == "nil" then return "null" end
  if kind == "boolean" then return v and "true" or "false" end
  if kind == "number" then
    if v == floor(v) and abs(v) < 2^53 then return format("%d", v) end
    return format("%.17g", v)
  end
  if kind == "string" then return quote(v) end
  if kind ~= "table" then error("cannot encode a " .. kind) end
  local count, keys, parts = 0, {}, {}
  for k in pairs(v) do
    count = count + 1
    keys[count] = k
  end
  if count > 0 and #v == count then
    for i = 1, count do parts[i] = encode(v[i]) end
    return "[" .. concat(parts, ",") .. "]"
  end
  for i, k in ipairs(keys) do
    if type(k) ~= "string" then error("a non-string key in an object: " .. tostring(k)) end
    parts[i] = quote(k) .. ":" .. encode(v[k])
  end
  return "{" .. concat(parts, ",") .. "}"
end
"""


class LuaError(Exception):
    """The script raised an error (Argo CD then reports it and patches nothing)."""


def run(script: Path, obj: dict[str, Any]) -> Any:
    """Run ``script`` with the global ``obj`` as Argo CD does; the value it returns, decoded from JSON."""
    assert LUA is not None
    program = (
        PRELUDE
        + f"obj = {to_lua(obj)}\n"
        + f"local script = assert(loadfile({lua_string(str(script))}))\n"
        + SANDBOX
        + "local ok, result = pcall(script)\n"
        + "if not ok then stderr:write(tostring(result)) exit(3) end\n"
        + "write(encode(result))\n"
    )
    done = subprocess.run(
        [LUA, "-"], input=program, capture_output=True, text=True, encoding="utf-8", check=False, timeout=10
    )
    if done.returncode == 3:
        raise LuaError(done.stderr)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def action(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    result = run(ACTIONS / name / "action.lua", obj)
    assert isinstance(result, dict)
    return result


def discover(obj: dict[str, Any]) -> dict[str, bool]:
    """Action name -> disabled, from ``discovery.lua``."""
    listed = run(DISCOVERY, obj)
    assert isinstance(listed, dict)
    return {name: entry.get("disabled", False) for name, entry in listed.items()}


def lua_view(value: Any) -> Any:
    """``value`` as it comes back through a Lua table: an empty list reads as an empty object."""
    if isinstance(value, dict):
        return {k: lua_view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lua_view(v) for v in value] if value else {}
    return value


def experiment(
    phase: str = "AwaitingApproval",
    *,
    test: bool = True,
    suspend: bool = False,
    abort: bool = False,
    promotion: PromotionSpec | None = None,
) -> dict[str, Any]:
    """A PromptExperiment as Argo CD reads it from the cluster: metadata, the whole spec and status."""
    spec = PromptExperimentSpec(
        champion=ChampionSpec(prompt="Summarise the text in one paragraph."),
        challenger=ChallengerSpec(prompt="Summarise the text in three bullet points.\nKeep «names» as written."),
        promotion=promotion or PromotionSpec(policy="Manual", keep_feedback=False),
        suspend=suspend,
        abort=abort,
    )
    status = PromptExperimentStatus(
        phase=phase,
        message="Challenger wins at 212 decisive votes; waiting for approval",
        observed_generation=7,
        conditions=[cond("AwaitingApproval", "True", "ManualPromotion", "Set spec.promotion.approved")],
        test=(
            ActiveTest(
                id=TEST_ID,
                started_at=NOW,
                champion_hash="9f1c2e3d4b5a6978",
                challenger_hash="0a1b2c3d4e5f6071",
                champion_prompt="Summarise the text in one paragraph.",
                method="msprt",
                alpha=0.05,
                tau=0.1,
                min_votes=30,
                max_votes=5000,
            )
            if test
            else None
        ),
        votes=VoteCounts(challenger_wins=131, champion_wins=81, ties=9),
        awaiting_approval_since_generation=7,
    )
    return {
        "apiVersion": "canopy.genaiops.io/v1alpha1",
        "kind": "PromptExperiment",
        "metadata": {
            "name": "summary-ab",
            "namespace": "genai",
            "uid": "5b0c7f5e-2f1e-4c3e-9d53-1f4f0e9a2b11",
            "resourceVersion": "48213",
            "generation": 7,
            "labels": {"app.kubernetes.io/instance": "summary-app"},
            "annotations": {"argocd.argoproj.io/tracking-id": f"summary-app:{TRACKED}"},
            "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
        },
        "spec": spec.model_dump(by_alias=True, mode="json", exclude_none=True),
        "status": status.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


def changed(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """``obj`` with only these ``spec`` fields changed (``promotion`` merged key by key)."""
    want = copy.deepcopy(obj)
    for key, value in spec.items():
        if isinstance(value, dict):
            want["spec"].setdefault(key, {}).update(value)
        else:
            want["spec"][key] = value
    view: dict[str, Any] = lua_view(want)
    return view


# The actions' effect ----------------------------------------------------------------------------------------


@needs_lua
def test_approve_approves_the_active_test_only() -> None:
    obj = experiment("AwaitingApproval")
    out = action("approve", obj)
    assert out["spec"]["promotion"]["approved"] is True
    assert out["spec"]["promotion"]["approvedTestId"] == TEST_ID == obj["status"]["test"]["id"]
    assert out == changed(obj, promotion={"approved": True, "approvedTestId": TEST_ID})


@needs_lua
def test_approve_replaces_an_approval_for_an_earlier_test_and_keeps_the_other_promotion_fields() -> None:
    obj = experiment(promotion=PromotionSpec(policy="Manual", approved_test_id="t-0000older", on_delete="Keep"))
    out = action("approve", obj)
    assert out["spec"]["promotion"] == {
        "policy": "Manual",
        "approved": True,
        "approvedTestId": TEST_ID,
        "keepFeedback": True,
        "onDelete": "Keep",
    }
    assert out == changed(obj, promotion={"approved": True, "approvedTestId": TEST_ID})


@needs_lua
def test_approve_creates_spec_promotion_when_it_is_absent() -> None:
    obj = experiment()
    del obj["spec"]["promotion"]
    out = action("approve", obj)
    assert out["spec"]["promotion"] == {"approved": True, "approvedTestId": TEST_ID}
    assert out == changed(obj, promotion={"approved": True, "approvedTestId": TEST_ID})


@needs_lua
@pytest.mark.parametrize(
    ("phase", "test"),
    [("Running", True), ("Concluded", True), ("Suspended", True), ("AwaitingApproval", False)],
)
def test_approve_refuses_unless_a_test_awaits_approval(phase: str, test: bool) -> None:
    """Argo CD may run an action whatever discovery said: the script itself refuses, so nothing is patched."""
    with pytest.raises(LuaError, match="not awaiting approval"):
        action("approve", experiment(phase, test=test))


@needs_lua
def test_approve_refuses_an_experiment_without_status() -> None:
    obj = experiment()
    del obj["status"]
    with pytest.raises(LuaError, match="not awaiting approval"):
        action("approve", obj)


@needs_lua
@pytest.mark.parametrize(
    ("name", "suspended", "field", "value"),
    [
        ("suspend", False, "suspend", True),
        ("resume", True, "suspend", False),
        ("abort", False, "abort", True),
        ("abort", True, "abort", True),
    ],
)
def test_action_sets_its_spec_field_and_nothing_else(name: str, suspended: bool, field: str, value: bool) -> None:
    obj = experiment("Running", suspend=suspended)
    out = action(name, obj)
    assert out["spec"][field] is value
    assert out == changed(obj, **{field: value})


@needs_lua
@pytest.mark.parametrize(
    ("name", "field", "value"), [("suspend", "suspend", True), ("resume", "suspend", False), ("abort", "abort", True)]
)
def test_action_works_on_a_spec_without_the_field(name: str, field: str, value: bool) -> None:
    """An object written before these fields existed (or by a client that drops defaults) lacks them."""
    obj = experiment("Running")
    del obj["spec"]["suspend"], obj["spec"]["abort"]
    out = action(name, obj)
    assert out == changed(obj, **{field: value})


@needs_lua
@pytest.mark.parametrize("name", NAMES)
def test_action_creates_spec_when_it_is_absent(name: str) -> None:
    obj = experiment("AwaitingApproval")
    del obj["spec"]
    expected = {
        "approve": {"promotion": {"approved": True, "approvedTestId": TEST_ID}},
        "suspend": {"suspend": True},
        "resume": {"suspend": False},
        "abort": {"abort": True},
    }[name]
    assert action(name, obj) == lua_view({**obj, "spec": expected})


@needs_lua
@pytest.mark.parametrize("name", NAMES)
def test_an_action_run_twice_changes_nothing_more(name: str) -> None:
    once = action(name, experiment("AwaitingApproval", suspend=name == "resume"))
    assert action(name, once) == once


# Discovery --------------------------------------------------------------------------------------------------


ENDED = {"Concluded", "Aborted"}


def expected_disabled(phase: str, *, test: bool, suspend: bool, abort: bool) -> dict[str, bool]:
    """The rules of the README's table, written out independently of the Lua."""
    return {
        "approve": not (phase == "AwaitingApproval" and test),
        "suspend": suspend or phase in ENDED,
        "resume": not suspend,
        "abort": abort or phase in ENDED,
    }


@needs_lua
@pytest.mark.parametrize(
    ("phase", "test", "suspend", "abort"),
    list(product(get_args(Phase), [True, False], [False, True], [False, True])),
)
def test_discovery_enables_what_applies_now(phase: str, test: bool, suspend: bool, abort: bool) -> None:
    obj = experiment(phase, test=test, suspend=suspend, abort=abort)
    assert discover(obj) == expected_disabled(phase, test=test, suspend=suspend, abort=abort)


@needs_lua
@pytest.mark.parametrize(
    ("phase", "suspend", "abort", "enabled"),
    [
        ("AwaitingApproval", False, False, {"approve", "suspend", "abort"}),
        ("Running", False, False, {"suspend", "abort"}),
        ("Suspended", True, False, {"resume", "abort"}),
        ("AwaitingApproval", True, False, {"approve", "resume", "abort"}),
        ("Aborted", False, True, set()),
        ("Concluded", False, False, set()),
        ("Concluded", True, False, {"resume"}),
        ("Degraded", False, False, {"suspend", "abort"}),
        ("Pending", False, True, {"suspend"}),
    ],
)
def test_discovery_in_familiar_states(phase: str, suspend: bool, abort: bool, enabled: set[str]) -> None:
    listed = discover(experiment(phase, suspend=suspend, abort=abort))
    assert {name for name, disabled in listed.items() if not disabled} == enabled


@needs_lua
def test_discovery_of_a_new_experiment_without_status() -> None:
    obj = experiment()
    del obj["status"]
    del obj["spec"]["suspend"], obj["spec"]["abort"]
    assert discover(obj) == {"approve": True, "suspend": False, "resume": True, "abort": False}


@needs_lua
def test_discovery_lists_exactly_the_shipped_actions_with_a_label_and_an_icon() -> None:
    listed = run(DISCOVERY, experiment())
    assert sorted(listed) == sorted(NAMES) == sorted(p.name for p in ACTIONS.iterdir() if p.is_dir())
    for name, entry in listed.items():
        assert set(entry) == {"disabled", "iconClass", "displayName"}, name
        assert entry["iconClass"].startswith("fa fa-fw fa-"), name
        assert isinstance(entry["disabled"], bool), name


# The README's copies ----------------------------------------------------------------------------------------


def readme_documents() -> list[dict[str, Any]]:
    """Every YAML document of the README's ```yaml blocks."""
    readme = (ARGOCD / "README.md").read_text(encoding="utf-8")
    blocks = [part.split("\n```", 1)[0] + "\n" for part in readme.split("```yaml\n")[1:]]
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if isinstance(doc, dict)]


def assert_same_scripts(actions_text: str) -> None:
    """``actions_text`` (an actions customization) holds every script byte for byte as its file."""
    config = yaml.safe_load(actions_text)
    assert set(config) == {"discovery.lua", "definitions"}
    assert config["discovery.lua"] == DISCOVERY.read_text(encoding="utf-8")
    assert [d["name"] for d in config["definitions"]] == list(NAMES)
    for definition in config["definitions"]:
        assert set(definition) == {"name", "action.lua"}
        assert definition["action.lua"] == (ACTIONS / definition["name"] / "action.lua").read_text(encoding="utf-8")


def test_readme_argocd_cm_holds_the_actions_verbatim() -> None:
    (configmap,) = [d for d in readme_documents() if d.get("kind") == "ConfigMap" and README_KEY in d["data"]]
    assert configmap["metadata"]["name"] == "argocd-cm"
    assert_same_scripts(configmap["data"][README_KEY])


def test_readme_argocd_resource_holds_the_actions_and_the_health_check_verbatim() -> None:
    (argocd,) = [d for d in readme_documents() if d.get("kind") == "ArgoCD"]
    (actions,) = argocd["spec"]["resourceActions"]
    assert (actions["group"], actions["kind"]) == ("canopy.genaiops.io", "PromptExperiment")
    assert_same_scripts(actions["action"])
    (check,) = argocd["spec"]["resourceHealthChecks"]
    assert (check["group"], check["kind"]) == ("canopy.genaiops.io", "PromptExperiment")
    assert check["check"] == SCRIPT.read_text(encoding="utf-8")


def test_readme_shows_the_rbac_and_the_cli_for_the_actions() -> None:
    readme = (ARGOCD / "README.md").read_text(encoding="utf-8")
    for name in ("approve", "suspend", "resume", "*"):
        assert f"applications, action/canopy.genaiops.io/PromptExperiment/{name}, genai/*, allow" in readme
    assert "argocd app actions run summary-app approve --kind PromptExperiment --resource-name summary-ab" in readme


@needs_lua
@pytest.mark.parametrize("body", ['return string.upper("x")', 'return ("x"):upper()', "return math.floor(1.5)"])
def test_the_sandbox_refuses_what_argo_cd_does_not_open(tmp_path: Path, body: str) -> None:
    """The harness runs the scripts without ``string``, ``math`` and string methods, as Argo CD does."""
    script = tmp_path / "probe.lua"
    script.write_text(body + "\n", encoding="utf-8")
    with pytest.raises(LuaError):
        run(script, {})


@needs_lua
def test_the_sandbox_keeps_the_base_and_table_libraries(tmp_path: Path) -> None:
    script = tmp_path / "probe.lua"
    script.write_text('local t = {}\ntable.insert(t, tostring(#obj.kind))\nreturn {n = t[1] .. "!"}\n', "utf-8")
    assert run(script, {"kind": "PromptExperiment"}) == {"n": "16!"}
