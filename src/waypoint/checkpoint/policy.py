"""When to save (triggers) and what to keep (retention pools). Pure functions, no I/O.

Retention is a union of independent pools (Orbax-style composable policies): a checkpoint survives if
any pool keeps it. Whatever the pools say, the newest valid checkpoint and every protected checkpoint
(e.g. the one a run resumed from) are kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    """What retention needs to know about one checkpoint."""

    name: str
    step: int
    epoch: int | None = None
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    valid: bool = True


class Pool(Protocol):
    """A retention pool: names the checkpoints it keeps."""

    def keep(self, candidates: Sequence[Candidate]) -> set[str]:
        """The names of the candidates this pool keeps."""


def _newest_first(candidates: Sequence[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.step, c.name), reverse=True)


@dataclass(frozen=True)
class KeepLast:
    """Keep the ``k`` newest checkpoints."""

    k: int

    def keep(self, candidates: Sequence[Candidate]) -> set[str]:
        return {c.name for c in _newest_first(candidates)[: max(self.k, 0)]}


def metric_value(c: Candidate, metric: str) -> float | None:
    """A candidate's finite value of ``metric``, or None."""
    v = c.metrics.get(metric)
    return float(v) if v is not None and math.isfinite(float(v)) else None


#: checkpoints saved because something went wrong or the run was stopped: they are never ``best``
NEVER_BEST = frozenset({"emergency", "preempt"})


def is_improvement(value: float | None, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``best`` in ``mode`` ('max' or 'min'); a first finite value always does."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


@dataclass(frozen=True)
class KeepBest:
    """Keep the ``k`` best checkpoints by a monitored metric.

    Only checkpoints that carry the metric compete (it is recorded only at the step validation ran), never
    ``emergency`` or ``preempt`` saves; on a tie the earlier checkpoint wins.
    """

    k: int
    metric: str
    mode: str = "max"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"KeepBest mode must be 'max' or 'min', not {self.mode!r}")

    def ranked(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """Candidates with a finite metric that may be best, best first (ties: earlier first)."""
        scored = [c for c in candidates if c.valid and not (c.tags & NEVER_BEST) and metric_value(c, self.metric) is not None]
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(scored, key=lambda c: (sign * metric_value(c, self.metric), c.step, c.name))  # type: ignore[operator]

    def keep(self, candidates: Sequence[Candidate]) -> set[str]:
        return {c.name for c in self.ranked(candidates)[: max(self.k, 0)]}


def milestone_steps(fractions: Sequence[float], total_steps: int, steps: Sequence[int] = ()) -> frozenset[int]:
    """Absolute milestone steps: ``steps`` plus each fraction of the planned run, rounded, at least 1."""
    out = {int(s) for s in steps}
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"milestone fraction {f} must be in (0, 1]")
        out.add(max(1, round(f * total_steps)))
    return frozenset(out)


@dataclass(frozen=True)
class KeepMilestones:
    """Keep checkpoints at milestones permanently: absolute steps or epochs, fractions of the planned run
    (``fractions=(0.25, 0.5, 0.75, 1.0)`` with ``total_steps``), and any checkpoint tagged ``milestone``."""

    steps: frozenset[int] = frozenset()
    epochs: frozenset[int] = frozenset()
    fractions: frozenset[float] = frozenset()
    total_steps: int | None = None

    def all_steps(self) -> frozenset[int]:
        """Absolute milestone steps, fractions resolved against ``total_steps``."""
        if self.fractions and not self.total_steps:
            raise ValueError("KeepMilestones with fractions needs total_steps (the planned run length)")
        return milestone_steps(sorted(self.fractions), self.total_steps or 0, sorted(self.steps))

    def keep(self, candidates: Sequence[Candidate]) -> set[str]:
        steps = self.all_steps()
        return {
            c.name
            for c in candidates
            if c.step in steps or (c.epoch is not None and c.epoch in self.epochs) or "milestone" in c.tags
        }


@dataclass(frozen=True)
class KeepEveryN:
    """Keep every checkpoint whose step is a multiple of ``n`` permanently."""

    n: int

    def keep(self, candidates: Sequence[Candidate]) -> set[str]:
        return {c.name for c in candidates if self.n > 0 and c.step % self.n == 0}


@dataclass(frozen=True)
class KeepTagged:
    """Keep checkpoints carrying any of these tags (``pinned`` by default)."""

    tags: frozenset[str] = frozenset({"pinned"})

    def keep(self, candidates: Sequence[Candidate]) -> set[str]:
        return {c.name for c in candidates if c.tags & self.tags}


def evolution_steps(count: int, total_steps: int) -> tuple[int, ...]:
    """``count`` target steps spread evenly over a run of ``total_steps``: the first is 0, the last the end."""
    if count <= 0 or total_steps <= 0:
        return ()
    if count == 1:
        return (total_steps,)
    return tuple(sorted({round(i * total_steps / (count - 1)) for i in range(count)}))


@dataclass(frozen=True)
class KeepEvolution:
    """Keep about ``count`` snapshots spread over the planned run (``total_steps``), for parameter-evolution reports.

    For each evenly spaced target step (``evolution_steps``) the first valid checkpoint at or after it is kept, never
    an emergency save. Later checkpoints never displace a choice, so retention after every save keeps exactly what
    a choice over the whole history would.
    """

    count: int
    total_steps: int

    #: the label reports and tools give the checkpoints this pool keeps
    label = "evolution"

    def keep(self, candidates: Sequence[Candidate]) -> set[str]:
        """The first eligible checkpoint at or after each target step."""
        eligible = sorted((c for c in candidates if c.valid and "emergency" not in c.tags), key=lambda c: (c.step, c.name))
        out = set()
        for target in evolution_steps(self.count, self.total_steps):
            first = next((c for c in eligible if c.step >= target), None)
            if first is not None:
                out.add(first.name)
        return out


@dataclass(frozen=True)
class RetentionPolicy:
    """A union of pools. With no pools at all, everything is kept."""

    pools: tuple[Pool, ...] = ()

    def select(self, candidates: Sequence[Candidate], protect: frozenset[str] = frozenset()) -> set[str]:
        """Names to keep: any pool's choice, pinned, protected, and the newest valid checkpoint."""
        if not self.pools:
            return {c.name for c in candidates}
        keep = set(KeepTagged().keep(candidates))
        for pool in self.pools:
            keep |= pool.keep(candidates)
        keep |= {c.name for c in candidates if c.name in protect}
        newest_valid = next((c for c in _newest_first(candidates) if c.valid), None)
        if newest_valid is not None:
            keep.add(newest_valid.name)
        return keep

    def without(self, kinds: Iterable[str]) -> RetentionPolicy:
        """This policy less its ``milestones`` pools (milestones, every N steps) or ``evolution`` snapshots."""
        gone = tuple(t for k in kinds for t in {"milestones": (KeepMilestones, KeepEveryN), "evolution": (KeepEvolution,)}[k])
        return RetentionPolicy(tuple(p for p in self.pools if not isinstance(p, gone)))

    def permanent(self) -> tuple[Pool, ...]:
        """The pools that keep checkpoints for good: milestones, every N steps, evolution snapshots, tags."""
        return tuple(p for p in self.pools if isinstance(p, (KeepMilestones, KeepEveryN, KeepEvolution, KeepTagged)))

    def evolution(self, candidates: Sequence[Candidate]) -> set[str]:
        """The evolution snapshots among ``candidates`` (what this policy's ``KeepEvolution`` pools keep)."""
        return {n for pool in self.pools if isinstance(pool, KeepEvolution) for n in pool.keep(candidates)}

    def to_delete(self, candidates: Sequence[Candidate], protect: frozenset[str] = frozenset()) -> list[str]:
        """Names retention removes, oldest first."""
        keep = self.select(candidates, protect)
        return [c.name for c in sorted(candidates, key=lambda c: (c.step, c.name)) if c.name not in keep]


# ---------------------------------------------------------------------------------------------- triggers
@dataclass(frozen=True)
class TriggerState:
    """What triggers remember between steps: the last save and the best monitored value so far."""

    last_save_step: int = 0
    last_save_time: float = 0.0
    best_value: float | None = None


@dataclass(frozen=True)
class SaveTriggers:
    """When to save. ``due`` is pure: given where the run is, it names the reasons to save now."""

    every_n_steps: int | None = None
    every_n_epochs: int | None = None
    every_n_minutes: float | None = None
    on_improvement: bool = False
    at_end: bool = True
    milestone_fractions: tuple[float, ...] = ()
    milestone_steps: tuple[int, ...] = ()

    def milestones(self, total_steps: int) -> frozenset[int]:
        """Absolute milestone steps of a run of ``total_steps``."""
        return milestone_steps(self.milestone_fractions, total_steps, self.milestone_steps)

    def due(
        self,
        state: TriggerState,
        *,
        step: int,
        total_steps: int,
        now: float,
        epoch_end: bool = False,
        epochs_done: int = 0,
        is_end: bool = False,
        monitored: float | None = None,
        mode: str = "max",
    ) -> tuple[str, ...]:
        """Reasons to save after ``step`` completed optimizer steps (empty when none)."""
        reasons = []
        if self.every_n_steps and step % self.every_n_steps == 0:
            reasons.append("every_n_steps")
        if self.every_n_epochs and epoch_end and epochs_done % self.every_n_epochs == 0:
            reasons.append("every_n_epochs")
        if self.every_n_minutes and now - state.last_save_time >= 60.0 * self.every_n_minutes:
            reasons.append("every_n_minutes")
        if self.on_improvement and is_improvement(monitored, state.best_value, mode):
            reasons.append("improved")
        if step in self.milestones(total_steps):
            reasons.append("milestone")
        if self.at_end and is_end:
            reasons.append("end")
        if step == state.last_save_step and step > 0 and not is_end and "improved" not in reasons:
            return ()
        return tuple(reasons)

    @staticmethod
    def after_save(state: TriggerState, *, step: int, now: float) -> TriggerState:
        """The trigger state after a save at ``step``."""
        return TriggerState(step, now, state.best_value)

    @staticmethod
    def after_validation(state: TriggerState, monitored: float | None, mode: str) -> TriggerState:
        """The trigger state after a validation produced ``monitored``."""
        if is_improvement(monitored, state.best_value, mode):
            return TriggerState(state.last_save_step, state.last_save_time, monitored)
        return state


# ---------------------------------------------------------------------------------------------- persistence
_POOLS = {cls.__name__: cls for cls in (KeepLast, KeepBest, KeepMilestones, KeepEveryN, KeepTagged, KeepEvolution)}


def policy_to_json(policy: RetentionPolicy) -> list[dict]:
    """A JSON description of a policy's pools (recorded in manifests so tools can re-apply it)."""
    out = []
    for pool in policy.pools:
        fields = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in pool.__dict__.items()}
        out.append({"pool": type(pool).__name__, **fields})
    return out


def policy_from_json(doc: list[dict]) -> RetentionPolicy:
    """The policy ``policy_to_json`` described."""
    pools = []
    for entry in doc:
        entry = dict(entry)
        cls = _POOLS[entry.pop("pool")]
        pools.append(cls(**{k: frozenset(v) if isinstance(v, list) else v for k, v in entry.items()}))
    return RetentionPolicy(tuple(pools))
