"""Fixtures for the portcullis end-to-end tests with third-party clients.

The gateway binary comes from $PORTCULLIS_BIN (default: <repo>/target/debug/portcullis).
Every process is bound to loopback on ephemeral ports and killed at teardown.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

# Every gateway/upstream started by these fixtures, for diagnostics on failures.
_PROCESSES: list["_Proc"] = []


# --------------------------------------------------------------------------- helpers


def _repo_root() -> Path:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return Path(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return HERE.parent.parent


def _clean_env() -> dict:
    """The environment for the gateway, without configuration overrides from outside
    (PORTCULLIS_A__B=... would change the config under test)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.upper().startswith("PORTCULLIS_") and "__" in k)
    }
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port != 6379:
            return port


class _Proc:
    """A child process whose stdout/stderr lines are collected by reader threads."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, cwd=None):
        self.name = name
        self.argv = argv
        self.stdout_lines: deque[str] = deque(maxlen=20000)
        self.stderr_lines: deque[str] = deque(maxlen=20000)
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines), daemon=True),
        ]
        for t in self._threads:
            t.start()
        _PROCESSES.append(self)

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                sink.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, which: str, predicate, timeout: float):
        """Wait for a line of stdout/stderr satisfying predicate (returning a truthy
        value); return that value, or None on timeout or process exit."""
        sink = self.stdout_lines if which == "stdout" else self.stderr_lines
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                lines = list(sink)
                for line in lines[seen:]:
                    value = predicate(line)
                    if value:
                        return value
                seen = len(lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None and not self._pumps_alive():
                    return None
                self._cond.wait(min(remaining, 0.1))

    def _pumps_alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def tail(self, n: int = 40) -> str:
        out = list(self.stdout_lines)[-n:]
        err = list(self.stderr_lines)[-n:]
        return (
            f"--- {self.name} (pid {self.proc.pid}, returncode {self.proc.poll()}) argv: {self.argv}\n"
            f"--- stderr (last {len(err)} lines):\n" + "\n".join(err) + "\n"
            f"--- stdout (last {len(out)} lines):\n" + "\n".join(out) + "\n"
        )

    def stop(self) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL); return its exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        for t in self._threads:
            t.join(timeout=2)
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        if self in _PROCESSES:
            _PROCESSES.remove(self)
        return self.proc.returncode


class Upstream:
    def __init__(self):
        self.p = _Proc("upstream", [sys.executable, str(HERE / "upstream.py")], cwd=HERE)

        def port_of(line: str):
            if line.startswith("PORT "):
                return int(line.split()[1])
            return None

        port = self.p.wait_line("stdout", port_of, START_TIMEOUT_S)
        if not port:
            tail = self.p.tail()
            self.p.stop()
            pytest.fail(f"upstream.py did not start within {START_TIMEOUT_S}s\n{tail}", pytrace=False)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


def _listening(line: str):
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("message") == "listening":
        return obj
    return None


class Gateway:
    """A running `portcullis serve` with a temporary TOML configuration."""

    def __init__(self, binary: Path, upstream_url: str, name: str, server_extra: str = "", extra: str = ""):
        self.tmp = tempfile.TemporaryDirectory(prefix="portcullis-e2e-")
        self.config_path = Path(self.tmp.name) / "portcullis.toml"
        self.upstream_url = upstream_url
        self.config_text = (
            "[server]\n"
            'listen = "127.0.0.1:0"\n'
            f'upstream = "{upstream_url}"\n'
            f"{server_extra}"
            "\n[admin]\n"
            'listen = "127.0.0.1:0"\n'
            f"{extra}"
        )
        self.config_path.write_text(self.config_text)
        self.p = _Proc(
            name,
            [str(binary), "serve", "--config", str(self.config_path)],
            env=_clean_env(),
            cwd=self.tmp.name,
        )
        info = self.p.wait_line("stderr", _listening, START_TIMEOUT_S)
        if not info:
            tail = self.p.tail()
            self.p.stop()
            self.tmp.cleanup()
            pytest.fail(
                f"{name}: no stderr JSON line with \"message\":\"listening\" within "
                f"{START_TIMEOUT_S}s (docs/test-contract.md, 'Starting the gateway')\n"
                f"config:\n{self.config_text}\n{tail}",
                pytrace=False,
            )
        for member in ("listen", "admin"):
            if not isinstance(info.get(member), str) or ":" not in info[member]:
                tail = self.p.tail()
                self.p.stop()
                self.tmp.cleanup()
                pytest.fail(
                    f"{name}: listening line lacks a top-level {member!r} address: {info}\n{tail}",
                    pytrace=False,
                )
        self.listen = info["listen"]
        self.admin = info["admin"]
        self.url = f"http://{self.listen}"
        self.admin_url = f"http://{self.admin}"
        self.host, _, port = self.listen.rpartition(":")
        self.port = int(port)

    def access_log(self) -> list[dict]:
        out = []
        for line in list(self.p.stdout_lines):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def stop(self) -> int | None:
        crashed_before_stop = self.p.proc.poll()
        code = self.p.stop()
        self.tmp.cleanup()
        if crashed_before_stop is not None:
            raise AssertionError(
                f"{self.p.name} exited by itself during the tests with code {crashed_before_stop}\n"
                + self.p.tail()
            )
        return code


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def gateway_bin() -> Path:
    value = os.environ.get("PORTCULLIS_BIN") or str(_repo_root() / "target" / "debug" / "portcullis")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"gateway binary {path} is missing or not executable: build it "
            "(cargo build -p portcullis) or set PORTCULLIS_BIN",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def upstream():
    up = Upstream()
    yield up
    up.p.stop()


@pytest.fixture(scope="session")
def gateway(gateway_bin, upstream):
    """The main gateway, in front of the real upstream, with max_body_bytes = 1024."""
    gw = Gateway(gateway_bin, upstream.url, "gateway", server_extra="max_body_bytes = 1024\n")
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def down_gateway(gateway_bin):
    """A gateway whose upstream is a loopback port nobody listens on."""
    gw = Gateway(gateway_bin, f"http://127.0.0.1:{closed_port()}", "gateway-upstream-down")
    yield gw
    gw.stop()


# --------------------------------------------------------------------------- hooks


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test time bound (pytest-timeout)")


def pytest_collection_modifyitems(config, items):
    # Each test bounded even if a client timeout were missed somewhere.
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(60))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _PROCESSES:
        for p in list(_PROCESSES):
            report.sections.append((f"process {p.name}", p.tail(30)))


def pytest_sessionfinish(session, exitstatus):
    """Never let a run that passed nothing look green (e.g. everything skipped)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    passed = len(reporter.stats.get("passed", []))
    if exitstatus == 0 and passed == 0:
        reporter.write_line("e2e: no test passed (all skipped or deselected): failing the run", red=True)
        session.exitstatus = 1
