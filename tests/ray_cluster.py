"""A real Ray cluster on 127.0.0.1 for tests and benchmarks: ``ray start --head --block`` in its own session.

Not local mode and not a mock: a GCS server, a raylet and worker processes, with a fresh temp dir (a
short path: Ray's socket names must fit in 107 bytes). ``stop()`` ends the head with SIGTERM (Ray
then stops its own processes) and kills whatever is left of its process group, by that group's id:
nothing else on the machine is touched (``ray stop`` would stop every Ray cluster of this user).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalRayCluster:
    def __init__(self, *, num_cpus: int = 2, timeout_s: float = 90.0):
        self.num_cpus = num_cpus
        self.temp_dir = Path(tempfile.mkdtemp(prefix="xr", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        ray_bin = Path(sys.executable).with_name("ray")
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["RAY_memory_monitor_refresh_ms"] = "0"  # a busy shared machine must not make Ray kill our workers
        cmd = [str(ray_bin), "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.1",
               f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
               "--disable-usage-stats", "--object-store-memory=100000000"]
        self.log = open(self.temp_dir / "head.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.pgid = self.proc.pid
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: {self.head_log()[-2000:]}")
            if "Ray runtime started" in self.head_log():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the Ray head did not start within {timeout_s} s: {self.head_log()[-2000:]}")

    def head_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.temp_dir / "head.log").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while _group_alive(self.pgid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def processes(self) -> list[int]:
        """Pids still in the cluster's process group (empty once stopped)."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[2]) == self.pgid:
                        out.append(int(entry.name))
        return out

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
