"""What the ``xtlens`` command line's modules share: the configuration options and how they are read, the
progress bar, following a job until it ends (here or on a Ray cluster), and how an error is printed.

``profiling.cli`` (estimate, profile, results, dashboard) and ``profiling.benefit.cli`` (probe) both import this
module and neither imports the other's internals. It imports only the standard library and ``core.config``, so
``xtlens estimate`` still starts without torch or pandas.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from urllib.parse import parse_qsl

from xtlens.core.config import (
    MAX_CONFIG_TEXT_CHARS,
    PRESETS,
    ConfigError,
    ModelConfig,
    parse_snippet,
    untrusted_text,
)
from xtlens.core.untrusted import read_untrusted_file

__all__ = ["load_config", "read_text_option", "add_config_options", "config_from_args", "ProgressBar", "follow",
           "print_error", "run_on_ray", "bounded_int", "bounded_float", "time_limit_s", "check_ray_address",
           "MAX_TIME_LIMIT_S", "RAY_CONNECT_TIMEOUT_S"]

MAX_TIME_LIMIT_S = 10_000_000.0  # about 116 days: beyond it a limit is no limit (and overflows process limits)
RAY_CONNECT_TIMEOUT_S = 3.0  # how long --ray's address gets to accept a connection before it is called unreachable


# --- configuration ----------------------------------------------------------------------------------

def load_config(*, preset: str | None = None, config: str | None = None, snippet: str | None = None,
                sets: Sequence[str] = ()) -> ModelConfig:
    """The ``ModelConfig`` named by the CLI options (see the module docstring). Raises ``ConfigError``."""
    given = [x for x in (preset, config, snippet) if x is not None]
    if len(given) > 1:
        raise ConfigError("--preset/--config/--snippet", None, "give only one of --preset, --config and --snippet")
    if config is not None:
        cfg = ModelConfig.from_json(read_text_option(config, "--config"))
    elif snippet is not None:
        cfg = parse_snippet(read_text_option(snippet, "--snippet"))
    else:
        name = preset or "seed"
        if name not in PRESETS:
            raise ConfigError("preset", name, f"one of {', '.join(PRESETS)}")
        cfg = PRESETS[name]
    if not sets:
        return cfg
    query = dict(parse_qsl(cfg.to_query(), keep_blank_values=True))
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", item, "key=value, e.g. --set depth=12")
        query[key.strip()] = value.strip()
    return ModelConfig.from_query(query)


def read_text_option(path: str, option: str) -> str:
    """The file at ``path`` as text, through the one untrusted-text boundary (size cap, strict UTF-8)."""
    data = read_untrusted_file(option, path, MAX_CONFIG_TEXT_CHARS)  # a named pipe or a device is refused unread
    return untrusted_text(f"{option} {path}", data)


def add_config_options(p: argparse.ArgumentParser) -> None:
    """``--preset``, ``--config``, ``--snippet`` and ``--set``: the configuration options of every command."""
    g = p.add_argument_group("configuration (default: --preset seed)")
    g.add_argument("--preset", help=f"a built-in configuration: {', '.join(PRESETS)}")
    g.add_argument("--config", metavar="FILE.json", help="a JSON object of ModelConfig fields")
    g.add_argument("--snippet", metavar="FILE.py", help="a TransformerWrapper(...) call (parsed, never run)")
    g.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set depth=12 --set attn_flash=false (repeatable)")


def config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The configuration the parsed options of ``add_config_options`` name (raises ``ConfigError``)."""
    return load_config(preset=args.preset, config=args.config, snippet=args.snippet, sets=args.sets)



# --- bounded numeric options (argparse types: a bad value exits 2 naming the option) -------------------

def bounded_int(lo: int, hi: int):
    """An argparse ``type``: an integer from ``lo`` to ``hi`` (``1e6`` notation accepted when whole)."""
    def parse(text: str) -> int:
        allowed = f"an integer from {lo:,} to {hi:,}"
        try:
            value = int(text.replace("_", "")) if len(text) <= 40 else None
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = math.nan
            value = int(f) if math.isfinite(f) and f == int(f) else None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {allowed}")
        return value
    return parse


def bounded_float(lo: float, hi: float, *, lo_open: bool = False):
    """An argparse ``type``: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (lo < value if lo_open else lo <= value) and value <= hi):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: a finite number {'above' if lo_open else 'from'} "
                                             f"{lo:g} {'and at most' if lo_open else 'to'} {hi:g}")
        return value
    return parse


def time_limit_s(text: str) -> float:
    """``--time-limit``: a finite number of seconds from 0 to ``MAX_TIME_LIMIT_S``; 0 = no limit, in this process."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= MAX_TIME_LIMIT_S):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: a finite number of seconds from 0 to "
                                         f"{MAX_TIME_LIMIT_S:,.0f} (0 = no time limit: run in this process)")
    return value


def check_ray_address(address: str) -> None:
    """``--ray ADDRESS``: ``auto``, or ``host:port`` / ``ray://host:port`` that accepts a TCP connection within
    ``RAY_CONNECT_TIMEOUT_S``. Raises ``ConfigError`` naming ``--ray`` (exit 2) for a malformed or unreachable
    address, before any work starts."""
    text = address.strip()
    if text == "auto":
        return
    hostport = text.removeprefix("ray://")
    host, sep, port_text = hostport.rpartition(":")
    host = host.strip("[]")
    allowed = "auto, host:port or ray://host:port of a running Ray cluster"
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError("--ray", address, allowed + " (port 1 to 65535)")
    try:
        with socket.create_connection((host, int(port_text)), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except (OSError, UnicodeError, ValueError) as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (getattr(exc, "strerror", None) or str(exc))
        raise ConfigError("--ray", address, f"{allowed}: could not connect to the Ray cluster at {hostport}: nothing "
                          f"answers there within {RAY_CONNECT_TIMEOUT_S:g} s ({reason}); start one with `ray start "
                          "--head` or fix the address") from None


# --- progress -----------------------------------------------------------------------------------------

class ProgressBar:
    """A one-line progress bar on stderr (a new line per message when stderr is not a terminal)."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = ""
        self.start = time.monotonic()

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(round(fraction * self.width))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * fraction:5.1f}% {time.monotonic() - self.start:6.1f}s {message}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:200])
            if fraction >= 1.0:
                self.stream.write("\n")
        elif message != self.last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = message


def follow(job, bar, *, interval_s: float = 0.2):
    """Show a running job's progress on ``bar`` until it is done; Ctrl-C cancels it. Returns the job."""
    try:
        while not job.done():
            bar(*job.progress())
            time.sleep(interval_s)
    except KeyboardInterrupt:
        job.cancel()
        raise
    bar(*job.progress())
    return job


# --- errors and Ray ---------------------------------------------------------------------------------------

def print_error(command: str, message: str) -> None:
    """``xtlens COMMAND: error: MESSAGE`` on stderr: how every command reports what stopped it (``main`` then
    exits 2 for bad input, a command 1 for a run that failed)."""
    print(f"xtlens {command}: error: {message}", file=sys.stderr)


def run_on_ray(command: str, address: str, spec, bar, *, noun: str, verb: str, interval_s: float = 0.2,
               store_failures: list[str] | None = None):
    """Run ``spec`` (a sweep's ``JobSpec`` or a probe's ``ProbeSpec``) as Ray tasks on the cluster at ``address``
    (``profiling.run.executor.RayExecutor``; ``$XTLENS_RAY_PIP`` ships the dependencies too), showing progress on
    ``bar``; then say where it ran (``VERB on CLUSTER (hosts: ...)``, retried ``NOUN``s). The rows, or None when
    the job failed (the reason printed as ``print_error``). ``store_failures`` receives the messages of rows the
    driver measured but could not store (kept in the spool each message names)."""
    from xtlens.profiling.run.executor import RayExecutor

    check_ray_address(address)
    executor = RayExecutor(address=address, pip_deps=os.environ.get("XTLENS_RAY_PIP", "") not in ("", "0"))
    job = executor.job(spec)
    follow(job.start(), bar, interval_s=interval_s)
    if store_failures is not None:
        store_failures.extend(getattr(job, "store_failures", []))
    if job.outcome == "crashed":
        print_error(command, job.progress()[1].removeprefix("failed: "))
        return None
    hosts = ", ".join(sorted(job.hosts)) or f"none (every {noun} came from the result store)"
    retried = f"; {len(job.retried)} {noun}(s) retried after a worker died" if job.retried else ""
    print(f"{verb} on {executor.describe()} (hosts: {hosts}){retried}", file=sys.stderr)
    return job.result()
