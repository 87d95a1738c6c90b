"""Run train.py once per command line, each in a process forked from one pre-imported interpreter.

Importing torch and the model families costs seconds per interpreter; a forked child starts in milliseconds
and then runs train.py's ``__main__`` exactly as ``python train.py ARGS`` would (its own exit code, stderr).
For tables of commands that end at start-up (bad configurations).

Usage: python train_forks.py TRAIN_PY < JSON list of argument lists  ->  JSON list of {"code", "stderr"}
"""

import io
import json
import os
import runpy
import sys
import tempfile

import waypoint.config  # noqa: F401  (hydra)
import waypoint.training.launch  # noqa: F401  (torch, the store, the trainer)

for module in waypoint.config.TASK_MODULES:  # the model families (timm, ...)
    __import__(module)


def _child(train_py: str, args: list[str], err_path: str) -> None:
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
    sys.stdout = open(os.devnull, "w")
    sys.argv = [train_py, *args]
    code = 0
    try:
        runpy.run_path(train_py, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    train_py = sys.argv[1]
    commands = json.load(sys.stdin)
    codes: dict[int, int] = {}
    running: dict[int, int] = {}  # pid -> index
    with tempfile.TemporaryDirectory() as tmp:
        for i, args in enumerate(commands):
            if len(running) >= 2:  # two at a time: the tests share two cores
                pid, status = os.wait()
                codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
            pid = os.fork()
            if pid == 0:
                _child(train_py, args, os.path.join(tmp, f"{i}.err"))
            running[pid] = i
        while running:
            pid, status = os.wait()
            codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
        out = [{"code": codes[i], "stderr": open(os.path.join(tmp, f"{i}.err")).read()} for i in range(len(commands))]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
