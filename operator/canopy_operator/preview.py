"""`canopy-operator preview`: the values file the operator would write, computed without a cluster.

    canopy-operator preview -f EXPERIMENT.yaml --values FILE --step start|promote|restore

``FILE`` is the values file as the operator would find it before the experiment starts: the Git repository's
values file (``spec.delivery.git.valuesFile``) or the ConfigMap's ``canopy-config.yaml`` text. The steps:

- ``start``: the file at test start (champion and challenger, feedback and A/B testing on);
- ``promote``: the file at promotion, with the challenger as the winner (after ``start``);
- ``restore``: the file the experiment's deletion restores while its test runs (after ``start``; with
  ``onDelete: Keep`` nothing is restored and the file stays as ``start`` left it).

It prints exactly the text the operator would write to stdout and exits 0, or prints the condition the
operator would report (``InvalidValues: ...``, the same message, within the same bounds) to stderr and exits 1.
It is built on the operator's own pure functions (``core.lifecycle`` for the keys, ``core.values.edit_values``
for the text and every check), so the two cannot drift. The values layout follows ``spec.backend.generation``
(``core.values.layout_for``), as the operator's own delivery does. Exit 2: the command line or the experiment
file is unusable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PendingPromotion, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.collect import text_hash
from canopy_operator.core.values import (
    ManagedKeys,
    ValuesEditError,
    ValuesLayout,
    edit_values,
    layout_for,
    read_managed,
)
from canopy_operator.yamlsplice.bounded import LIMITS, Limits, YamlLimitError, check_size, safe_load

Step = Literal["start", "promote", "restore"]
STEPS: tuple[Step, ...] = ("start", "promote", "restore")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""The preview's clock: no written value depends on the time."""


class PreviewRefused(Exception):
    """The operator would not write: ``reason`` is its condition reason, the message its condition message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnusableInput(Exception):
    """The experiment or values file cannot be used at all (exit 2)."""


@dataclass(frozen=True)
class Experiment:
    spec: PromptExperimentSpec
    namespace: str

    @property
    def layout(self) -> ValuesLayout:
        """Which keys of the values file are the managed ones (the backend's generation decides)."""
        return layout_for(self.spec.backend.generation)

    @property
    def where(self) -> str:
        """How the operator's messages name the values (the ConfigMap key, or the file in the repository)."""
        delivery = self.spec.delivery
        if delivery.mode == "Git" and delivery.git is not None:
            return delivery.git.values_file
        cm = delivery.config_map
        return f"ConfigMap {self.namespace}/{cm.name} key {cm.key}"


def parse_experiment(text: str, limits: Limits = LIMITS) -> Experiment:
    """The PromptExperiment in ``text`` (a manifest as ``kubectl apply -f`` takes it)."""
    try:
        body = safe_load(text, limits)
    except ValueError as exc:
        raise UnusableInput(f"the experiment file is not readable YAML: {exc}") from None
    if not isinstance(body, dict) or body.get("kind") != "PromptExperiment":
        raise UnusableInput("the experiment file must hold one PromptExperiment (kind: PromptExperiment)")
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    try:
        spec = PromptExperimentSpec.model_validate(body.get("spec") or {})
    except ValueError as exc:
        raise UnusableInput(f"the experiment's spec is invalid: {exc}") from None
    return Experiment(spec=spec, namespace=namespace if isinstance(namespace, str) and namespace else "default")


def preview(experiment: Experiment, values: str, step: Step, limits: Limits = LIMITS) -> str:
    """The text the operator writes at ``step`` into ``values``; raises :class:`PreviewRefused`."""
    spec = experiment.spec
    keys = _read(experiment, values, limits)
    original = lc.original_from(keys)
    champion = lc.champion_text(spec, keys.prompt)
    prompt_key = experiment.layout.dotted("prompt")
    if champion is None:
        raise PreviewRefused("NoChampion", f"{prompt_key} is not configured and spec.champion.prompt is not set")
    if champion == spec.challenger_ref:
        field = "spec.challenger.prompt" if spec.challenger.prompt is not None else "spec.challenger.version"
        raise PreviewRefused("InvalidSpec", f"{field} equals the configured {prompt_key} (the champion)")
    status = lc.start_test(spec, PromptExperimentStatus(original=original), champion, EPOCH)
    started = _write(experiment, values, lc.desired_keys(spec, status, original), limits)
    if step == "start":
        return started
    if step == "restore":
        if spec.promotion.on_delete == "Keep":
            return started
        return _write(experiment, started, lc.restore_keys(spec, status, original), limits)
    assert status.test is not None
    decided = PendingPromotion(
        test_id=status.test.id,
        outcome="challenger",
        prompt_hash=text_hash(spec.challenger_ref),
        decided_at=EPOCH,
        summary="preview: the challenger wins",
    )
    promoted = status.model_copy(update={"pending_promotion": decided})
    return _write(experiment, started, lc.desired_keys(spec, promoted, original), limits)


def _read(experiment: Experiment, text: str, limits: Limits) -> ManagedKeys:
    try:
        return read_managed(text, layout=experiment.layout, limits=limits)
    except ValuesEditError as exc:
        raise PreviewRefused("InvalidValues", f"{experiment.where}: {exc}") from None


def _write(experiment: Experiment, text: str, desired: ManagedKeys | None, limits: Limits) -> str:
    if desired is None:  # pragma: no cover - a started test always has desired keys
        return text
    try:
        return edit_values(text, desired, layout=experiment.layout, limits=limits)
    except ValuesEditError as exc:
        raise PreviewRefused("InvalidValues", f"{experiment.where}: {exc}") from None


def read_text(path: Path, what: str, limits: Limits = LIMITS) -> str:
    """A file's UTF-8 text, refused unread when it is over the byte bound."""
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise YamlLimitError("bytes", f"{size} bytes is more than the {limits.max_bytes} bytes read at most")
        text = path.read_bytes().decode("utf-8")
        check_size(text, limits)
    except OSError as exc:
        raise UnusableInput(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UnusableInput(f"the {what} {path} is not UTF-8 text") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canopy-operator preview",
        description="Print the values file the operator would write for an experiment (a dry run, no cluster).",
    )
    parser.add_argument("-f", "--filename", required=True, type=Path, help="the PromptExperiment manifest")
    parser.add_argument(
        "--values",
        required=True,
        type=Path,
        help="the values file as it is now: Git mode's values file, or the ConfigMap's canopy-config.yaml text",
    )
    parser.add_argument(
        "--step",
        required=True,
        choices=STEPS,
        help="start: the test starts; promote: the challenger wins; restore: the experiment is deleted mid-test",
    )
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``canopy-operator preview``; the exit status (0 written, 1 refused, 2 unusable input)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args: Any = build_parser().parse_args(argv)
    try:
        experiment = parse_experiment(read_text(args.filename, "experiment file"))
    except (UnusableInput, YamlLimitError) as exc:
        err.write(f"canopy-operator preview: {exc}\n")
        return 2
    try:
        text = read_text(args.values, "values file")
        out.write(preview(experiment, text, args.step))
    except YamlLimitError as exc:
        err.write(f"InvalidValues: {experiment.where}: refused to read the values file ({exc.bound} bound): {exc}\n")
        return 1
    except UnusableInput as exc:
        err.write(f"InvalidValues: {experiment.where}: {exc}\n")
        return 1
    except PreviewRefused as exc:
        err.write(f"{exc.reason}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
