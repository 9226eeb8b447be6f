"""PNG charts of a run: throughput relative to nginx, latency percentiles, memory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from bench.results import Figure, Results  # noqa: E402

COLORS = {"prefork-proxy": "#2b7bba", "nginx": "#2ca25f", "proxy.py": "#e6842a",
          "mitmproxy": "#b04a9c"}


def draw(results: Results, out: Path) -> None:
    throughput(results, out / "throughput.png")
    latency(results, out / "latency.png")
    memory(results, out / "memory.png")


PLAIN = FuncFormatter(lambda value, _: f"{value:g}")


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def throughput(results: Results, path: Path) -> None:
    """Grouped bars per scenario: each proxy's median as a multiple of nginx's (log scale)."""
    figures = [f for f in results.figures if f.group == "throughput" and f.median("nginx")]
    if not figures:
        return
    proxies = [p for p in results.proxies if any(f.median(p) for f in figures)]
    fig, axes = plt.subplots(figsize=(max(8, 1.6 * len(figures)), 5))
    width = 0.8 / max(1, len(proxies))
    for index, proxy in enumerate(proxies):
        xs, ys, low, high = [], [], [], []
        for x, figure in enumerate(figures):
            median, spread = figure.median(proxy), figure.spread(proxy)
            base = figure.median("nginx")
            if median is None or spread is None or not base:
                continue
            xs.append(x + (index - (len(proxies) - 1) / 2) * width)
            ys.append(median / base)
            low.append(max(0.0, (median - spread[0]) / base))
            high.append(max(0.0, (spread[1] - median) / base))
        axes.bar(xs, ys, width, yerr=[low, high], capsize=2, label=proxy,
                 color=COLORS.get(proxy))
        for x, y in zip(xs, ys, strict=True):
            axes.annotate(f"{y:.2f}", (x, y), ha="center", va="bottom", fontsize=6,
                          xytext=(0, 2), textcoords="offset points")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(PLAIN)
    axes.set_ylabel("× nginx (median; whiskers show min–max)")
    labels = ["\n".join(textwrap.wrap(f.title, 18))
              + f"\n(nginx {_short(f.median('nginx') or 0)} {f.unit})" for f in figures]
    axes.set_xticks(range(len(figures)), labels, fontsize=7)
    axes.set_title(f"Throughput relative to nginx ({results.mode} run, {results.date})")
    axes.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency(results: Results, path: Path) -> None:
    """One panel per HTTP scenario: p50/p90/p99 per proxy (ms, log scale)."""
    figures = [f for f in results.figures if any(f.median_latency(p) for p in results.proxies)]
    if not figures:
        return
    columns = min(3, len(figures))
    rows = (len(figures) + columns - 1) // columns
    fig, grid = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for axes, figure in zip(grid.flat, figures, strict=False):
        _latency_panel(axes, figure, results.proxies)
    for axes in list(grid.flat)[len(figures):]:
        axes.set_visible(False)
    fig.suptitle("Latency percentiles (wrk --latency, median of runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_panel(axes: plt.Axes, figure: Figure, proxies: list[str]) -> None:
    present = [p for p in proxies if figure.median_latency(p)]
    width = 0.8 / max(1, len(present))
    for index, proxy in enumerate(present):
        values = figure.median_latency(proxy) or []
        xs = [x + (index - (len(present) - 1) / 2) * width for x in range(3)]
        axes.bar(xs, values, width, label=proxy, color=COLORS.get(proxy))
    axes.set_xticks(range(3), ["p50", "p90", "p99"])
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(PLAIN)
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_ylabel("ms")
    axes.set_title(figure.title, fontsize=9)
    axes.legend(fontsize=7)


def memory(results: Results, path: Path) -> None:
    """Worker RSS idle and under load, and RSS per idle tunnel."""
    keys = ["rss_worker_idle", "rss_worker_load", "ws_idle_tunnel"]
    figures = [f for f in results.figures if f.key in keys]
    if not figures:
        return
    fig, grid = plt.subplots(1, len(figures), figsize=(4.5 * len(figures), 3.8), squeeze=False)
    for axes, figure in zip(grid.flat, figures, strict=False):
        present = [p for p in results.proxies if figure.median(p) is not None]
        values = [figure.median(p) or 0.0 for p in present]
        axes.bar(present, values, color=[COLORS.get(p, "grey") for p in present])
        axes.set_title(figure.title, fontsize=9)
        axes.set_ylabel(figure.unit)
        axes.tick_params(axis="x", labelsize=7)
        if figure.key == "ws_idle_tunnel":
            axes.axhline(32, color="red", linewidth=0.8, linestyle="--", label="target ≤ 32 KiB")
            axes.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
