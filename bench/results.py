"""What a bench run produced: figures (runs per proxy, medians, spread) and run metadata.

A Figure is one number per proxy, e.g. "small GET keep-alive, requests/s". Each
proxy has the value of every run (the report shows the median and min-max), or
a note that says why there is none ("n/a: no uwsgi", "unavailable: ...").
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Latency = list[float]  # [p50, p90, p99] in ms


@dataclass
class Figure:
    key: str
    title: str
    unit: str
    group: str                      # throughput | latency | memory | reload
    higher_is_better: bool = True
    compare: bool = True            # False: a ratio to nginx means nothing (failure counts)
    command: str = ""
    runs: dict[str, list[float]] = field(default_factory=dict)
    latency: dict[str, list[Latency]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, proxy: str, value: float, latency: Latency | None = None) -> None:
        self.runs.setdefault(proxy, []).append(value)
        if latency is not None:
            self.latency.setdefault(proxy, []).append(latency)

    def note(self, proxy: str, text: str) -> None:
        self.notes.setdefault(proxy, text)

    def median(self, proxy: str) -> float | None:
        values = self.runs.get(proxy)
        return statistics.median(values) if values else None

    def spread(self, proxy: str) -> tuple[float, float] | None:
        values = self.runs.get(proxy)
        return (min(values), max(values)) if values else None

    def median_latency(self, proxy: str) -> Latency | None:
        runs = self.latency.get(proxy)
        if not runs:
            return None
        return [statistics.median(run[i] for run in runs) for i in range(3)]

    def ratio(self, proxy: str, reference: str = "nginx") -> float | None:
        value, base = self.median(proxy), self.median(reference)
        if value is None or not base or not self.compare:
            return None
        return value / base


@dataclass
class Results:
    mode: str
    date: str
    machine: dict[str, str]
    settings: dict[str, Any]
    proxies: list[str]
    versions: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)  # memory per process

    def figure(self, key: str) -> Figure:
        for figure in self.figures:
            if figure.key == key:
                return figure
        raise KeyError(key)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())
        data["figures"] = [Figure(**figure) for figure in data["figures"]]
        return cls(**data)
