"""``kubectl pexp`` as a user runs it: the installed plugin, found by kubectl on PATH, against a real API server.

Each test creates an experiment, writes a realistic status through the status subresource (built with the API
models, as the operator would), and drives a verb through ``kubectl pexp``. The operator is not running: what
is checked is what the plugin shows and the spec patches it makes (the operator's reaction to suspend and abort
is tested with the operator).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from canopy_operator.api.status import EvaluationResults
from canopy_operator.pexp import raster
from canopy_operator.pexp.trajectory import parse as parse_trajectory
from canopy_operator.preview import parse_experiment, preview
from tests.support.envtest import Kubectl
from tests.unit.test_pexp_get import TEST_ID, realistic_status, status_json
from tests.unit.test_pexp_png import decode_png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

VENV_BIN = Path(sys.executable).parent
NAME = "tone"
JOB_RUNNING = f"{NAME}-eval-3f9a0c12"
JOB_DONE = f"{NAME}-eval-81d2aa07"


@pytest.fixture(scope="module")
def plugin() -> Path:
    path = VENV_BIN / "kubectl-pexp"
    assert path.is_file(), f"{path} is missing: run make venv (or pip install -e . --no-deps)"
    return path


@pytest.fixture
def env(plugin: Path, admin_kubeconfig: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return {**base, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "KUBECONFIG": str(admin_kubeconfig)}


def pexp(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "pexp", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def apply(kubectl: Kubectl, namespace: str, *objects: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def get(kubectl: Kubectl, namespace: str, *what: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl("get", *what, "-n", namespace, "-o", "json").stdout)
    return out


def create_experiment(kubectl: Kubectl, namespace: str, name: str = NAME, **spec: Any) -> None:
    body = {
        "apiVersion": "canopy.genaiops.io/v1alpha1",
        "kind": "PromptExperiment",
        "metadata": {"name": name},
        "spec": {
            "challenger": {"prompt": "Summarize in two sentences:"},
            "analysis": {"minVotes": 300},
            "promotion": {"policy": "Manual"},
            **spec,
        },
    }
    apply(kubectl, namespace, body)


def write_status(kubectl: Kubectl, namespace: str, status: dict[str, Any], name: str = NAME) -> None:
    kubectl(
        "patch",
        "promptexperiment",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def realistic(phase: str = "Running", test_id: str = TEST_ID) -> dict[str, Any]:
    return status_json(realistic_status(name=NAME, phase=phase, test_id=test_id, now=datetime.now(UTC)))


def spec_of(kubectl: Kubectl, namespace: str) -> tuple[dict[str, Any], int]:
    obj = get(kubectl, namespace, "promptexperiment", NAME)
    return obj["spec"], int(obj["metadata"]["generation"])


# get -----------------------------------------------------------------------------------------------------


def backend_objects() -> list[dict[str, Any]]:
    labels = {"app": "canopy-backend"}
    container = {"name": "backend", "image": "canopy-backend:test"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "canopy-config"},
            "data": {"canopy-config.yaml": "summarize:\n  enabled: true\n"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "canopy-backend"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": JOB_RUNNING, "labels": {"canopy.genaiops.io/experiment": NAME}},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{**container, "name": "eval"}]}},
            },
        },
    ]


def test_get_shows_the_experiment_and_what_it_drives(kubectl: Kubectl, namespace: str, env: dict[str, str]) -> None:
    create_experiment(kubectl, namespace)
    apply(kubectl, namespace, *backend_objects())
    kubectl(
        "patch",
        "deployment",
        "canopy-backend",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}}),
    )
    write_status(kubectl, namespace, realistic())
    configmap_version = get(kubectl, namespace, "configmap", "canopy-config")["metadata"]["resourceVersion"]

    result = pexp(env, "get", NAME, "-n", namespace)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    fields = dict(line.split(":", 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["Name"].strip() == NAME
    assert fields["Namespace"].strip() == namespace
    assert fields["Phase"].strip() == "Running"
    assert fields["Votes"].strip() == "challenger 214  champion 106  ties 12  (unattributed 3)"
    assert fields["Min votes"].strip().endswith("320/300 decisive votes (100%)")
    assert fields["Evidence"].strip() == "CS [0.551, 0.789]  p-value 0.0243  e-value 41.2  decision continue"
    assert fields["Test"].strip().startswith(f"{TEST_ID} (msprt, alpha 0.05")

    rows = {_row_name(line): line for line in out.splitlines() if "  " in line}
    assert "ConfigMap" in rows["canopy-config"]
    assert f"resourceVersion {configmap_version}" in rows["canopy-config"]
    assert " found " in rows["canopy-config"]
    assert "1/2 ready" in rows["canopy-backend"]
    assert "Job gone" not in rows[JOB_RUNNING]
    assert " Running " in rows[JOB_RUNNING]
    assert "12/40 cases, ETA 3m20s" in rows[JOB_RUNNING]
    assert "results" in rows[f"{JOB_DONE}-results-0"]
    assert "Job gone" in rows[JOB_DONE]
    assert "11/12 scored, challenger better 75%, passed, 2 unreviewed" in rows[JOB_DONE]
    assert "ledger" in rows[f"{NAME}-negatives"]
    conditions = out.split("Conditions:")[1].splitlines()
    assert conditions[1].split()[:5] == ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
    assert conditions[2].split()[:3] == ["Ready", "True", "Verified"]
    assert conditions[2].endswith("the backend serves the config")

    missing = pexp(env, "get", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f'kubectl pexp: promptexperiment "nope" not found in namespace {namespace}'


def _row_name(line: str) -> str:
    return line.lstrip(" \u2502\u251c\u2514\u2500").split(" ", 1)[0]


def test_kubeconfig_context_and_the_contexts_namespace_are_honoured(
    kubectl: Kubectl, namespace: str, env: dict[str, str], admin_kubeconfig: Path, tmp_path: Path
) -> None:
    create_experiment(kubectl, namespace)
    write_status(kubectl, namespace, realistic())
    config = yaml.safe_load(admin_kubeconfig.read_text(encoding="utf-8"))
    context = config["current-context"]
    for entry in config["contexts"]:
        entry["context"]["namespace"] = namespace
    own = tmp_path / "kubeconfig"
    own.write_text(yaml.safe_dump(config), encoding="utf-8")
    bare = {k: v for k, v in env.items() if k != "KUBECONFIG"}
    result = pexp(bare, "get", NAME, "--kubeconfig", str(own), "--context", context)  # no -n: the context's
    assert result.returncode == 0, result.stderr
    assert f"Namespace:  {namespace}" in result.stdout
    wrong = pexp(bare, "get", NAME, "--kubeconfig", str(own), "--context", "no-such-context")
    assert wrong.returncode == 1
    assert "Traceback" not in wrong.stderr


# approve, suspend, resume, abort ---------------------------------------------------------------------------


def test_approve_only_while_awaiting_approval_and_only_for_the_current_test(
    kubectl: Kubectl, namespace: str, env: dict[str, str]
) -> None:
    create_experiment(kubectl, namespace)
    write_status(kubectl, namespace, realistic("Running"))
    before, generation = spec_of(kubectl, namespace)

    refused = pexp(env, "approve", NAME, "-n", namespace)
    assert refused.returncode == 1
    assert "its phase is Running, not AwaitingApproval" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert spec_of(kubectl, namespace) == (before, generation)

    current_test = "5d41402abc4b2a76"
    write_status(kubectl, namespace, realistic("AwaitingApproval", test_id=current_test))
    approved = pexp(env, "approve", NAME, "-n", namespace)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == (
        f"promptexperiment {namespace}/{NAME} approved for test {current_test} "
        f"(spec.promotion.approved=true, approvedTestId={current_test})"
    )
    spec, new_generation = spec_of(kubectl, namespace)
    assert spec["promotion"]["approved"] is True
    assert spec["promotion"]["approvedTestId"] == current_test
    assert spec["promotion"]["policy"] == "Manual"  # a merge patch: the rest stays
    assert new_generation == generation + 1


def test_suspend_resume_and_abort_patch_the_spec(kubectl: Kubectl, namespace: str, env: dict[str, str]) -> None:
    create_experiment(kubectl, namespace)
    write_status(kubectl, namespace, realistic())
    ref = f"promptexperiment {namespace}/{NAME}"

    result = pexp(env, "suspend", NAME, "-n", namespace)
    assert (result.returncode, result.stdout.strip()) == (0, f"{ref} suspended (spec.suspend=true)")
    assert spec_of(kubectl, namespace)[0]["suspend"] is True
    again = pexp(env, "suspend", NAME, "-n", namespace)
    assert again.returncode == 0
    assert "already suspended" in again.stdout

    result = pexp(env, "resume", NAME, "-n", namespace)
    assert (result.returncode, result.stdout.strip()) == (0, f"{ref} resumed (spec.suspend=false)")
    assert spec_of(kubectl, namespace)[0]["suspend"] is False

    result = pexp(env, "abort", NAME, "-n", namespace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"{ref} aborted (spec.abort=true)")
    spec, _ = spec_of(kubectl, namespace)
    assert spec["abort"] is True
    assert spec["suspend"] is False


# results ------------------------------------------------------------------------------------------------


def result_line(i: int, winner: str | None, error: str | None = None) -> str:
    return json.dumps(
        {
            "i": i,
            "suite": "feedback_eval_tests",
            "input_sha256": f"{0xABC0 + i:016x}",
            "unreviewed": i == 1,
            "champion": {"subset_of": 0.5, "llm_as_judge": "C", "judge_reason": "vague"},
            "challenger": {"subset_of": 1.0 if winner == "challenger" else 0.25, "llm_as_judge": "A"},
            "pairwise": {"winner": winner, "challenger_position": 2, "reason": "clearer"},
            "error": error,
        }
    )


def test_results_reads_the_runs_result_secrets(
    kubectl: Kubectl, namespace: str, env: dict[str, str], tmp_path: Path
) -> None:
    create_experiment(kubectl, namespace)
    status = realistic()
    done = next(run for run in status["evaluations"] if run["name"] == JOB_DONE)
    done["results"] = EvaluationResults(secrets=[f"{JOB_DONE}-results-0", f"{JOB_DONE}-results-1"], cases=4).model_dump(
        mode="json", by_alias=True
    )
    write_status(kubectl, namespace, status)
    first = "\n".join([result_line(0, "challenger"), result_line(1, "tie")]) + "\n"
    second = "\n".join([result_line(2, None, error="judge timed out"), "{not json", result_line(3, "champion")])
    for index, text in enumerate([first, second]):
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{JOB_DONE}-results-{index}"},
            "stringData": {"results.jsonl": text},
        }
        apply(kubectl, namespace, secret)

    table = pexp(env, "results", NAME, "-n", namespace, "--run", JOB_DONE)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert (
        lines[0] == f"run {JOB_DONE} (Succeeded): 4 of 4 cases in 2 Secrets; pairwise challenger 1, champion 1, tie 1"
    )
    assert lines[1].split() == ["#", "INPUT", "UNREVIEWED", "CHAMPION", "CHALLENGER", "PAIRWISE", "ERROR"]
    assert lines[2].split() == ["0", f"{0xABC0:016x}", "no", "0.50/C", "1.00/A", "challenger", "-"]
    assert lines[3].split() == ["1", f"{0xABC1:016x}", "yes", "0.50/C", "0.25/A", "tie", "-"]
    assert lines[4].split() == ["2", f"{0xABC2:016x}", "no", "0.50/C", "0.25/A", "-", "judge", "timed", "out"]
    assert lines[5].split()[0] == "3"
    assert len(lines) == 6
    assert f"{JOB_DONE}-results-1: skipped 1 line(s)" in table.stderr

    as_json = pexp(env, "results", NAME, "-n", namespace, "--run", JOB_DONE, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["secrets"] == [f"{JOB_DONE}-results-0", f"{JOB_DONE}-results-1"]
    assert [c["pairwise"]["winner"] for c in doc["results"]] == ["challenger", "tie", None, "champion"]
    assert doc["results"][0]["champion"]["judge_reason"] == "vague"

    # the newest run (still running) has no results yet
    newest = pexp(env, "results", NAME, "-n", namespace)
    assert newest.returncode == 1
    assert f"run {JOB_RUNNING} has no per-case results" in newest.stderr
    assert "Traceback" not in newest.stderr


# plot ---------------------------------------------------------------------------------------------------


def test_plot_writes_a_png_and_draws_in_the_terminal(
    kubectl: Kubectl, namespace: str, env: dict[str, str], tmp_path: Path
) -> None:
    create_experiment(kubectl, namespace)
    status = realistic()
    write_status(kubectl, namespace, status)
    target = tmp_path / "cs.png"

    result = pexp(env, "plot", NAME, "-n", namespace, "-o", str(target))
    assert result.returncode == 0, result.stderr
    # the band excludes 0.5 from 152 votes, but the test decides only once minVotes (300) are in
    decision = parse_trajectory(status).decision
    assert decision is not None
    assert decision.votes == 304
    assert result.stdout.strip() == f"wrote {target} (640x360 PNG, 40 points, decision at 304 votes)"
    image = decode_png(target.read_bytes())
    assert (image.width, image.height) == (640, 360)
    geo = raster.layout(parse_trajectory(status))
    boundary = [image.at(x, geo.y(0.5)) for x in range(geo.left, geo.right + 1)]
    assert boundary.count(raster.BOUNDARY_COLOUR) >= len(boundary) - 12  # all but under the decision marker
    assert image.at(geo.x(320), geo.y(0.68)) == raster.BAND
    edge = decision.lower
    assert raster.MARKER in {image.at(geo.x(304), y) for y in range(geo.y(edge + 0.02), geo.y(edge - 0.02))}

    text = pexp(env, "plot", NAME, "-n", namespace)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 20
    assert lines[8].startswith(" 0.50 \u2502")
    assert "decision at 304 votes" in lines[-1]

    create_experiment(kubectl, namespace, name="fresh")
    empty = pexp(env, "plot", "fresh", "-n", namespace, "-o", str(tmp_path / "none.png"))
    assert empty.returncode == 1
    assert "nothing to plot: status.trajectory" in empty.stderr
    assert not (tmp_path / "none.png").exists()


# watch --------------------------------------------------------------------------------------------------


class Lines:
    """A running ``kubectl pexp watch`` whose stdout lines arrive on a queue."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        # A terminal's foreground job has Ctrl-C at its default. A test run started as a background job of a
        # non-interactive shell ignores SIGINT, and a child inherits that (exec keeps an ignored signal ignored),
        # so the watch would rightly ignore the Ctrl-C below. A handled SIGINT is reset to the default at exec.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.proc = subprocess.Popen(
                ["kubectl", "pexp", "watch", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group, as a terminal's foreground job
            )
        finally:
            signal.signal(signal.SIGINT, previous)
        self.queue: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))

    def next(self, timeout: float = 30.0) -> str:
        return self.queue.get(timeout=timeout)

    def wait(self, timeout: float = 30.0) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def watches() -> Iterator[list[Lines]]:
    started: list[Lines] = []
    yield started
    for watch in started:
        watch.close()


def test_watch_prints_a_line_per_change_until_concluded(
    kubectl: Kubectl, namespace: str, env: dict[str, str], watches: list[Lines]
) -> None:
    create_experiment(kubectl, namespace)
    status = realistic()
    write_status(kubectl, namespace, status)

    watch = Lines(env, NAME, "-n", namespace, "--timeout", "90")
    watches.append(watch)
    assert watch.next().startswith("TIME ")
    first = watch.next()
    assert " Running " in first
    assert "votes 214:106 ties 12" in first

    write_status(kubectl, namespace, {"collection": {"abCursor": 4242}})  # not on the line: no new line
    status["votes"]["challengerWins"] = 215
    write_status(kubectl, namespace, {"votes": status["votes"], "message": "one more vote"})
    second = watch.next()
    assert "votes 215:106 ties 12" in second
    assert second.endswith("one more vote")

    write_status(kubectl, namespace, {"phase": "Concluded", "winner": "challenger", "message": "promoted"})
    third = watch.next()
    assert " Concluded " in third
    assert third.endswith("promoted")
    code, err = watch.wait()
    assert code == 0, err
    assert watch.queue.empty()


def test_watch_times_out_and_stops_quietly_on_ctrl_c(
    kubectl: Kubectl, namespace: str, env: dict[str, str], watches: list[Lines]
) -> None:
    create_experiment(kubectl, namespace)
    write_status(kubectl, namespace, realistic())

    started = time.monotonic()
    timed = Lines(env, NAME, "-n", namespace, "--timeout", "3", "--no-headers")
    watches.append(timed)
    assert " Running " in timed.next()
    code, err = timed.wait()
    assert code == 1
    assert err.strip() == "kubectl pexp: timed out after 3s waiting for Concluded or Aborted (phase Running)"
    assert 3 <= time.monotonic() - started < 30

    interrupted = Lines(env, NAME, "-n", namespace)
    watches.append(interrupted)
    interrupted.next()  # the header: it is watching
    interrupted.next()
    os.killpg(interrupted.proc.pid, signal.SIGINT)
    code, err = interrupted.wait()
    assert code == 0, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err


# preview ------------------------------------------------------------------------------------------------

VALUES = """\
LLAMA_STACK_URL: "http://llama-stack:8321"   # required by the chart
summarize:
  enabled: true
  model: llama32
  prompt: |
    Summarize the following text:
"""
EXPERIMENT = """\
apiVersion: canopy.genaiops.io/v1alpha1
kind: PromptExperiment
metadata: {name: tone, namespace: shop}
spec:
  challenger: {prompt: "Summarize in two sentences:"}
"""


def test_preview_prints_the_values_text(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "experiment.yaml").write_text(EXPERIMENT, encoding="utf-8")
    (tmp_path / "values.yaml").write_text(VALUES, encoding="utf-8")
    files = ["-f", str(tmp_path / "experiment.yaml"), "--values", str(tmp_path / "values.yaml")]
    for step in ("start", "promote"):
        result = pexp(env, "preview", *files, "--step", step)
        assert result.returncode == 0, result.stderr
        assert result.stdout == preview(parse_experiment(EXPERIMENT), VALUES, step)  # type: ignore[arg-type]
    started = pexp(env, "preview", *files, "--step", "start").stdout
    assert "Summarize in two sentences:" in started
    assert "LLAMA_STACK_URL" in started
    bad = pexp(env, "preview", "-f", str(tmp_path / "missing.yaml"), "--values", "x", "--step", "start")
    assert bad.returncode == 2
    assert "experiment file" in bad.stderr


def test_the_status_written_is_the_one_the_plugin_reads(kubectl: Kubectl, namespace: str) -> None:
    """The API server keeps what the tests write (a pruned field would make the checks above vacuous)."""
    create_experiment(kubectl, namespace)
    status = realistic()
    write_status(kubectl, namespace, status)
    stored = get(kubectl, namespace, "promptexperiment", NAME)["status"]
    assert stored["votes"] == status["votes"]
    assert stored["evidence"] == status["evidence"]
    assert stored["trajectory"] == status["trajectory"]
    assert stored["evaluations"] == status["evaluations"]  # progress and results too
    assert datetime.fromisoformat(stored["test"]["startedAt"]) > datetime.now(UTC) - timedelta(hours=3)
