"""Run the project's `dagster dev` (webserver, daemon, code server) in the background and talk to its GraphQL API.

Shared by the end-to-end test and the latency benchmark. It starts `dagster dev -w workspace.yaml` on a free
loopback port with its own data root and DAGSTER_HOME (the shipped ``dagster_instance.yaml`` unless told
otherwise), uses only the stdlib for HTTP, and stops the whole process group afterwards. No Dagster import.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from radiomics_assets.paths import DATA_DIR_ENV, PROJECT_ROOT

REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": "radiomics_assets"}
SHIPPED_INSTANCE_YAML = Path(__file__).with_name("dagster_instance.yaml")
_READY_QUERY = """
query Ready($sel: RepositorySelector!) {
  repositoryOrError(repositorySelector: $sel) { __typename ... on PythonError { message } }
}
"""


class DagsterDevError(RuntimeError):
    """`dagster dev` exited, did not come up in time, or answered with GraphQL errors (log tail included)."""


@dataclass
class DagsterDev:
    url: str
    data_root: Path
    log_path: Path
    process: subprocess.Popen

    def gql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DagsterDevError(f"dagster dev exited with {self.process.returncode}\n{self.log_tail()}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _restore_default_signals() -> None:
    # A shell's background job inherits SIGINT ignored; `dagster dev` maps SIGTERM onto the SIGINT handler,
    # so without this it would ignore our SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(process: subprocess.Popen, grace_s: float = 45) -> None:
    """SIGTERM to the whole process group, wait, then SIGKILL whatever is left of the group."""
    pgid = process.pid  # start_new_session=True: the process leads its own group
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:  # code server and run workers exit after dev
        time.sleep(0.5)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)


def wait_until_ready(dev: DagsterDev, timeout_s: float = 120) -> None:
    """Until the webserver answers and the code location is loaded."""
    deadline = time.monotonic() + timeout_s
    last_error: object = None
    while time.monotonic() < deadline:
        dev.check_alive()
        try:
            repo = dev.gql(_READY_QUERY, {"sel": REPOSITORY}, timeout=5)["repositoryOrError"]
            if repo["__typename"] == "Repository":
                return
            last_error = repo
        except (urllib.error.URLError, ConnectionError, TimeoutError, DagsterDevError) as error:
            last_error = error
        time.sleep(1)
    raise DagsterDevError(f"GraphQL at {dev.url} not ready after {timeout_s} s: {last_error}\n{dev.log_tail()}")


@contextmanager
def running_dagster_dev(
    data_root: Path,
    dagster_home: Path,
    log_path: Path,
    instance_yaml: str | None = None,
    env: dict[str, str] | None = None,
    startup_timeout_s: float = 120,
) -> Iterator[DagsterDev]:
    """`dagster dev` on a free 127.0.0.1 port over ``data_root``; ``instance_yaml`` (text) is written as
    ``dagster_home/dagster.yaml`` (default: the shipped instance settings, as `./dev` copies them)."""
    data_root.mkdir(parents=True, exist_ok=True)
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(instance_yaml or SHIPPED_INSTANCE_YAML.read_text())
    port = free_port()
    full_env = {**os.environ, DATA_DIR_ENV: str(data_root), "DAGSTER_HOME": str(dagster_home), **(env or {})}
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_restore_default_signals,
        )
    dev = DagsterDev(f"http://127.0.0.1:{port}/graphql", data_root, log_path, process)
    try:
        wait_until_ready(dev, startup_timeout_s)
        yield dev
    finally:
        stop(process)
