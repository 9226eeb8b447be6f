"""sd_notify never blocks the master: a NOTIFY_SOCKET nobody reads costs a message, not the loop.

A datagram to a full queue is dropped (non-blocking send); the master
remembers that a message is owed and sends its current state (READY,
RELOADING, STOPPING, STATUS, MAINPID) on a later turn of its loop, so a
reader that comes back learns where things stand.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator

import pytest

from prefork_proxy import systemd
from tests.support.lifecycle import NotifySocket, get, proxy_config
from tests.support.processes import wait_for


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    listener = NotifySocket()
    yield listener
    listener.close()


def fill(listener: NotifySocket) -> int:
    """Queue datagrams on `listener` until its queue is full; how many it took."""
    count = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        sender.connect(listener.path)
        while count < 100_000:
            try:
                sender.send(b"FILLER=1")
            except BlockingIOError:
                return count
            count += 1
    raise AssertionError("the notify socket's queue never filled")


def read_until_empty(listener: NotifySocket) -> None:
    """Take everything queued now; what the master sends next is what matters."""
    listener.collect()
    listener.messages.clear()


def test_notify_on_a_full_socket_returns_at_once(notify_socket, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    fill(notify_socket)
    result: list[bool] = []
    sender = threading.Thread(target=lambda: result.append(systemd.notify("READY=1")),
                              daemon=True)  # closing the socket at teardown frees it
    sender.start()
    sender.join(2.0)
    assert result == [False], "sd_notify blocked on a full queue"


def test_a_dropped_message_is_owed_and_the_current_state_sent_next(
        notify_socket, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    notifier = systemd.Notifier()
    fill(notify_socket)
    assert not notifier.notify("READY=1", "STATUS=serving: 2 workers, generation 1")
    assert not notifier.notify("RELOADING=1", "MONOTONIC_USEC=5")
    assert not notifier.notify("READY=1", "STATUS=serving: 2 workers, generation 2")
    assert notifier.pending
    read_until_empty(notify_socket)
    notifier.flush()
    assert not notifier.pending
    (message,) = notify_socket.collect()
    assert message == {"READY": "1", "STATUS": "serving: 2 workers, generation 2"}
    notifier.flush()  # nothing owed: nothing sent
    assert notify_socket.collect() == [message]


def test_once_owed_a_new_message_carries_the_whole_state(notify_socket, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    notifier = systemd.Notifier()
    fill(notify_socket)
    assert not notifier.notify("READY=1", "STATUS=serving", f"MAINPID={os.getpid()}")
    read_until_empty(notify_socket)
    assert notifier.notify("STATUS=serving: 3 workers")
    (message,) = notify_socket.collect()
    assert message == {"READY": "1", "STATUS": "serving: 3 workers",
                       "MAINPID": str(os.getpid())}
    assert notifier.notify("STOPPING=1")  # nothing owed now: just the news
    assert notify_socket.collect()[-1] == {"STOPPING": "1"}


def test_a_master_whose_notify_socket_is_never_read_still_supervises(
        start_proxy, upstream, notify_socket) -> None:
    fill(notify_socket)
    proxy = start_proxy(proxy_config(upstream.port, workers=1), env=notify_socket.env())
    assert get(proxy.port, timeout=5.0)[0] == 200
    # Reaping and respawning: a SIGKILLed worker is replaced.
    (worker,) = proxy.worker_pids()
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: proxy.worker_pids() and worker not in proxy.worker_pids(), timeout=10,
             message="the killed worker to be replaced")
    # Reloading: HUP starts generation 2, which takes over.
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(count=2)
    assert get(proxy.port, timeout=5.0)[0] == 200
    # A reader that comes back gets the current state, not the lost history: past
    # the fillers, the master's first message is generation 2's READY=1.
    ready = notify_socket.wait("READY", "1")
    assert not [m for m in notify_socket.messages[:notify_socket.messages.index(ready)]
                if "FILLER" not in m], "the master got a message through a full queue"
    assert ready["STATUS"] == "serving: 1 workers, generation 2"
    assert "RELOADING" not in ready
