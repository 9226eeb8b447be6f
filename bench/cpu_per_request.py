"""CPU time per request of proxies that are already running, measured side by side.

`python -m bench.cpu_per_request LABEL=PORT:MASTER_PID ...` runs wrk against
each proxy in turn (interleaved rounds), reads the CPU time of the master's
children (the workers) with psutil before and after each run, and prints the
median requests/s and the user and system microseconds per request. On a
shared machine the throughput of one run swings by a third; the CPU a request
costs is the steadier figure, and the one to compare when a change to the data
path is small. Loopback only; every run is bounded by --seconds.

Example, with a prefork-proxy master and an nginx master already serving:

    python -m bench.cpu_per_request pp=8080:$(cat pp.pid) nginx=8081:$(cat nginx.pid)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess

import psutil

from bench.wrk import WRK


def _workers(master_pid: int) -> list[psutil.Process]:
    return psutil.Process(master_pid).children()


def _cpu(processes: list[psutil.Process]) -> tuple[float, float]:
    times = [process.cpu_times() for process in processes]
    return sum(t.user for t in times), sum(t.system for t in times)


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
    args = parser.parse_args(argv)
    targets = []
    for spec in args.targets:
        label, _, rest = spec.partition("=")
        port, _, pid = rest.partition(":")
        targets.append((label, int(port), _workers(int(pid))))
    rows: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in targets}
    for _ in range(args.rounds):
        for label, port, workers in targets:
            before = _cpu(workers)
            output = subprocess.run(
                [WRK, "-t2", f"-c{args.connections}", f"-d{args.seconds}s",
                 f"http://127.0.0.1:{port}/"],
                capture_output=True, text=True, check=True).stdout
            after = _cpu(workers)
            count = _requests(output)
            rows[label].append((count / args.seconds, 1e6 * (after[0] - before[0]) / count,
                                1e6 * (after[1] - before[1]) / count))
    for label, runs in rows.items():
        rps, user, system = (statistics.median(run[i] for run in runs) for i in range(3))
        print(f"{label:12s} {rps:9,.0f} requests/s   user {user:6.1f} µs   "
              f"system {system:6.1f} µs per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
