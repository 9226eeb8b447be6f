"""bench/results/latest.md: every figure, its spread and its ratio to nginx, and the targets."""

from __future__ import annotations

from bench.results import Figure, Results

REFERENCE = "nginx"
SUBJECT = "prefork-proxy"

# (figure, kind, bound, issue): "ratio" compares with nginx; "max" and "equal" are absolute.
TARGETS = [
    ("small_get_keepalive", "ratio", 0.5, "#2 foundation"),
    ("uwsgi_hello", "ratio", 0.8, "#3 uwsgi_pass"),
    ("ws_bulk_down", "ratio", 1.5, "#6 WebSocket"),
    ("ws_bulk_up", "ratio", 1.5, "#6 WebSocket"),
    ("ws_echo_100", "ratio", 0.5, "#6 WebSocket"),
    ("ws_idle_tunnel", "max", 32.0, "#6 WebSocket"),
    ("reload_failed", "equal", 0.0, "#4 lifecycle"),
    ("cross_client_mixing", "equal", 0.0, "#13 hardening"),
    ("real_bare_get", "ratio", 0.8, "#14 one engine"),
    ("real_pool3", "ratio", 0.7, "#14 one engine"),
    ("real_xff", "ratio", 0.7, "#14 one engine"),
    ("real_browser", "ratio", 0.7, "#14 one engine"),
    ("real_new_connection", "ratio", 0.5, "#14 one engine"),
    ("real_uwsgi_unique", "ratio", 0.8, "#14 one engine"),
    ("real_chunked_post", "ratio", 0.7, "#14 one engine"),
    ("real_slow_client_others", "ratio", 0.7, "#14 one engine"),
    ("real_slow_client_uwsgi", "max", 1.0, "#14 one engine"),
    ("real_slow_client_uwsgi_64m", "max", 1.0, "#14 one engine"),
]

SECTIONS = [
    ("Real traffic", "realistic",
     "Requests as real clients and apps make them (bench/realistic.py), prefork-proxy and "
     "nginx only, on routes both configure the same way (the same X-Forwarded-* and Host "
     "upstream). Higher is better, except the second client's wait (seconds, lower is "
     "better; 1 s is the bound)."),
    ("Throughput", "throughput", "Higher is better."),
    ("Memory", "memory", "Lower is better. RSS from psutil."),
    ("Reload", "reload", "Lower is better."),
    ("Cross-client mixing", "mixing",
     "Answers that were not the client's own (another client's, or the fake response a "
     "hostile upstream sent past its framing), bench/mixing.py. 0 is the only good figure."),
]


def number(value: float) -> str:
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(figure: Figure, proxy: str) -> str:
    median = figure.median(proxy)
    if median is None:
        return figure.notes.get(proxy, "—")
    low, high = figure.spread(proxy) or (median, median)
    text = f"**{number(median)}**"
    if len(figure.runs[proxy]) > 1:
        text += f" ({number(low)}–{number(high)})"
    ratio = figure.ratio(proxy, REFERENCE)
    if ratio is not None and proxy != REFERENCE:
        text += f"<br>{ratio:.2f}× nginx"
    return text


def figure_table(results: Results, group: str) -> list[str]:
    proxies = results.proxies
    lines = ["| figure | unit | " + " | ".join(proxies) + " |",
             "|---|---|" + "---|" * len(proxies)]
    for figure in results.figures:
        if figure.group == group:
            cells = " | ".join(cell(figure, proxy) for proxy in proxies)
            lines.append(f"| {figure.title} | {figure.unit} | {cells} |")
    return lines


def target_rows(results: Results) -> list[str]:
    lines = ["| target (issue) | prefork-proxy | met |", "|---|---|---|"]
    for key, kind, bound, issue in TARGETS:
        try:
            figure = results.figure(key)
        except KeyError:
            continue
        value = figure.median(SUBJECT)
        if kind == "ratio":
            goal = f"{figure.title}: ≥ {bound}× nginx"
            value = figure.ratio(SUBJECT, REFERENCE)
            shown = f"{value:.2f}×" if value is not None else "—"
            met = value is not None and value >= bound
        elif kind == "max":
            goal = f"{figure.title}: ≤ {number(bound)} {figure.unit}"
            shown = f"{number(value)} {figure.unit}" if value is not None else "—"
            met = value is not None and value <= bound
        else:
            goal = f"{figure.title}: {number(bound)}"
            shown = number(value) if value is not None else "—"
            met = value is not None and value == bound
        verdict = "yes" if met else ("no" if value is not None else "no number")
        lines.append(f"| {goal} ({issue}) | {shown} | {verdict} |")
    return lines


def latency_table(results: Results, group: str) -> list[str]:
    lines = ["| scenario | proxy | p50 | p90 | p99 |", "|---|---|---|---|---|"]
    for figure in results.figures:
        if figure.group != group:
            continue
        for proxy in results.proxies:
            latency = figure.median_latency(proxy)
            if latency:
                cells = " | ".join(number(value) for value in latency)
                lines.append(f"| {figure.title} | {proxy} | {cells} |")
    return lines


def scaling_table(results: Results) -> list[str]:
    try:
        one, two = results.figure("small_get_keepalive_1w"), results.figure("small_get_keepalive")
    except KeyError:
        return []
    lines = ["| proxy | 1 worker (req/s) | 2 workers (req/s) | 2 workers / 1 worker |",
             "|---|---|---|---|"]
    for proxy in results.proxies:
        single, double = one.median(proxy), two.median(proxy)
        if single and double:
            lines.append(f"| {proxy} | {number(single)} | {number(double)} | "
                         f"{double / single:.2f}× |")
    return lines


def process_table(results: Results) -> list[str]:
    lines = ["| proxy | process | idle (MiB) | under load, peak (MiB) |", "|---|---|---|---|"]
    for row in results.processes:
        lines.append(f"| {row['proxy']} | {row['process']} | {number(row['idle_mib'])} | "
                     f"{number(row['load_mib'])} |")
    return lines


def notes(results: Results) -> list[str]:
    lines = []
    for figure in results.figures:
        for proxy, text in figure.notes.items():
            if figure.median(proxy) is not None:
                lines.append(f"- {figure.title}, {proxy}: {text}")
    return lines


def commands(results: Results) -> list[str]:
    return [f"- {figure.title}: `{figure.command}`" for figure in results.figures
            if figure.command]


def markdown(results: Results) -> str:
    settings = results.settings
    machine = results.machine
    versions = ", ".join(f"{name} {version}" for name, version in results.versions.items())
    lines = [
        "# prefork-proxy benchmarks",
        "",
        f"- **Date:** {results.date}. **Mode:** {results.mode}: {settings['runs']} run(s) of "
        f"{settings['seconds']:g} s per figure, interleaved across proxies; median shown, "
        "min–max in brackets.",
        f"- **Machine:** {machine['cores']} cores, {machine['cpu']}, Linux {machine['kernel']}, "
        f"Python {machine['python']}; load average at start {machine['load_average_at_start']}. "
        "Shared and noisy: the ratios within one run are the figures that count.",
        f"- **Workers:** {settings['workers']} for every proxy (mitmproxy runs one process). "
        f"Open-file limit (RLIMIT_NOFILE) for every process: {settings.get('open_files', '?')}.",
        f"- **Versions:** {versions}.",
    ]
    lines += [f"- **{name} unavailable:** {reason}" for name, reason in results.unavailable.items()]
    lines += ["", "![throughput relative to nginx](throughput.png)", "",
              "![latency percentiles](latency.png)", "", "## Targets", "", *target_rows(results)]
    for title, group, caption in SECTIONS:
        lines += ["", f"## {title}", "", caption, "", *figure_table(results, group)]
        if group == "realistic":
            lines += ["", "### Latency (ms, wrk --latency, median of runs)", "",
                      *latency_table(results, group)]
        if group == "throughput":
            lines += ["", "### Latency (ms, wrk --latency, median of runs)", "",
                      *latency_table(results, group), "", "### Scaling", "",
                      *scaling_table(results)]
        if group == "memory" and results.processes:
            lines += ["", "### Each process (first run)", "", *process_table(results)]
    lines += ["", "## Notes", "", *(notes(results) or ["- none"]), "", "## How this was measured",
              "", *METHOD, "", "Load commands (URL and ports vary per run):", "",
              *commands(results), ""]
    return "\n".join(lines)


METHOD = [
    "- Reproduce: `make bench` (or `.venv/bin/python -m bench`); `make bench QUICK=1` for the "
    "one-second smoke run. Raw logs go to bench/results/raw/.",
    "- All traffic is on 127.0.0.1, ports ephemeral. Upstreams run at nice -5, everything "
    "measured at nice 0, so the upstream is not what a run measures.",
    "- HTTP upstream: a dedicated nginx (1 worker, keep-alive) returning a small fixed body, a "
    "1 MiB static file, and nginx's dav module storing PUT bodies on tmpfs (it reads the whole "
    "body before answering).",
    "- WebSocket round trips and idle tunnels: the `websockets` package's echo server and "
    "client (compression off, bench/ws_load.py): 100 tunnels each sending 32 bytes and waiting "
    "for the echo. Bulk: bench/ws_blast.py, a raw-socket WebSocket peer (real handshake, "
    "pre-built 1 MiB frames, `sendall`/`recv_into`) that moves about 2 GB/s without a proxy; "
    "the `websockets` pair tops out near nginx's tunnel speed, so it could not show a faster "
    "proxy.",
    "- uwsgi: the real uWSGI server, `--master --processes 2`, hello world; /unique adds an "
    "X-Request-Id and a Set-Cookie that no other reply has. The slow-client wait: a second "
    "uWSGI with `--processes 1` whose 10 MiB (and 64 MiB) reply a client reads at 1 MiB/s "
    "(64 KiB receive buffer); 0.2 s after that reply has started, a second client asks for "
    "hello world, waited for up to the run length + 2 s. Loopback's socket buffers hold "
    "about 10 MiB on this machine, so only the 64 MiB reply shows a proxy that streams.",
    "- Real traffic: /real/ and /pool/ of both proxies send X-Forwarded-For (appended), "
    "X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host and the client's Host (nginx: "
    "`proxy_set_header` for each, as prefork-proxy does by default); /pool/ is three "
    "listening ports of the HTTP upstream, round robin, `keepalive 32`. The browser head "
    "is bench/browser.lua (Chrome's page-load head with cookies) against /real/rid, where "
    "the upstream adds `X-Request-Id $request_id`; the chunked POST is bench/chunked_post.lua "
    "against /real/post, where the upstream reads the whole body (mirror_request_body) "
    "before it answers; nginx buffers it (`proxy_request_buffering on`, its default).",
    "- nginx: same worker count, `proxy_http_version 1.1; proxy_set_header Connection \"\";` "
    "and `keepalive 32` to the upstream; WebSocket by its documented three lines with default "
    "buffers (plus `proxy_read_timeout 1h`); `uwsgi_pass` with `include uwsgi_params`. "
    "Everything else keeps nginx's defaults, so it buffers request bodies over 16 KiB, and "
    "responses beyond its proxy buffers, to temp files in its prefix.",
    "- Memory: RSS of the master and each worker at rest, then their peak under the keep-alive "
    "wrk load; per-tunnel growth = the workers' total RSS growth with N idle tunnels open "
    "(after 10 warm-up tunnels), divided by N.",
    "- Cross-client mixing: prefork-proxy and nginx, each in front of its own "
    "tests/support/hostile_upstream.py (keepalive 32), 8 keep-alive client threads going "
    "round an honest path and each kind of excess (a short Content-Length, extras after a "
    "body over 8 KiB, at the 8 KiB and 64 KiB read boundaries, a body on HEAD, 204 and 304), "
    "each request with its own token; wrong = an answer without the client's own token.",
    "- Reload: two wrk clients at once (32 keep-alive connections; 8 connections with "
    "`Connection: close`), HUP every second; failed = non-2xx/3xx + socket errors of both.",
]


def summary(results: Results) -> str:
    """A short plain-text table for the terminal."""
    proxies = results.proxies
    width = max(len(figure.title) for figure in results.figures) if results.figures else 10
    lines = [f"{'figure':<{width}}  " + "  ".join(f"{p:>14}" for p in proxies)
             + f"  {'pp/nginx':>8}"]
    for figure in results.figures:
        values = []
        for proxy in proxies:
            median = figure.median(proxy)
            values.append(f"{number(median):>14}" if median is not None else f"{'—':>14}")
        ratio = figure.ratio(SUBJECT, REFERENCE)
        lines.append(f"{figure.title:<{width}}  " + "  ".join(values)
                     + f"  {(f'{ratio:.2f}×' if ratio is not None else '—'):>8}")
    return "\n".join(lines)
