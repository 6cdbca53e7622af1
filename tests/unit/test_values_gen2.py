"""The Generation 2 values layout: the course's config.yaml, where the prompts are MLflow registry references.

``prompt`` is ``summarization.mlflow_prompt_version``, ``prompt_b`` is ``ab_testing.mlflow_prompt_b_version``;
every edit changes the lines of those keys (and the two switches) only, and Generation 1 stays as it was.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from canopy_operator import preview
from canopy_operator.core.changes import CommitInfo, commit_message
from canopy_operator.core.values import (
    GEN1,
    GEN2,
    PATHS,
    ManagedKeys,
    ValuesConflict,
    ValuesEditError,
    ValuesReader,
    apply_managed,
    check_conflict,
    edit_values,
    layout_for,
    loaded_keys,
    read_managed,
    validate_values,
)
from canopy_operator.delivery.git import GitDelivery
from canopy_operator.gitops.policy import GitPolicy
from canopy_operator.gitops.repo import GitTarget, GitWorkspace
from tests.support.gitserver import git, make_repo, show
from tests.support.values_files import REALISTIC, FakeGateway, changed_lines, configmap_delivery
from tests.unit.test_values_rules import prompts

CONFIG = """\
# Canopy backend (Generation 2), test environment.
# Kept in the GitOps repo at canopy/test/backend/config.yaml; Argo CD syncs it.

summarization:
  enabled: true
  endpoint: http://llama-stack.user1-test.svc.cluster.local:8321/v1   # OpenAI-compatible
  model: llama32
  temperature: 0.7
  max_tokens: 4096
  mlflow_prompt: summarization-prompt   # name in the MLflow prompt registry (toolings)
  mlflow_prompt_version: champion       # the alias; move it when one prompt consistently wins

ab_testing:
  enabled: false
  mlflow_prompt_b_version: latest   # the course's default

feedback:
  enabled: false  # thumbs in the UI
"""
ORIGINAL = ManagedKeys("champion", "latest", False, False)
START = ManagedKeys("champion", "5", True, True)
PROMOTED = ManagedKeys("champion", None, True, False)
BARE = "summarization:\n  enabled: true\n  mlflow_prompt: summarization-prompt\n  mlflow_prompt_version: champion\n"


def test_read_managed_returns_the_four_keys_of_the_course_config() -> None:
    assert read_managed(CONFIG, layout=GEN2) == ORIGINAL
    assert loaded_keys(yaml.safe_load(CONFIG), layout=GEN2) == ORIGINAL
    assert validate_values(CONFIG, layout=GEN2) == []


def test_layout_for_picks_the_generation_and_paths_stay_the_generation_1_mapping() -> None:
    assert (layout_for(1), layout_for(2)) == (GEN1, GEN2)
    with pytest.raises(ValueError, match="generation 3"):
        layout_for(3)
    assert PATHS == {
        "prompt": ("summarize", "prompt"),
        "prompt_b": ("summarize", "prompt_b"),
        "feedback_enabled": ("feedback", "enabled"),
        "ab_testing_enabled": ("ab_testing", "enabled"),
    }
    assert GEN2.dotted("prompt") == "summarization.mlflow_prompt_version"
    assert GEN2.dotted("prompt_b") == "ab_testing.mlflow_prompt_b_version"
    assert dict(GEN2.allowed)["ab_testing"] == ("enabled", "mlflow_prompt_b_version")


def test_starting_a_test_changes_only_the_lines_of_the_managed_keys() -> None:
    out = edit_values(CONFIG, START, layout=GEN2)
    assert changed_lines(CONFIG, out) == (
        [
            "  enabled: false\n",
            "  mlflow_prompt_b_version: latest   # the course's default\n",
            "  enabled: false  # thumbs in the UI\n",
        ],
        [
            "  enabled: true\n",
            "  mlflow_prompt_b_version: '5'   # the course's default\n",
            "  enabled: true  # thumbs in the UI\n",
        ],
    )
    assert read_managed(out, layout=GEN2) == START
    assert yaml.safe_load(out)["ab_testing"] == {"enabled": True, "mlflow_prompt_b_version": "5"}
    assert edit_values(out, START, layout=GEN2) is out


def test_promotion_keeps_the_champion_alias_drops_only_the_challenger_version_and_turns_ab_testing_off() -> None:
    started = edit_values(CONFIG, START, layout=GEN2)
    out = edit_values(started, PROMOTED, layout=GEN2)
    assert changed_lines(started, out) == (
        ["  enabled: true\n", "  mlflow_prompt_b_version: '5'   # the course's default\n"],
        ["  enabled: false\n"],
    )
    assert read_managed(out, layout=GEN2) == PROMOTED
    assert yaml.safe_load(out)["ab_testing"] == {"enabled": False}
    assert yaml.safe_load(out)["summarization"]["mlflow_prompt_version"] == "champion"


def test_restore_gives_back_the_original_file_byte_for_byte() -> None:
    started = edit_values(CONFIG, START, layout=GEN2)
    assert edit_values(started, ORIGINAL, layout=GEN2) == CONFIG


def test_sections_the_operator_adds_are_whole_and_restoring_removes_them_byte_for_byte() -> None:
    out = edit_values(BARE, START, layout=GEN2)
    assert out == BARE + "feedback:\n  enabled: true\nab_testing:\n  enabled: true\n  mlflow_prompt_b_version: '5'\n"
    assert edit_values(out, ManagedKeys("champion", None, None, None), layout=GEN2) == BARE


def test_unsetting_ab_testing_keeps_a_challenger_version_that_stays() -> None:
    out = apply_managed(CONFIG, ManagedKeys("champion", "latest", False, None), layout=GEN2)
    assert changed_lines(CONFIG, out) == (["  enabled: false\n"], [])
    assert yaml.safe_load(out)["ab_testing"] == {"mlflow_prompt_b_version": "latest"}
    assert validate_values(out, layout=GEN2) == []


def test_unsetting_the_challenger_removes_only_its_key() -> None:
    out = edit_values(CONFIG, ManagedKeys("champion", None, False, False), layout=GEN2)
    assert changed_lines(CONFIG, out) == (["  mlflow_prompt_b_version: latest   # the course's default\n"], [])


def test_an_integer_version_reads_as_its_text_and_survives_other_edits() -> None:
    text = CONFIG.replace("mlflow_prompt_version: champion", "mlflow_prompt_version: 3").replace(
        "mlflow_prompt_b_version: latest", "mlflow_prompt_b_version: 7"
    )
    assert read_managed(text, layout=GEN2) == ManagedKeys("3", "7", False, False)
    assert loaded_keys(yaml.safe_load(text), layout=GEN2) == ManagedKeys("3", "7", False, False)
    out = edit_values(text, ManagedKeys("3", "7", True, True), layout=GEN2)
    assert "  mlflow_prompt_b_version: 7   # the course's default\n" in out
    assert "  mlflow_prompt_version: 3  " in out
    assert read_managed(out, layout=GEN2) == ManagedKeys("3", "7", True, True)


def test_an_unknown_key_in_ab_testing_is_refused_naming_it() -> None:
    text = CONFIG.replace("  mlflow_prompt_b_version: latest", "  traffic_split: 50\n  mlflow_prompt_b_version: latest")
    expected = "ab_testing.traffic_split: unknown key (the chart allows only enabled, mlflow_prompt_b_version)"
    assert validate_values(text, layout=GEN2) == [expected]
    with pytest.raises(ValuesEditError) as info:
        edit_values(text, START, layout=GEN2)
    assert info.value.problems == [expected]


def test_an_unknown_key_in_summarization_or_feedback_is_refused_naming_it() -> None:
    text = CONFIG.replace("  model: llama32\n", "  model: llama32\n  prompt: Summarize.\n") + "  store: mlflow\n"
    assert validate_values(text, layout=GEN2) == [
        "summarization.prompt: unknown key (the chart allows only enabled, endpoint, model, temperature, "
        "max_tokens, mlflow_prompt, mlflow_prompt_version)",
        "feedback.store: unknown key (the chart allows only enabled)",
    ]


def test_latest_is_read_but_never_written_as_the_challenger_of_a_running_test() -> None:
    assert read_managed(CONFIG, layout=GEN2).prompt_b == "latest"
    for challenger in ("latest", "challenger", "05"):
        with pytest.raises(ValuesEditError, match="the challenger must be a concrete registry version") as info:
            edit_values(CONFIG, ManagedKeys("champion", challenger, True, True), layout=GEN2)
        assert info.value.problems == [str(info.value)]


def test_a_config_without_the_summarization_keys_the_operator_cannot_choose_is_refused_naming_them() -> None:
    with pytest.raises(ValuesEditError) as info:
        edit_values("# nothing yet\n", START, layout=GEN2)
    assert info.value.problems == [
        "summarization.enabled, summarization.mlflow_prompt: required in a summarization section; the operator "
        "does not choose them: add summarization.enabled and summarization.mlflow_prompt to the values file"
    ]
    no_name = CONFIG.replace(
        "  mlflow_prompt: summarization-prompt   # name in the MLflow prompt registry (toolings)\n", ""
    )
    with pytest.raises(ValuesEditError, match=r"add summarization\.mlflow_prompt to the values file"):
        edit_values(no_name, START, layout=GEN2)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("  enabled: false\n  mlflow", '  enabled: "false"\n  mlflow', "ab_testing.enabled: must be a boolean"),
        ("mlflow_prompt_b_version: latest", "mlflow_prompt_b_version: 0", "must be a registry version"),
        ("mlflow_prompt_b_version: latest", "mlflow_prompt_b_version: 1.5", "found a number"),
        ("mlflow_prompt_b_version: latest", "mlflow_prompt_b_version: challenger", "found 'challenger'"),
        ("mlflow_prompt_version: champion", "mlflow_prompt_version:", "mlflow_prompt_version: must be a string"),
        ("mlflow_prompt_version: champion", "mlflow_prompt_version: true", "found a boolean"),
        ("feedback:\n  enabled: false  # thumbs in the UI\n", "feedback:\n", "feedback: must be a mapping, found null"),
    ],
)
def test_the_generation_2_types_are_checked(old: str, new: str, problem: str) -> None:
    text = CONFIG.replace(old, new, 1)
    assert text != CONFIG
    (found,) = validate_values(text, layout=GEN2)
    assert problem in found


def test_a_quoted_version_number_and_an_integer_version_are_valid() -> None:
    text = CONFIG.replace("mlflow_prompt_b_version: latest", 'mlflow_prompt_b_version: "12"')
    assert validate_values(text, layout=GEN2) == []
    assert validate_values(text.replace('"12"', "12"), layout=GEN2) == []


def test_generation_1_reads_nothing_of_a_generation_2_file_and_the_reader_caches_per_layout() -> None:
    reader = ValuesReader()
    assert reader(CONFIG) == ManagedKeys(None, None, False, False)
    assert reader(CONFIG, layout=GEN2) == ORIGINAL
    assert len(reader.seen) == 2
    assert reader(REALISTIC, layout=GEN2).prompt is None


def test_a_conflict_and_a_commit_message_name_the_generation_2_keys() -> None:
    human = ManagedKeys("champion", "6", True, True)
    with pytest.raises(ValuesConflict) as info:
        check_conflict(human, START, PROMOTED, layout=GEN2)
    assert info.value.paths == ["ab_testing.mlflow_prompt_b_version"]
    message = commit_message(CommitInfo("team-a/ab", "promote the challenger"), START, PROMOTED, layout=GEN2)
    assert "- ab_testing.mlflow_prompt_b_version: removed\n- ab_testing.enabled: false\n" in message


async def test_the_configmap_delivery_reads_and_writes_the_layout_it_is_given() -> None:
    gateway = FakeGateway(CONFIG)
    delivery = configmap_delivery(gateway, layout=GEN2)
    assert (await delivery.read()).keys == ORIGINAL
    result = await delivery.write(START)
    assert result.changed
    assert gateway.writes[-1] == edit_values(CONFIG, START, layout=GEN2)


async def test_the_git_delivery_reads_commits_and_names_the_layout_it_is_given(tmp_path: Path) -> None:
    path = "canopy/test/backend/config.yaml"
    bare = make_repo(tmp_path / "srv", "gitops", {path: CONFIG})
    target = GitTarget(repository=bare.as_uri(), values_file=path, namespace="user1-test")
    workspace = GitWorkspace(tmp_path / "cache", policy=GitPolicy(allow_file_repositories=True))
    info = CommitInfo(experiment="user1-test/brevity", change="start the A/B test")
    delivery = GitDelivery(workspace, target, None, info, layout=GEN2)
    assert (await delivery.read()).keys == ORIGINAL
    assert (await delivery.write(START)).changed
    assert show(bare, "main", path) == edit_values(CONFIG, START, layout=GEN2)
    message = git("log", "-1", "--format=%B", cwd=bare)
    assert (
        "- ab_testing.mlflow_prompt_b_version: set\n- feedback.enabled: true\n- ab_testing.enabled: true\n" in message
    )
    assert (await delivery.read()).keys == START


EXPERIMENT = """\
apiVersion: canopy.genaiops.io/v1alpha1
kind: PromptExperiment
metadata: {name: brevity, namespace: user1-test}
spec:
  backend: {generation: 2}
  challenger: {version: 5}
  prompts:
    store: MLflowRegistry
    mlflow: {trackingUrl: "http://mlflow:5000", name: summarization-prompt}
"""


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("start", START),
        ("promote", PROMOTED),
        ("restore", ORIGINAL),
    ],
)
def test_preview_uses_the_generation_of_the_experiment(tmp_path: Path, step: str, expected: ManagedKeys) -> None:
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT, encoding="utf-8")
    (tmp_path / "config.yaml").write_text(CONFIG, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    args = ["-f", str(tmp_path / "experiment.yaml"), "--values", str(tmp_path / "config.yaml"), "--step", step]
    assert preview.main(args, out, err) == 0, err.getvalue()
    assert read_managed(out.getvalue(), layout=GEN2) == expected
    if step == "restore":
        assert out.getvalue() == CONFIG


versions = st.one_of(st.none(), st.integers(1, 10**9).map(str))
flags = st.one_of(st.none(), st.booleans())


@settings(max_examples=100, deadline=None)
@given(prompt=prompts, prompt_b=prompts, feedback=flags, ab=flags)
def test_apply_round_trips_arbitrary_references(
    prompt: str | None, prompt_b: str | None, feedback: bool | None, ab: bool | None
) -> None:
    desired = ManagedKeys(prompt, prompt_b, feedback, ab)
    out = apply_managed(CONFIG, desired, layout=GEN2)
    assert read_managed(out, layout=GEN2) == desired
    assert out.startswith(CONFIG.split("  mlflow_prompt_version:")[0])
    assert apply_managed(out, desired, layout=GEN2) is out


def _others(values: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in values.items() if k not in ("feedback", "ab_testing")}
    rest["summarization"] = {k: v for k, v in rest["summarization"].items() if k != "mlflow_prompt_version"}
    return rest


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(["course", "bare"]),
    prompt=st.one_of(st.sampled_from(["champion", "production"]), versions),
    prompt_b=versions,
    feedback=flags,
    ab=flags,
)
def test_every_written_config_loads_as_intended_and_keeps_everything_else(
    name: str, prompt: str | None, prompt_b: str | None, feedback: bool | None, ab: bool | None
) -> None:
    original = CONFIG if name == "course" else BARE
    desired = ManagedKeys(prompt, prompt_b, feedback, ab)
    out = edit_values(original, desired, layout=GEN2)
    loaded = yaml.safe_load(out)
    assert loaded_keys(loaded, layout=GEN2) == desired
    assert _others(loaded) == _others(yaml.safe_load(original))
    assert validate_values(out, layout=GEN2) == []
    assert edit_values(out, desired, layout=GEN2) is out
