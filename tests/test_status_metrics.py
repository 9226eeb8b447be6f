"""The status listener with the real master: /metrics counts what was sent, across
workers, and never goes backwards across TTOU, TTIN and HUP; /status.json; allow."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading

import pytest

from tests.support.processes import free_port, wait_for
from tests.support.scripted_http import ScriptedHttp
from tests.support.status import fetch, metrics, status_config, status_json, total, value

REQUESTS = "prefork_proxy_requests_total"


def _send(port: int, count: int, clients: int = 8, path: str = "/echo") -> None:
    """`count` GETs over `clients` concurrent keep-alive connections (so that both
    workers take some); every answer must be 200."""
    failures: list[str] = []

    def client(share: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for _ in range(share):
                conn.request("GET", path)
                reply = conn.getresponse()
                reply.read()
                if reply.status != 200:
                    failures.append(str(reply.status))
        except (OSError, http.client.HTTPException) as exc:  # counted, not lost in the thread
            failures.append(repr(exc))
        finally:
            conn.close()

    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures


@pytest.mark.timeout(60)
def test_metrics_count_the_requests_sent_through_two_workers(start_proxy, upstream):
    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port))
    _send(proxy.port, 200)
    # The per-worker figures are published by each worker's heartbeat (1 s).
    wait_for(lambda: sum(w["requests"] for w in status_json(status_port)["workers"]) == 200,
             message="both workers' requests in /status.json")
    workers = status_json(status_port)["workers"]
    assert len(workers) == 2 and all(worker["requests"] > 0 for worker in workers), workers

    samples = metrics(status_port)
    labels = {"server": f"127.0.0.1:{proxy.port}", "location": "/"}
    assert value(samples, REQUESTS, **labels, status="2xx") == 200
    assert total(samples, REQUESTS) == 200
    assert value(samples, "prefork_proxy_request_duration_seconds_count") == 200
    assert value(samples, "prefork_proxy_request_duration_seconds_bucket", le="+Inf") == 200
    peer = {"upstream": upstream.address, "peer": upstream.address}
    assert value(samples, "prefork_proxy_upstream_responses_total", **peer) == 200
    assert value(samples, "prefork_proxy_upstream_response_seconds_count", **peer) == 200
    assert value(samples, "prefork_proxy_upstream_peer_up", **peer) == 1
    assert total(samples, "prefork_proxy_upstream_failures_total") == 0
    assert value(samples, "prefork_proxy_received_bytes_total") > 200 * len(b"GET /echo")
    assert value(samples, "prefork_proxy_workers", state="serving") == 2
    assert value(samples, "prefork_proxy_config_generation") == 1
    master_rss = [found for (name, labels_), found in samples.items()
                  if name == "prefork_proxy_process_resident_memory_bytes"
                  and ("role", "master") in labels_]
    assert master_rss and master_rss[0] > 1 << 20


@pytest.mark.timeout(120)
def test_counters_never_go_backwards_across_ttou_ttin_and_hup(start_proxy, upstream):
    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port, workers=3))
    seen = {"requests": 0.0, "duration": 0.0, "responses": 0.0, "bytes": 0.0}
    names = {"requests": REQUESTS, "duration": "prefork_proxy_request_duration_seconds_count",
             "responses": "prefork_proxy_upstream_responses_total",
             "bytes": "prefork_proxy_sent_bytes_total"}

    def check() -> dict[str, float]:
        samples = metrics(status_port)
        now = {key: total(samples, name) for key, name in names.items()}
        for key, found in now.items():
            assert found >= seen[key], f"{key} went back from {seen[key]} to {found}"
        seen.update(now)
        return now

    sent = 0
    for sig, workers_after in ((signal.SIGTTOU, 2), (signal.SIGTTIN, 3), (signal.SIGHUP, 3)):
        _send(proxy.port, 60)
        sent += 60
        check()
        proxy.signal(sig)
        # Read /metrics all along while workers drain, exit and start.
        wait_for(lambda n=workers_after: check() is not None and len(
            [w for w in status_json(status_port)["workers"] if w["state"] == "serving"]) == n
                 and len(status_json(status_port)["workers"]) == n,
                 timeout=30, message=f"{workers_after} workers after {sig.name}")
        wait_for(lambda s=sent: check()["requests"] == s, message=f"{sent} requests counted")

    samples = metrics(status_port)
    assert value(samples, "prefork_proxy_reloads_total", result="ok") == 1
    assert value(samples, "prefork_proxy_config_generation") == 2
    # The HUP replaced the three workers of generation 1; the TTOU replaced none.
    assert value(samples, "prefork_proxy_worker_restarts_total", reason="reload") == 3
    assert value(samples, "prefork_proxy_worker_restarts_total", reason="crash") == 0
    events = status_json(status_port)["events"]
    assert [event["kind"] for event in events].count("reload") == 1
    assert "generation 2 is serving" in events[-1]["text"] or any(
        "generation 2 is serving" in event["text"] for event in events)


@pytest.mark.timeout(60)
def test_a_crashed_worker_is_counted_and_its_counts_are_kept(start_proxy, upstream):
    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port, workers=2))
    _send(proxy.port, 40)
    wait_for(lambda: total(metrics(status_port), REQUESTS) == 40, message="40 counted")
    victim = sorted(proxy.worker_pids())[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: value(metrics(status_port), "prefork_proxy_worker_restarts_total",
                           reason="crash") == 1, timeout=20, message="the crash counted")
    wait_for(lambda: len(status_json(status_port)["workers"]) == 2, timeout=20,
             message="the replacement")
    assert total(metrics(status_port), REQUESTS) == 40
    assert any("crash" in event["text"] for event in status_json(status_port)["events"])


def _get_from(source: str, host: str, port: int, path: str) -> tuple[int, bytes]:
    sock = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.sock = sock
    conn.request("GET", path)
    reply = conn.getresponse()
    body = reply.read()
    conn.close()
    return reply.status, body


@pytest.mark.timeout(60)
def test_a_client_outside_allow_gets_403_and_is_logged(start_proxy, upstream):
    status_port = free_port()
    config = status_config(upstream.address, status_port, workers=1,
                           status='allow = ["127.0.0.2/32"]')
    config = config.replace(f'listen = "127.0.0.1:{status_port}"',
                            f'listen = "127.0.0.2:{status_port}"')
    proxy = start_proxy(config)
    status, body = _get_from("127.0.0.1", "127.0.0.2", status_port, "/metrics")
    assert (status, body) == (403, b"forbidden\n")
    wait_for(lambda: "refused: not in [status] allow" in proxy.log(), message="the refusal")
    assert "GET /metrics from 127.0.0.1" in proxy.log()
    status, body = _get_from("127.0.0.2", "127.0.0.2", status_port, "/metrics")
    assert status == 200 and b"prefork_proxy_requests_total" in body


@pytest.mark.timeout(60)
def test_status_json_and_the_dashboard_page_are_served(start_proxy, upstream):
    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port, workers=2))
    wait_for(lambda: len(status_json(status_port)["workers"]) == 2, message="two workers")
    state = status_json(status_port)
    assert {worker["pid"] for worker in state["workers"]} == proxy.worker_pids()
    assert state["master"]["pid"] == proxy.pid
    assert state["generations"] == [1]
    status, page, content_type = fetch(status_port, "/")
    assert status == 200 and content_type.startswith("text/html")
    assert b"prefork-proxy" in page
    assert fetch(status_port, "/nothing")[0] == 404
    assert fetch(status_port, "/ws")[0] == 400  # not an upgrade


@pytest.mark.timeout(60)
def test_max_requests_restarts_and_a_failed_reload_are_counted(start_proxy, upstream):
    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port, workers=1,
                                      top="max_requests = 30"))
    _send(proxy.port, 40, clients=1)
    wait_for(lambda: value(metrics(status_port), "prefork_proxy_worker_restarts_total",
                           reason="max_requests") >= 1, timeout=20,
             message="the recycled worker counted")
    proxy.config_path.write_text(proxy.config_path.read_text() + "\nnot toml = = =\n")
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: value(metrics(status_port), "prefork_proxy_reloads_total",
                           result="failed") == 1, message="the failed reload counted")
    samples = metrics(status_port)
    assert value(samples, "prefork_proxy_reloads_total", result="ok") == 0
    assert value(samples, "prefork_proxy_config_generation") == 1
    assert any(event["text"].startswith("failed: ")
               for event in status_json(status_port)["events"])
    wait_for(lambda: total(metrics(status_port), REQUESTS) == 40, message="40 counted")


@pytest.mark.timeout(60)
def test_a_reply_whose_client_left_after_the_head_counts_for_its_peer(start_proxy):
    upstream = ScriptedHttp({b"/slow": [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", 1.0,
                                        b"body"]})
    try:
        status_port = free_port()
        proxy = start_proxy(status_config(upstream.address, status_port, workers=1))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")
        # The client went before the body: the request ends there, the head counts.
        peer = {"upstream": upstream.address, "peer": upstream.address}
        wait_for(lambda: value(metrics(status_port), "prefork_proxy_upstream_responses_total",
                               **peer) == 1, message="the reply head counted")
        wait_for(lambda: value(metrics(status_port),
                               "prefork_proxy_upstream_response_seconds_count", **peer) == 1,
                 message="its time")
        assert total(metrics(status_port), REQUESTS, status="2xx") == 1
    finally:
        upstream.close()


@pytest.mark.timeout(60)
def test_a_hung_worker_and_one_over_its_rss_limit_are_counted_by_reason(start_proxy, upstream):
    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port, workers=1,
                                      top='worker_timeout = "2s"'))
    wait_for(lambda: len(status_json(status_port)["workers"]) == 1, message="the worker")
    hung = next(iter(proxy.worker_pids()))
    os.kill(hung, signal.SIGSTOP)  # no heartbeat from now on: the master kills it
    wait_for(lambda: value(metrics(status_port), "prefork_proxy_worker_restarts_total",
                           reason="heartbeat") == 1, timeout=20, message="the hung worker")
    assert value(metrics(status_port), "prefork_proxy_worker_restarts_total", reason="crash") == 0

    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port, workers=1,
                                      top='max_worker_rss = "1m"'), name="rss")
    wait_for(lambda: value(metrics(status_port), "prefork_proxy_worker_restarts_total",
                           reason="rss") >= 1, timeout=30, message="a worker over 1 MiB")
