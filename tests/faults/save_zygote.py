"""A fork server for the SIGKILL tests: imports torch and the store once, then forks save loops.

Starting a fresh interpreter costs ~2 s of imports; forking this pre-imported, single-threaded
process costs milliseconds, so a test can kill dozens of real saving processes in seconds. Each
forked child is an ordinary process running ``faultkit.save_forever``; the test SIGKILLs it by pid.

Line protocol on stdin/stdout:
    spawn ROOT SEED [COMPRESSION]  ->  pid PID   (fork a child that saves into ROOT forever)
    reap PID          ->  status STATUS  (waitpid; the raw wait status)
"""

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faultkit  # noqa: E402  (imports torch)

import waypoint.checkpoint  # noqa: E402,F401  (imported before forking)


def main() -> None:
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "spawn":
            root, seed, *compression = args
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    faultkit.save_forever(root, int(seed), *compression)
                except BaseException:  # noqa: BLE001 - a child that dies on its own is a test failure
                    traceback.print_exc()
                    sys.stderr.flush()
                    code = 3
                os._exit(code)
            print(f"pid {pid}", flush=True)
        elif cmd == "reap":
            _, status = os.waitpid(int(args[0]), 0)
            print(f"status {status}", flush=True)


if __name__ == "__main__":
    main()
