"""The browser side of the UI checks: start ``waypoint ui`` as a process and drive the system Chromium (Playwright).

Used by test_ui_browser.py and by screenshot.py (the README's picture). Nothing is fetched from the network:
a page aborts every request to anything but the UI.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000
VIEWPORT = {"width": 1200, "height": 820}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(roots: list[Path], cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    """``waypoint ui ROOTS`` on a free port, in its own session; its output lines collect in the list."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "waypoint", "ui", *map(str, roots), "--port", str(free_port())],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def ui_url(proc: subprocess.Popen, lines: list[str], timeout: float = 120) -> str:
    """The URL the UI prints once it listens; ``RuntimeError`` with its output when it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not any("Waypoint UI on" in line for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("waypoint ui did not start:\n" + "".join(lines)[-3000:])
        time.sleep(0.1)
    return re.search(r"(http://127\.0\.0\.1:\d+/?)", "".join(lines)).group(1)


def stop_ui(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def launch_chromium(playwright):
    """The system Chromium, headless (no browser is downloaded)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


def open_ui(browser, url: str, ready: str, dialogs: list[str] | None = None):
    """A fresh page on the UI once its Runs table shows ``ready``; dialogs (``alert``) land in ``dialogs``."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    if dialogs is not None:  # listening from the start: a script run while the page loads is caught too
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith((url, "data:", "blob:")) else r.abort())
    expect.set_options(timeout=WAIT_MS)  # a loaded machine (two xdist workers) can take >5 s to render
    page.goto(url)
    expect(page.locator("#runs-table")).to_contain_text(ready)
    return page


def pick(page, elem_id: str, option: str) -> None:
    """Choose ``option`` in a dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def open_run(page, run_id: str, metric: str) -> None:
    """The Run tab on ``run_id``, its chart showing ``metric``."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Run", exact=True).click()
    pick(page, "run-select", run_id)
    expect(page.locator("#run-summary")).to_contain_text("checkpoint(s)")
    pick(page, "metric-select", metric)
    expect(page.locator("#run-metric-chart")).to_contain_text(f"{metric} over steps")
