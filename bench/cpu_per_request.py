"""CPU time per request of proxies that are already running, measured side by side.

`python -m bench.cpu_per_request LABEL=PORT:MASTER_PID ...` runs wrk against
each proxy in turn (interleaved rounds), reads the CPU time of the master's
children (the workers) with psutil before and after each run, and prints the
median requests/s and the user and system microseconds per request. On a
shared machine the throughput of one run swings by a third; the CPU a request
costs is the steadier figure, and the one to compare when a change to the data
path is small. Loopback only; every run is bounded by --seconds.

On a machine whose cores are all busy, a proxy also changes what the processes
around it spend: `--app PID` adds the CPU per request of that master's children
(uWSGI's workers), and the CPU of wrk itself is read from its rusage, so the
last column is what one request cost the whole machine.

Example, with a prefork-proxy master and an nginx master already serving:

    python -m bench.cpu_per_request pp=8080:$(cat pp.pid) nginx=8081:$(cat nginx.pid)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess

import psutil

from bench.wrk import WRK


def _workers(master_pid: int) -> list[psutil.Process]:
    return psutil.Process(master_pid).children()


def _cpu(processes: list[psutil.Process]) -> tuple[float, float]:
    times = [process.cpu_times() for process in processes]
    return sum(t.user for t in times), sum(t.system for t in times)


def _wrk_cpu() -> float:
    """User + system seconds of the waited-for children: wrk's runs so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _requests(output: str) -> int:
    for line in output.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise RuntimeError(f"no request count in wrk's output:\n{output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", metavar="LABEL=PORT:MASTER_PID")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--app", type=int, metavar="MASTER_PID",
                        help="also count the CPU of this master's children (uWSGI)")
    parser.add_argument("--script", help="a wrk Lua script (bench/varied.lua)")
    args = parser.parse_args(argv)
    targets = []
    for spec in args.targets:
        label, _, rest = spec.partition("=")
        port, _, pid = rest.partition(":")
        targets.append((label, int(port), _workers(int(pid))))
    app = _workers(args.app) if args.app else []
    script = ["-s", args.script] if args.script else []
    # Per run: requests/s, then µs per request of user, system, the app and wrk.
    rows: dict[str, list[tuple[float, ...]]] = {label: [] for label, _, _ in targets}
    for _ in range(args.rounds):
        for label, port, workers in targets:
            before, app_before, wrk_before = _cpu(workers), sum(_cpu(app)), _wrk_cpu()
            output = subprocess.run(
                [WRK, "-t2", f"-c{args.connections}", f"-d{args.seconds}s", *script,
                 f"http://127.0.0.1:{port}/"],
                capture_output=True, text=True, check=True).stdout
            after, app_after, wrk_after = _cpu(workers), sum(_cpu(app)), _wrk_cpu()
            count = _requests(output)
            rows[label].append((count / args.seconds, 1e6 * (after[0] - before[0]) / count,
                                1e6 * (after[1] - before[1]) / count,
                                1e6 * (app_after - app_before) / count,
                                1e6 * (wrk_after - wrk_before) / count))
    for label, runs in rows.items():
        rps, user, system, app_cpu, wrk_cpu = (
            statistics.median(run[i] for run in runs) for i in range(5))
        line = (f"{label:12s} {rps:9,.0f} requests/s   user {user:6.1f} µs   "
                f"system {system:6.1f} µs")
        if app:
            line += f"   app {app_cpu:6.1f} µs"
        print(f"{line}   wrk {wrk_cpu:5.1f} µs   all {user + system + app_cpu + wrk_cpu:6.1f} µs"
              " per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
