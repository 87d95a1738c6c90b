"""The ``waypoint`` command: inspect and manage runs and their checkpoints.

A checkpoint reference (REF) is a checkpoint directory (``run/checkpoints/step_000000120``), a run directory
(meaning its latest checkpoint) or ``RUN_DIR@SELECTOR`` with a selector ``latest``, ``best``, ``step:N``,
``tag:NAME`` or a checkpoint name. Exit codes: ``waypoint.errors`` (141: the reader of the output went away).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from waypoint.checkpoint import CheckpointManager, refs
from waypoint.checkpoint.storage import backend_for, is_url
from waypoint.errors import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_OK, EXIT_USAGE, UserError, WaypointError
from waypoint.units import human_bytes

parse_ref = refs.parse_ref


class UsageError(UserError):
    """A bad argument or path; exit code 2."""


def count(text: str) -> int:
    """An argparse type: an integer >= 0 (argparse turns the error into a usage error naming the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def checkpoints_root(run_dir: str) -> Path | str:
    """The ``checkpoints/`` root of a run dir (a checkpoints dir itself is accepted too)."""
    try:
        return refs.checkpoints_root(run_dir)
    except refs.BadReferenceError as exc:
        raise UsageError(str(exc)) from None


def open_store(run_dir: str, *, write: bool = False) -> CheckpointManager:
    """A manager over a run dir: read-only (no lock, nothing written) unless ``write``."""
    return CheckpointManager(checkpoints_root(run_dir), read_only=not write)


def stores(location: str) -> list[Path | str]:
    """The checkpoints roots a location holds: its own, or (a ``checkpoint.root`` of many runs) every one beneath
    it; a location with none is refused in one sentence (never a success over nothing)."""
    try:
        root = refs.checkpoints_root(location)
    except refs.BadReferenceError as exc:
        if not refs.is_url(location) and not Path(location).exists():
            raise UsageError(str(exc)) from None
        root = None
    if root is not None and (refs.is_url(root) or Path(root).is_dir()):
        with CheckpointManager(root, read_only=True) as mgr:  # an unreachable or missing bucket: one sentence, exit 2
            if mgr.list():
                return [root]
    beneath = refs.stores_beneath(location) if refs.is_url(location) or Path(location).is_dir() else []
    if beneath:
        return beneath
    raise UsageError(f"{location} holds no checkpoints (no run's checkpoints/ there or below it)")


def _short(value: Any, width: int = 80) -> str:
    """``repr`` cut to ``width`` characters (the JSON output keeps the whole value)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _metrics_text(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def _when(t: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(fmt, time.localtime(t))


def _emit(args: argparse.Namespace, doc: Any, text: Callable[[], None] | str) -> int:
    """Print ``doc`` as JSON with ``--json``, else the text; exit code 0."""
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=1, default=str))
    elif callable(text):
        text()
    else:
        print(text)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- reading


def cmd_ls(args: argparse.Namespace) -> int:
    """List checkpoints: name, step, epoch, tags, metrics, digest, size, time, validity."""
    listed = {}
    for root in stores(args.run_dir):
        with CheckpointManager(root, read_only=True) as mgr:
            listed[str(root)] = mgr.list()

    def text() -> None:
        print(f"{'name':<18} {'step':>8} {'epoch':>5}  {'size':>9}  {'created':<19}  {'digest':<12}  tags / metrics")
        for root, infos in listed.items():
            if len(listed) > 1:
                print(f"{root}:")
            for i in infos:
                status = "" if i.valid else f"  DAMAGED: {i.problem}"
                print(
                    f"{i.name:<18} {i.step:>8} {'-' if i.epoch is None else i.epoch:>5}  {human_bytes(i.logical_bytes):>9}  "
                    f"{_when(i.created_at):<19}  {i.digest[:12]:<12}  [{','.join(i.all_tags) or '-'}] "
                    f"{_metrics_text(i.metrics)}{status}"
                )

    docs = {root: [i.to_json() for i in infos] for root, infos in listed.items()}
    return _emit(args, next(iter(docs.values())) if len(docs) == 1 else docs, text)


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-hash every committed checkpoint (of every run beneath a ``checkpoint.root``); exit 1 naming each damaged one."""
    roots = stores(args.run_dir)
    if args.repair:
        return _repair(args, roots)
    report: dict[str, list[str]] = {}
    for root in roots:
        with CheckpointManager(root, read_only=True) as mgr:
            found = mgr.verify()
        report.update({(f"{root}/{n}" if len(roots) > 1 else n): p for n, p in found.items()})
    bad = {name: problems for name, problems in report.items() if problems}

    def text() -> None:
        for name, problems in report.items():
            print(f"{'ok      ' if not problems else 'DAMAGED '} {name}" + (f": {'; '.join(problems)}" if problems else ""))
        where = f" in {len(roots)} runs" if len(roots) > 1 else ""
        damaged = f"; damaged: {', '.join(bad)}" if bad else ""
        print(f"{len(report) - len(bad)} of {len(report)} checkpoints verify{where}{damaged}")

    _emit(args, {"ok": not bad, "checked": len(report), "damaged": bad}, text)
    return EXIT_FAILED if bad else EXIT_OK


def _repair(args: argparse.Namespace, roots: list[Path | str]) -> int:
    """``verify --repair``: per checkpoint ok, repaired (saying how) or damaged (naming what is left); exit 1 if any
    stays damaged."""
    backup = args.backup or refs.saved_checkpoint_config(args.run_dir).get("backup_to")
    outcomes = {}
    for root in roots:
        with CheckpointManager(root, backup=str(refs.backup_root(backup)) if backup else None) as mgr:
            found = mgr.repair(add_parity=args.add_parity)
        outcomes.update({(f"{root}/{n}" if len(roots) > 1 else n): o for n, o in found.items()})
    damaged = [n for n, o in outcomes.items() if o.status == "damaged"]

    def text() -> None:
        for name, o in outcomes.items():
            print(f"{o.status:<9} {name}" + "".join(f"\n  {line}" for line in (*o.done, *o.problems)))
        counts = {s: sum(o.status == s for o in outcomes.values()) for s in ("ok", "repaired", "damaged")}
        print(", ".join(f"{n} {s}" for s, n in counts.items()) + (f"; still damaged: {', '.join(damaged)}" if damaged else ""))

    _emit(args, {n: o.to_json() for n, o in outcomes.items()}, text)
    return EXIT_FAILED if damaged else EXIT_OK


def cmd_du(args: argparse.Namespace) -> int:
    """Logical bytes (what plain saves would write) vs physical bytes on disk."""
    with open_store(args.run_dir) as mgr:
        infos = [i for i in mgr.list() if i.valid]
        logical, physical, parity = sum(i.logical_bytes for i in infos), mgr.physical_bytes(), mgr.parity_bytes()
    ratio = round(physical / logical, 4) if logical else None
    doc = {"checkpoints": len(infos), "logical_bytes": logical, "physical_bytes": physical, "parity_bytes": parity}
    return _emit(
        args,
        {**doc, "ratio": ratio},
        f"{len(infos)} checkpoints: logical {human_bytes(logical)}, physical {human_bytes(physical)}"
        + (f" ({ratio:.2f}x of logical)" if logical else "")
        + (f", of which parity {human_bytes(parity)}" if parity else ""),
    )


def tensor_table(mgr: CheckpointManager, name: str) -> list[dict[str, Any]]:
    """Each tensor of a checkpoint: name, shape, dtype, bytes and whether it changed since the checkpoint before it
    (``changed``, ``same``, ``new``; ``-`` for the first), from the manifests' content ids (no tensor is read)."""
    tensors = mgr.manifest(name).tensors
    valid = [i.name for i in mgr.list() if i.valid]
    before = mgr.manifest(valid[valid.index(name) - 1]).tensors if valid.index(name) > 0 else None
    return [
        {
            "name": key,
            "shape": list(t.shape),
            "dtype": t.dtype,
            "bytes": t.nbytes,
            "changed": "-" if before is None else "new" if key not in before else "same" if before[key].id == t.id else "changed",
        }
        for key, t in tensors.items()
    ]


def rack_of(tree: Any) -> list[dict[str, Any]] | None:
    """A Stack-Wise checkpoint's rack (one row per stack: blocks, precision, dtype, frozen, adapters), else None."""
    meta = tree.get("task", {}).get("rack", {}).get("meta") if isinstance(tree, dict) else None
    return list(meta["stacks"]) if isinstance(meta, dict) and isinstance(meta.get("stacks"), list) else None


def _show_text(info: Any, doc: dict[str, Any]) -> None:
    print(f"{info.name}  step {info.step}  epoch {info.epoch}  tags [{','.join(info.all_tags) or '-'}]")
    print(f"  created   {_when(info.created_at)}  digest {info.digest}")
    print(f"  metrics   {_metrics_text(info.metrics) or '-'}")
    print(f"  size      {human_bytes(info.logical_bytes)} logical in {doc['tensors']} tensors, {len(doc['packs'])} pack(s)")
    print(f"  config    {doc['config_hash'] or '-'}  git {doc['git_commit'] or '-'}  versions {doc['versions']}")
    for n in doc["notes"]:
        print(f"  note      {_when(n['at'], '%Y-%m-%d %H:%M')} {n['note']}")
    for i, s in enumerate(doc.get("rack") or ()):
        adapters = f"LoRA rank {s['lora_rank']} alpha {s['lora_alpha']}" if s.get("lora_rank") else "no adapters"
        state = "frozen" if s.get("frozen") else "trainable"
        print(f"  stack {i}   {s['n_blocks']} blocks, {s['precision']} ({s['dtype']}), {state}, {adapters}, {s.get('source')}")
    if doc.get("tensor_table"):
        print(f"  {'tensor':<56} {'shape':<18} {'dtype':<9} {'bytes':>10}  changed")
        for t in doc["tensor_table"]:
            shape = "x".join(map(str, t["shape"])) or "scalar"
            print(f"  {t['name']:<56} {shape:<18} {t['dtype']:<9} {human_bytes(t['bytes']):>10}  {t['changed']}")


def cmd_show(args: argparse.Namespace) -> int:
    """One checkpoint: step, metrics, tags, notes, sizes, versions, a Stack-Wise rack; --tensors adds every tensor."""
    run, selector = parse_ref(args.ref)
    with open_store(run) as mgr:
        wanted = mgr.one(selector).name  # NoCheckpointError (one sentence) on an empty store
        info = next(i for i in mgr.list() if i.name == wanted)
        manifest = mgr.manifest(wanted)
        doc = {
            **info.to_json(),
            "path": str(info.path),
            "config_hash": manifest.config_hash,
            "git_commit": manifest.git_commit,
            "versions": manifest.versions,
            "meta": manifest.meta,
            "notes": list(manifest.notes),
            "tensors": len(manifest.tensors),
            "packs": sorted(manifest.packs),
            "packs_bytes": sum(manifest.packs.values()),
            "rack": rack_of(mgr.tree(wanted)),
        }
        if args.tensors:
            doc["tensor_table"] = tensor_table(mgr, wanted)
    return _emit(args, doc, lambda: _show_text(info, doc))


def cmd_diff(args: argparse.Namespace) -> int:
    """Per-tensor changes, added/removed keys and JSON-state differences between two checkpoints."""
    from waypoint.analysis.compare import diff_checkpoints

    (run_a, sel_a), (run_b, sel_b) = parse_ref(args.a), parse_ref(args.b)
    with open_store(run_a) as mgr_a, open_store(run_b) as mgr_b:
        doc = diff_checkpoints(mgr_a, sel_a, mgr_b, sel_b)

    def text() -> None:
        same = "  identical state" if doc["same_state"] else ""
        print(f"{doc['a']} (step {doc['a_step']}) -> {doc['b']} (step {doc['b_step']}){same}")
        print(
            f"  tensors: {len(doc['changed'])} changed, {doc['unchanged']} unchanged, {len(doc['added'])} added, "
            f"{len(doc['removed'])} removed, {len(doc['dtype_or_shape_changed'])} reshaped"
        )
        for row in doc["changed"][: args.top]:
            print(f"  {row['rel_change']:10.3e}  {row['key']}")
        for sign, kind in (("+", "added"), ("-", "removed")):
            for key in doc[kind][: args.top]:
                print(f"  {sign} {key}")
        for row in doc["json_changes"][: args.top]:
            print(f"  json {row['path']}: {_short(row['a'])} -> {_short(row['b'])}")
        for k, m in doc["metrics"].items():
            print(f"  metric {k}: {m['a']} -> {m['b']}")

    return _emit(args, doc, text)


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare runs of one family (run or sweep directories): groups, seeds aggregated, baselines, curves, config diff"""
    from waypoint.analysis.compare_runs import CompareError, build_comparison_report, default_out

    try:
        result = build_comparison_report(args.runs, Path(args.out) if args.out else default_out(args.runs))
    except CompareError as exc:
        raise UsageError(str(exc)) from None
    doc = {"report": result["html"], "markdown": result["markdown"], **result["summary"]}
    lines = [f"  {g['label']}: {len(g['runs'])} runs" for g in doc["groups"]] + [f"comparison report: {doc['report']}"]
    return _emit(args, doc, "\n".join(lines))


# ---------------------------------------------------------------------------------------------- changing


def _retag(args: argparse.Namespace, tag: str, add: bool) -> int:
    run, selector = parse_ref(args.ref)
    with open_store(run, write=True) as mgr:
        info = (mgr.tag if add else mgr.untag)(selector, tag, note=args.note)
    return _emit(args, info.to_json(), f"{info.name}: tags [{','.join(info.tags) or '-'}]")


def cmd_tag(args: argparse.Namespace) -> int:
    """Add a tag (with an optional note) to a checkpoint."""
    return _retag(args, args.tag, add=True)


def cmd_untag(args: argparse.Namespace) -> int:
    """Remove a tag from a checkpoint."""
    return _retag(args, args.tag, add=False)


def cmd_pin(args: argparse.Namespace) -> int:
    """Pin a checkpoint so that no retention or gc ever deletes it."""
    return _retag(args, "pinned", add=True)


def cmd_gc(args: argparse.Namespace) -> int:
    """Apply the run's retention (or keep-last N beside milestones, evolution snapshots and pins), delete unreferenced
    packs and repack sparse ones"""
    with open_store(args.run_dir, write=True) as mgr:
        report = mgr.gc(keep_last=args.keep_last, dry_run=args.dry_run, drop=args.drop or ())
    listed = f"{len(report['deleted'])} checkpoint(s): {', '.join(report['deleted']) or '-'}"
    freed = human_bytes(report["freed_bytes"])
    if args.dry_run:
        return _emit(args, report, f"would delete {listed}; would free at least {freed}")
    return _emit(args, report, f"deleted {listed}; {len(report['packs_removed'])} pack(s) removed, freed {freed}")


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete a whole run (RUN_DIR), or one checkpoint (RUN_DIR@SELECTOR or a checkpoint dir) and the packs only it
    used (pinned, best and latest need --force)"""
    run, selector = parse_ref(args.ref)
    if "@" not in args.ref and selector == "latest":
        return _rm_run(args, run)
    with open_store(run, write=not args.dry_run) as mgr:
        report = mgr.delete(selector, force=args.force, dry_run=args.dry_run)
    was = f", which was {' and '.join(report['was'])}" if report["was"] else ""
    freed = f"{'would free at least' if args.dry_run else 'freed'} {human_bytes(report['freed_bytes'])}"
    return _emit(
        args, report, f"{'would delete' if args.dry_run else 'deleted'} {report['deleted']} (step {report['step']}){was}; {freed}"
    )


def _rm_run(args: argparse.Namespace, run: str) -> int:
    """Delete a run directory and its checkpoints (wherever ``checkpoint.root`` put them); refused while a writer holds
    the run; asks first unless ``--yes``."""
    if is_url(run) or not Path(run, ".hydra").is_dir() and not Path(run, "checkpoints").is_dir():
        raise UsageError(f"{run} is not a run directory (no .hydra/ or checkpoints/); name one checkpoint as {run}@SELECTOR")
    try:
        root: Path | str | None = refs.checkpoints_root(run)
    except refs.BadReferenceError:  # a run that saved no checkpoint
        root = None
    holder, n, size = None, 0, 0
    if root is not None and (is_url(root) or Path(root).is_dir()):
        with CheckpointManager(root, read_only=True) as mgr:
            holder, n, size = mgr.lock_holder(), len(mgr.list()), mgr.physical_bytes()
    if holder:
        raise UsageError(f"{run} is being written by pid {holder.get('pid')} on {holder.get('host')}; stop that run first")
    outside = root is not None and not Path(str(root)).is_relative_to(run)
    what = f"{run} ({n} checkpoint(s), {human_bytes(size)}" + (f" in {root})" if outside else ")")
    doc = {"deleted_run": run, "checkpoints_root": str(root), "checkpoints": n, "freed_bytes": size, "dry_run": args.dry_run}
    if args.dry_run:
        return _emit(args, doc, f"would delete {what}")
    if not args.yes and not _confirm(f"delete {what} and everything in it? [y/N] "):
        return _emit(args, {**doc, "deleted_run": None}, "nothing deleted")
    if outside and is_url(root):
        backend = backend_for(root)
        for key in backend.list():
            backend.delete(key)
    elif outside:
        shutil.rmtree(root)  # type: ignore[arg-type]
    shutil.rmtree(run)
    return _emit(args, doc, f"deleted {what}")


def _confirm(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        raise UsageError("waypoint rm asks before deleting a whole run; pass --yes to delete it without asking") from None


def cmd_export(args: argparse.Namespace) -> int:
    """Write a checkpoint (or one part of it) to a safetensors or .pt file."""
    from waypoint.checkpoint.transfer import export_checkpoint

    run, selector = parse_ref(args.ref)
    with open_store(run) as mgr:
        doc = export_checkpoint(mgr, selector, args.out, part=args.part, fmt=args.format)
    return _emit(
        args, doc, f"exported {doc['tensors']} tensors of {doc['checkpoint']} to {doc['path']} ({human_bytes(doc['bytes'])})"
    )


def cmd_import(args: argparse.Namespace) -> int:
    """Import a foreign .pt/.pth/.ckpt file as a checkpoint (weights-only; code-executing pickles are refused)."""
    from waypoint.checkpoint.transfer import ImportRefusedError, import_into

    if not Path(args.file).is_file():
        raise UsageError(f"{args.file} is not a file")
    root = Path(args.run_dir) / "checkpoints" if Path(args.run_dir).name != "checkpoints" else Path(args.run_dir)
    try:
        doc = import_into(args.file, root, step=args.step, force=args.force, max_bytes=args.max_bytes)
    except ImportRefusedError as exc:
        raise UsageError(str(exc)) from None
    return _emit(args, doc, f"imported {args.file} ({doc['layout']}) as {doc['checkpoint']}")


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy a run (checkpoints, train.log, .hydra/, metrics.jsonl) to a directory or fsspec URL, incrementally."""
    from waypoint.checkpoint.transfer import BackupRefusedError, backup

    checkpoints_root(args.run_dir)
    try:
        doc = backup(args.run_dir, args.dest, keep_last=args.keep_last)
    except BackupRefusedError as exc:
        raise UsageError(str(exc)) from None

    def text() -> None:
        repaired = f" ({len(doc['repaired'])} repaired at the destination)" if doc["repaired"] else ""
        pruned = f"; deleted {', '.join(doc['deleted'])} there" if doc["deleted"] else ""
        copied = f"copied {len(doc['copied'])} file(s), {human_bytes(doc['copied_bytes'])}{repaired}"
        print(f"{copied}; {doc['unchanged']} already there{pruned}")
        for rel, problem in doc["damaged"].items():
            print(f"DAMAGED  {rel}: {problem} (not copied)")

    _emit(args, doc, text)
    return EXIT_FAILED if doc["damaged"] else EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the web interface over runs and sweeps (Gradio, on 127.0.0.1 unless --host)."""
    from waypoint.ui import UIError
    from waypoint.ui.serve import EXTRA_HINT, check_bind, default_roots, serve

    roots = args.roots or [str(p) for p in default_roots()]
    if not roots:
        raise UsageError("no outputs/ or multirun/ here; pass the run, sweep or outputs directories to show")
    try:
        check_bind(args.host, args.auth)  # refused before anything is imported or bound
        if importlib.util.find_spec("gradio") is None:
            raise UsageError(EXTRA_HINT)
        serve(roots, host=args.host, port=args.port, auth=args.auth)
    except UIError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- the parser


def _opt(flag: str, help: str | None = None, **kw: Any) -> tuple[str, dict[str, Any]]:
    return flag, {**kw, "help": help} if help else kw


RUN, REF = _opt("run_dir", "a run directory or its checkpoints/ directory", metavar="RUN_DIR"), _opt("ref", metavar="REF")
NOTE, TAG = _opt("--note", "a note stored with the tag change"), _opt("tag", metavar="TAG")
DRY = _opt("--dry-run", "print what would be deleted, delete nothing", action="store_true")
FORCE = _opt("--force", "rm: even a pinned, best or latest checkpoint; import: into a run with checkpoints", action="store_true")
YES = _opt("--yes", "delete a whole run without asking", action="store_true")
HOST = _opt("--host", "address to listen on (default 127.0.0.1; any other needs --auth)", default="127.0.0.1")
AUTH = _opt("--auth", "require this login (default: $WAYPOINT_UI_AUTH, kept out of ps)", metavar="USER:PASSWORD")
KEEP = _opt(
    "--keep-last", "keep the N newest (beside milestones, evolution snapshots, pins, best, latest)", type=count, metavar="N"
)
DROP = _opt("--drop", "let gc delete these too", action="append", choices=("milestones", "evolution"))
PART = _opt("--part", "only tensors whose key starts with this prefix (stripped in the output)")
RUNS = _opt("runs", "run directories, or sweep directories (their jobs)", metavar="DIR", nargs="+")
ROOTS = _opt("roots", "runs, sweeps, outputs/ or multirun/ (default: ./outputs ./multirun)", metavar="ROOT", nargs="*")
MAX = _opt("--max-bytes", "allow the file to expand to N bytes (default: 4x its size + 64 MiB)", type=count, metavar="N")
REPAIR = _opt("--repair", "rebuild damage from parity, spare copies and the backup", action="store_true")
ADD_PARITY = _opt("--add-parity", "with --repair: give parity to packs without it", action="store_true")
BACKUP = _opt("--backup", "with --repair: the backup to repair from (default: the run's checkpoint.backup_to)")
STEP = _opt("--step", "default: from the file, else 0", type=count)

#: name -> (function, example, arguments); every command but ``ui`` also takes --json
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, list[tuple[str, dict[str, Any]]]]] = {
    "ls": (cmd_ls, "waypoint ls outputs/dino/run --json", [RUN]),
    "verify": (cmd_verify, "waypoint verify outputs/dino/run --repair", [RUN, REPAIR, ADD_PARITY, BACKUP]),
    "du": (cmd_du, "waypoint du outputs/stackwise/run --json", [RUN]),
    "show": (cmd_show, "waypoint show outputs/dino/run@best --tensors", [REF, _opt("--tensors", action="store_true")]),
    "diff": (cmd_diff, "waypoint diff run@step:100 run@latest", [_opt("a"), _opt("b"), _opt("--top", type=int, default=15)]),
    "compare": (cmd_compare, "waypoint compare multirun/universeg/seed=0,1,2 --out cmp", [RUNS, _opt("--out", "report dir")]),
    "tag": (cmd_tag, "waypoint tag outputs/dino/run@step:400 paper-fig3 --note 'fig 3'", [REF, TAG, NOTE]),
    "untag": (cmd_untag, "waypoint untag outputs/dino/run@step:400 paper-fig3", [REF, TAG, NOTE]),
    "pin": (cmd_pin, "waypoint pin outputs/dino/run@best --note 'submitted model'", [REF, NOTE]),
    "gc": (cmd_gc, "waypoint gc outputs/dino/run --keep-last 3 --dry-run", [RUN, KEEP, DROP, DRY]),
    "rm": (cmd_rm, "waypoint rm outputs/dino/run@step:400; waypoint rm outputs/dino/old --yes", [REF, FORCE, YES, DRY]),
    "export": (
        cmd_export,
        "waypoint export outputs/dino/run@best teacher.safetensors --part task/teacher/backbone",
        [REF, _opt("out", metavar="OUT"), PART, _opt("--format", choices=("safetensors", "pt"), default="safetensors")],
    ),
    "import": (
        cmd_import,
        "waypoint import ~/old/dino_epoch40.pth outputs/dino/imported",
        [_opt("file", metavar="FILE"), _opt("run_dir", metavar="RUN_DIR"), STEP, FORCE, MAX],
    ),
    "backup": (cmd_backup, "waypoint backup outputs/dino/run /mnt/backup/run --keep-last 3", [RUN, _opt("dest"), KEEP]),
    "ui": (
        cmd_ui,
        "waypoint ui outputs/ multirun/ --port 7860",
        [ROOTS, HOST, _opt("--port", "default: the first free from 7860", type=count), AUTH],
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``waypoint`` command."""
    parser = argparse.ArgumentParser(
        prog="waypoint",
        description="Inspect and manage Waypoint runs and checkpoints.",
        epilog="REF: a checkpoint dir, a run dir (its latest) or RUN_DIR@SELECTOR. "
        "Exit codes: 0 ok, 1 check failed, 2 usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (fn, example, arguments) in COMMANDS.items():
        doc = " ".join((fn.__doc__ or "").split()).rstrip(".")
        p = sub.add_parser(name, help=doc, description=doc + ".", epilog=f"example: {example}")
        if name != "ui":
            p.add_argument("--json", action="store_true", help="print JSON instead of text")
        for flag, options in arguments:
            p.add_argument(flag, **options)
        p.set_defaults(func=fn)
    return parser


def _reader_went_away() -> int:
    """Whoever read our output (``| head``) closed the pipe: stop quietly with 141 (128 + SIGPIPE), stdout pointed at
    /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (tests capture it): nothing left to flush
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``waypoint`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if args.command == "ui" and args.auth is None:
        args.auth = os.environ.get("WAYPOINT_UI_AUTH")  # keeps the password out of ps
    warnings.simplefilter("ignore")  # damaged checkpoints are reported in the output itself
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except WaypointError as exc:  # one sentence; the exit code of waypoint.errors (a bug keeps its traceback)
        print(f"waypoint: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, OSError) as exc:
        print(f"waypoint: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
