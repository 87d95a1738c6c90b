"""The Act view: tag, untag, pin, verify, delete, gc, export, report and copy-paste commands.

Reads take no lock; writes take the writer lock as ``waypoint`` does, and are refused (``ActionRefusedError``,
nothing changed) while a training process holds it. Delete follows ``waypoint rm`` and needs a confirmation.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from waypoint.checkpoint import CheckpointError, CheckpointManager, StoreLockedError
from waypoint.checkpoint.manager import ProtectedCheckpointError
from waypoint.checkpoint.transfer import export_checkpoint

from .catalog import Catalog, check_selector, inside
from .errors import ActionRefusedError
from .runs import overrides_of

log = logging.getLogger(__name__)

_ID = re.compile(r"\b(?:tensor|entry) ((?:b3:)?[0-9a-f]{6,64})\b")  # the store names a tensor by its id (or a prefix)
_PART = re.compile(r"^[A-Za-z0-9_.~/-]{0,512}$")


def _writer(catalog: Catalog, run_id: str) -> CheckpointManager:
    """A writable manager, or ``ActionRefusedError`` when training holds the writer lock."""
    try:
        return catalog.manager(run_id, write=True)
    except StoreLockedError as exc:
        raise ActionRefusedError(f"not changed: {exc}") from None


def _refusing(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ProtectedCheckpointError as exc:  # the manager's sentence ends with the CLI's way round it
        raise ActionRefusedError(f"not deleted: {str(exc).split(';')[0]}; tick 'force' to delete it anyway") from None
    except (CheckpointError, ValueError) as exc:
        raise ActionRefusedError(f"not changed: {exc}") from None


def tag(catalog: Catalog, run_id: str, selector: str, name: str, note: str | None = None) -> str:
    """Add a tag (with an optional note); the message names the checkpoint and its tags now."""
    selector = check_selector(selector)
    with _writer(catalog, run_id) as mgr:
        info = _refusing(lambda: mgr.tag(selector, (name or "").strip(), note=note or None))
    return f"{info.name}: tags [{','.join(info.tags) or '-'}]"


def untag(catalog: Catalog, run_id: str, selector: str, name: str, note: str | None = None) -> str:
    selector = check_selector(selector)
    with _writer(catalog, run_id) as mgr:
        info = _refusing(lambda: mgr.untag(selector, (name or "").strip(), note=note or None))
    return f"{info.name}: tags [{','.join(info.tags) or '-'}]"


def pin(catalog: Catalog, run_id: str, selector: str, note: str | None = None) -> str:
    """Pin a checkpoint (no retention or gc deletes it)."""
    return tag(catalog, run_id, selector, "pinned", note)


def name_damaged_tensors(problems: list[str], tensors: dict[str, Any]) -> list[str]:
    """The state keys whose content ids (or id prefixes) the problem messages mention, in manifest order."""
    mentioned = {m for text in problems for m in _ID.findall(text)}
    return [key for key, entry in tensors.items() if any(entry.id.startswith(m) for m in mentioned)]


def verify(catalog: Catalog, run_id: str, progress: Callable[[float, str], None] | None = None) -> list[dict[str, Any]]:
    """Re-hash every checkpoint of a run (read-only, no lock): per checkpoint ok/damaged, problems, damaged keys."""
    out = []
    with catalog.manager(run_id) as mgr:
        infos = mgr.list()
        for n, info in enumerate(infos):
            if progress:
                progress(n / max(len(infos), 1), f"verifying {info.name}")
            if not info.valid:
                out.append({"name": info.name, "ok": False, "problems": [info.problem or "damaged manifest"], "tensors": []})
                continue
            try:
                problems = mgr.verify_one(info.name)
            except CheckpointError as exc:
                problems = [str(exc)]
            keys: list[str] = []
            if problems:
                try:
                    keys = name_damaged_tensors(problems, mgr.manifest(info.name).tensors)
                except (CheckpointError, OSError):
                    keys = []
            out.append({"name": info.name, "ok": not problems, "problems": problems, "tensors": keys})
    if progress:
        progress(1.0, "done")
    return out


def verify_text(results: list[dict[str, Any]]) -> str:
    """Verification results as lines, damaged tensors named."""
    lines = []
    for r in results:
        if r["ok"]:
            lines.append(f"ok       {r['name']}")
        else:
            named = f" damaged tensors: {', '.join(r['tensors'])}." if r["tensors"] else ""
            lines.append(f"DAMAGED  {r['name']}:{named} {'; '.join(r['problems'])}")
    bad = [r["name"] for r in results if not r["ok"]]
    lines.append(
        f"{len(results) - len(bad)} of {len(results)} checkpoints verify" + (f"; damaged: {', '.join(bad)}" if bad else "")
    )
    return "\n".join(lines)


def delete(
    catalog: Catalog, run_id: str, selector: str, *, confirmed: bool, force: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Delete one checkpoint as ``waypoint rm`` does (``force`` for pinned, best, latest): a preview with ``dry_run``,
    otherwise only when ``confirmed``."""
    selector = check_selector(selector)
    if dry_run:
        with catalog.manager(run_id) as mgr:
            return _refusing(lambda: mgr.delete(selector, force=force, dry_run=True))
    if not confirmed:
        raise ActionRefusedError(f"not deleted: tick the confirmation to delete {selector} of {run_id}")
    with _writer(catalog, run_id) as mgr:
        return _refusing(lambda: mgr.delete(selector, force=force))


def delete_text(report: dict[str, Any]) -> str:
    verb = "would delete" if report.get("dry_run") else "deleted"
    was = f", which is {' and '.join(report['was'])}" if report.get("was") else ""
    freed = "would free at least" if report.get("dry_run") else "freed"
    return f"{verb} {report['deleted']} (step {report['step']}){was}; {freed} {report['freed_bytes'] / 2**20:.3f} MiB"


def gc(
    catalog: Catalog, run_id: str, *, keep_last: int | None = None, dry_run: bool = True, confirmed: bool = False
) -> dict[str, Any]:
    """Retention and pack collection (``waypoint gc``); ``dry_run`` previews it without the lock."""
    if keep_last is not None and keep_last < 0:
        raise ActionRefusedError("keep-last must be 0 or more")
    if dry_run:
        with catalog.manager(run_id) as mgr:
            return _refusing(lambda: mgr.gc(keep_last=keep_last, dry_run=True))
    if not confirmed:
        raise ActionRefusedError(f"nothing collected: tick the confirmation to run gc on {run_id}")
    with _writer(catalog, run_id) as mgr:
        return _refusing(lambda: mgr.gc(keep_last=keep_last, dry_run=False))


def gc_text(report: dict[str, Any]) -> str:
    listed = f"{len(report['deleted'])} checkpoint(s): {', '.join(report['deleted']) or '-'}"
    if report.get("dry_run"):
        return f"would delete {listed}; would free at least {report['freed_bytes'] / 2**20:.3f} MiB"
    return f"deleted {listed}; {len(report['packs_removed'])} pack(s) removed, freed {report['freed_bytes'] / 2**20:.3f} MiB"


def export(
    catalog: Catalog,
    run_id: str,
    selector: str,
    *,
    part: str | None = None,
    fmt: str = "safetensors",
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write one checkpoint (or the part under a key prefix) to a fresh file in a private temporary directory."""
    selector = check_selector(selector)
    part = (part or "").strip() or None
    if part is not None and (not _PART.match(part) or ".." in part):
        raise ActionRefusedError(f"'{part}' is not a key prefix (letters, digits, '_', '.', '-', '/')")
    if fmt not in ("safetensors", "pt"):
        raise ActionRefusedError(f"unknown export format '{fmt}'; use safetensors or pt")
    folder = Path(tempfile.mkdtemp(prefix="waypoint-export-", dir=out_dir))
    with catalog.manager(run_id) as mgr:
        info = _refusing(lambda: mgr.one(selector))
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{run_id.rsplit('/', 1)[-1]}-{info.name}" + (f"-{part}" if part else ""))
        return _refusing(lambda: export_checkpoint(mgr, info.name, folder / f"{stem}.{fmt}", part=part, fmt=fmt))


def report(catalog: Catalog, run_id: str) -> dict[str, Any]:
    """Generate the run's analyze report (``<run>/report/``, as ``analyze.py run=...``); returns paths and summary."""
    from waypoint.analysis.report import build_run_report

    ref = catalog.run(run_id)
    if not ref.has_checkpoints:
        raise ActionRefusedError(f"run '{run_id}' has no checkpoints to report on")
    out = ref.path / "report"
    if out.is_symlink() or (out.exists() and not inside(out, ref.root)):
        raise ActionRefusedError(f"not written: {out} is a symbolic link; the report is written only inside the run")
    return build_run_report(ref.path)


def commands(catalog: Catalog, run_id: str, selector: str) -> str:
    """Copy-paste shell commands to resume this run from a checkpoint, and to evaluate it."""
    selector = check_selector(selector)
    ref = catalog.run(run_id)
    with catalog.manager(run_id) as mgr:
        info = _refusing(lambda: mgr.one(selector))
    steer = ("hydra.run.dir=", "resume=", "resume.", "trainer.eval_only=", "hydra.sweep.", "init_from=")
    overrides = [o for o in overrides_of(ref) if not o.lstrip("+~").startswith(steer)]
    py = "python" if Path(sys.executable).name.startswith("python") else sys.executable
    args = " ".join(shlex.quote(o) for o in overrides)
    resume = f"{py} train.py {args} resume=step:{info.step} {shlex.quote('hydra.run.dir=' + str(ref.path))}".replace("  ", " ")
    evaluate = f"{py} train.py {args} {shlex.quote(f'resume={ref.path}@{info.name}')} trainer.eval_only=true".replace("  ", " ")
    return (
        f"# resume {run_id} from {info.name} (step {info.step}); the run continues in its own directory\n{resume}\n\n"
        f"# evaluate {info.name} only (writes eval.jsonl in an eval run directory of its own)\n{evaluate}\n"
    )
