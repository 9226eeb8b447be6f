"""The run: start upstreams and proxies, measure every scenario, collect Results.

Runs are interleaved: run 1 of every proxy, then run 2 of every proxy (in a
rotated order), and so on, so that a noisy moment on this shared machine does
not land on one proxy only. Each figure keeps every run; the report shows the
median and the spread.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench import footprint, realistic, reload, scenarios
from bench.memory import mib
from bench.peers import Mitmproxy, ProxyPy, installed
from bench.proxies import Nginx, PreforkProxy, Proxy
from bench.results import Figure, Results
from bench.upstreams import Upstreams

PROXY_CLASSES: list[type[Proxy]] = [PreforkProxy, Nginx, ProxyPy, Mitmproxy]


@dataclass(frozen=True)
class Settings:
    quick: bool
    runs: int
    seconds: float           # one wrk / ws_load run
    warmup: float            # per proxy and scenario, before the runs (0 = none)
    workers: int
    tunnels: int             # idle tunnels for the per-tunnel memory figure
    reload_seconds: int
    memory_runs: int
    memory_load_seconds: float

    @classmethod
    def for_mode(cls, quick: bool, runs: int | None = None, seconds: float | None = None,
                 tunnels: int | None = None) -> Settings:
        if quick:
            base = cls(True, 1, 1.0, 0.0, 2, 200, 3, 1, 1.0)
        else:
            base = cls(False, 3, 10.0, 2.0, 2, 5000, 20, 3, 5.0)
        return cls(base.quick, runs or base.runs, seconds or base.seconds, base.warmup,
                   base.workers, tunnels or base.tunnels, base.reload_seconds,
                   base.memory_runs, base.memory_load_seconds)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def proxy_classes(names: list[str] | None) -> list[type[Proxy]]:
    chosen = [cls for cls in PROXY_CLASSES if not names or cls.name in names]
    return chosen


def unavailable_reason(cls: type[Proxy]) -> str | None:
    if cls is ProxyPy and not installed("proxy"):
        return "not installed (pip install proxy.py)"
    if cls is Mitmproxy and not installed("mitmproxy"):
        return "not installed (pip install mitmproxy)"
    return None


class Lineup:
    """The chosen proxies, each started with the same worker count in front of `upstreams`."""

    def __init__(self, classes: list[type[Proxy]], workers: int, upstreams: Upstreams,
                 work: Path, log_dir: Path, results: Results) -> None:
        self.proxies: list[Proxy] = []
        for cls in classes:
            reason = results.unavailable.get(cls.name) or unavailable_reason(cls)
            if reason is None:
                proxy = cls(work, log_dir)
                try:
                    proxy.start(workers, upstreams)
                    results.versions.setdefault(proxy.name, proxy.version())
                    self.proxies.append(proxy)
                    continue
                except Exception as error:  # noqa: BLE001 - reported, the run goes on
                    proxy.stop()
                    reason = first_line(error)
            results.unavailable[cls.name] = reason
            say(f"  {cls.name}: unavailable: {reason}")

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def mark_unavailable(figure: Figure, results: Results) -> None:
    for name, reason in results.unavailable.items():
        figure.note(name, f"unavailable: {reason}")


def measure_interleaved(figure: Figure, proxies: list[Proxy], settings: Settings,
                        measure: Callable[[Proxy, float], scenarios.Measurement]) -> None:
    """Warm up each proxy, then `settings.runs` rounds over all proxies in rotated order."""
    active = list(proxies)
    if settings.warmup:
        for proxy in list(active):
            try:
                measure(proxy, settings.warmup)
            except scenarios.NotApplicable as why:
                figure.note(proxy.name, f"n/a: {why}")
                active.remove(proxy)
            except Exception:  # noqa: BLE001 - a failed warm-up shows up in the runs
                pass
    for run in range(settings.runs):
        shift = run % len(active) if active else 0
        for proxy in active[shift:] + active[:shift]:
            try:
                result = measure(proxy, settings.seconds)
            except scenarios.NotApplicable as why:
                figure.note(proxy.name, f"n/a: {why}")
                active.remove(proxy)
                continue
            except Exception as error:  # noqa: BLE001 - one failure must not stop the run
                # A later run may still succeed: the note then says what went wrong once.
                figure.note(proxy.name, f"error in run {run + 1}: {first_line(error)}")
                say(f"  {figure.key} {proxy.name}: error: {first_line(error)}")
                continue
            figure.add(proxy.name, result.value, result.latency)
            figure.command = figure.command or result.command
            if result.note:
                figure.note(proxy.name, result.note)
            if result.failed:
                share = result.failed / max(1, result.requests + result.failed)
                figure.note(proxy.name, f"{result.failed} failed requests ({share:.1%})")
            say(f"  {figure.key} {proxy.name} run {run + 1}/{settings.runs}: "
                f"{result.value:,.1f} {figure.unit}")


def throughput_figures(lineup: Lineup, settings: Settings, results: Results) -> None:
    log_dir = Path(results.settings["log_dir"])
    for scenario in [*scenarios.WRK_SCENARIOS, *scenarios.WS_SCENARIOS]:
        figure = Figure(scenario.key, scenario.title, scenario.unit, "throughput")
        results.figures.append(figure)
        mark_unavailable(figure, results)
        say(f"{scenario.title}")
        measure_interleaved(figure, lineup.proxies, settings,
                            lambda proxy, seconds, s=scenario: s.measure(proxy, seconds, log_dir))
    mixing_figure(lineup, settings, results)


def realistic_figures(lineup: Lineup, settings: Settings, results: Results) -> None:
    """The real-traffic scenarios (bench/realistic.py), prefork-proxy beside nginx."""
    log_dir = Path(results.settings["log_dir"])
    for scenario in realistic.SCENARIOS:
        figure = Figure(scenario.key, scenario.title, scenario.unit, "realistic",
                        higher_is_better=getattr(scenario, "higher_is_better", True),
                        compare=getattr(scenario, "compare", True))
        results.figures.append(figure)
        mark_unavailable(figure, results)
        say(scenario.title)
        run_settings = settings if getattr(scenario, "warmup", True) else replace(settings,
                                                                                  warmup=0.0)
        measure_interleaved(figure, lineup.proxies, run_settings,
                            lambda proxy, seconds, s=scenario: s.measure(proxy, seconds, log_dir))


def mixing_figure(lineup: Lineup, settings: Settings, results: Results) -> None:
    """Wrong answers with a hostile upstream: a count, so no warm-up and no ratio."""
    scenario = scenarios.MIXING
    figure = Figure(scenario.key, scenario.title, scenario.unit, "mixing",
                    higher_is_better=False, compare=False)
    results.figures.append(figure)
    mark_unavailable(figure, results)
    say(scenario.title)
    log_dir = Path(results.settings["log_dir"])
    measure_interleaved(figure, lineup.proxies, replace(settings, warmup=0.0),
                        lambda proxy, seconds: scenario.measure(proxy, seconds, log_dir))


def scaling_figure(lineup: Lineup, settings: Settings, results: Results) -> None:
    scenario = scenarios.SCALING
    figure = Figure(scenario.key, scenario.title, scenario.unit, "throughput")
    results.figures.append(figure)
    mark_unavailable(figure, results)
    measured = {proxy.name for proxy in lineup.proxies}
    for name in results.proxies:
        if name not in measured:
            figure.note(name, "n/a: scaling is measured for prefork-proxy and nginx")
    say(scenario.title)
    log_dir = Path(results.settings["log_dir"])
    measure_interleaved(figure, lineup.proxies, settings,
                        lambda proxy, seconds: scenario.measure(proxy, seconds, log_dir))


def memory_figures(classes: list[type[Proxy]], upstreams: Upstreams, work: Path,
                   settings: Settings, results: Results) -> None:
    keys = [
        ("rss_master_idle", "RSS of the master, idle", "MiB"),
        ("rss_worker_idle", "RSS per worker, idle (mean)", "MiB"),
        ("rss_master_load", "RSS of the master, under load (peak)", "MiB"),
        ("rss_worker_load", "RSS per worker, under load (peak, mean)", "MiB"),
        ("ws_idle_tunnel", f"Worker RSS growth per idle WebSocket tunnel "
                           f"({settings.tunnels:,} tunnels)", "KiB"),
    ]
    figures = {key: Figure(key, title, unit, "memory", higher_is_better=False)
               for key, title, unit in keys}
    results.figures.extend(figures.values())
    log_dir = Path(results.settings["log_dir"])
    say("Memory")
    for run in range(settings.memory_runs):
        lineup = Lineup(classes, settings.workers, upstreams, work, log_dir, results)
        try:
            for proxy in lineup.proxies:
                try:
                    found = footprint.measure(proxy, settings.memory_load_seconds,
                                              settings.tunnels, log_dir)
                except Exception as error:  # noqa: BLE001
                    figures["ws_idle_tunnel"].note(proxy.name, f"error: {first_line(error)}")
                    say(f"  memory {proxy.name}: error: {first_line(error)}")
                    continue
                record_footprint(proxy, found, figures, results, first_run=run == 0)
        finally:
            lineup.stop()
    for figure in figures.values():
        mark_unavailable(figure, results)


def record_footprint(proxy: Proxy, found: footprint.Footprint, figures: dict[str, Figure],
                     results: Results, first_run: bool) -> None:
    workers_idle = list(found.idle.workers.values())
    workers_load = list(found.load.workers.values())
    if found.idle.master is not None:
        figures["rss_master_idle"].add(proxy.name, mib(found.idle.master))
        figures["rss_master_load"].add(proxy.name, mib(found.load.master or 0))
    else:
        for key in ("rss_master_idle", "rss_master_load"):
            figures[key].note(proxy.name, "n/a: one process")
    figures["rss_worker_idle"].add(proxy.name, mib(sum(workers_idle) / len(workers_idle)))
    figures["rss_worker_load"].add(proxy.name, mib(sum(workers_load) / max(1, len(workers_load))))
    tunnel = figures["ws_idle_tunnel"]
    if found.per_tunnel is not None:
        tunnel.add(proxy.name, found.per_tunnel / 1024)
        tunnel.command = f"python -m bench.ws_load idle URL --tunnels {found.tunnels}"
        per_tunnel = f"{found.per_tunnel / 1024:.1f} KiB over {found.tunnels} tunnels"
    elif found.tunnel_error:
        tunnel.note(proxy.name, f"error: {found.tunnel_error}")
        per_tunnel = f"error: {found.tunnel_error}"
    else:
        tunnel.note(proxy.name, "n/a: no WebSocket tunnelling")
        per_tunnel = "n/a"
    say(f"  memory {proxy.name}: workers idle {[round(mib(v), 1) for v in workers_idle]} MiB, "
        f"per tunnel {per_tunnel}")
    if first_run:
        rows = [("master", found.idle.master, found.load.master)] if found.idle.master else []
        rows += [(f"worker {pid}", rss, found.load.workers.get(pid))
                 for pid, rss in found.idle.workers.items()]
        for process, idle, load in rows:
            results.processes.append({"proxy": proxy.name, "process": process,
                                      "idle_mib": mib(idle or 0), "load_mib": mib(load or 0)})


def reload_figures(classes: list[type[Proxy]], upstreams: Upstreams, work: Path,
                   settings: Settings, results: Results) -> None:
    seconds = settings.reload_seconds
    figures = {
        "reload_failed": Figure("reload_failed", f"Failed requests, HUP every second for "
                                f"{seconds} s", "requests", "reload", higher_is_better=False,
                                compare=False),
        "reload_p99": Figure("reload_p99", "p99 latency during reloads (keep-alive)", "ms",
                             "reload", higher_is_better=False),
        "steady_p99": Figure("steady_p99", "p99 latency, same load without reloads", "ms",
                             "reload", higher_is_better=False),
    }
    results.figures.extend(figures.values())
    log_dir = Path(results.settings["log_dir"])
    reloadable = [cls for cls in classes if cls.can_reload]
    for cls in classes:
        if not cls.can_reload:
            for figure in figures.values():
                figure.note(cls.name, "n/a: no graceful reload on HUP")
    say("Reload")
    for _run in range(settings.runs):
        lineup = Lineup(reloadable, settings.workers, upstreams, work, log_dir, results)
        try:
            for proxy in lineup.proxies:
                try:
                    steady = reload.measure(proxy, seconds, log_dir, hup_every_second=False)
                    during = reload.measure(proxy, seconds, log_dir, hup_every_second=True)
                except Exception as error:  # noqa: BLE001
                    figures["reload_failed"].note(proxy.name, f"error: {first_line(error)}")
                    say(f"  reload {proxy.name}: error: {first_line(error)}")
                    continue
                figures["reload_failed"].add(proxy.name, during.failed)
                figures["reload_p99"].add(proxy.name, during.p99_ms)
                figures["steady_p99"].add(proxy.name, steady.p99_ms)
                if steady.failed:
                    figures["steady_p99"].note(proxy.name, f"{steady.failed} failed without HUP")
                for figure in figures.values():
                    figure.command = during.command
                say(f"  reload {proxy.name}: {during.reloads} HUPs, {during.failed} of "
                    f"{during.requests} failed, p99 {during.p99_ms:.1f} ms "
                    f"(steady {steady.p99_ms:.1f} ms)")
        finally:
            lineup.stop()
    for figure in figures.values():
        mark_unavailable(figure, results)


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return {"cores": str(os.cpu_count()), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "load_average_at_start": load}


def new_results(settings: Settings, classes: list[type[Proxy]], log_dir: Path) -> Results:
    return Results(
        mode="quick" if settings.quick else "full",
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        settings={**asdict(settings), "log_dir": str(log_dir)},
        proxies=[cls.name for cls in classes],
    )
