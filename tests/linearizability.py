"""Linearizability checker for client histories recorded by simulation and fault-injection tests.

A *history* is a list of `Operation`s: what a client asked (`input`), what it was told (`output`), and the
interval in which that happened (`call` .. `ret`).  The history is linearizable with respect to a sequential
`Model` if every operation can be given a single point in time inside its interval such that running the
operations one by one in that order through the model produces exactly the outputs the clients saw.

Algorithm
---------
Wing & Gong's search with Lowe's improvements, the "WGL" checker used by Porcupine and Knossos:

* Every operation becomes a call entry and a return entry in a doubly linked list sorted by time.  The
  operations that may be linearized next are exactly the call entries before the first return entry.
* Linearizing an operation "lifts" its call and return entries out of the list and pushes it on a stack;
  backtracking pops it and "unlifts" the entries back into place (O(1) each, thanks to the linked list).
* A cache of (bitset of linearized operations, model state) prunes the search: reaching the same set of
  linearized operations in the same state again cannot lead anywhere new.
* Unknown operations (below) get three extra prunings, all justified in `_check_partition`: a
  configuration is pruned when one with the same completed operations and state but a *subset* of its
  linearized unknown operations already failed; an unknown operation is never linearized where it would
  leave the state unchanged; unknown operations with equal inputs are only linearized in call order.
* P-compositionality: linearizability is local, so a model may split the history into independent
  partitions (e.g. one per key) that are checked separately; this turns one exponential search into
  many small ones.

The search is iterative (an explicit stack, no recursion), so long histories cannot overflow Python's stack.

Time semantics
--------------
Intervals are closed: operation A is ordered before B only if ``A.ret < B.call``.  Operations whose
intervals merely touch (``A.ret == B.call``) count as concurrent and may be linearized either way.  This is
the conservative choice when timestamps come from a clock of limited resolution.

Unknown operations
------------------
An operation with ``ret is None`` never completed from the client's point of view (timeout, crash, lost
connection): it may have taken effect at any moment after its call, or never.  The checker treats its return
time as +infinity and calls ``model.step(state, input, UNKNOWN)``; a model's `step` must accept the `UNKNOWN`
sentinel as an output and then return ``(True, state after applying input)``.  "Never took effect" needs no
special case: an unknown operation constrains nothing after it, so linearizing it after every completed
operation is the same as dropping it, and the search stops as soon as all completed operations are
linearized.  If the model declares which inputs are read-only (`Model.read_only`), unknown read-only
operations are dropped before the search because they cannot influence anything.

Cost: linearizable histories are typically checked in near-linear time.  Proving a history *not*
linearizable means exhausting the search up to the failure, which grows with concurrency and with the number
of unknown writes per partition; pass `max_steps` to bound it (the result then says `timed_out`).

Operations that the client knows failed *without* effect (e.g. a definite "not leader" rejection) should
simply be left out of the history.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "UNKNOWN",
    "Operation",
    "Model",
    "CheckResult",
    "check",
    "nondeterministic_model",
    "KV_MODEL",
]


class _Unknown:
    """Type of the `UNKNOWN` output sentinel (a singleton)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "?"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
"""Output passed to `Model.step` for operations that never completed; `step` must treat it as legal."""


@dataclass(frozen=True)
class Operation:
    """One client operation as observed by the client.

    `ret` is None when the client never learned the outcome; `output` is then ignored.
    """

    client: int
    input: Any
    output: Any
    call: float
    ret: float | None

    @property
    def unknown(self) -> bool:
        """True if the operation never completed (it may or may not have taken effect)."""
        return self.ret is None


def _default_describe(input: Any, output: Any) -> str:
    return f"{input!r} -> {output!r}"


@dataclass(frozen=True)
class Model:
    """A sequential specification.

    init:      returns the initial state; states must be hashable, compare by value (==) and never be
               mutated (they are cached).
    step:      ``(state, input, output) -> (legal, next_state)``.  `legal` says whether `output` is what the
               sequential object would answer to `input` in `state`.  When `output` is `UNKNOWN` it must
               return ``(True, next_state)``.  The returned next state only matters when legal.
               Nondeterministic objects: see `nondeterministic_model`.
    partition: optional split of a history into independently checkable sub-histories (P-compositionality),
               e.g. by key.  Each operation must land in exactly one partition.
    describe:  ``(input, output) -> str`` for error reports (output may be `UNKNOWN`).
    read_only: optional ``input -> bool``; unknown operations with read-only inputs are dropped.
    label:     optional ``partition -> str`` naming a partition in reports (e.g. "key 'x'").
    """

    init: Callable[[], Hashable]
    step: Callable[[Hashable, Any, Any], tuple[bool, Hashable]]
    partition: Callable[[list[Operation]], list[list[Operation]]] | None = None
    describe: Callable[[Any, Any], str] = _default_describe
    read_only: Callable[[Any], bool] | None = None
    label: Callable[[list[Operation]], str] | None = None


@dataclass
class CheckResult:
    """Outcome of `check`.

    ok:            True only if every partition was proven linearizable.
    partitions:    number of partitions the history was split into.
    explored:      search nodes visited (model steps taken) over all partitions checked.
    bad_partition: on failure, the smallest partition found not linearizable (or, if only timeouts
                   happened, the first partition that ran out of steps); operations sorted by call time.
    timed_out:     True if the verdict is "unknown" because `max_steps` ran out (ok is then False).
    partial_linearization: on failure, the longest prefix of a linearization of `bad_partition` the search
                   found; the operation that should come next is where things went wrong.
    """

    ok: bool
    partitions: int
    explored: int
    bad_partition: list[Operation] | None
    timed_out: bool = False
    partial_linearization: list[Operation] | None = None
    _model: Model | None = field(default=None, repr=False, compare=False)

    def explain(self) -> str:
        """Human-readable verdict; on failure lists the offending partition's operations."""
        if self.ok:
            return f"linearizable ({self.partitions} partitions, {self.explored} search nodes)"
        describe = self._model.describe if self._model is not None else _default_describe
        ops = self.bad_partition or []
        label = ""
        if self._model is not None and self._model.label is not None and ops:
            label = f" ({self._model.label(ops)})"
        if self.timed_out:
            head = f"UNKNOWN: search step limit reached on a partition{label} of {len(ops)} ops"
        else:
            head = f"NOT linearizable: partition{label} of {len(ops)} ops has no valid linearization"
        lines = [f"{head} ({self.explored} search nodes over {self.partitions} partitions)"]

        def fmt(op: Operation) -> str:
            ret = "inf" if op.ret is None else f"{op.ret:g}"
            out = UNKNOWN if op.ret is None else op.output
            return f"  client {op.client:>4}  [{op.call:g} .. {ret}]  {describe(op.input, out)}"

        lines.append("operations (by call time):")
        lines.extend(fmt(op) for op in ops)
        if self.partial_linearization is not None:
            done = self.partial_linearization
            lines.append(f"longest linearizable prefix found ({len(done)} of {len(ops)} ops):")
            lines.extend(fmt(op) for op in done)
            if not self.timed_out:
                lines.append("no remaining operation can be linearized after it")
        return "\n".join(lines)


class _Entry:
    """A node of the call/return list.  Call entries have `match` set to their return entry."""

    __slots__ = ("id", "input", "output", "match", "prev", "next")

    def __init__(self, id: int, input: Any = None, output: Any = None) -> None:
        self.id = id
        self.input = input
        self.output = output
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


_OK, _FAIL, _TIMEOUT = 0, 1, 2


def _check_partition(
    ops: list[Operation], model: Model, max_steps: int | None
) -> tuple[int, int, list[Operation] | None]:
    """WGL search over one partition.  Returns (verdict, steps taken, best partial linearization)."""
    n = len(ops)
    known_rets = sorted(op.ret for op in ops if op.ret is not None)
    keyed: list[tuple[tuple[float, int, int], _Entry]] = []
    for i, op in enumerate(ops):
        if op.ret is not None:
            call = _Entry(i, op.input, op.output)
            ret = _Entry(i)
            keyed.append(((op.call, 0, i), call))
            keyed.append(((op.ret, 2, i), ret))
        else:
            # An unknown op is a candidate exactly while the first unlinearized return is at or after its
            # call.  Sliding its call entry to just before the first return at/after its call time keeps
            # that relation for every return entry, but makes the search try completed ops first: an
            # unknown write is always "legal", so trying it first would mostly spawn doomed branches.
            j = bisect.bisect_left(known_rets, op.call)
            slot = known_rets[j] if j < len(known_rets) else math.inf
            call = _Entry(i, op.input, UNKNOWN)
            ret = _Entry(i)
            keyed.append(((slot, 1, i), call))
            keyed.append(((math.inf, 3, i), ret))
        call.match = ret
    keyed.sort(key=lambda ke: ke[0])

    head = _Entry(-1)
    prev = head
    for _, e in keyed:
        prev.next = e
        e.prev = prev
        prev = e

    bits = [1 << i for i in range(n)]
    known = [op.ret is not None for op in ops]
    # Symmetry breaking: unknown ops with equal inputs are interchangeable once both have been called, so
    # any linearization can be rewritten to use them in call order.  twin[i] is the bit of the previous
    # unknown op with the same input, which must already be linearized before op i may be.
    twin = [0] * n
    last_with_input: dict[Any, int] = {}
    for i, op in enumerate(ops):  # ops are sorted by call time
        if op.ret is None:
            try:
                prev_i = last_with_input.get(op.input)
                last_with_input[op.input] = i
            except TypeError:  # unhashable input: just forgo the optimisation
                continue
            if prev_i is not None:
                twin[i] = bits[prev_i]
    remaining = sum(known)
    step = model.step
    state = model.init()
    # The linearized set is kept as two bitsets, completed ops and unknown ops, because unknown ops give a
    # dominance rule stronger than plain equality: a configuration with the same completed ops and state
    # but a *subset* of the unknown ops can do everything the bigger one can (pending unknown ops block
    # nothing and may be skipped forever).  Without it every subset of pending unknown writes is a distinct
    # cache key and failing searches blow up exponentially in the number of timeouts.
    lin_known = 0
    lin_unknown = 0
    # failed[(lin_known, state)] = unknown-op sets of configurations whose search finished without
    # success, kept as an antichain (no member is a superset of another).  Configurations are recorded when
    # their search *finishes*, not when entered: pruning against a configuration still on the stack would
    # be unsound with dominance (an ancestor can be dominated-equal to a descendant reached by unknown ops
    # that leave the state unchanged).
    failed: dict[tuple[int, Hashable], list[int]] = {}
    # The stack is a cons list of (entry, state before it, parent, depth) so that remembering the deepest
    # partial linearization for the error report costs O(1) instead of a copy.
    top: tuple | None = None
    depth = 0
    best: tuple | None = None
    best_depth = -1
    steps = 0
    limit = max_steps if max_steps is not None else -1

    entry = head.next
    while remaining:
        match = entry.match
        if match is not None:
            eid = entry.id
            is_known = known[eid]
            if not is_known and lin_unknown & twin[eid] != twin[eid]:
                entry = entry.next
                continue
            if steps == limit:
                return _TIMEOUT, steps, _unwind(best, ops)
            steps += 1
            legal, new_state = step(state, entry.input, entry.output)
            # An unknown op that leaves the state unchanged only uses itself up; the configuration without
            # it (the current one) dominates, so that branch is skipped.
            if legal and (is_known or new_state != state):
                bit = bits[eid]
                if is_known:
                    new_known, new_unknown = lin_known | bit, lin_unknown
                else:
                    new_known, new_unknown = lin_known, lin_unknown | bit
                dead = failed.get((new_known, new_state))
                if dead is None or all(u & ~new_unknown for u in dead):
                    depth += 1
                    top = (entry, state, top, depth)
                    if depth > best_depth:
                        best, best_depth = top, depth
                    state = new_state
                    lin_known, lin_unknown = new_known, new_unknown
                    if is_known:
                        remaining -= 1
                    # lift: unlink the call and its return entry
                    entry.prev.next = entry.next
                    entry.next.prev = entry.prev
                    match.prev.next = match.next
                    if match.next is not None:
                        match.next.prev = match.prev
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return entry: its operation had to be linearized by now, so this configuration is dead.
            if top is None:
                return _FAIL, steps, _unwind(best, ops)
            key = (lin_known, state)
            dead = failed.get(key)
            if dead is None:
                failed[key] = [lin_unknown]
            else:
                # Every recorded set fails the subset test (else we would not be here); drop the supersets.
                dead[:] = [u for u in dead if lin_unknown & ~u]
                dead.append(lin_unknown)
            entry, state, top, depth = top[0], top[1], top[2], top[3] - 1
            bit = bits[entry.id]
            if known[entry.id]:
                lin_known &= ~bit
                remaining += 1
            else:
                lin_unknown &= ~bit
            # unlift in reverse order of lift
            match = entry.match
            match.prev.next = match
            if match.next is not None:
                match.next.prev = match
            entry.prev.next = entry
            entry.next.prev = entry
            entry = entry.next
    return _OK, steps, None


def _unwind(frame: tuple | None, ops: list[Operation]) -> list[Operation]:
    out: list[Operation] = []
    while frame is not None:
        out.append(ops[frame[0].id])
        frame = frame[2]
    out.reverse()
    return out


def check(history: Sequence[Operation], model: Model, *, max_steps: int | None = None) -> CheckResult:
    """Decide whether `history` is linearizable with respect to `model`.

    Partitions (if the model has a `partition` function) are checked smallest first and the check stops
    at the first partition proven non-linearizable, which is therefore the smallest failing one.
    `max_steps` bounds the model steps spent on *each* partition; a partition that exhausts it is reported
    with ``timed_out=True`` and ``ok=False`` unless another partition definitely fails.

    Raises ValueError if an operation returns before it is called.
    """
    ops: list[Operation] = []
    for op in history:
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"operation returns before it is called: {op}")
        if op.ret is None and model.read_only is not None and model.read_only(op.input):
            continue
        ops.append(op)
    parts = model.partition(ops) if model.partition is not None else ([ops] if ops else [])
    parts = [p for p in parts if p]
    explored = 0
    timed_out: tuple[list[Operation], list[Operation] | None] | None = None
    for part in sorted(parts, key=len):
        part = sorted(part, key=lambda op: op.call)
        verdict, steps, partial = _check_partition(part, model, max_steps)
        explored += steps
        if verdict == _FAIL:
            return CheckResult(False, len(parts), explored, part, False, partial, model)
        if verdict == _TIMEOUT and timed_out is None:
            timed_out = (part, partial)
    if timed_out is not None:
        return CheckResult(False, len(parts), explored, timed_out[0], True, timed_out[1], model)
    return CheckResult(True, len(parts), explored, None, False, None, model)


def nondeterministic_model(
    init: Callable[[], Iterable[Hashable]],
    step: Callable[[Hashable, Any, Any], Iterable[Hashable]],
    *,
    partition: Callable[[list[Operation]], list[list[Operation]]] | None = None,
    describe: Callable[[Any, Any], str] = _default_describe,
    read_only: Callable[[Any], bool] | None = None,
    label: Callable[[list[Operation]], str] | None = None,
) -> Model:
    """Build a `Model` for an object whose response is not a function of its state and input.

    Example: "book any free seat" may hand out any free seat, and when the outcome is `UNKNOWN` the state
    afterwards is not determined.  `init()` returns the possible initial states, ``step(state, input,
    output)`` the possible next states in which `output` is a legal answer (empty = illegal; for `UNKNOWN`
    every possible outcome).  The resulting model's state is the frozenset of possible states (the power-set
    construction, as in Porcupine's NondeterministicModel).
    """

    def init_set() -> frozenset:
        return frozenset(init())

    def step_set(states: frozenset, input: Any, output: Any) -> tuple[bool, frozenset]:
        nxt = frozenset(s2 for s in states for s2 in step(s, input, output))
        return bool(nxt), nxt

    return Model(init_set, step_set, partition, describe, read_only, label)


# ---------------------------------------------------------------------------------------------------------
# Key-value register model
# ---------------------------------------------------------------------------------------------------------
#
# Inputs: ("put", k, v) -> None;  ("get", k) -> value, None if absent;  ("cas", k, old, new) -> bool.
# An absent key and a key holding None are the same thing (get answers None, cas(k, None, x) succeeds).
# The state is a frozenset of (key, value) pairs so that it stays correct and canonical even when the
# model is used without partitioning; after partitioning by key it holds at most one pair.


def _kv_get(state: frozenset, key: Any) -> Any:
    for k, v in state:
        if k == key:
            return v
    return None


def _kv_set(state: frozenset, key: Any, value: Any) -> frozenset:
    rest = [(k, v) for k, v in state if k != key]
    if value is not None:
        rest.append((key, value))
    return frozenset(rest)


def _kv_step(state: frozenset, input: Any, output: Any) -> tuple[bool, frozenset]:
    kind, key = input[0], input[1]
    if kind == "get":
        return (output is UNKNOWN or output == _kv_get(state, key)), state
    if kind == "put":
        return (output is UNKNOWN or output is None), _kv_set(state, key, input[2])
    if kind == "cas":
        swapped = _kv_get(state, key) == input[2]
        # isinstance guard: 1 == True in Python, but a cas answering 1 is a protocol bug, not a success
        legal = output is UNKNOWN or (isinstance(output, bool) and output == swapped)
        return legal, (_kv_set(state, key, input[3]) if swapped else state)
    raise ValueError(f"unknown KV operation {input!r}")


def _kv_partition(ops: list[Operation]) -> list[list[Operation]]:
    by_key: dict[Any, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.input[1], []).append(op)
    return list(by_key.values())


def _kv_describe(input: Any, output: Any) -> str:
    args = ", ".join(repr(a) for a in input[1:])
    text = f"{input[0]}({args})"
    if input[0] == "put" and output is None:
        return text
    return f"{text} -> {output!r}"


KV_MODEL = Model(
    init=frozenset,
    step=_kv_step,
    partition=_kv_partition,
    describe=_kv_describe,
    read_only=lambda input: input[0] == "get",
    label=lambda ops: f"key {ops[0].input[1]!r}",
)
"""A register per key; see the comment above `_kv_get` for the inputs and outputs."""
