"""Finding 2 of #14: tenant YAML (a values file, the canopy-config ConfigMap) is read within bounds.

Each hostile text used to stall the operator's single event loop (an alias bomb expanded when the edit was
checked; ~12 KB of flow nesting took half a minute and then raised ``RecursionError``). Now every one is refused
in milliseconds with ``ValuesEditError`` naming the bound, before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from canopy_operator.core.values import ManagedKeys, ValuesEditError, apply_managed, read_managed, validate_values
from canopy_operator.yamlsplice.bounded import Limits, YamlLimitError, events
from tests.support.values_files import (
    alias_bomb,
    deep_block_nesting,
    deep_flow_nesting,
    many_aliases,
)

pytestmark = pytest.mark.timeout(60)  # the texts below stalled the old parser for 30 s to minutes

HEAD = 'LLAMA_STACK_URL: "http://llama-stack:8321"\nsummarize:\n  enabled: true\n  model: llama32\n  prompt: Sum up.\n'
DESIRED = ManagedKeys("Sum up.", "Be brief.", True, True)
FAST = 0.5  # seconds of CPU; the refusals take a few milliseconds (CPU time: a loaded machine does not fail them)


def _refused(call: Callable[..., object], *args: object) -> tuple[str, float]:
    started = time.thread_time()
    with pytest.raises(ValuesEditError) as info:
        call(*args)
    return str(info.value), time.thread_time() - started


def test_alias_bomb_of_555_bytes_is_refused_in_milliseconds_when_read() -> None:
    bomb = alias_bomb(HEAD)
    assert len(bomb.encode()) <= 555
    message, took = _refused(read_managed, bomb)
    assert "alias expansion bound" in message
    assert "more than 100000 nodes" in message
    assert took < FAST


def test_alias_bomb_is_refused_in_milliseconds_when_the_operator_would_edit_the_file() -> None:
    message, took = _refused(apply_managed, alias_bomb(HEAD), DESIRED)
    assert "alias expansion bound" in message
    assert took < FAST


def test_alias_bomb_is_reported_by_the_pre_write_check() -> None:
    started = time.thread_time()
    (problem,) = validate_values(alias_bomb(HEAD))
    assert "alias expansion bound" in problem
    assert time.thread_time() - started < FAST


def test_deep_flow_nesting_of_12_kb_is_refused_fast_without_recursion_error() -> None:
    text = deep_flow_nesting(HEAD, 6000)
    assert len(text) > 12_000
    message, took = _refused(read_managed, text)
    assert "depth bound" in message
    assert "nested more than 64 deep" in message
    assert "line 6" in message
    assert took < FAST


def test_deep_flow_nesting_is_refused_fast_by_the_edit_too() -> None:
    message, took = _refused(apply_managed, deep_flow_nesting(HEAD, 6000), DESIRED)
    assert "depth bound" in message
    assert took < FAST


def test_block_nesting_deeper_than_64_levels_is_refused() -> None:
    message, _ = _refused(read_managed, deep_block_nesting(HEAD, 64))
    assert "depth bound" in message
    assert "nested more than 64 deep" in message


def test_block_nesting_of_64_levels_is_read() -> None:
    assert read_managed(deep_block_nesting(HEAD, 63)).prompt == "Sum up."  # 63 below the top-level mapping


def test_aliases_nesting_a_tree_deeper_than_64_levels_are_refused() -> None:
    chain = "".join(f"n{i}: &n{i} [*n{i - 1}]\n" for i in range(1, 70))
    message, _ = _refused(read_managed, HEAD + "n0: &n0 [x]\n" + chain)
    assert "depth bound" in message


def test_more_than_1000_aliases_are_refused() -> None:
    message, _ = _refused(read_managed, many_aliases(HEAD, 1001))
    assert "aliases bound" in message
    assert "more than 1000 aliases" in message


def test_1000_aliases_are_read() -> None:
    assert read_managed(many_aliases(HEAD, 1000)).prompt == "Sum up."


def test_an_alias_inside_the_collection_it_names_is_refused() -> None:
    message, _ = _refused(read_managed, HEAD + "loop: &loop [a, *loop]\n")
    assert "refers to a collection that contains it" in message


def test_a_text_over_one_mib_is_refused_before_parsing() -> None:
    text = HEAD + "# " + "x" * (1024 * 1024) + "\n"
    message, took = _refused(read_managed, text)
    assert "bytes bound" in message
    assert "1048576" in message
    assert took < FAST


def test_a_merge_chain_as_deep_as_python_recursion_is_refused_not_raised() -> None:
    chain = "".join(f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: v}}\n" for i in range(1, 1000))
    message, _ = _refused(apply_managed, HEAD + "m0: &m0 {k0: v}\n" + chain, DESIRED)
    assert "bound" in message


def test_a_callers_deadline_stops_the_parse_within_a_few_hundred_events() -> None:
    polls: list[int] = []

    def expired() -> bool:
        polls.append(1)
        return True

    text = HEAD + "".join(f"k{i}: v\n" for i in range(2000))
    with pytest.raises(YamlLimitError, match="longer than the deadline allows") as info:
        events(text, Limits(stop=expired))
    assert info.value.bound == "time"
    assert polls == [1]


def test_a_mebibyte_of_tiny_nodes_is_refused_at_the_node_bound_not_parsed_for_seconds() -> None:
    text = HEAD + "x: [" + "a," * 500_000 + "a]\n"  # ~1 MB: the whole parse took 16 s
    message, took = _refused(read_managed, text)
    assert "nodes bound" in message
    assert "more than 50000 nodes" in message
    assert took < 5.0
