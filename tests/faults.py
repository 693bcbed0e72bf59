"""Real faults for the bad-input tests: an HTTP server that answers 503, a read-only folder (even for root)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from needs import missing


@contextlib.contextmanager
def failing_server(healthy: bool = False) -> Iterator[str]:
    """An HTTP server on a free port answering 503 to every request (``healthy``: 200 on /health only),
    which is what an overloaded tracking server or its proxy does; yields its URL and counts nothing."""

    class Unavailable(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(200 if healthy and self.path == "/health" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """A read-only view of ``folder``; yields the path to use.

    Root ignores file modes, so as root the view is a read-only bind mount (skipped where mounting is not
    allowed); otherwise the folder and its files lose their write bits.
    """
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    view = folder.with_name(f"{folder.name}-read-only")
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(view)], capture_output=True, text=True)
    if mounted.returncode != 0:
        view.rmdir()
        missing(
            f"a read-only bind mount (mount --bind -o ro failed: {mounted.stderr.strip()})",
            "run the tests as root where mounts are allowed",
        )
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)
        view.rmdir()


@contextlib.contextmanager
def read_only_file(path: Path) -> Iterator[None]:
    """``path`` made read-only in a writable folder: immutable (chattr +i) as root, who ignores file modes."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    locked = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if locked.returncode != 0:
        missing(
            f"an immutable file (chattr +i failed: {locked.stderr.strip()})", "run the tests as root on ext4 or tmpfs"
        )
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
