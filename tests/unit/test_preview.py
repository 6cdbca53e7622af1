"""`canopy-operator preview` as a black box: the file the operator would write, or the error it would report.

The command runs as a child process (``PREVIEW``); its output is compared with literal files and with what the
ConfigMap delivery itself writes (or refuses) for the same experiment and text.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.values import read_managed
from canopy_operator.delivery.base import InvalidValues
from tests.support.values_files import FakeGateway, alias_bomb
from tests.support.values_files import configmap_delivery as delivery

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PREVIEW = [sys.executable, "-m", "canopy_operator.cli", "preview"]
"""How the command is started (``canopy-operator preview`` runs the same ``main``)."""

VALUES = """\
LLAMA_STACK_URL: "http://llama-stack:8321"   # required by the chart
summarize:
  enabled: true
  model: llama32
  prompt: |
    Summarize the following text:
"""
CHALLENGER = "Be brief. Why not?"
EXPERIMENT = f"""\
apiVersion: canopy.genaiops.io/v1alpha1
kind: PromptExperiment
metadata:
  name: brevity
  namespace: team-a
spec:
  challenger:
    prompt: {CHALLENGER!r}
"""


def run(tmp_path: Path, values: str, step: str, experiment: str = EXPERIMENT) -> subprocess.CompletedProcess[str]:
    (tmp_path / "experiment.yaml").write_text(experiment, encoding="utf-8")
    (tmp_path / "values.yaml").write_text(values, encoding="utf-8")
    args = ["-f", str(tmp_path / "experiment.yaml"), "--values", str(tmp_path / "values.yaml"), "--step", step]
    return subprocess.run([*PREVIEW, *args], capture_output=True, text=True, timeout=60, check=False)


def test_start_prints_the_file_with_both_prompts_and_both_flags(tmp_path: Path) -> None:
    done = run(tmp_path, VALUES, "start")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == VALUES + (
        f"  prompt_b: {CHALLENGER}\nfeedback:\n  enabled: true\nab_testing:\n  enabled: true\n"
    )


def test_promote_prints_the_challenger_as_the_prompt_and_ab_testing_off(tmp_path: Path) -> None:
    done = run(tmp_path, VALUES, "promote")
    assert done.returncode == 0, done.stderr
    assert done.stdout == VALUES.replace("|\n    Summarize the following text:\n", f"{CHALLENGER}\n") + (
        "feedback:\n  enabled: true\nab_testing:\n  enabled: false\n"
    )


def test_restore_during_a_test_gives_back_the_original_file_byte_for_byte(tmp_path: Path) -> None:
    done = run(tmp_path, VALUES, "restore")
    assert done.returncode == 0, done.stderr
    assert done.stdout == VALUES


def test_restore_with_on_delete_keep_leaves_the_file_as_the_test_started_it(tmp_path: Path) -> None:
    keep = EXPERIMENT + "  promotion:\n    onDelete: Keep\n"
    assert run(tmp_path, VALUES, "restore", keep).stdout == run(tmp_path, VALUES, "start").stdout


async def test_start_prints_exactly_what_the_configmap_delivery_writes(tmp_path: Path) -> None:
    spec = PromptExperimentSpec.model_validate(yaml.safe_load(EXPERIMENT)["spec"])
    original = lc.original_from(read_managed(VALUES))
    status = lc.start_test(spec, PromptExperimentStatus(original=original), original.prompt or "", NOW)
    desired = lc.desired_keys(spec, status, original)
    assert desired is not None
    gateway = FakeGateway(VALUES)
    await delivery(gateway).write(desired)
    assert run(tmp_path, VALUES, "start").stdout == gateway.writes[-1]


async def test_a_refusal_prints_the_operators_invalid_values_message_and_exits_1(tmp_path: Path) -> None:
    chart_values_test = 'LLAMA_STACK_URL: "http://llama-stack:8321"\n'
    champion = EXPERIMENT + "  champion:\n    prompt: Summarize clearly.\n"
    done = run(tmp_path, chart_values_test, "start", champion)
    assert (done.returncode, done.stdout) == (1, "")
    spec = PromptExperimentSpec.model_validate(yaml.safe_load(champion)["spec"])
    original = lc.original_from(read_managed(chart_values_test))
    status = lc.start_test(spec, PromptExperimentStatus(original=original), "Summarize clearly.", NOW)
    desired = lc.desired_keys(spec, status, original)
    assert desired is not None
    with pytest.raises(InvalidValues) as info:
        await delivery(FakeGateway(chart_values_test)).write(desired)
    assert done.stderr == f"InvalidValues: {info.value}\n"
    assert "summarize.enabled: required" in done.stderr
    assert "add summarize.enabled and summarize.model to the values file" in done.stderr


def test_git_mode_names_the_values_file_in_the_repository(tmp_path: Path) -> None:
    git = EXPERIMENT + (
        "  delivery:\n    mode: Git\n    git:\n      repository: https://git.example/team-a/backend.git\n"
        "      valuesFile: chart/values-test.yaml\n"
    )
    done = run(tmp_path, "LLAMA_STACK_URL: u\nsummarize: [unclosed\n", "start", git)
    assert done.returncode == 1
    assert done.stderr.startswith("InvalidValues: chart/values-test.yaml: the values file is not valid YAML: line 3")


def test_an_alias_bomb_is_refused_with_the_operators_bound_and_quickly(tmp_path: Path) -> None:
    started = time.monotonic()
    done = run(tmp_path, alias_bomb(VALUES), "start")
    assert done.returncode == 1
    assert done.stderr.startswith("InvalidValues: ConfigMap team-a/canopy-config key canopy-config.yaml: refused")
    assert "alias expansion bound" in done.stderr
    assert time.monotonic() - started < 10  # the interpreter's start-up dominates


def test_a_values_file_over_one_mib_is_refused_unread(tmp_path: Path) -> None:
    done = run(tmp_path, VALUES + "# " + "x" * (1024 * 1024) + "\n", "start")
    assert done.returncode == 1
    assert "(bytes bound)" in done.stderr
    assert "1048576" in done.stderr


def test_a_flow_file_gets_a_challenger_ending_in_a_question_mark_that_pyyaml_loads(tmp_path: Path) -> None:
    flow = 'LLAMA_STACK_URL: u\nsummarize: {enabled: true, model: m, prompt: "Sum up."}\n'
    done = run(tmp_path, flow, "start")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["summarize"]["prompt_b"] == CHALLENGER


def test_no_champion_anywhere_is_the_operators_no_champion_condition(tmp_path: Path) -> None:
    done = run(tmp_path, "LLAMA_STACK_URL: u\n", "start")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "NoChampion: summarize.prompt is not configured and spec.champion.prompt is not set\n"


@pytest.mark.parametrize(
    ("experiment", "says"),
    [
        ("kind: ConfigMap\n", "must hold one PromptExperiment"),
        ("kind: PromptExperiment\nspec:\n  challenger: {}\n", "the experiment's spec is invalid"),
        ("kind: [\n", "not readable YAML"),
    ],
)
def test_an_unusable_experiment_file_exits_2_saying_why(tmp_path: Path, experiment: str, says: str) -> None:
    done = run(tmp_path, VALUES, "start", experiment)
    assert done.returncode == 2
    assert says in done.stderr
    assert done.stdout == ""
