"""Start the interface: check where it may listen, then run Gradio (never shared through a public tunnel).

Loopback only unless ``--host`` names another address; then ``--auth user:password`` is required, or the
start is refused. Analytics are off, nothing is fetched from the network, and Gradio may serve no file
of the roots: only what an action produced (an export, in a private temporary directory).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UnsafeBindError

log = logging.getLogger(__name__)

EXTRA_HINT = "the web interface needs the 'ui' extra: pip install 'waypoint[ui]' (or pip install -e '.[ui]')"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``user:password`` -> (user, password); refuses an empty user or password."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UnsafeBindError("--auth takes user:password, both non-empty")
    return user, password


def check_bind(host: str, auth: str | None) -> tuple[str, tuple[str, str] | None]:
    """(host, credentials) to listen with; ``UnsafeBindError`` for a non-loopback host without ``--auth``."""
    host = (host or "127.0.0.1").strip()
    creds = parse_auth(auth)
    if not is_loopback(host) and creds is None:
        raise UnsafeBindError(
            f"refusing to listen on {host} without authentication: anyone who reaches it could delete checkpoints; "
            "add --auth user:password (or listen on 127.0.0.1 and use an SSH tunnel)"
        )
    return host, creds


def default_roots(cwd: str | os.PathLike = ".") -> list[Path]:
    """The current project's ``outputs/`` and ``multirun/`` that exist."""
    return [p for p in (Path(cwd) / "outputs", Path(cwd) / "multirun") if p.is_dir()]


def launch_options(host: str, port: int | None, creds: tuple[str, str] | None, roots: list[Path]) -> dict:
    """Gradio's launch arguments: never a public share link, no file of the roots served, no extra endpoints."""
    return {
        "server_name": host,
        "server_port": port,
        "auth": creds,
        "share": False,
        "inbrowser": False,
        "prevent_thread_lock": True,
        "quiet": True,
        "show_error": False,
        "allowed_paths": [],
        "blocked_paths": [str(r) for r in roots],
        "mcp_server": False,
        "ssr_mode": False,
        "pwa": False,
        "enable_monitoring": False,
        "footer_links": [],
        "max_file_size": "1kb",  # nothing here takes uploads: Gradio's upload route gets no room either
    }


def serve(roots: list[str], *, host: str = "127.0.0.1", port: int | None = None, auth: str | None = None) -> None:
    """Build the app over ``roots`` and serve it until interrupted; prints the URL first."""
    host, creds = check_bind(host, auth)
    from .catalog import Catalog

    catalog = Catalog(list(roots))  # a bad root is refused before Gradio is even imported
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gradio as gr
    except ImportError:
        raise ImportError(EXTRA_HINT) from None
    from .app import CSS, build

    export_dir = tempfile.mkdtemp(prefix="waypoint-ui-")
    demo = build(catalog, export_dir=export_dir)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    _, url, _ = demo.launch(**launch_options(host, port, creds, catalog.roots), theme=theme, css=CSS)
    where = "" if is_loopback(host) else f" (listening on {host}, login required)"
    print(f"Waypoint UI on {url}{where} over {', '.join(str(r) for r in catalog.roots)} (Ctrl-C stops it)", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
        shutil.rmtree(export_dir, ignore_errors=True)
