"""The sharded negative-feedback ledger: shards and a manifest, exactly once across crashes, no ``list``.

The ledger outgrows one Secret (1 MiB): full shards are sealed into immutable Secrets ``<exp>-negatives-<seq>``
and the manifest ``<exp>-negatives`` names them with their hashes. These tests check the pure layout
(``core.ledger.plan_write`` and the decoders), then the service's writes against an in-memory API server
that keeps resourceVersions and immutability, has no ``list``, and crashes the operator at a chosen call.
"""

from __future__ import annotations

import base64
import functools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from canopy_operator.api.spec import EvaluationSpec, PromptExperimentSpec
from canopy_operator.api.status import Negatives, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.collect import FeedbackEntry, feedback_fingerprint
from canopy_operator.core.evaluation import jobs as jobs_module
from canopy_operator.core.evaluation.jobs import (
    ANNOTATION_DATASET,
    ANNOTATION_DATASET_PARTS,
    DATASET_KEY,
    DATASET_MOUNT,
    dataset_digest,
    dataset_part_key,
    dataset_secret_name,
    render_dataset_secrets,
    render_eval_job,
    split_dataset,
)
from canopy_operator.core.evaluation.template import JUDGE_TEMPLATE, JUDGE_TEMPLATE_FILE
from canopy_operator.core.export import parse_export, render_export
from canopy_operator.core.ledger import (
    LEDGER_KEY,
    MAX_ENTRY_BYTES,
    MAX_FORGOTTEN,
    MAX_LEDGER_BYTES,
    SHARD_BYTES,
    Layout,
    Ledger,
    LedgerEntry,
    ShardDoc,
    add_entries,
    decode_ledger,
    decode_manifest,
    decode_shard,
    encode_ledger,
    plan_write,
    render_shard_secret,
    shard_secret_name,
)
from canopy_operator.evals.cli import build_parser
from canopy_operator.evals.suites import load_suites
from canopy_operator.k8s.errors import Conflict, Invalid, NotFound
from canopy_operator.k8s.gateway import Gateway, SecretView
from canopy_operator.service import evaluations as evaluations_module
from canopy_operator.service.evaluations import Evaluations, LedgerUnreadable
from canopy_operator.service.settings import Settings

NS = "user1-test"
EXP = "exp"
UID = "uid-1"
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
IMAGE = "quay.io/canopy/canopy-operator:0.1.0"
SECRET_LIMIT = 1024 * 1024  # what the API server accepts in one Secret's data


def entry(i: int, chars: int = 800, rating: str = "thumbs_down") -> FeedbackEntry:
    body = f"Article {i}: " + "rivers and budgets, Ünïcode and quotes \" ' : # - " * (chars // 48 + 1)
    return FeedbackEntry(
        id=i,
        timestamp=f"2026-11-22T10:00:{i % 60:02d}.{i:06d}+00:00",
        feature="summarize",
        rating=rating,
        input_text=body[:chars],
        response_text=f"summary {i}",
        comment="too vague" if i % 3 else None,
    )


def add(ledger: Ledger, entries: list[FeedbackEntry], **kwargs: Any) -> Ledger:
    return add_entries(ledger, entries, [feedback_fingerprint(e) for e in entries], **kwargs)


def legacy_text(ledger: Ledger) -> str:
    """An older operator's single-Secret ledger (version 1), exactly as it wrote it."""
    dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
    head = {"version": 1, "seen": ledger.seen, "trimmed": ledger.trimmed, "forgotten": list(ledger.forgotten)}
    return "\n".join([dumps(head), *(dumps(e.to_json()) for e in ledger.entries)]) + "\n"


# -- an API server in memory: Secrets by name, resourceVersions, immutability, no list ----------------------


class Crash(Exception):
    """The operator died at this call (nothing of the call happened)."""


@dataclass
class ApiServer:
    """Secrets (get/create/patch/delete by name, as the operator's RBAC allows) and Jobs; ``crash`` says which
    call the operator dies before: ``(verb, name)`` -> True."""

    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)
    crash: Callable[[str, str], bool] = lambda verb, name: False

    def _call(self, verb: str, name: str) -> None:
        if self.crash(verb, name):
            raise Crash(f"{verb} {name}")
        self.calls.append((verb, name))

    def text(self, name: str) -> str:
        return base64.b64decode(self.secrets[name]["data"][LEDGER_KEY]).decode("utf-8")

    def size(self, name: str) -> int:
        return sum(len(base64.b64decode(v)) for v in self.secrets[name]["data"].values())

    async def read_secret(self, namespace: str, name: str) -> SecretView:
        self._call("get", name)
        if name not in self.secrets:
            raise NotFound(f"get Secret {namespace}/{name}: not found")
        obj = self.secrets[name]
        data = {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in obj["data"].items()}
        meta = obj["metadata"]
        return SecretView(
            name, namespace, data, meta["resourceVersion"], dict(meta.get("labels", {})), meta.get("annotations", {})
        )

    async def create_secret(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        self._call("create", name)
        if name in self.secrets:
            raise Conflict(f"create Secret {name}: 409 AlreadyExists")
        assert sum(len(base64.b64decode(v)) for v in body["data"].values()) <= SECRET_LIMIT, name
        self.version += 1
        stored = json.loads(json.dumps(body))
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.secrets[name] = stored

    async def patch_secret(self, body: dict[str, Any]) -> str:
        name = body["metadata"]["name"]
        self._call("patch", name)
        if name not in self.secrets:
            raise NotFound(f"patch Secret {name}: not found")
        current = self.secrets[name]
        if current.get("immutable"):
            raise Invalid(f"patch Secret {name}: field is immutable")
        wanted = body["metadata"].get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise Conflict(f"patch Secret {name}: 409 the object has been modified")
        assert sum(len(base64.b64decode(v)) for v in body["data"].values()) <= SECRET_LIMIT, name
        self.version += 1
        current["data"].update(body["data"])
        current["metadata"]["resourceVersion"] = str(self.version)
        return str(self.version)

    async def delete_secret(self, namespace: str, name: str) -> None:
        self._call("delete", name)
        if name not in self.secrets:
            raise NotFound(f"delete Secret {namespace}/{name}: not found")
        del self.secrets[name]

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self.jobs)

    async def create_job(self, body: dict[str, Any]) -> None:
        self.jobs.append(body)

    async def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(("delete job", name))
        self.jobs = [job for job in self.jobs if job["metadata"]["name"] != name]


def evaluations(api: ApiServer) -> Evaluations:
    """One reconcile pass's view (a new one per pass, as the handler makes)."""
    return Evaluations(cast(Gateway, api), NS, EXP, UID, Settings(operator_image=IMAGE))


async def stored_ledger(api: ApiServer) -> Ledger:
    """The ledger as a fresh pass reads it (checks every hash)."""
    return await evaluations(api).load()


def shard_names(api: ApiServer) -> set[str]:
    return {name for name in api.secrets if name.startswith(f"{EXP}-negatives-")}


def named_shards(api: ApiServer) -> set[str]:
    manifest = decode_manifest(api.text(f"{EXP}-negatives"))
    return {shard_secret_name(EXP, ref.seq) for ref in manifest.layout.shards}


def crash_at(calls: Any, victim: int | None, verb: str, name: str) -> bool:
    """Die before the ``victim``-th write of this pass (reads never count)."""
    return verb != "get" and next(calls) == victim


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> int:
    """Shards of 4 KiB in the service, so a few dozen entries span several of them."""
    size = 4096
    monkeypatch.setattr(evaluations_module, "plan_write", functools.partial(plan_write, shard_bytes=size))
    return size


# -- the pure layout ------------------------------------------------------------------------------------------


def test_a_ledger_under_one_shard_is_one_manifest_without_shards() -> None:
    ledger = add(Ledger(), [entry(i) for i in range(10)])
    plan = plan_write(Layout(), Ledger(), ledger)
    assert plan.create == ()
    assert plan.layout == Layout()
    assert plan.manifest == encode_ledger(ledger)
    assert decode_ledger(plan.manifest) == ledger


def test_full_shards_are_sealed_in_order_and_the_manifest_names_them_with_their_hashes() -> None:
    ledger = add(Ledger(), [entry(i) for i in range(60)])
    plan = plan_write(Layout(), Ledger(), ledger, shard_bytes=8192)
    refs = plan.layout.shards
    assert [ref.seq for ref in refs] == list(range(len(refs)))
    assert len(refs) >= 5
    assert plan.layout.next_seq == len(refs)
    assert [doc.ref for doc in plan.create] == list(refs)
    position = 0
    for doc in plan.create:  # contiguous, each under the shard size, hash of exactly its text
        assert doc.ref.first == position
        position += doc.ref.count
        assert len(doc.text.encode()) <= 8192 + 100  # entries under the cap plus a short header
    manifest = decode_manifest(plan.manifest)
    assert manifest.layout == plan.layout
    assert len("".join(e.line() + "\n" for e in manifest.tail).encode()) <= 8192
    assert [*[e for d in plan.create for e in decode_ledger_shard(d)], *manifest.tail] == list(ledger.entries)
    assert decode_ledger(plan.manifest, {d.ref.seq: d.text for d in plan.create}) == ledger


def decode_ledger_shard(doc: ShardDoc) -> list[LedgerEntry]:
    return list(decode_shard(doc.text, doc.ref))


def test_shard_secrets_are_immutable_owned_and_labelled_like_the_ledger() -> None:
    ledger = add(Ledger(), [entry(i) for i in range(30)])
    doc = plan_write(Layout(), Ledger(), ledger, shard_bytes=8192).create[1]
    secret = render_shard_secret(NS, "summary-tone", UID, doc)
    meta = secret["metadata"]
    assert meta["name"] == "summary-tone-negatives-1"
    assert secret["immutable"] is True
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "canopy-operator",
        "app.kubernetes.io/component": "feedback-ledger",
        "canopy.genaiops.io/experiment": "summary-tone",
    }
    assert meta["annotations"] == {"canopy.genaiops.io/ledger": "summary-tone-negatives"}
    assert meta["ownerReferences"][0]["uid"] == UID
    assert meta["ownerReferences"][0]["controller"] is True
    assert base64.b64decode(secret["data"][LEDGER_KEY]).decode() == doc.text
    assert len(shard_secret_name("x" * 250, 63)) <= 253


def test_appending_keeps_the_sealed_shards_and_numbers_new_ones_from_next() -> None:
    first = add(Ledger(), [entry(i) for i in range(40)])
    plan = plan_write(Layout(), Ledger(), first, shard_bytes=8192)
    grown = add(first, [entry(i) for i in range(40, 80)])
    again = plan_write(plan.layout, first, grown, shard_bytes=8192)
    assert again.layout.shards[: len(plan.layout.shards)] == plan.layout.shards  # untouched, not rewritten
    assert [d.ref.seq for d in again.create] == list(range(plan.layout.next_seq, again.layout.next_seq))
    assert again.remove_after == ()
    texts = {d.ref.seq: d.text for d in (*plan.create, *again.create)}
    assert decode_ledger(again.manifest, texts) == grown


def test_trimmed_shards_are_retired_and_the_start_falls_in_the_first_kept_one() -> None:
    before = add(Ledger(), [entry(i, chars=400) for i in range(40)])
    plan = plan_write(Layout(), Ledger(), before, shard_bytes=4096)
    after = add(before, [entry(i, chars=400) for i in range(40, 60)], max_bytes=12_000)
    assert after.trimmed > 0
    assert after.start == after.trimmed
    write = plan_write(plan.layout, before, after, shard_bytes=4096)
    gone = {ref.seq for ref in plan.layout.shards} - {ref.seq for ref in write.layout.shards}
    assert gone
    assert set(write.remove_after) == gone
    assert write.layout.retired == write.remove_after  # listed, so a crash before the delete is caught up
    first = write.layout.shards[0]
    assert first.first <= after.start < first.end
    texts = {d.ref.seq: d.text for d in (*plan.create, *write.create)}
    assert decode_ledger(write.manifest, texts) == after
    # the next write deletes what the last one retired, before anything else
    later = add(after, [entry(60, chars=400)], max_bytes=12_000)
    assert plan_write(write.layout, after, later, shard_bytes=4096).remove_first == write.remove_after


def test_trimmed_fingerprints_are_still_recognised_across_shards() -> None:
    entries = [entry(i, chars=400) for i in range(60)]
    ledger = add(Ledger(), entries, max_bytes=12_000)
    assert add(ledger, entries, max_bytes=12_000) == ledger
    assert ledger.seen == 60
    assert ledger.seen - ledger.trimmed == len(ledger.entries)


def test_an_entry_larger_than_the_entry_cap_is_dropped_alone() -> None:
    ledger = add(Ledger(), [entry(1), entry(2, chars=MAX_ENTRY_BYTES + 10), entry(3)])
    assert ledger.prompts() == [entry(1).input_text, entry(3).input_text]
    assert (ledger.seen, ledger.trimmed) == (3, 1)
    assert feedback_fingerprint(entry(2, chars=MAX_ENTRY_BYTES + 10)) in ledger.forgotten
    assert ledger.start == 0  # nothing older was dropped for it


def test_a_ledger_that_does_not_extend_the_stored_one_is_written_whole() -> None:
    before = add(Ledger(), [entry(i) for i in range(40)])
    plan = plan_write(Layout(), Ledger(), before, shard_bytes=8192)
    other = add(Ledger(), [entry(i) for i in range(100, 140)])
    write = plan_write(plan.layout, before, other, shard_bytes=8192)
    assert set(write.remove_after) == {ref.seq for ref in plan.layout.shards}
    assert min(ref.seq for ref in write.layout.shards) == plan.layout.next_seq  # no number is reused
    assert decode_ledger(write.manifest, {d.ref.seq: d.text for d in write.create}) == other


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda t: t.replace('"count":', '"count":1', 1), "without gaps"),
        (lambda t: t.replace('"sha256":"', '"sha256":"0', 1)[:-1], "sha256"),
        (lambda t: t.replace('"next":', '"next":0,"x":', 1), "below next"),
        (lambda t: t.replace('"start":0', '"start":-1', 1), "start"),
        (lambda t: t.replace('"shards":[', '"shards":["x",', 1), "shards"),
        (lambda t: t.replace('"retired":[]', '"retired":[' + ",".join(["0"] * 300) + "]", 1), "more than 256"),
    ],
)
def test_manifests_that_do_not_describe_their_shards_are_refused(change: Callable[[str], str], error: str) -> None:
    ledger = add(Ledger(), [entry(i) for i in range(30)])
    plan = plan_write(Layout(), Ledger(), ledger, shard_bytes=8192)
    texts = {d.ref.seq: d.text for d in plan.create}
    with pytest.raises(ValueError, match=error):
        decode_ledger(change(plan.manifest), texts)


def test_a_shard_that_is_not_the_one_named_is_refused() -> None:
    ledger = add(Ledger(), [entry(i) for i in range(30)])
    plan = plan_write(Layout(), Ledger(), ledger, shard_bytes=8192)
    texts = {d.ref.seq: d.text for d in plan.create}
    with pytest.raises(ValueError, match="missing"):
        decode_ledger(plan.manifest, {k: v for k, v in texts.items() if k != 1})
    texts[1] = texts[1].replace("Article", "Artikel", 1)
    with pytest.raises(ValueError, match="sha256"):
        decode_ledger(plan.manifest, texts)


def test_an_old_single_secret_ledger_reads_as_a_manifest_without_shards() -> None:
    ledger = add(Ledger(), [entry(i) for i in range(5)], max_bytes=3000)
    assert ledger.trimmed > 0
    manifest = decode_manifest(legacy_text(ledger))
    assert manifest.version == 1
    assert manifest.layout == Layout()
    old = decode_ledger(legacy_text(ledger))
    assert (old.entries, old.seen, old.trimmed, old.forgotten) == (
        ledger.entries,
        ledger.seen,
        ledger.trimmed,
        ledger.forgotten,
    )


def test_ten_thousand_800_character_negatives_are_kept_whole() -> None:
    entries = [entry(i) for i in range(10_000)]
    ledger = add(Ledger(), entries)
    assert (len(ledger.entries), ledger.seen, ledger.trimmed) == (10_000, 10_000, 0)
    plan = plan_write(Layout(), Ledger(), ledger)
    assert 10 <= len(plan.create) <= 20
    assert all(len(d.text.encode()) < SHARD_BYTES + 1024 for d in plan.create)
    assert len(plan.manifest.encode()) < SHARD_BYTES + 100 * 1024
    assert decode_ledger(plan.manifest, {d.ref.seq: d.text for d in plan.create}) == ledger
    assert add(ledger, entries) == ledger  # read again: nothing doubles
    assert MAX_LEDGER_BYTES == 64 * SHARD_BYTES


def test_forgotten_fingerprints_stay_bounded_when_many_are_trimmed_at_once() -> None:
    ledger = add(Ledger(), [entry(i, chars=100) for i in range(MAX_FORGOTTEN + 500)], max_bytes=2000)
    assert len(ledger.forgotten) == MAX_FORGOTTEN
    assert ledger.start == ledger.trimmed


# -- the service: writes in order, crashes, migration, no list -------------------------------------------------


async def test_the_service_writes_shards_before_the_manifest_and_reads_them_back(small_shards: int) -> None:
    api = ApiServer()
    ledger = add(Ledger(), [entry(i, chars=300) for i in range(60)])
    await evaluations(api).save(ledger)
    creates = [name for verb, name in api.calls if verb == "create"]
    assert creates[-1] == f"{EXP}-negatives"  # the manifest last: it names only shards that exist
    assert set(creates[:-1]) == shard_names(api) == named_shards(api)
    assert all(api.secrets[name]["immutable"] for name in shard_names(api))
    assert await stored_ledger(api) == ledger
    assert all(verb in {"get", "create", "patch", "delete"} for verb, _ in api.calls)  # by name; never a list


async def test_a_crash_between_a_shard_and_the_manifest_leaves_an_orphan_the_next_write_reuses(
    small_shards: int,
) -> None:
    api = ApiServer()
    first = add(Ledger(), [entry(i, chars=300) for i in range(6)])  # under one shard: no shard yet
    await evaluations(api).save(first)
    new = [entry(i, chars=300) for i in range(6, 40)]
    api.crash = lambda verb, name: (verb, name) == ("patch", f"{EXP}-negatives")
    with pytest.raises(Crash):
        await evaluations(api).save(add(first, new))
    orphans = shard_names(api)
    assert orphans  # written, named by nobody
    assert named_shards(api) == set()
    assert await stored_ledger(api) == first  # a reader sees the last committed ledger, whole
    # the next pass reads the same entries again (the read position did not move) and writes them once
    api.crash = lambda verb, name: False
    api.calls.clear()
    pass_two = evaluations(api)
    await pass_two.save(add(await pass_two.load(), new))
    assert [c for c in api.calls if c[0] == "delete"] == []  # same content: the orphans were reused
    stored = await stored_ledger(api)
    assert stored.prompts() == [entry(i, chars=300).input_text for i in range(40)]
    assert shard_names(api) == named_shards(api)


async def test_an_orphan_with_other_content_is_deleted_by_name_and_written_again(small_shards: int) -> None:
    api = ApiServer()
    api.crash = lambda verb, name: verb == "create" and name == f"{EXP}-negatives"
    with pytest.raises(Crash):
        await evaluations(api).save(add(Ledger(), [entry(i, chars=300) for i in range(30)]))
    assert shard_names(api)
    # the backend restarted meanwhile: other entries come first this time
    api.crash = lambda verb, name: False
    other = add(Ledger(), [entry(i, chars=300) for i in range(100, 130)])
    await evaluations(api).save(other)
    assert (("delete", f"{EXP}-negatives-0")) in api.calls
    assert await stored_ledger(api) == other
    assert shard_names(api) == named_shards(api)


async def test_a_secret_in_the_way_of_a_shard_is_never_deleted(small_shards: int) -> None:
    api = ApiServer()
    api.secrets[f"{EXP}-negatives-0"] = {
        "metadata": {"name": f"{EXP}-negatives-0", "resourceVersion": "1", "labels": {"team": "a"}},
        "data": {LEDGER_KEY: base64.b64encode(b"someone else's").decode()},
    }
    with pytest.raises(LedgerUnreadable, match="in the way"):
        await evaluations(api).save(add(Ledger(), [entry(i, chars=300) for i in range(30)]))
    assert ("delete", f"{EXP}-negatives-0") not in api.calls
    assert f"{EXP}-negatives" not in api.secrets


async def test_a_crash_after_the_manifest_leaves_retired_shards_the_next_write_deletes(small_shards: int) -> None:
    api = ApiServer()
    before = add(Ledger(), [entry(i, chars=300) for i in range(40)])
    await evaluations(api).save(before)
    after = add(before, [entry(i, chars=300) for i in range(40, 60)], max_bytes=8000)
    api.crash = lambda verb, name: verb == "delete"
    with pytest.raises(Crash):
        await evaluations(api).save(after)
    assert await stored_ledger(api) == after  # committed
    leftover = shard_names(api) - named_shards(api)
    assert leftover
    api.crash = lambda verb, name: False
    pass_two = evaluations(api)
    await pass_two.save(add(await pass_two.load(), [entry(60, chars=300)], max_bytes=8000))
    assert shard_names(api) == named_shards(api)


async def test_a_missing_or_altered_shard_makes_the_ledger_unreadable_and_nothing_is_written(
    small_shards: int,
) -> None:
    api = ApiServer()
    await evaluations(api).save(add(Ledger(), [entry(i, chars=300) for i in range(40)]))
    name = sorted(named_shards(api))[0]
    saved = api.secrets.pop(name)
    with pytest.raises(LedgerUnreadable, match="missing"):
        await stored_ledger(api)
    saved["data"][LEDGER_KEY] = base64.b64encode(b'{"version":2}\n').decode()
    api.secrets[name] = saved
    with pytest.raises(LedgerUnreadable, match="not that shard"):
        await evaluations(api).save(add(Ledger(), [entry(99)]))
    assert [c for c in api.calls if c[0] != "get"][-1][1] == f"{EXP}-negatives"  # the earlier write; none since


async def test_an_old_single_secret_ledger_is_migrated_by_the_next_write(small_shards: int) -> None:
    api = ApiServer()
    old = add(Ledger(), [entry(i, chars=300) for i in range(8)])
    await api.create_secret(
        {
            "metadata": {"name": f"{EXP}-negatives", "namespace": NS, "labels": {}},
            "data": {LEDGER_KEY: base64.b64encode(legacy_text(old).encode()).decode()},
        }
    )
    pass_one = evaluations(api)
    loaded = await pass_one.load()
    assert loaded.prompts() == old.prompts()
    grown = add(loaded, [entry(i, chars=300) for i in range(8, 40)])
    await pass_one.save(grown)
    assert ("patch", f"{EXP}-negatives") in api.calls  # replaced under its resourceVersion, not created anew
    assert decode_manifest(api.text(f"{EXP}-negatives")).version == 2
    assert named_shards(api)
    assert await stored_ledger(api) == grown


async def test_a_write_that_lost_a_race_is_refused(small_shards: int) -> None:
    api = ApiServer()
    await evaluations(api).save(add(Ledger(), [entry(1)]))
    mine, theirs = evaluations(api), evaluations(api)
    await mine.load()
    await theirs.save(add(await theirs.load(), [entry(2)]))
    with pytest.raises(Conflict):
        await mine.save(add(await mine.load(), [entry(3)]))
    assert (await stored_ledger(api)).prompts() == [entry(1).input_text, entry(2).input_text]


async def test_two_writes_in_one_pass_after_creating_the_manifest(small_shards: int) -> None:
    api = ApiServer()
    one = evaluations(api)
    first = add(Ledger(), [entry(1)])
    await one.save(first)
    second = add(first, [entry(2)])
    await one.save(second)
    assert await stored_ledger(api) == second


@pytest.mark.parametrize("seed", range(12))
async def test_exactly_once_whatever_call_the_operator_dies_at(small_shards: int, seed: int) -> None:
    """Polls of a growing backend; each may die at any Secret call, or before the status write. The ledger,
    read fresh, always holds each thumbs-down entry once, in order, and only Secrets the manifest names
    survive beyond an orphan at its next number."""
    rng = random.Random(seed)
    api = ApiServer()
    backend: list[FeedbackEntry] = []
    cursor = 0  # the status read position
    crashes = 0
    for _ in range(30):
        backend += [entry(len(backend) + k, chars=rng.choice([50, 300, 900])) for k in range(rng.randint(0, 9))]
        backend += [entry(rng.randrange(len(backend) or 1), chars=50)] if backend and rng.random() < 0.2 else []
        victim = rng.randrange(4) if rng.random() < 0.5 else None
        api.crash = functools.partial(crash_at, iter(range(1000)), victim)
        view = evaluations(api)
        try:
            grown = add(await view.load(), backend[cursor:], max_bytes=40_000)
            await view.save(grown)
        except Crash:
            crashes += 1
            continue
        if rng.random() < 0.2:
            continue  # died before the status write: the same entries are read again
        cursor = len(backend)
    api.crash = lambda verb, name: False
    view = evaluations(api)
    final = add(await view.load(), backend[cursor:], max_bytes=40_000)
    await view.save(final)
    distinct = list(dict.fromkeys(feedback_fingerprint(e) for e in backend))
    stored = await stored_ledger(api)
    assert stored.seen == len(distinct)
    assert [e.fingerprint for e in stored.entries] == distinct[stored.trimmed :]
    next_orphan = {shard_secret_name(EXP, decode_manifest(api.text(f"{EXP}-negatives")).layout.next_seq)}
    assert shard_names(api) - named_shards(api) <= next_orphan
    assert crashes > 0
    assert len(named_shards(api)) > 1
    assert stored.trimmed > 0  # the cap was reached: shards were retired on the way


async def test_ten_thousand_negatives_through_the_service_fit_secrets_and_read_back_whole() -> None:
    api = ApiServer()
    entries = [entry(i) for i in range(10_000)]
    view = evaluations(api)
    for start in range(0, 10_000, 2500):  # four polls
        await view.save(add(await view.load(), entries[start : start + 2500]))
    stored = await stored_ledger(api)
    assert (len(stored.entries), stored.seen, stored.trimmed) == (10_000, 10_000, 0)
    assert max(api.size(name) for name in api.secrets) < SECRET_LIMIT
    assert shard_names(api) == named_shards(api)


# -- the dataset: parts that each are an export, mounted as one folder ----------------------------------------


def test_a_small_dataset_is_one_export_under_dataset_yaml() -> None:
    prompts = ["rivers", "glaciers"]
    assert split_dataset(prompts) == (render_export(prompts),)
    assert split_dataset([]) == (render_export([]),)
    (secret,) = render_dataset_secrets(NS, EXP, UID, "exp-dataset-0123abcd", split_dataset(prompts))
    assert set(secret["data"]) == {DATASET_KEY, JUDGE_TEMPLATE_FILE}
    assert "annotations" not in secret["metadata"]


def test_the_dataset_splits_into_exports_whose_union_is_the_export_of_all_entries() -> None:
    prompts = [entry(i, chars=rnd).input_text for i, rnd in enumerate([30, 700, 2000, 5] * 40)]
    parts = split_dataset(prompts, target=16 * 1024, limit=24 * 1024)
    assert len(parts) > 3
    chunks = [parse_export(part) for part in parts]  # each part alone is a valid export document
    assert [p for chunk in chunks for p in chunk] == prompts
    assert all(part == render_export(chunk) for part, chunk in zip(parts, chunks, strict=True))  # byte-for-byte
    assert all(len(part.encode()) <= 24 * 1024 for part in parts)


def test_a_part_the_yaml_escapes_heavily_is_cut_until_it_fits() -> None:
    hostile = ["\x85\x80\ufffe" * 300 + str(i) for i in range(40)]  # escaped in YAML: about twice their UTF-8
    parts = split_dataset(hostile, target=64 * 1024, limit=8 * 1024)
    assert all(len(part.encode()) <= 8 * 1024 for part in parts)
    assert [t["prompt"] for part in parts for t in yaml.load(part, Loader=yaml.CSafeLoader)["tests"]] == hostile


def test_dataset_parts_are_created_before_the_secret_that_names_them() -> None:
    parts = ("a", "b", "c")
    secrets = render_dataset_secrets(NS, EXP, UID, "exp-dataset-0123abcd", parts)
    assert [s["metadata"]["name"] for s in secrets] == [
        "exp-dataset-0123abcd-1",
        "exp-dataset-0123abcd-2",
        "exp-dataset-0123abcd",
    ]
    for index, secret in enumerate([secrets[-1], *secrets[:-1]]):
        key = dataset_part_key(index)
        assert set(secret["data"]) == {key, JUDGE_TEMPLATE_FILE}  # each Secret is a suite folder of its own
        assert base64.b64decode(secret["data"][key]).decode() == parts[index]
        assert base64.b64decode(secret["data"][JUDGE_TEMPLATE_FILE]).decode() == JUDGE_TEMPLATE
        assert secret["immutable"] is True
        assert secret["metadata"]["annotations"][ANNOTATION_DATASET_PARTS] == "3"
        assert secret["metadata"]["ownerReferences"][0]["uid"] == UID


def test_the_dataset_name_follows_the_prompts_and_the_format_without_rendering() -> None:
    name = dataset_secret_name(EXP, dataset_digest(["a", "b"]))
    assert name == dataset_secret_name(EXP, dataset_digest(["a", "b"]))
    assert name != dataset_secret_name(EXP, dataset_digest(["b", "a"]))
    assert len(dataset_secret_name("x" * 253, dataset_digest(["a"])) + "-999") <= 253


def test_a_job_over_several_parts_mounts_them_as_one_folder_the_runner_reads() -> None:
    job = render_eval_job(
        namespace=NS,
        experiment_name=EXP,
        experiment_uid=UID,
        job_name="exp-eval-0123abcd",
        image=IMAGE,
        dataset_secret="exp-dataset-0123abcd",
        backend_url="http://canopy-backend:8000",
        evaluation=EvaluationSpec(),
        test_id="t",
        trigger="negatives",
        seed=1,
        cases=10,
        dataset_parts=3,
    )
    pod = job["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "dataset"]
    sources = volume["projected"]["sources"]
    assert volume["projected"]["defaultMode"] == 0o444
    assert [s["secret"]["name"] for s in sources] == [
        "exp-dataset-0123abcd",
        "exp-dataset-0123abcd-1",
        "exp-dataset-0123abcd-2",
    ]
    paths = [item["path"] for s in sources for item in s["secret"]["items"]]
    assert sorted(paths) == sorted([*map(dataset_part_key, range(3)), JUDGE_TEMPLATE_FILE])  # no path twice
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "dataset"]
    assert mount["readOnly"] is True
    args = build_parser().parse_args(pod["containers"][0]["args"][1:])
    assert str(args.suite) == DATASET_MOUNT
    assert args.dataset is None
    assert job["metadata"]["annotations"][ANNOTATION_DATASET_PARTS] == "3"


def test_ten_thousand_800_character_cases_fit_secrets_and_load_as_the_runners_suites(tmp_path: Path) -> None:
    prompts = [entry(i).input_text for i in range(10_000)]
    parts = split_dataset(prompts)  # about 8.3 MiB of YAML: PyYAML's emitter takes seconds
    assert 10 <= len(parts) <= 25
    secrets = render_dataset_secrets(NS, EXP, UID, dataset_secret_name(EXP, dataset_digest(prompts)), parts)
    assert max(sum(len(base64.b64decode(v)) for v in s["data"].values()) for s in secrets) < SECRET_LIMIT
    # the pod's folder: each part's suite file and the template once, as the projected volume lays them out
    for index, part in enumerate(parts):
        (tmp_path / dataset_part_key(index)).write_text(part, encoding="utf-8")
    (tmp_path / JUDGE_TEMPLATE_FILE).write_text(JUDGE_TEMPLATE, encoding="utf-8")
    suites = load_suites(tmp_path)
    assert [case.prompt for suite in suites for case in suite.tests] == prompts
    assert all(suite.judge is not None and not suite.errors for suite in suites)
    assert "".join(parts[0].partition("tests:")[:2]) == render_export([]).partition("tests:")[0] + "tests:"


async def test_an_evaluation_over_a_large_ledger_creates_the_parts_first_and_mounts_them() -> None:
    api = ApiServer()
    view = evaluations(api)
    ledger = add(Ledger(), [entry(i) for i in range(1200)])  # about 1 MiB of YAML: more than one part
    await view.save(ledger)
    spec = PromptExperimentSpec.model_validate(
        {"challenger": {"prompt": "Challenger.\n"}, "evaluation": {"enabled": True, "runRequest": "now"}}
    )
    st = lc.start_test(spec, PromptExperimentStatus(), "Champion.\n", NOW)
    dataset = view.dataset_name(ledger)
    assert dataset is not None
    st = st.model_copy(update={"negatives": Negatives(total=1200, since_last_evaluation=1200, dataset_secret=dataset)})
    api.calls.clear()
    events: list[tuple[str, str, bool]] = []
    st, _ = await evaluations(api).step(spec, st, 1, NOW, lambda *event: events.append(event))
    assert [e[0] for e in events] == ["EvaluationStarted"], events
    (job,) = api.jobs
    assert st.negatives.dataset_secret == dataset == job["metadata"]["annotations"]["canopy.genaiops.io/dataset-secret"]
    parts = int(job["metadata"]["annotations"][ANNOTATION_DATASET_PARTS])
    assert parts >= 2
    creates = [name for verb, name in api.calls if verb == "create"]
    assert creates == [*(f"{dataset}-{n}" for n in range(1, parts)), dataset]  # the named Secret last
    assert st.evaluations[0].cases == 1200
    prompts: list[str] = []
    for index in range(parts):
        name = dataset if index == 0 else f"{dataset}-{index}"
        data = api.secrets[name]["data"]
        prompts += parse_export(base64.b64decode(data[dataset_part_key(index)]).decode())
    assert prompts == ledger.prompts()
    assert parts <= jobs_module.MAX_DATASET_PARTS


async def test_pruning_deletes_a_datasets_other_parts_before_the_secret_that_names_them() -> None:
    def finished(name: str, dataset: str, parts: str, hours: int) -> dict[str, Any]:
        at = (NOW - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        annotations = {ANNOTATION_DATASET: dataset, ANNOTATION_DATASET_PARTS: parts}
        condition = {"type": "Complete", "status": "True", "lastTransitionTime": at}
        return {
            "metadata": {"name": name, "creationTimestamp": at, "annotations": annotations},
            "status": {"conditions": [condition]},
        }

    api = ApiServer()
    old, kept = "exp-dataset-00000001", "exp-dataset-00000002"
    for name in [old, f"{old}-1", f"{old}-2", kept, f"{kept}-1"]:
        api.secrets[name] = {"metadata": {"name": name, "resourceVersion": "1"}, "data": {}}
    api.jobs = [
        finished("exp-eval-0", "exp-dataset-0000000f", "999999", 3),  # a hand-edited count is bounded
        finished("exp-eval-1", old, "3", 2),
        finished("exp-eval-2", kept, "2", 1),
    ]
    spec = PromptExperimentSpec.model_validate(
        {"challenger": {"prompt": "Challenger.\n"}, "evaluation": {"enabled": True, "historyLimit": 1}}
    )
    st = PromptExperimentStatus(negatives=Negatives(total=4, dataset_secret=kept))
    await evaluations(api)._prune(spec, st, list(api.jobs))  # the cleanup step alone
    deleted = [name for verb, name in api.calls if verb == "delete" and name.startswith(old)]
    assert deleted == [f"{old}-2", f"{old}-1", old]  # the named Secret last: it still finds the others
    assert set(api.secrets) == {kept, f"{kept}-1"}
    bounded = [name for verb, name in api.calls if verb == "delete" and name.startswith("exp-dataset-0000000f")]
    assert len(bounded) == jobs_module.MAX_DATASET_PARTS
