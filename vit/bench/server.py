"""The app in its own process, for the benchmarks and scripts that measure it from outside: `python app.py` on a
free port, polled until it answers, with its memory read from /proc (Linux), stopped on the way out.

    with AppProcess(workdir) as app:      # app.url, app.rss(), app.status("VmHWM"), app.stop()
        ...
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, deadline: float) -> None:
    """Poll `url` until it answers 200; fail early if the app exits."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with status {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in time")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class AppProcess:
    """`python app.py` on a free port, its log and Gradio's file cache in `workdir`; up when constructed."""

    def __init__(self, workdir: Path, checkpoints: str | os.PathLike | None = None, *, log: bool = True,
                 timeout: float = STARTUP_TIMEOUT_S) -> None:
        port = free_port()
        self.url, self.cache = f"http://127.0.0.1:{port}/", Path(workdir) / "gradio_cache"
        env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
               "GRADIO_TEMP_DIR": str(self.cache)}
        if checkpoints:
            env["FOODVISION_CHECKPOINTS"] = str(Path(checkpoints).resolve())
        self.log_path = Path(workdir) / "server.log"
        self.log = open(self.log_path, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        try:
            wait_until_up(self.url, self.proc, self.started + timeout)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise
        self.startup_s = time.monotonic() - self.started

    def __enter__(self) -> "AppProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def status(self, key: str) -> float:
        """A /proc/<pid>/status figure: VmRSS and VmHWM in MB, Threads as a count."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                value = float(line.split()[1])
                return value / 1024 if line.endswith("kB") else value
        raise KeyError(key)

    def rss(self) -> float:
        return self.status("VmRSS")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def cache_mb(self) -> float:
        return sum(p.stat().st_size for p in self.cache.rglob("*") if p.is_file()) / 1e6

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)
        if self.log is not subprocess.DEVNULL:
            self.log.close()
