"""Child of the disk-full tests: a save that runs out of room, then everything a run would do next.

    python fill_child.py ROOT MODE [LIMIT]

MODE: ``tensors`` (the pack outgrows the room), ``json`` (state.json does), ``background`` (like
tensors, through a non-blocking save). With LIMIT the child sets RLIMIT_FSIZE (SIGXFSZ ignored, so
writes fail with EFBIG) after the first save; without it the root is expected to sit on a tiny
filesystem (ENOSPC). Prints one JSON report on stdout.
"""

import json
import resource
import signal
import sys

import torch
from faultkit import debris

from waypoint.checkpoint import BackgroundSaveError, CheckpointManager, CheckpointWriteError
from waypoint.checkpoint.durable import free_bytes


def small(step: int) -> dict:
    return {"w": torch.randn(256, 256, generator=torch.Generator().manual_seed(step)), "step": step}


def main() -> None:
    root, mode = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    report: dict = {}
    mgr = CheckpointManager(root)
    mgr.save(small(1), step=1)
    report["free_before"] = free_bytes(mgr.root)
    if limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if mode == "json":
        big = {"w": torch.randn(8, 8), "log": "x" * (16 << 20), "step": 2}
    else:
        big = {"w": torch.randn(4 << 20, generator=torch.Generator().manual_seed(2)), "step": 2}
    try:
        if mode == "background":
            mgr.save(big, step=2, blocking=False)
            mgr.wait()
        else:
            mgr.save(big, step=2)
        report["error"] = None
    except (CheckpointWriteError, BackgroundSaveError) as exc:
        report["error"] = {"type": type(exc).__name__, "message": str(exc)}
    report["debris"] = debris(mgr.root)
    report["free_after"] = free_bytes(mgr.root)
    report["listed"] = [i.name for i in mgr.list()]
    report["verify"] = mgr.verify()
    report["restored_step"] = mgr.restore("latest")["step"]
    info = mgr.save(small(3), step=3)
    report["saved_after"] = info.name
    report["verify_after"] = mgr.verify()
    mgr.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
