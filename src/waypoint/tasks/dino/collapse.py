"""Collapse detection for DINO: the teacher's output entropy pinned at ln(K) (uniform) or near 0 (one prototype).

DINO's two failure modes show in the entropy of the teacher's centred, sharpened distribution over the K
prototypes: ``ln K`` means every image gets the same uniform target (centring won, the student can only
learn a constant), ``0`` means every image goes to one prototype (sharpening won). The detector is pure
logic over one entropy value per step; the task owns it, logs its warnings and saves its counters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass
class CollapseDetector:
    """Counts consecutive collapsed steps and reports once per streak reaching ``patience`` (0: off): entropy
    >= (1 - tolerance) ln K is uniform collapse, <= tolerance ln K one-prototype collapse."""

    n_prototypes: int
    patience: int
    tolerance: float = 0.01
    kind: str = ""  # regime of the current streak: "uniform", "one-prototype" or ""
    streak: int = 0  # consecutive steps in that regime
    reported: bool = False  # whether this streak was reported already

    def __post_init__(self) -> None:
        if self.n_prototypes < 2:
            raise ValueError(f"collapse detection needs at least 2 prototypes, got {self.n_prototypes}")
        if self.patience < 0:
            raise ValueError(f"model.collapse_patience must be >= 0 steps, got {self.patience}")
        if not 0.0 < self.tolerance < 0.5:
            raise ValueError(f"model.collapse_tolerance must be a fraction of ln(K) in (0, 0.5), got {self.tolerance}")

    @property
    def max_entropy(self) -> float:
        """ln K, the entropy of the uniform distribution over the prototypes."""
        return math.log(self.n_prototypes)

    def regime(self, entropy: float) -> str:
        """``"uniform"``, ``"one-prototype"`` or ``""`` (healthy) for one entropy value."""
        if entropy >= (1.0 - self.tolerance) * self.max_entropy:
            return "uniform"
        if entropy <= self.tolerance * self.max_entropy:
            return "one-prototype"
        return ""

    @property
    def collapsed(self) -> bool:
        """Whether the current streak has lasted ``patience`` steps (the run is collapsed now)."""
        return bool(self.patience and self.kind and self.streak >= self.patience)

    def update(self, entropy: float, step: int) -> Optional[str]:
        """Feed the entropy of step ``step``; a warning sentence when a streak first reaches ``patience``."""
        if not self.patience:
            return None
        kind = self.regime(entropy)
        if kind != self.kind:
            self.kind, self.streak, self.reported = kind, 0, False
        if not kind:
            return None
        self.streak += 1
        if self.streak < self.patience or self.reported:
            return None
        self.reported = True
        if kind == "uniform":
            what = (
                f"within {self.tolerance:.0%} of ln({self.n_prototypes}) = {self.max_entropy:.4f}: "
                "every image gets the same uniform target"
            )
        else:
            what = f"below {self.tolerance * self.max_entropy:.3g}: every image goes to one prototype"
        return (
            f"DINO collapse ({kind}) at step {step}: the teacher's entropy has been {what} for {self.streak} steps "
            f"(now {entropy:.4f}); the features will not improve"
        )

    def state(self) -> list[int]:
        """Counters to save with the task, so that a resumed run reports exactly as an uninterrupted one."""
        return [("", "uniform", "one-prototype").index(self.kind), self.streak, int(self.reported)]

    def load(self, state: list[int]) -> None:
        kind, streak, reported = (int(v) for v in state)
        self.kind, self.streak, self.reported = ("", "uniform", "one-prototype")[kind], streak, bool(reported)
