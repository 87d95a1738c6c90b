"""Which checkpoint a run resumes from, and whether it may: the resume policy of ``train.py``.

``resume=auto`` takes the run's newest checkpoint that verifies (past damaged ones, preferring a full checkpoint
over a newer weights-only one, never ``emergency`` or ``imported`` unless named); ``never`` refuses a run with
checkpoints; ``SELECTOR`` picks one of the run's own, ``RUN_DIR[@SELECTOR]`` another run's (read-only). Another
model/data/seed config is refused with a diff unless ``resume.allow_config_change``; another world size unless
``resume.allow_world_size_change`` (per-rank RNG streams cannot be mapped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waypoint.checkpoint import CheckpointInfo, CheckpointManager
from waypoint.checkpoint.refs import open_ref
from waypoint.config import ConfigError
from waypoint.training.rundir import ConfigChangedError, config_diff

log = logging.getLogger(__name__)

#: the stored tag of a checkpoint saved with ``checkpoint.save_optimizer=false``
WEIGHTS_ONLY = "weights_only"


@dataclass(frozen=True)
class ResumeRules:
    """What ``resume.*`` allows, and what the resumed checkpoint must agree with."""

    mode: str  # auto | never | a selector | RUN_DIR[@SELECTOR]
    config: dict  # this run's resolved config
    allow_config_change: bool = False
    world_size: int = 1
    allow_world_size_change: bool = False


@dataclass
class Source:
    """Where a run resumes from: a store (the run's own, or another run's opened read-only) and a selector."""

    manager: CheckpointManager
    selector: str
    own: bool

    def close(self) -> None:
        if not self.own:
            self.manager.close()


def source(manager: CheckpointManager, rules: ResumeRules, quiet: bool = False) -> Source | None:
    """Which store and selector to resume from, or None for a fresh start (``resume=never`` with checkpoints: refused)."""
    has_any = bool(manager.list())
    mode = rules.mode
    if mode == "never":
        if has_any:
            raise ConfigError(
                f"resume=never but {manager.root} already holds checkpoints; run without resume=never to "
                "continue it, or start fresh elsewhere with hydra.run.dir=<new dir> (or delete that directory)"
            )
        return None
    if mode == "auto":
        if manager.latest() is None:
            if has_any and not quiet:
                log.info(
                    "resume=auto: no resumable checkpoint (only damaged or emergency ones); starting fresh. "
                    "Use resume=tag:emergency to continue from an emergency save."
                )
            return None
        return Source(manager, auto_selector(manager, quiet), own=True)
    if Path(mode.split("@")[0]).exists():
        other, selector = open_ref(mode)
        return Source(other, selector, own=False)
    return Source(manager, mode, own=True)


def auto_selector(manager: CheckpointManager, quiet: bool = False) -> str:
    """``latest``, unless it is weights-only and an older full checkpoint exists: auto prefers an exact resume."""
    latest = manager.latest()
    if latest is None or WEIGHTS_ONLY not in latest.tags or "end" in latest.tags:
        return "latest"
    full = next((i for i in manager.resolve("latest") if WEIGHTS_ONLY not in i.tags), None)
    if full is None:
        return "latest"
    if not quiet:
        log.info(
            "resume=auto: resuming from %s, the newest checkpoint with optimizer state, for an exact resume; the newer "
            "%s holds weights only (resume=latest continues from it instead)",
            full.name,
            latest.name,
        )
    return full.name


def first_sound(src: Source) -> CheckpointInfo | None:
    """The first checkpoint the selector names that verifies (damaged ones are reported when restored)."""
    for info in src.manager.resolve(src.selector):
        if not src.manager.verify_one(info.name, parity=False):  # a missing parity object does not stop a resume
            return info
    return None


def check(src: Source, info: CheckpointInfo, rules: ResumeRules, quiet: bool = False) -> None:
    """Refuse a changed model/data/seed (with a diff) or another world size, unless the rules allow it."""
    manifest = src.manager.manifest(info.name)
    diff = config_diff(manifest.config, rules.config)
    if diff and not rules.allow_config_change:
        raise ConfigChangedError(
            f"the model/data/seed config differs from the one {info.name} was trained with; "
            f"start a new run (another hydra.run.dir) or pass resume.allow_config_change=true:\n{diff}"
        )
    if diff and not quiet:
        log.warning("resuming %s with a changed config (resume.allow_config_change=true):\n%s", info.name, diff)
    _check_world_size(info, int(manifest.meta.get("world_size") or 1), rules, quiet)


def _check_world_size(info: CheckpointInfo, saved: int, rules: ResumeRules, quiet: bool) -> None:
    if saved == rules.world_size:
        return
    if not rules.allow_world_size_change:
        raise ConfigError(
            f"{info.name} was saved by {saved} process(es) and this run has {rules.world_size}: its per-rank RNG "
            f"streams cannot be mapped onto {rules.world_size} ranks; run with --nproc_per_node={saved} (or without "
            "torchrun for 1), or pass resume.allow_world_size_change=true to continue anyway (not an exact resume)"
        )
    if not quiet:
        log.warning(
            "resuming %s, saved by %d process(es), on %d (resume.allow_world_size_change=true): weights, optimizer and "
            "data cursor carry over, ranks without saved RNG streams are seeded afresh; not an exact resume",
            info.name,
            saved,
            rules.world_size,
        )


def finished(root: Path | str, rules: ResumeRules, total_steps: int) -> bool:
    """Look at the run's store read-only, before taking the writer's lease: True when the run is already finished;
    ConfigChangedError (or ConfigError) when the checkpoint it would resume from cannot be resumed."""
    if isinstance(root, Path) and not root.is_dir():
        return False
    with CheckpointManager(root, read_only=True) as peek:
        src = source(peek, rules, quiet=True)
        if src is None:
            return False
        try:
            first = first_sound(src)
            if first is not None:
                check(src, first, rules, quiet=True)  # said once, when the run resumes
        finally:
            src.close()
        if first is None:
            return False
        if src.own and src.selector == "latest" and "end" in first.tags and first.step >= total_steps:
            log.info("already finished: %s is the end of this run (%d steps); nothing to do", first.name, first.step)
            return True
    return False


def choose(src: Source, rules: ResumeRules) -> CheckpointInfo:
    """The checkpoint a multi-process run resumes from (the first the selector names that verifies), checked; every
    rank then loads it."""
    info = first_sound(src)
    if info is None:
        where = src.manager.root
        raise ConfigError(f"no checkpoint that '{src.selector}' names in {where} verifies; choose another with resume=...")
    check(src, info, rules)
    return info


def restore(src: Source, rules: ResumeRules) -> tuple[Any, CheckpointInfo]:
    """The state to resume (damaged checkpoints skipped with a warning, as ``restore`` does), checked."""
    state, info = src.manager.restore_with_info(src.selector)
    check(src, info, rules)
    return state, info


def not_resumable(info: CheckpointInfo | str, exc: Exception) -> ConfigError:
    """The one sentence for a checkpoint whose state does not fit this run."""
    name = info if isinstance(info, str) else info.name
    return ConfigError(
        f"{name} does not hold a state this run can resume ({type(exc).__name__}: {exc}); "
        "choose another checkpoint with resume=... or start a new run"
    )
