"""`python -m bench [--quick]`: run every scenario against every proxy and write the report.

Full mode writes bench/results/latest.md, latest.json and the charts; quick
mode (about a second per scenario, one run) writes them to
bench/results/raw/quick/ unless --out says otherwise, so it never replaces the
committed results. Everything the harness starts is stopped on exit, Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from bench import charts, procs, report, runner, wrk
from bench.proxies import Nginx, PreforkProxy
from bench.upstreams import start_upstreams

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 1 s per scenario, one run")
    parser.add_argument("--runs", type=int, help="runs per figure (median is reported)")
    parser.add_argument("--seconds", type=float, help="length of one load run")
    parser.add_argument("--tunnels", type=int, help="idle tunnels for the memory figure")
    parser.add_argument("--proxies", nargs="+", metavar="NAME",
                        choices=[cls.name for cls in runner.PROXY_CLASSES])
    parser.add_argument("--only", nargs="+", metavar="PART",
                        choices=["realistic", "throughput", "scaling", "memory", "reload"],
                        help="run only these parts")
    parser.add_argument("--out", type=Path, help="directory for latest.md/json and charts")
    return parser.parse_args(argv)


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def tool_versions() -> dict[str, str]:
    output = subprocess.run([wrk.WRK, "-v"], capture_output=True, text=True, check=False)
    versions = {"wrk": (output.stdout + output.stderr).split()[1] if output.stdout else "?"}
    for package in ("websockets", "uWSGI"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = runner.Settings.for_mode(args.quick, args.runs, args.seconds, args.tunnels)
    out = args.out or (RESULTS / "raw" / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "raw" / "logs" if out == RESULTS else out / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    parts = set(args.only or ["realistic", "throughput", "scaling", "memory", "reload"])
    classes = runner.proxy_classes(args.proxies)
    results = runner.new_results(settings, classes, log_dir)
    results.versions.update(tool_versions())
    nofile = procs.raise_open_file_limit()
    results.settings["open_files"] = nofile
    runner.say(f"bench: {results.mode} mode, {settings.runs} run(s) of {settings.seconds:g} s, "
               f"proxies {', '.join(results.proxies)}; open files {nofile}; logs in {log_dir}")

    # Installed explicitly: a harness started in the background inherits SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    work.chmod(0o755)  # nginx workers (nobody) read files below it
    upstreams = None
    try:
        upstreams = start_upstreams(work, log_dir)
        if parts & {"realistic", "throughput"}:
            lineup = runner.Lineup(classes, settings.workers, upstreams, work, log_dir, results)
            try:
                if "realistic" in parts:
                    runner.realistic_figures(lineup, settings, results)
                if "throughput" in parts:
                    runner.throughput_figures(lineup, settings, results)
            finally:
                lineup.stop()
        if "scaling" in parts:
            scaled = [cls for cls in classes if cls in (PreforkProxy, Nginx)]
            lineup = runner.Lineup(scaled, 1, upstreams, work, log_dir, results)
            try:
                runner.scaling_figure(lineup, settings, results)
            finally:
                lineup.stop()
        if "memory" in parts:
            runner.memory_figures(classes, upstreams, work, settings, results)
        if "reload" in parts:
            runner.reload_figures(classes, upstreams, work, settings, results)
    except KeyboardInterrupt:
        runner.say("bench: interrupted; stopping everything it started")
        return 130
    finally:
        procs.stop_all()
        if upstreams is not None:
            upstreams.stop()
        shutil.rmtree(work, ignore_errors=True)

    results.save(out / "latest.json")
    charts.draw(results, out)
    (out / "latest.md").write_text(report.markdown(results))
    runner.say(report.summary(results))
    runner.say(f"bench: wrote {out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
