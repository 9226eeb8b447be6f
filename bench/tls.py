"""`python -m bench.tls`: the front door's figures, prefork-proxy beside nginx in one run.

Both proxies terminate TLS with the same certificate (made here with the
openssl CLI, an ECDSA P-256 key as a modern site has) in front of the same
upstream (the bench's nginx upstream, a small fixed body), with the same worker
count, and are measured alternately, the median of `--runs` kept:

- HTTPS keep-alive small GET: wrk over TLS, keep-alive connections;
- new TLS handshakes per second: wrk with `Connection: close`, so every request
  opens a connection and does a full handshake (wrk offers no session);
- HTTP/2 with 100 concurrent streams: h2load -c 4 -m 100 over TLS (ALPN h2);
- and the same small GET over plain HTTP/1.1, the ratio the TLS ratios compare to.

The report is written as markdown to `--out` (default bench/results/tls.md).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import nginx, procs, wrk
from bench.proxies import REPO, wait_until_serving

H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    scheme: str           # "https" or "http": which listener
    tool: str             # "wrk" or "h2load"
    connections: int
    headers: tuple[str, ...] = ()
    streams: int = 1      # h2load -m


SCENARIOS = [
    Scenario("plain_keepalive", "HTTP/1.1 small GET, keep-alive (for comparison)", "http", "wrk",
             64),
    Scenario("https_keepalive", "HTTPS small GET, keep-alive", "https", "wrk", 64),
    Scenario("https_new_handshake", "New TLS handshake per request (Connection: close)",
             "https", "wrk", 32, headers=("Connection: close",)),
    Scenario("h2_100_streams", "HTTP/2 over TLS, 100 concurrent streams (h2load -c4 -m100)",
             "https", "h2load", 4, streams=100),
]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "bench.key", directory / "bench.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def prefork_config(directory: Path, workers: int, upstream: int, plain: int, tls: int,
                   cert: Path, key: Path) -> Path:
    config = directory / "prefork-proxy.toml"
    config.write_text(f"""\
workers = {workers}
access_log = "off"
worker_connections = 10000

[upstream.app]
servers = ["127.0.0.1:{upstream}"]
keepalive = 32

[[server]]
listen = ["127.0.0.1:{plain}", "127.0.0.1:{tls} ssl http2"]
ssl_certificate = "{cert}"
ssl_certificate_key = "{key}"

  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
""")
    return config


def nginx_config(prefix: Path, workers: int, upstream: int, plain: int, tls: int,
                 cert: Path, key: Path) -> str:
    # nginx 1.22 spells HTTP/2 as a listen parameter; `ssl_session_cache` is left
    # at its default (none: tickets only), as prefork-proxy has no shared cache.
    return nginx.main_block(prefix, workers) + f"""\
http {{
{nginx.http_common(prefix)}
    keepalive_requests 1000000;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{plain} backlog=4096;
        listen 127.0.0.1:{tls} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://app;
{nginx.FORWARDED}        }}
    }}
}}
"""


def run_h2load(url: str, seconds: float, connections: int, streams: int,
               log_dir: Path) -> float:
    """Requests/s that h2load reports for a bounded run; raises if any request failed."""
    argv = [H2LOAD, "-c", str(connections), "-m", str(streams), "-t", "1",
            "-D", str(max(1, round(seconds))), "--warm-up-time", "1", url]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    (log_dir / "h2load.log").open("a").write(" ".join(argv) + "\n" + output.stdout)
    match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output.stdout)
    failed = re.search(r"(\d+) failed, (\d+) errored", output.stdout)
    if match is None or failed is None:
        raise RuntimeError(f"h2load output unreadable:\n{output.stdout}\n{output.stderr}")
    if int(failed[1]) or int(failed[2]):
        raise RuntimeError(f"h2load saw failures:\n{output.stdout}")
    return float(match[1])


def measure(scenario: Scenario, base: str, seconds: float, log_dir: Path) -> float:
    url = base + "/"
    if scenario.tool == "h2load":
        return run_h2load(url, seconds, scenario.connections, scenario.streams, log_dir)
    result = wrk.run(url, seconds, 2, scenario.connections, log_dir, scenario.headers)
    if result.failed:
        raise RuntimeError(f"{result.failed} failed requests: {result.command}")
    return result.requests_per_second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--out", type=Path, default=RESULTS / "tls.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    work.chmod(0o755)  # nginx workers (nobody) read the certificate below it
    log_dir = work / "logs"
    log_dir.mkdir()
    procs.raise_open_file_limit()
    rows = []
    try:
        cert, key = make_certificate(work)
        upstream_port = procs.free_port()
        upstream = nginx.start("upstream-nginx", work / "upstream",
                               nginx.upstream_config(work / "upstream", upstream_port,
                                                     work, work), log_dir,
                               nice=procs.UPSTREAM_NICE)
        procs.wait_for_port(upstream_port, upstream)
        bases: dict[str, dict[str, str]] = {}
        for name in ("prefork-proxy", "nginx"):
            plain, tls = procs.free_port(), procs.free_port()
            directory = work / name
            directory.mkdir()
            if name == "nginx":
                process = nginx.start("nginx", directory, nginx_config(
                    directory, args.workers, upstream_port, plain, tls, cert, key), log_dir)
            else:
                config = prefork_config(directory, args.workers, upstream_port, plain, tls,
                                        cert, key)
                process = procs.start(name, [str(REPO / ".venv/bin/prefork-proxy"), "-c",
                                             str(config)], log_dir)
            procs.wait_for_port(plain, process)
            wait_until_serving(f"http://127.0.0.1:{plain}/", process)
            bases[name] = {"http": f"http://127.0.0.1:{plain}",
                           "https": f"https://127.0.0.1:{tls}"}
        for scenario in SCENARIOS:
            if args.only and scenario.name not in args.only:
                continue
            figures: dict[str, list[float]] = {name: [] for name in bases}
            for _ in range(args.runs):
                for name, base in bases.items():  # alternately, so drift hits both
                    figures[name].append(measure(scenario, base[scenario.scheme],
                                                 args.seconds, log_dir))
                    time.sleep(0.5)
            ours = statistics.median(figures["prefork-proxy"])
            theirs = statistics.median(figures["nginx"])
            rows.append((scenario, ours, theirs))
            print(f"{scenario.name}: prefork-proxy {ours:,.0f}/s, nginx {theirs:,.0f}/s, "
                  f"ratio {ours / theirs:.2f}x  (runs {figures})", file=sys.stderr, flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"# Front door: TLS and HTTP/2 beside nginx ({nginx.version()})", "",
             f"`python -m bench.tls --runs {args.runs} --seconds {args.seconds:g} "
             f"--workers {args.workers}`; medians of {args.runs} alternating runs.", "",
             "| scenario | prefork-proxy req/s | nginx req/s | ratio |", "|---|---|---|---|"]
    lines += [f"| {s.title} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}× |"
              for s, ours, theirs in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
