"""The local cloud under test, as its own process, and what it costs the machine.

``BenchCloud`` starts ``python -m bench.cloud`` (which is ``python -m local`` with its
logs at WARNING, so a hundred concurrent streams are not also a hundred streams of log
lines) with the app settings of one run, e.g. ``SENDER_MODE=per_token``: settings are
read per process, so the coalescing cloud and the baseline cloud are two processes.
Running the cloud apart from the benchmark's clients is what makes its CPU time
(including the Node.js Function URL host, a child process) and memory measurable.

``ResourceMeter`` reads ``/proc`` for the cloud's process tree: CPU time (user +
system) over a window and the peak resident memory (the sum over the tree, sampled
every 100 ms). Linux only; elsewhere the figures are reported as unavailable.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class CloudError(RuntimeError):
    """The local cloud could not be started (its output says why)."""


# -- /proc accounting -----------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in (_PROC / str(p) / "task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def _cpu_and_rss(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system, own and reaped children's) and RSS bytes of one process."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        statm = (_PROC / str(pid) / "statm").read_text()
    except OSError:
        return 0.0, 0
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime are fields 14-17 of stat (11-14 after "comm) state").
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / _TICKS, int(statm.split()[1]) * _PAGE


class ResourceMeter:
    """CPU time and peak RSS of a process tree, per window (``with meter.window() as w``)."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.available = (_PROC / str(pid) / "stat").exists()
        self._interval = interval_s
        self._lock = threading.Lock()
        self._peak = 0
        self._cpu_seen: dict[int, float] = {}  # last CPU seconds per pid (children may exit)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="resource-meter", daemon=True)
        if self.available:
            self._thread.start()

    def cpu_seconds(self) -> float:
        """CPU seconds the tree used so far (exited children's last sample included)."""
        with self._lock:
            self._read()
            return sum(self._cpu_seen.values())

    def _read(self) -> int:
        rss = 0
        for p in _tree(self.pid):
            cpu, r = _cpu_and_rss(p)
            if r:
                self._cpu_seen[p] = cpu
                rss += r
        return rss

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                self._peak = max(self._peak, self._read())

    @contextlib.contextmanager
    def window(self) -> Any:
        """Yields a dict filled on exit: cpuSeconds, wallSeconds, cores, peakRssMb."""
        result: dict[str, Any] = {}
        if not self.available:
            yield result
            return
        with self._lock:
            self._peak = self._read()
        cpu0, t0 = self.cpu_seconds(), time.monotonic()
        try:
            yield result
        finally:
            cpu, wall = self.cpu_seconds() - cpu0, time.monotonic() - t0
            with self._lock:
                peak = max(self._peak, self._read())
            result.update(
                cpuSeconds=cpu,
                wallSeconds=wall,
                cores=cpu / wall if wall > 0 else 0.0,
                peakRssMb=peak / 2**20,
            )

    def stop(self) -> None:
        self._stop.set()


# -- the cloud process ----------------------------------------------------------------------


class BenchCloud:
    """One local cloud in a child process; ``endpoints`` once started."""

    def __init__(self, app_env: dict[str, str], name: str) -> None:
        self.name = name
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
        self.endpoints_file = Path(self._tmp.name) / "endpoints.json"
        self.recording_file = Path(self._tmp.name) / "moto-recording.jsonl"
        # The benchmark's own AWS settings must not leak into the cloud's app.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(app_env)
        env["LOCAL_MODEL"] = "simulated"  # the bench measures against the simulated model
        # moto records DynamoDB and SQS requests here while recording is switched on
        # (bench.calls counts them); it holds request bodies and is deleted with the run.
        env["MOTO_RECORDER_FILEPATH"] = str(self.recording_file)
        env["PYTHONUNBUFFERED"] = "1"
        self._env = env
        self.proc: subprocess.Popen[str] | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=2000)
        self.endpoints: dict[str, Any] = {}
        self.meter: ResourceMeter | None = None
        self.started_in_s = 0.0

    def start(self) -> BenchCloud:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cloud", "--endpoints-file", str(self.endpoints_file)],
            cwd=ROOT,
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(ready,), daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            tail = "\n".join(list(self.output)[-40:])
            raise CloudError(f"the local cloud ({self.name}) did not start:\n{tail}")
        self.endpoints = json.loads(self.endpoints_file.read_text())
        self.meter = ResourceMeter(self.proc.pid)
        self.started_in_s = time.monotonic() - started
        return self

    def _pump(self, ready: threading.Event) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            if line == "READY":
                ready.set()
        ready.set()  # the process ended: start() sees poll() is not None

    def stop(self) -> None:
        if self.meter is not None:
            self.meter.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._tmp.cleanup()

    def __enter__(self) -> BenchCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.cloud``: ``python -m local`` on free ports, logging warnings only."""
    from local.__main__ import main as local_main

    # Configured first, so local's own basicConfig(level=INFO) is a no-op.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = ["--port-base", "0", *(sys.argv[1:] if argv is None else argv)]
    return local_main(args)


if __name__ == "__main__":
    sys.exit(main())
