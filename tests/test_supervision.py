"""``mtbioner serve --workers 2``: a worker killed with SIGKILL is replaced (uvicorn's supervisor), nothing hangs.

The server runs the shipped default model: uvicorn's supervisor process and its two workers. One worker is
killed; the next requests are answered by the other, and a new worker takes the dead one's place and answers too
(the whole test takes ~10 s). ``benchmarks/soak.py`` does the same under load, mid-request.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

UTTERANCE = {"text": "Can ibuprofen cause kidney damage?"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def workers(server: subprocess.Popen) -> set[int]:
    """Process ids of the uvicorn workers: the supervisor's children started by multiprocessing's spawn."""
    found = set()
    for child in psutil.Process(server.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def _holds(pid: int, client_port: int) -> bool:
    """Whether process ``pid`` holds the server end of the connection from ``client_port``."""
    process = psutil.Process(pid)
    listing = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    return any(c.raddr and c.raddr.port == client_port for c in listing(kind="tcp"))


def health_from(port: int, pids: set[int]) -> tuple[int, int | None]:
    """Status of one ``GET /health`` on a fresh connection, and which of ``pids`` answered it.

    The connection stays open (HTTP keep-alive) until the worker holding it has been looked up.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(65536)
            if not chunk:
                break
            head += chunk
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
        client_port = connection.getsockname()[1]
        owner = next((pid for pid in pids if _holds(pid, client_port)), None)
    return status, owner


def wait_for(condition, seconds: float, what: str, log: Path):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {seconds} s; server log:\n{log.read_text(errors='replace')[-3000:]}")


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_a_killed_worker_is_replaced_and_the_next_requests_are_answered(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "mtbioner", "serve", "--workers", "2", "--threads", "1", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def two_workers_but(dead: int | None) -> set[int]:
        found = workers(server)
        return found if len(found) == 2 and dead not in found else set()

    try:
        first = wait_for(lambda: ready(url) and two_workers_but(None), 90, "two workers ready", log)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)

        with httpx.Client(base_url=url, timeout=10) as client:  # new connections: none to the dead worker
            statuses = [client.post("/v1/tag", json=UTTERANCE).status_code for _ in range(5)]
        assert statuses == [200] * 5

        now = wait_for(lambda: two_workers_but(victim), 60, "a new worker started", log)
        (replacement,) = now - first
        wait_for(lambda: health_from(port, now) == (200, replacement), 60, "the new worker answered", log)
        assert httpx.post(f"{url}/v1/tag", json=UTTERANCE, timeout=10).status_code == 200
        assert "died" in log.read_text()  # uvicorn's supervisor: "Child process [PID] died"
    finally:
        children = psutil.Process(server.pid).children(recursive=True) if server.poll() is None else []
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        for child in children:  # one the supervisor did not stop (it should have); is_running() checks its start time
            if child.is_running():
                child.kill()
