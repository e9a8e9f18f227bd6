"""Process and network helpers shared by the end-to-end tests.

Rules every helper follows:
  * loopback only: servers are started on 127.0.0.1 with ports found by
    binding port 0;
  * bounded waits: every wait is a polling loop with a deadline, never a bare
    sleep used as synchronisation;
  * every started process is in its own process group, is recorded in
    $E2E_PIDFILE (so scripts/test.sh can reap it even if pytest dies), and is
    killed (group-wide: the gateway's stdio upstreams go with it) at teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------
# ports and polling


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind :0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    abort: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``predicate`` until true; raise after ``timeout`` seconds.

    ``abort`` may return an error message to stop early (e.g. the process
    under test exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if abort is not None:
            msg = abort()
            if msg:
                raise RuntimeError(f"while waiting for {what}: {msg}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """GET ``url``; the status code, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------
# processes


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return text[-max_chars:]

    def exited_msg(self) -> str | None:
        rc = self.popen.poll()
        if rc is None:
            return None
        return f"{self.name} exited with {rc}; log tail:\n{self.log_tail()}"


@dataclass
class ProcessManager:
    """Starts processes for one test and kills all of them at teardown."""

    log_dir: Path
    pidfile: Path | None = None
    procs: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        stdin=subprocess.DEVNULL,
    ) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        idx = len(self.procs)
        log_path = self.log_dir / f"{idx:02d}-{name}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        log = open(log_path, "wb")  # noqa: SIM115 (closed at teardown via the process)
        with log:
            log.write(("$ " + " ".join(map(str, argv)) + "\n").encode())
            log.flush()
            popen = subprocess.Popen(  # noqa: S603 (argv built by the tests)
                [str(a) for a in argv],
                stdin=stdin,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        if self.pidfile is not None:
            record_pid(popen.pid, self.pidfile)
        proc = Proc(name=name, argv=[str(a) for a in argv], popen=popen, log_path=log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        """SIGTERM the process group, wait (bounded), then SIGKILL it."""
        pid = proc.popen.pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the leader may be gone while group members (stdio upstreams) linger
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


# --------------------------------------------------------------------------
# config files


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, os.PathLike)):
        return json.dumps(str(v))  # JSON string escapes are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot encode {v!r} as TOML")


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def gateway_toml(
    listen: str, upstreams: Iterable[Mapping[str, object]], server: Mapping[str, object] | None = None
) -> str:
    """Render a switchboard config: ``[server]`` (listen plus ``server``) and ``[[upstreams]]``."""
    lines = ["[server]", f"listen = {toml_value(listen)}"]
    for k, v in (server or {}).items():
        lines.append(f"{toml_key(k)} = {toml_value(v)}")
    lines.append("")
    for up in upstreams:
        lines.append("[[upstreams]]")
        for k, v in up.items():
            lines.append(f"{toml_key(k)} = {toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# commands


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a command to completion (bounded), capturing text output.

    Runs in its own process group which is killed on timeout, so grandchildren
    cannot outlive the test.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.Popen(  # noqa: S603
        [str(a) for a in argv],
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    record_pid(p.pid)
    try:
        out, err = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate(timeout=10)
        raise AssertionError(
            f"command timed out after {timeout:.0f}s: {' '.join(map(str, argv))}\n"
            f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
        ) from None
    finally:
        # reap anything the command left behind in its group
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def record_pid(pid: int, pidfile: str | os.PathLike | None = None) -> None:
    """Append ``pid`` (a process-group leader) to the pidfile scripts/test.sh reaps."""
    path = pidfile or os.environ.get("E2E_PIDFILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{pid}\n")


def describe(cp: subprocess.CompletedProcess, limit: int = 3000) -> str:
    return (
        f"$ {' '.join(map(str, cp.args))}\nexit {cp.returncode}\n"
        f"--- stdout ---\n{cp.stdout[-limit:]}\n--- stderr ---\n{cp.stderr[-limit:]}"
    )


def which_or(path: str | None, name: str) -> str | None:
    return path or shutil.which(name)
