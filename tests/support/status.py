"""Reading the status listener in tests: /metrics through Prometheus's own parser,
and /status.json."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def status_config(upstream: str, status_port: int, *, workers: int = 2, top: str = "",
                  status: str = "", location: str = "", directive: str = "proxy_pass") -> str:
    """A proxy on `{port}` with one location to `upstream` and a status listener."""
    return (f"workers = {workers}\n{top}\n"
            "[status]\n"
            f'listen = "127.0.0.1:{status_port}"\n{status}\n'
            "[[server]]\n"
            'listen = ["127.0.0.1:{port}"]\n'
            "  [[server.location]]\n"
            '  path = "/"\n'
            f'  {directive} = "{upstream}"\n{location}\n')


def fetch(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes, str]:
    """(status, body, content type) of GET `path` on the status listener."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def metrics(port: int) -> Samples:
    """Every sample of /metrics, keyed by (name, sorted labels), parsed by
    prometheus_client (which rejects text that breaks the format)."""
    status, body, content_type = fetch(port, "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 if absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every sample whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(found for (sample, label_set), found in samples.items()
               if sample == name and wanted <= set(label_set))


def status_json(port: int) -> dict:
    status, body, _ = fetch(port, "/status.json")
    assert status == 200, body
    return json.loads(body)
