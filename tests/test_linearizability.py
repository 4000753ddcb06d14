"""Tests for the linearizability checker (tests/linearizability.py)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.linearizability import (
    KV_MODEL,
    UNKNOWN,
    Model,
    Operation,
    check,
    nondeterministic_model,
)

UNPARTITIONED = replace(KV_MODEL, partition=None)


def op(client: int, input: tuple, output: Any, call: float, ret: float | None) -> Operation:
    return Operation(client, input, output, call, ret)


def put(c: int, k: str, v: Any, call: float, ret: float | None) -> Operation:
    return op(c, ("put", k, v), None, call, ret)


def get(c: int, k: str, out: Any, call: float, ret: float | None) -> Operation:
    return op(c, ("get", k), out, call, ret)


def cas(c: int, k: str, old: Any, new: Any, out: Any, call: float, ret: float | None) -> Operation:
    return op(c, ("cas", k, old, new), out, call, ret)


def verdict(history: list[Operation]) -> bool:
    """Check with and without partitioning; both must agree (P-compositionality)."""
    a = check(history, KV_MODEL)
    b = check(history, UNPARTITIONED)
    assert a.ok == b.ok, (a.explain(), b.explain())
    return a.ok


# --------------------------------------------------------------------------------------------------------
# Hand-written classic cases
# --------------------------------------------------------------------------------------------------------


def test_empty_history() -> None:
    r = check([], KV_MODEL)
    assert r.ok and r.partitions == 0 and r.bad_partition is None


def test_sequential_ok() -> None:
    h = [
        get(0, "x", None, 0, 1),
        put(0, "x", 1, 2, 3),
        get(1, "x", 1, 4, 5),
        put(1, "x", 2, 6, 7),
        get(0, "x", 2, 8, 9),
    ]
    assert verdict(h)


def test_sequential_wrong_read_fails() -> None:
    h = [put(0, "x", 1, 0, 1), get(0, "x", 2, 2, 3)]
    assert not verdict(h)


@pytest.mark.parametrize("seen", [None, 1])
def test_concurrent_put_get_either_value_ok(seen: Any) -> None:
    h = [put(0, "x", 1, 0, 10), get(1, "x", seen, 2, 5)]
    assert verdict(h)


def test_stale_read_after_completed_write_fails() -> None:
    h = [put(0, "x", 1, 0, 1), put(0, "x", 2, 2, 3), get(1, "x", 1, 4, 5)]
    r = check(h, KV_MODEL)
    assert not r.ok and not r.timed_out
    assert r.bad_partition is not None and len(r.bad_partition) == 3


def test_read_goes_back_in_time_fails() -> None:
    # The write is concurrent with both reads, so each read alone is fine; but once a read has returned
    # the new value, a read that starts afterwards must not see the old one.
    h = [
        put(0, "x", 1, 0, 1),
        put(0, "x", 2, 2, 20),
        get(1, "x", 2, 3, 4),
        get(2, "x", 1, 5, 6),
    ]
    assert not verdict(h)
    # Overlapping reads may observe the two values in either order.
    h2 = h[:3] + [get(2, "x", 1, 3.5, 6)]
    assert verdict(h2)


def test_lost_acknowledged_write_fails() -> None:
    h = [put(0, "x", 1, 0, 1), put(1, "x", 2, 2, 3), get(2, "x", 1, 4, 5), get(2, "x", None, 6, 7)]
    assert not verdict(h)
    assert not verdict([put(0, "y", 5, 0, 1), get(1, "y", None, 2, 3)])


def test_unknown_write_later_visible_ok() -> None:
    # The write timed out, but a read long after its call sees it: it took effect after the timeout.
    h = [put(0, "x", 1, 0, 1), put(1, "x", 2, 2, None), get(2, "x", 1, 3, 4), get(2, "x", 2, 50, 51)]
    assert verdict(h)


def test_unknown_write_never_visible_ok() -> None:
    h = [put(0, "x", 1, 0, 1), put(1, "x", 2, 2, None), get(2, "x", 1, 3, 4), get(2, "x", 1, 50, 51)]
    assert verdict(h)


def test_unknown_write_cannot_take_effect_before_its_call() -> None:
    h = [get(0, "x", 2, 0, 1), put(1, "x", 2, 2, None)]
    assert not verdict(h)


def test_unknown_write_cannot_flip_back() -> None:
    # Seeing 2 then 1 then 2 again would need the unknown put(2) to take effect twice.
    h = [
        put(0, "x", 1, 0, 1),
        put(1, "x", 2, 2, None),
        get(2, "x", 2, 3, 4),
        put(0, "x", 1, 5, 6),
        get(2, "x", 2, 7, 8),
    ]
    assert not verdict(h)


def test_unknown_ops_output_ignored() -> None:
    h = [put(0, "x", 1, 0, 1), op(1, ("cas", "x", 1, 2), "garbage", 2, None), get(2, "x", 2, 5, 6)]
    assert verdict(h)
    h = [put(0, "x", 1, 0, 1), get(1, "x", "garbage", 2, None)]
    assert verdict(h)


def test_unknown_read_is_dropped() -> None:
    h = [put(0, "x", 1, 0, 1), get(1, "x", None, 2, None)]
    r = check(h, KV_MODEL)
    assert r.ok and r.partitions == 1
    r = check([get(1, "x", 7, 2, None)], KV_MODEL)
    assert r.ok and r.partitions == 0


def test_cas_semantics() -> None:
    # success on matching value, failure on mismatch
    assert verdict([put(0, "x", 1, 0, 1), cas(0, "x", 1, 2, True, 2, 3), get(0, "x", 2, 4, 5)])
    assert not verdict([put(0, "x", 1, 0, 1), cas(0, "x", 3, 2, True, 2, 3)])
    assert verdict([put(0, "x", 1, 0, 1), cas(0, "x", 3, 2, False, 2, 3), get(0, "x", 1, 4, 5)])
    assert not verdict([put(0, "x", 1, 0, 1), cas(0, "x", 3, 2, False, 2, 3), get(0, "x", 2, 4, 5)])
    # absent key behaves as None
    assert verdict([cas(0, "x", None, 1, True, 0, 1), get(0, "x", 1, 2, 3)])
    assert not verdict([cas(0, "x", 0, 1, True, 0, 1)])
    # a truthy non-bool is not a valid cas answer
    assert not verdict([put(0, "x", 1, 0, 1), cas(0, "x", 1, 2, 1, 2, 3)])
    # two concurrent cas from the same old value: exactly one may win
    both = [put(0, "x", 0, 0, 1), cas(1, "x", 0, 1, True, 2, 5), cas(2, "x", 0, 2, True, 2, 5)]
    assert not verdict(both)
    one = [put(0, "x", 0, 0, 1), cas(1, "x", 0, 1, True, 2, 5), cas(2, "x", 0, 2, False, 2, 5)]
    assert verdict(one)
    # a failed cas must be explainable by a concurrent write
    lost = [put(0, "x", 0, 0, 1), cas(1, "x", 0, 1, False, 2, 3)]
    assert not verdict(lost)
    assert verdict(lost + [put(2, "x", 9, 1.5, 2.5)])


def test_touching_intervals_are_concurrent() -> None:
    h = [put(0, "x", 1, 0, 5), get(1, "x", None, 5, 6)]
    assert verdict(h)
    assert not verdict([put(0, "x", 1, 0, 5), get(1, "x", None, 5.01, 6)])


def test_partitions_are_independent_and_smallest_failure_reported() -> None:
    good = [put(0, "a", i, 2 * i, 2 * i + 1) for i in range(10)]
    bad_big = [put(0, "b", 1, 0, 1), put(0, "b", 2, 2, 3), get(1, "b", 1, 4, 5), get(1, "b", 2, 6, 7)]
    bad_small = [put(0, "c", 1, 0, 1), get(1, "c", None, 2, 3)]
    r = check(good + bad_big + bad_small, KV_MODEL)
    assert not r.ok and r.partitions == 3
    assert r.bad_partition == bad_small
    text = r.explain()
    assert "key 'c'" in text and "NOT linearizable" in text and "get('c') -> None" in text
    assert "longest linearizable prefix found (1 of 2 ops)" in text


def test_explain_ok_and_timeout() -> None:
    h = [put(c, "x", c, 0, 10) for c in range(8)] + [get(9, "x", 99, 0, 10)]
    assert "linearizable" in check(h[:-1], KV_MODEL).explain()
    r = check(h, KV_MODEL, max_steps=5)
    assert not r.ok and r.timed_out and r.explored == 5
    assert "step limit" in r.explain()
    r = check(h, KV_MODEL)
    assert not r.ok and not r.timed_out


def test_many_unknown_writes_stay_tractable() -> None:
    # Twelve timed-out writes of three values, then reads cycling through the values: each read needs a
    # fresh write.  Without symmetry breaking between equal unknown writes and dominance pruning over the
    # set of used unknown ops, the search would try exponentially many subsets and orders of the writes.
    def history(reads: int) -> list[Operation]:
        h = [put(0, "x", 0, 0, 1)]
        h += [put(100 + i, "x", 1 + i % 3, 2 + i / 100, None) for i in range(12)]
        h += [get(1, "x", 1 + j % 3, 10 + 2 * j, 11 + 2 * j) for j in range(reads)]
        return h

    ok = check(history(12), KV_MODEL, max_steps=20_000)
    assert ok.ok, ok.explain()
    bad = check(history(13), KV_MODEL, max_steps=20_000)
    assert not bad.ok and not bad.timed_out


def test_ret_before_call_rejected() -> None:
    with pytest.raises(ValueError):
        check([put(0, "x", 1, 5, 4)], KV_MODEL)


def test_custom_model_without_partition() -> None:
    # A counter with "inc" -> new value and "read" -> value; unknown incs are allowed.
    def step(state: int, input: str, output: Any) -> tuple[bool, int]:
        if input == "inc":
            return output is UNKNOWN or output == state + 1, state + 1
        return output is UNKNOWN or output == state, state

    counter = Model(init=lambda: 0, step=step)
    h = [
        Operation(0, "inc", 1, 0, 10),
        Operation(1, "inc", 2, 0, 10),
        Operation(2, "inc", None, 0, None),
        Operation(3, "read", 3, 11, 12),
    ]
    assert check(h, counter).ok
    assert not check(h[:2] + [Operation(3, "read", 3, 11, 12)], counter).ok


def test_nondeterministic_model_seat_booking() -> None:
    # "book" takes any free seat and answers its number (or None when sold out).
    seats = frozenset({1, 2})

    def step(taken: frozenset, input: str, output: Any):
        free = seats - taken
        if input == "book":
            if output is UNKNOWN:
                return [taken | {s} for s in free] or [taken]
            if output is None:
                return [taken] if not free else []
            return [taken | {output}] if output in free else []
        return [taken] if output is UNKNOWN or output == len(taken) else []  # "count"

    model = nondeterministic_model(lambda: [frozenset()], step)
    ok = [
        Operation(0, "book", UNKNOWN, 0, None),
        Operation(1, "book", 2, 1, 2),
        Operation(2, "book", None, 3, 4),
    ]
    assert check(ok, model).ok
    double = [Operation(0, "book", 1, 0, 1), Operation(1, "book", 1, 2, 3)]
    assert not check(double, model).ok
    # the unknown booking must have taken seat 1, since seat 2 went to client 1 and the count says 2
    counted = ok[:2] + [Operation(2, "count", 2, 3, 4), Operation(3, "book", 1, 5, 6)]
    assert not check(counted, model).ok


# --------------------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------------------


def apply_dict(d: dict, input: tuple) -> Any:
    """Reference semantics on a real dict (independent of KV_MODEL's implementation)."""
    kind, key = input[0], input[1]
    if kind == "get":
        return d.get(key)
    if kind == "put":
        d[key] = input[2]
        return None
    if d.get(key) == input[2]:
        d[key] = input[3]
        return True
    return False


keys = st.sampled_from(["a", "b"])
values = st.integers(0, 2)
inputs = st.one_of(
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("cas"), keys, st.one_of(st.none(), values), values),
)


@st.composite
def linearizable_histories(draw: st.DrawFn, max_ops: int = 30) -> list[Operation]:
    """Run a random sequence on a dict at points 0, 10, 20...; give each op an interval around its point."""
    seq = draw(st.lists(inputs, max_size=max_ops))
    d: dict = {}
    history = []
    for i, input in enumerate(seq):
        point = 10 * i
        call = point - draw(st.integers(0, 35))
        if draw(st.integers(0, 9)) == 0:  # ~10% time out
            if draw(st.booleans()):
                output = apply_dict(d, input)  # took effect (at `point`)
            else:
                output = None  # never took effect
            history.append(Operation(i, input, output, call, None))
        else:
            history.append(Operation(i, input, apply_dict(d, input), call, point + draw(st.integers(0, 35))))
    return draw(st.permutations(history))


@st.composite
def arbitrary_histories(draw: st.DrawFn, max_ops: int = 7) -> list[Operation]:
    """Small histories with random outputs; a mix of linearizable and non-linearizable ones."""
    if draw(st.booleans()):
        # Start from a linearizable history and corrupt one output, so near-misses are common.
        h = draw(linearizable_histories(max_ops=max_ops))
        if h:
            i = draw(st.integers(0, len(h) - 1))
            kind = h[i].input[0]
            out = draw(st.booleans()) if kind == "cas" else draw(st.one_of(st.none(), values))
            h[i] = replace(h[i], output=out)
        return h
    n = draw(st.integers(0, max_ops))
    unknown_odds = draw(st.sampled_from([6, 3]))  # 1 in 6 or 1 in 3 ops time out
    history = []
    for c in range(n):
        input = draw(inputs)
        if input[0] == "cas":
            output: Any = draw(st.booleans())
        elif input[0] == "get":
            output = draw(st.one_of(st.none(), values))
        else:
            output = None
        call = draw(st.integers(0, 20))
        ret = None if draw(st.integers(1, unknown_odds)) == 1 else call + draw(st.integers(0, 10))
        history.append(Operation(c, input, output, call, ret))
    return history


def brute_force(history: list[Operation]) -> bool:
    """Search every order consistent with real time, with dict semantics; unknown ops may be skipped."""
    n = len(history)
    preds = [
        frozenset(j for j in range(n) if history[j].ret is not None and history[j].ret < history[i].call)
        for i in range(n)
    ]
    known = frozenset(i for i in range(n) if history[i].ret is not None)

    def dfs(done: frozenset, d: dict) -> bool:
        if known <= done:
            return True  # unknown ops not yet done are the ones that never took effect
        for i in range(n):
            if i in done or not preds[i] <= done:
                continue
            d2 = dict(d)
            out = apply_dict(d2, history[i].input)
            if history[i].ret is not None:
                expected = history[i].output
                if out != expected or type(out) is not type(expected):
                    continue
            if dfs(done | {i}, d2):
                return True
        return False

    return dfs(frozenset(), {})


# --------------------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linearizable_histories())
def test_generated_linearizable_histories_pass(history: list[Operation]) -> None:
    r = check(history, KV_MODEL)
    assert r.ok, r.explain()
    assert check(history, UNPARTITIONED).ok


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arbitrary_histories())
def test_agrees_with_brute_force(history: list[Operation]) -> None:
    expected = brute_force(history)
    r = check(history, KV_MODEL)
    assert r.ok == expected, r.explain()
    assert check(history, UNPARTITIONED).ok == expected
    if not r.ok:
        assert r.bad_partition and not r.timed_out


# --------------------------------------------------------------------------------------------------------
# Performance smoke test
# --------------------------------------------------------------------------------------------------------


def simulate_clients(
    rng: random.Random, n_ops: int, n_clients: int, n_keys: int, p_unknown: float = 0.0
) -> list[Operation]:
    """Closed-loop clients issuing ops back to back; each op takes effect at a random point of its interval.

    Unknown ops either never take effect or take effect up to a few op-durations after their call.
    """
    free = [rng.random() for _ in range(n_clients)]
    planned = []  # (linearization point or None, client, input, call, ret)
    for _ in range(n_ops):
        c = min(range(n_clients), key=free.__getitem__)
        key = f"k{rng.randrange(n_keys)}"
        r = rng.random()
        if r < 0.45:
            input: tuple = ("get", key)
        elif r < 0.85:
            input = ("put", key, rng.randrange(5))
        else:
            input = ("cas", key, rng.randrange(5), rng.randrange(5))
        call = free[c]
        dur = rng.expovariate(1.0)
        if rng.random() < p_unknown:
            point = call + rng.uniform(0, 3 * dur) if rng.random() < 0.5 else None
            planned.append((point, c, input, call, None))
        else:
            planned.append((rng.uniform(call, call + dur), c, input, call, call + dur))
        free[c] = call + dur + rng.expovariate(5.0)
    d: dict = {}
    history = []
    for point, c, input, call, ret in sorted(planned, key=lambda p: math.inf if p[0] is None else p[0]):
        output = apply_dict(d, input) if point is not None else None
        history.append(Operation(c, input, output, call, ret))
    return history


@pytest.mark.parametrize("p_unknown", [0.0, 0.05])
def test_performance_2000_ops(p_unknown: float) -> None:
    history = simulate_clients(random.Random(1234), 2000, 10, 10, p_unknown)
    t0 = time.perf_counter()
    r = check(history, KV_MODEL)
    elapsed = time.perf_counter() - t0
    assert r.ok, r.explain()
    assert r.partitions == 10
    print(f"2000 ops, 10 clients, 10 keys, p_unknown={p_unknown}: {elapsed * 1000:.1f} ms, {r.explored} nodes")
