"""Running wrk and reading its report (requests/s, transfer/s, latency percentiles, errors)."""

from __future__ import annotations

import itertools
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs

WRK = shutil.which("wrk") or "/usr/bin/wrk"
UPLOAD_SCRIPT = Path(__file__).resolve().parent / "upload.lua"
VARIED_SCRIPT = Path(__file__).resolve().parent / "varied.lua"
BROWSER_SCRIPT = Path(__file__).resolve().parent / "browser.lua"
CHUNKED_POST_SCRIPT = Path(__file__).resolve().parent / "chunked_post.lua"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_SIZES = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_runs = itertools.count()


@dataclass(frozen=True)
class WrkResult:
    command: str
    requests: int
    requests_per_second: float
    bytes_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int

    @property
    def failed(self) -> int:
        """Failed requests as the reload figure counts them: non-2xx plus socket errors."""
        return self.non_2xx + self.socket_errors


class WrkError(RuntimeError):
    pass


def command(url: str, seconds: float, threads: int, connections: int,
            headers: tuple[str, ...] = (), script: Path | None = None) -> list[str]:
    argv = [WRK, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "5s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    if script is not None:
        argv += ["-s", str(script)]
    return argv + [url]


def start(argv: list[str], log_dir: Path) -> procs.Process:
    return procs.start(f"wrk-{next(_runs)}", argv, log_dir)


def finish(process: procs.Process, seconds: float) -> WrkResult:
    """Wait for a started wrk (bounded) and parse its report."""
    deadline = time.monotonic() + seconds + 30
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.alive():
        process.stop()
        raise WrkError(f"wrk did not finish: {' '.join(process.popen.args)}")
    process.stop()
    return parse(" ".join(map(str, process.popen.args)), process.log_path.read_text())


def run(url: str, seconds: float, threads: int, connections: int, log_dir: Path,
        headers: tuple[str, ...] = (), script: Path | None = None) -> WrkResult:
    argv = command(url, seconds, threads, connections, headers, script)
    return finish(start(argv, log_dir), seconds)


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise WrkError(f"unreadable latency {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse(command_line: str, output: str) -> WrkResult:
    def number(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output)
        if match:
            return match[1]
        if default is None:
            raise WrkError(f"wrk output lacks {pattern!r}:\n{output[-2000:]}")
        return default

    percentiles = {int(p): _duration_ms(v) for p, v in
                   re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.MULTILINE)}
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    requests = int(number(r"(\d+) requests in"))
    if requests and not {50, 90, 99} <= percentiles.keys():
        raise WrkError(f"wrk output lacks latency percentiles:\n{output[-2000:]}")
    return WrkResult(
        command=command_line.replace(WRK, "wrk"),
        requests=requests,
        requests_per_second=float(number(r"Requests/sec:\s+([\d.]+)")),
        bytes_per_second=float(transfer[1]) * _SIZES[transfer[2]] if transfer else 0.0,
        p50_ms=percentiles.get(50, 0.0),
        p90_ms=percentiles.get(90, 0.0),
        p99_ms=percentiles.get(99, 0.0),
        socket_errors=sum(map(int, errors.groups())) if errors else 0,
        non_2xx=int(number(r"Non-2xx or 3xx responses: (\d+)", "0")),
    )
