"""The ``waypoint`` command: inspect and manage a run's checkpoints.

A checkpoint reference (REF) is a checkpoint directory (``run/checkpoints/step_000000120``), a run
directory (meaning its latest checkpoint) or ``RUN_DIR@SELECTOR`` with a selector ``latest``, ``best``,
``step:N``, ``tag:NAME`` or a checkpoint name. Exit codes: 0 ok, 1 a check failed, 2 usage error, 141 the
reader of the output went away (``| head``), quietly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from waypoint.checkpoint import CheckpointManager, refs
from waypoint.errors import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_OK, EXIT_USAGE, UserError, WaypointError
from waypoint.units import human_bytes


class UsageError(UserError):
    """A bad argument or path; exit code 2."""


def count(text: str) -> int:
    """An argparse type: an integer >= 0 (argparse turns the ValueError into a usage error naming the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def checkpoints_root(run_dir: str) -> Path | str:
    """The ``checkpoints/`` directory of a run dir (a checkpoints dir itself is accepted too)."""
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


parse_ref = refs.parse_ref


def _short(value: Any, width: int = 80) -> str:
    """``repr`` cut to ``width`` characters (the JSON output keeps the whole value)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _metrics_text(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def _emit(args: argparse.Namespace, doc: Any, text: Callable[[], None]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=1, default=str))
    else:
        text()


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
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_at))
                status = "" if i.valid else f"  DAMAGED: {i.problem}"
                epoch = "-" if i.epoch is None else i.epoch
                print(
                    f"{i.name:<18} {i.step:>8} {epoch:>5}  {human_bytes(i.logical_bytes):>9}  {created:<19}  "
                    f"{i.digest[:12]:<12}  [{','.join(i.all_tags) or '-'}] {_metrics_text(i.metrics)}{status}"
                )

    if len(listed) == 1:
        _emit(args, [i.to_json() for i in next(iter(listed.values()))], text)
    else:
        _emit(args, {root: [i.to_json() for i in infos] for root, infos in listed.items()}, text)
    return EXIT_OK


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
        print(
            f"{len(report) - len(bad)} of {len(report)} checkpoints verify{where}"
            + (f"; damaged: {', '.join(bad)}" if bad else "")
        )

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
    doc = {
        "checkpoints": len(infos),
        "logical_bytes": logical,
        "physical_bytes": physical,
        "parity_bytes": parity,
        "ratio": round(physical / logical, 4) if logical else None,
    }
    _emit(
        args,
        doc,
        lambda: print(
            f"{len(infos)} checkpoints: logical {human_bytes(logical)}, physical {human_bytes(physical)}"
            + (f" ({doc['ratio']:.2f}x of logical)" if logical else "")
            + (f", of which parity {human_bytes(parity)}" if parity else "")
        ),
    )
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """One checkpoint's manifest summary: step, metrics, tags, notes, sizes, versions."""
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
    }

    def text() -> None:
        print(f"{info.name}  step {info.step}  epoch {info.epoch}  tags [{','.join(info.all_tags) or '-'}]")
        print(f"  created   {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.created_at))}  digest {info.digest}")
        print(f"  metrics   {_metrics_text(info.metrics) or '-'}")
        print(f"  size      {human_bytes(info.logical_bytes)} logical in {doc['tensors']} tensors, {len(doc['packs'])} pack(s)")
        print(f"  config    {doc['config_hash'] or '-'}  git {doc['git_commit'] or '-'}  versions {doc['versions']}")
        for n in doc["notes"]:
            print(f"  note      {time.strftime('%Y-%m-%d %H:%M', time.localtime(n['at']))} {n['note']}")

    _emit(args, doc, text)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    """Per-tensor changes, added/removed keys and JSON-state differences between two checkpoints."""
    from waypoint.analysis.compare import diff_checkpoints

    (run_a, sel_a), (run_b, sel_b) = parse_ref(args.a), parse_ref(args.b)
    with open_store(run_a) as mgr_a, open_store(run_b) as mgr_b:
        doc = diff_checkpoints(mgr_a, sel_a, mgr_b, sel_b)

    def text() -> None:
        print(
            f"{doc['a']} (step {doc['a_step']}) -> {doc['b']} (step {doc['b_step']})"
            + ("  identical state" if doc["same_state"] else "")
        )
        print(
            f"  tensors: {len(doc['changed'])} changed, {doc['unchanged']} unchanged, {len(doc['added'])} added, "
            f"{len(doc['removed'])} removed, {len(doc['dtype_or_shape_changed'])} reshaped"
        )
        for row in doc["changed"][: args.top]:
            print(f"  {row['rel_change']:10.3e}  {row['key']}")
        for key in doc["added"][: args.top]:
            print(f"  + {key}")
        for key in doc["removed"][: args.top]:
            print(f"  - {key}")
        for row in doc["json_changes"][: args.top]:
            print(f"  json {row['path']}: {_short(row['a'])} -> {_short(row['b'])}")
        for k, m in doc["metrics"].items():
            print(f"  metric {k}: {m['a']} -> {m['b']}")

    _emit(args, doc, text)
    return EXIT_OK


def _retag(args: argparse.Namespace, tag: str, add: bool) -> int:
    run, selector = parse_ref(args.ref)
    with open_store(run, write=True) as mgr:
        info = (mgr.tag if add else mgr.untag)(selector, tag, note=args.note)
    _emit(args, info.to_json(), lambda: print(f"{info.name}: tags [{','.join(info.tags) or '-'}]"))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare runs of one family (run or sweep directories): groups, seeds aggregated, baselines, curves, config diff"""
    from waypoint.analysis.compare_runs import CompareError, build_comparison_report, default_out

    try:
        result = build_comparison_report(args.runs, Path(args.out) if args.out else default_out(args.runs))
    except CompareError as exc:
        raise UsageError(str(exc)) from None
    doc = {"report": result["html"], "markdown": result["markdown"], **result["summary"]}

    def text() -> None:
        for group in doc["groups"]:
            print(f"  {group['label']}: {len(group['runs'])} runs")
        print(f"comparison report: {doc['report']}")

    _emit(args, doc, text)
    return EXIT_OK


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
    """Apply the run's retention pools (or keep-last N), delete unreferenced packs and repack sparse ones."""
    with open_store(args.run_dir, write=True) as mgr:
        report = mgr.gc(keep_last=args.keep_last, dry_run=args.dry_run)
    listed = f"{len(report['deleted'])} checkpoint(s): {', '.join(report['deleted']) or '-'}"
    text = (
        f"would delete {listed}; would free at least {human_bytes(report['freed_bytes'])}"
        if args.dry_run
        else f"deleted {listed}; {len(report['packs_removed'])} pack(s) removed, freed {human_bytes(report['freed_bytes'])}"
    )
    _emit(args, report, lambda: print(text))
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete one checkpoint and the packs only it used (pinned, best and latest need --force)."""
    run, selector = parse_ref(args.ref)
    with open_store(run, write=not args.dry_run) as mgr:
        report = mgr.delete(selector, force=args.force, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    _emit(
        args,
        report,
        lambda: print(
            f"{verb} {report['deleted']} (step {report['step']})"
            + (f", which was {' and '.join(report['was'])}" if report["was"] else "")
            + f"; {'would free at least' if args.dry_run else 'freed'} {human_bytes(report['freed_bytes'])}"
        ),
    )
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Write a checkpoint (or one part of it) to a safetensors or .pt file."""
    from waypoint.checkpoint.transfer import export_checkpoint

    run, selector = parse_ref(args.ref)
    with open_store(run) as mgr:
        doc = export_checkpoint(mgr, selector, args.out, part=args.part, fmt=args.format)
    _emit(
        args,
        doc,
        lambda: print(f"exported {doc['tensors']} tensors of {doc['checkpoint']} to {doc['path']} ({human_bytes(doc['bytes'])})"),
    )
    return EXIT_OK


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
    _emit(args, doc, lambda: print(f"imported {args.file} ({doc['layout']}) as {doc['checkpoint']}"))
    return EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy a run's checkpoints to a directory or fsspec URL, incrementally."""
    from waypoint.checkpoint.transfer import BackupRefusedError, backup

    checkpoints_root(args.run_dir)
    try:
        doc = backup(args.run_dir, args.dest)
    except BackupRefusedError as exc:
        raise UsageError(str(exc)) from None

    def text() -> None:
        print(
            f"copied {len(doc['copied'])} file(s), {human_bytes(doc['copied_bytes'])}"
            + (f" ({len(doc['repaired'])} repaired at the destination)" if doc["repaired"] else "")
            + f"; {doc['unchanged']} already there"
        )
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


def _step_arg(text: str) -> int:
    """An argparse type: a non-negative integer step."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer step") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a step cannot be negative (got {value})")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``waypoint`` command."""
    parser = argparse.ArgumentParser(
        prog="waypoint",
        description="Inspect and manage Waypoint checkpoints.",
        epilog="REF: a checkpoint dir, a run dir (its latest) or RUN_DIR@SELECTOR. "
        "Exit codes: 0 ok, 1 check failed, 2 usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Callable, example: str, *, json_out: bool = True) -> argparse.ArgumentParser:
        doc = (fn.__doc__ or "").strip().rstrip(".")
        p = sub.add_parser(name, help=doc, description=doc + ".", epilog=f"example: {example}")
        if json_out:
            p.add_argument("--json", action="store_true", help="print JSON instead of text")
        p.set_defaults(func=fn)
        return p

    for name, fn, example in (
        ("ls", cmd_ls, "waypoint ls outputs/dino/run --json"),
        ("verify", cmd_verify, "waypoint verify outputs/dino/run"),
        ("du", cmd_du, "waypoint du outputs/stackwise/run --json"),
    ):
        p = add(name, fn, example)
        p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or its checkpoints/ directory")
        if name == "verify":
            p.add_argument("--repair", action="store_true", help="rebuild damage from parity, spare copies and the backup")
            p.add_argument("--add-parity", action="store_true", help="with --repair: give parity to packs without it")
            p.add_argument("--backup", help="with --repair: the backup to repair from (default: the run's checkpoint.backup_to)")
    add("show", cmd_show, "waypoint show outputs/dino/run@best").add_argument("ref", metavar="REF")
    p = add("diff", cmd_diff, "waypoint diff outputs/dino/run@step:100 outputs/dino/run@latest")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--top", type=int, default=15, help="rows of each kind to print (default 15)")
    p = add("compare", cmd_compare, "waypoint compare multirun/universeg/seed=0,1,2 outputs/universeg/default --out cmp")
    p.add_argument("runs", metavar="DIR", nargs="+", help="run directories, or sweep directories (their jobs)")
    p.add_argument("--out", default=None, help="report directory (default: reports/compare-<hash of the runs' paths>)")
    for name, fn, example in (
        ("tag", cmd_tag, "waypoint tag outputs/dino/run@step:400 paper-fig3 --note 'used in fig 3'"),
        ("untag", cmd_untag, "waypoint untag outputs/dino/run@step:400 paper-fig3"),
        ("pin", cmd_pin, "waypoint pin outputs/dino/run@best --note 'submitted model'"),
    ):
        p = add(name, fn, example)
        p.add_argument("ref", metavar="REF")
        if name != "pin":
            p.add_argument("tag", metavar="TAG")
        p.add_argument("--note", default=None, help="a note stored with the tag change")
    p = add("gc", cmd_gc, "waypoint gc outputs/dino/run --keep-last 3 --dry-run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--keep-last", type=count, default=None, help="keep only the N newest (plus pinned, best, latest)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    p = add("rm", cmd_rm, "waypoint rm outputs/dino/run@step:400")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--force", action="store_true", help="delete even a pinned, best or latest checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    p = add("export", cmd_export, "waypoint export outputs/dino/run@best teacher.safetensors --part task/teacher/backbone")
    p.add_argument("ref", metavar="REF")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--part", default=None, help="only tensors whose key starts with this prefix (stripped in the output)")
    p.add_argument("--format", choices=("safetensors", "pt"), default="safetensors")
    p = add("import", cmd_import, "waypoint import ~/old/dino_epoch40.pth outputs/dino/imported")
    p.add_argument("file", metavar="FILE")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--step", type=_step_arg, default=None, help="step to record (default: from the file, else 0)")
    p.add_argument("--force", action="store_true", help="import into a run that holds training checkpoints")
    p.add_argument(
        "--max-bytes",
        type=_step_arg,
        default=None,
        metavar="N",
        help="allow the file to expand to N bytes (default: 4x its size plus 64 MiB)",
    )
    p = add("backup", cmd_backup, "waypoint backup outputs/dino/run /mnt/backup/dino-run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("dest", metavar="DEST", help="a directory or an fsspec URL (e.g. s3://bucket/run)")
    p = add("ui", cmd_ui, "waypoint ui outputs/ multirun/ --port 7860", json_out=False)
    p.add_argument("roots", metavar="ROOT", nargs="*", help="runs, sweeps, outputs/ or multirun/ (default: ./outputs ./multirun)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need --auth)")
    p.add_argument("--port", type=count, default=None, help="port (default: the first free from 7860)")
    p.add_argument(
        "--auth",
        default=os.environ.get("WAYPOINT_UI_AUTH"),
        metavar="USER:PASSWORD",
        help="require this login (needed for a non-loopback --host); default $WAYPOINT_UI_AUTH, which keeps it out of ps",
    )
    return parser


def _reader_went_away() -> int:
    """Whoever read our output (``| head``) closed the pipe: stop quietly, as Unix tools do.

    Points stdout at /dev/null so that the interpreter's final flush cannot fail again, and returns 141
    (128 + SIGPIPE, what a shell reports for a tool killed by SIGPIPE): the output was cut short.
    """
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
