"""Measuring one copier process from the outside, and the emulator it talks to.

* Client CPU and peak RSS come from ``os.wait4`` on the copier (its rusage: user + system seconds,
  ``ru_maxrss``), so they are the copier's own, never the emulator's (a separate process) nor this
  harness's: copiers are forked by a small launcher process, not by this (large) one, see
  :class:`Launcher`. Wall time runs from just before the fork to the moment ``wait4`` returns,
  both read in the launcher (no polling error).
* The copier can be pinned to its own CPUs (``sched_setaffinity`` in the child before ``exec``), the
  emulator to another (:func:`pin_process`, every thread of it).
* While the copier runs, :class:`StatsSampler` polls the emulator's ``/_admin/stats`` about 10 times
  a second: requests, 429s and RU charged per container, which give RU/s over time and the 429 share
  without trusting the copier's own accounting.
* :func:`container_writes` reads a container's LSN from the emulator: it grows by one per document
  write, so on a fresh target it is the number of writes, and writes minus documents is the number
  of documents written twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]


# -- CPUs ------------------------------------------------------------------------------------------
def cpu_plan(enabled: bool = True) -> dict[str, list[int]] | None:
    """Which CPUs the emulator and the copier get: the first usable CPU for the emulator, the rest for
    the copier; None when pinning is off, unsupported, or there is only one CPU."""
    if not enabled or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {"emulator": cpus[:1], "copier": cpus[1:]}


def pin_process(pid: int, cpus: list[int]) -> bool:
    """Pin every thread of a running process (threads made later inherit it)."""
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tasks = [pid]
    ok = True
    for tid in tasks:
        try:
            os.sched_setaffinity(tid, set(cpus))
        except OSError:
            ok = False
    return ok


def process_cpu_seconds(pid: int | None) -> float | None:
    """user + system CPU seconds of a running process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- the emulator's admin endpoint and LSN -------------------------------------------------------
class Admin:
    """``POST {endpoint}_admin/<action>`` with the emulator's key."""

    def __init__(self, endpoint: str, key: str) -> None:
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.key = key

    def call(self, action: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        request = urllib.request.Request(
            f"{self.endpoint}_admin/{action}", data=json.dumps(body or {}).encode(), method="POST",
            headers={"x-asyncmig-admin-key": self.key})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self.call("stats")


def _signed_get(endpoint: str, key: str, path: str, resource_type: str, link: str,
                headers: dict[str, str], timeout: float = 10.0) -> tuple[int, dict[str, str]]:
    date = formatdate(usegmt=True)
    text = f"get\n{resource_type}\n{link}\n{date.lower()}\n\n"
    sig = base64.b64encode(hmac.new(base64.b64decode(key), text.encode(), hashlib.sha256).digest()).decode()
    request = urllib.request.Request(endpoint.rstrip("/") + path, method="GET", headers={
        "x-ms-date": date, "x-ms-version": "2020-07-15", "Accept": "application/json",
        "authorization": quote(f"type=master&ver=1.0&sig={sig}", safe="-_.!~*'()"), **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:  # 304 (empty change feed) arrives as an HTTPError
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}


def container_writes(endpoint: str, key: str, database: str, container: str) -> int:
    """Document writes a container has taken (creates and replaces; 0 when empty).

    The local emulator counts them in its versions log and reports them on ``/_admin/writes``. Its
    LSN no longer does (a transactional batch commits all its writes at one LSN, as on Cosmos DB).
    Elsewhere the fallback is the container's current LSN from a one-item change-feed read, which
    counts a batch once.
    """
    admin = urllib.request.Request(
        f"{endpoint.rstrip('/')}/_admin/writes", method="POST", headers={"x-asyncmig-admin-key": key},
        data=json.dumps({"database": database, "container": container}).encode())
    try:
        with urllib.request.urlopen(admin, timeout=30) as response:
            return int(json.loads(response.read())["writes"])
    except (urllib.error.URLError, KeyError, ValueError):
        pass  # not the local emulator
    link = f"dbs/{database}/colls/{container}"
    deadline = time.monotonic() + 60
    while True:  # the read is metered too: on a throttled target, wait as told and try again
        status, headers = _signed_get(endpoint, key, f"/{quote(link)}/docs", "docs", link,
                                      {"A-IM": "Incremental feed", "x-ms-max-item-count": "1"})
        if status != 429 or time.monotonic() > deadline:
            break
        time.sleep(min(5.0, float(headers.get("x-ms-retry-after-ms", "100")) / 1000))
    if status == 304:
        return 0
    if status != 200 or "lsn" not in headers:
        raise RuntimeError(f"reading the LSN of {link}: HTTP {status}")
    return int(headers["lsn"])


@dataclass
class Sample:
    t: float              # time.monotonic() when taken
    requests: int         # emulator requests so far, admin calls excluded
    throttled: int        # 429s so far
    charged: dict[str, float]


class StatsSampler:
    """Polls ``/_admin/stats`` every ``interval`` seconds in a thread while a copier runs."""

    def __init__(self, admin: Admin, interval: float = 0.1) -> None:
        self.admin = admin
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors = 0
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _take(self) -> None:
        try:
            stats = self.admin.stats()
        except (OSError, ValueError):
            self.errors += 1
            return
        requests = stats["requests"]  # the emulator does not count admin calls
        self.samples.append(Sample(time.monotonic(), requests, stats["throttled"], dict(stats.get("charged_ru") or {})))

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._take()  # the baseline, before the copier sends anything
        self._thread = threading.Thread(target=self._loop, name="stats-sampler", daemon=True)
        self._thread.start()

    def rebase(self, t0: float) -> None:
        """Report sample times relative to ``t0`` (the copier's start, monotonic clock)."""
        self._t0 = t0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._take()  # the final figures, after the copier exited

    def delta(self, container_key: str) -> dict[str, float]:
        """Totals between the first and the last sample."""
        if len(self.samples) < 2:
            return {"requests": 0, "throttled": 0, "ru": 0.0}
        first, last = self.samples[0], self.samples[-1]
        return {"requests": last.requests - first.requests, "throttled": last.throttled - first.throttled,
                "ru": round(last.charged.get(container_key, 0.0) - first.charged.get(container_key, 0.0), 2)}

    def timeline(self, container_key: str) -> list[list[float]]:
        """``[t, RU charged to the container, 429s, requests]`` per sample, relative to the first."""
        if not self.samples:
            return []
        first = self.samples[0]
        base = first.charged.get(container_key, 0.0)
        return [[round(s.t - self._t0, 3), round(s.charged.get(container_key, 0.0) - base, 2),
                 s.throttled - first.throttled, s.requests - first.requests] for s in self.samples]


# -- one measured process ------------------------------------------------------------------------
@dataclass
class ProcessRun:
    command: list[str]
    returncode: int | None = None
    wall_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    peak_rss_mb: float = 0.0
    timed_out: bool = False
    killed: bool = False          # SIGKILLed on purpose (kill_when)
    emulator_cpu_s: float | None = None
    stdout: str = ""
    stderr: str = ""
    pinned_to: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_system_s

    def summary(self) -> dict[str, Any]:
        return {
            "command": [Path(c).name if i == 0 else c for i, c in enumerate(self.command)],
            "returncode": self.returncode, "wall_s": round(self.wall_s, 3),
            "cpu_user_s": round(self.cpu_user_s, 3), "cpu_system_s": round(self.cpu_system_s, 3),
            "cpu_s": round(self.cpu_s, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
            "timed_out": self.timed_out, "killed_on_purpose": self.killed,
            "emulator_cpu_s": None if self.emulator_cpu_s is None else round(self.emulator_cpu_s, 3),
            "emulator_cores_busy": (round(self.emulator_cpu_s / self.wall_s, 3)
                                    if self.emulator_cpu_s is not None and self.wall_s else None),
            "client_cores_busy": round(self.cpu_s / self.wall_s, 3) if self.wall_s else None,
            "pinned_to": self.pinned_to,
            "stderr_tail": self.stderr[-1500:] if self.returncode not in (0, None) or self.timed_out else "",
        }


def subprocess_env(connection_string: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    env.pop("AZURE_COSMOS_DATABASE_NAME", None)
    if connection_string is not None:
        env["AZURE_COSMOS_CONNECTION_STRING"] = connection_string
    return env


# Why copiers are started by a launcher process: Linux reports a child's peak RSS (ru_maxrss) as at
# least the RSS its parent had when it forked, because the copy of the parent's memory that exists
# between fork and exec counts as the child's. This harness seeds and digests containers in-process
# and grows to hundreds of MB, which would show up as every copier's "peak RSS". The launcher is a
# fresh, tiny interpreter (no site, a handful of modules, ~10 MB) that forks and execs each copier,
# so their ru_maxrss is their own; `rss_floor_mb` (a /bin/true launched the same way) is recorded.
_LAUNCHER_CODE = r"""
import json, os, sys, time
def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    req = json.loads(line)
    out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    nul = os.open(os.devnull, os.O_RDONLY)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(nul, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.chdir(req["cwd"])
            if req["cpus"]:
                os.sched_setaffinity(0, set(req["cpus"]))
            os.execve(req["argv"][0], req["argv"], req["env"])
        except BaseException as exc:
            os.write(2, ("launcher: cannot start %r: %s\n" % (req["argv"][:3], exc)).encode())
        os._exit(127)
    for fd in (out, err, nul):
        os.close(fd)
    reply({"pid": pid, "t0": t0})
    _, status, usage = os.wait4(pid, 0)
    reply({"pid": pid, "t1": time.monotonic(), "status": status, "utime": usage.ru_utime,
           "stime": usage.ru_stime, "maxrss_kb": usage.ru_maxrss})
"""


class Launcher:
    """Starts one command at a time from a small helper process and reports its wait4 rusage."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER_CODE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lock = threading.Lock()

    def start(self, argv: list[str], *, cwd: Path, env: dict[str, str], cpus: list[int] | None,
              stdout: Path, stderr: Path) -> tuple[int, float]:
        import shutil

        executable = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0], path=env.get("PATH")) or argv[0]
        request = {"argv": [executable, *argv[1:]], "cwd": str(cwd), "env": env, "cpus": cpus or [],
                   "stdout": str(stdout), "stderr": str(stderr)}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        started = json.loads(self.process.stdout.readline())
        return started["pid"], started["t0"]

    def finished(self) -> dict[str, Any]:
        """Block until the running command exits (the caller kills it on a timeout)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the launcher process died")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


_launcher: Launcher | None = None


def launcher() -> Launcher:
    global _launcher
    if _launcher is None or _launcher.process.poll() is not None:
        _launcher = Launcher()
    return _launcher


def close_launcher() -> None:
    global _launcher
    if _launcher is not None:
        _launcher.close()
        _launcher = None


def rss_floor_mb() -> float:
    """The peak RSS a trivial program shows when launched like a copier (what the launcher adds)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = run_measured(["true"], cwd=Path(tmp), env=dict(os.environ), timeout=30)
    return round(run.peak_rss_mb, 1)


def run_measured(
    command: list[str], *, cwd: Path, env: dict[str, str], timeout: float, cpus: list[int] | None = None,
    sampler: StatsSampler | None = None, emulator_pid: int | None = None,
    kill_when: Callable[[float], bool] | None = None, poll: float = 0.1,
) -> ProcessRun:
    """Run ``command`` to completion (or ``timeout``, or until ``kill_when(elapsed)`` says SIGKILL).

    Wall time runs from just before the launcher forks to the moment its ``wait4`` returns (both
    read in the launcher, on the monotonic clock); CPU and peak RSS are the command's own rusage.
    """
    run = ProcessRun(command, pinned_to=cpus)
    cwd.mkdir(parents=True, exist_ok=True)
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    spawner = launcher()
    emulator_before = process_cpu_seconds(emulator_pid)
    with spawner.lock:
        if sampler is not None:
            sampler.start(time.monotonic())
        pid, t0 = spawner.start(command, cwd=cwd, env=env, cpus=cpus, stdout=out_path, stderr=err_path)
        if sampler is not None:
            sampler.rebase(t0)
        done = threading.Event()
        waited: dict[str, Any] = {}

        def waiter() -> None:
            try:
                waited.update(spawner.finished())
            finally:
                done.set()

        threading.Thread(target=waiter, name="wait4", daemon=True).start()
        while not done.wait(poll):
            elapsed = time.monotonic() - t0
            if elapsed > timeout:
                run.timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            if kill_when is not None and not run.killed and kill_when(elapsed):
                run.killed = True
                os.kill(pid, signal.SIGKILL)
                break
        done.wait(60)
    if sampler is not None:
        sampler.stop()
    emulator_after = process_cpu_seconds(emulator_pid)
    if emulator_before is not None and emulator_after is not None:
        run.emulator_cpu_s = emulator_after - emulator_before
    if "status" not in waited:
        raise RuntimeError(f"{command[:4]}: no exit status from the launcher")
    run.returncode = os.waitstatus_to_exitcode(waited["status"])
    run.wall_s = waited["t1"] - t0
    run.cpu_user_s, run.cpu_system_s = waited["utime"], waited["stime"]
    run.peak_rss_mb = waited["maxrss_kb"] / 1024  # kilobytes on Linux
    run.stdout, run.stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    return run


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


# -- what the results were measured on -----------------------------------------------------------
def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    memory_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_mb": memory_mb, "python": platform.python_version(), "executable": sys.executable,
        "versions": {p: _version(p) for p in ("asyncmig", "azure-cosmos", "azure-core", "aiohttp", "anyio",
                                              "orjson", "uvloop", "requests", "matplotlib", "psutil")},
        "git": {"commit": _git("rev-parse", "HEAD"),
                "modified_tracked_files": len(status.splitlines()) if status is not None else None},
        "load_average_at_start": load_average(),
        "rss_floor_mb": rss_floor_mb(),
    }


# -- profiles (py-spy, optional) -----------------------------------------------------------------
def py_spy() -> str | None:
    """The py-spy executable beside this interpreter or on PATH (it is not part of the bench extra)."""
    import shutil

    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def summarize_collapsed(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares per function from py-spy's ``--format raw`` (collapsed stacks,
    recorded with ``--nolineno``; idle threads are not sampled, so shares approximate CPU time)."""
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def ranked(counts: dict[str, int]) -> list[list[Any]]:
        return [[name, round(n / total, 4)] for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "top_self": ranked(self_counts) if total else [],
            "top_inclusive": ranked(inclusive) if total else []}
