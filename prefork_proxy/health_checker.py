"""The health checker: the one process that runs the active checks for the host.

Forked by the master (prefork_proxy/checker_process.py) for a config whose
upstreams have a `health_check`, it drops privileges as the workers do, and
runs every peer's check on non-blocking sockets in one selectors loop
(health_probes.py), a check per peer per `interval` (the next starts
`interval` after the last one started, or when it ends if it took longer).
Each result moves the peer's HAProxy counter (health_state.py) and is written
to the config's health board, which the workers' balancers read; a change of
state is logged as a warning. N workers never mean N checks. TERM, INT or QUIT
stop it; so does the master's death.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections.abc import Iterable

from prefork_proxy import logs
from prefork_proxy.config import Config
from prefork_proxy.health_board import DOWN, UNKNOWN, UP, HealthBoard
from prefork_proxy.health_check import check_protocol, upstream_protocols
from prefork_proxy.health_probes import Probe, Result, Target
from prefork_proxy.health_state import PeerHealth
from prefork_proxy.privileges import drop_privileges

log = logging.getLogger("health")
# The loop looks at the master (and at its stop flag) at least this often.
LONGEST_WAIT = 1.0


def targets(config: Config) -> list[Target]:
    """Every peer of every checked upstream, with what its check sends."""
    protocols = upstream_protocols(config.servers)
    found = []
    for name, upstream in config.upstreams.items():
        check = upstream.health_check
        if check is None:
            continue
        protocol = check_protocol(check, protocols.get(name, set()))
        found.extend(Target(name, index, peer.address, protocol, check)
                     for index, peer in enumerate(upstream.peers))
    return found


class Checker:
    def __init__(self, config: Config, carry_from: HealthBoard | None) -> None:
        self.board = config.health_board
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.peers: list[tuple[Target, PeerHealth]] = []
        now = time.monotonic()
        self.due: dict[Target, float] = {}
        self.in_flight: dict[Target, Probe] = {}
        for target in targets(config):
            health = _carried(target, carry_from)
            self.peers.append((target, health))
            self.due[target] = now
            self._write(target, health)
        self.health = dict(self.peers)

    def run(self) -> None:
        master = os.getppid()
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        self.selector.register(wake_read, selectors.EVENT_READ, None)
        while not self.stopping and os.getppid() == master:
            now = time.monotonic()
            self._start_due(now)
            for target, probe in list(self.in_flight.items()):
                if now >= probe.deadline:
                    self._finish(target, probe.timed_out(), now)
            wake_at = min([now + LONGEST_WAIT, *self.due.values(),
                           *(probe.deadline for probe in self.in_flight.values())])
            for key, _ in self.selector.select(max(0.0, wake_at - now)):
                if key.data is None:
                    _drain(wake_read)
                    continue
                probe = key.data
                result = probe.step()
                if result is not None:
                    self._finish(probe.target, result, time.monotonic())
                elif key.events != probe.events:
                    self.selector.modify(probe.sock, probe.events, probe)

    def stop(self) -> None:
        self.stopping = True

    def _start_due(self, now: float) -> None:
        for target, due in list(self.due.items()):
            if due > now:
                continue
            del self.due[target]
            probe = Probe(target, now)
            if probe.result is not None:  # failed at once (refused, a bad name)
                probe.close()
                self._finish(target, probe.result, now)
                continue
            self.in_flight[target] = probe
            self.selector.register(probe.sock, probe.events, probe)

    def _finish(self, target: Target, result: Result, now: float) -> None:
        probe = self.in_flight.pop(target, None)
        if probe is not None:
            self.selector.unregister(probe.sock)
            probe.close()
        started = probe.started if probe is not None else now
        self.due[target] = max(now, started + target.check.interval)
        health = self.health[target]
        if health.record(result.passed):
            state = "UP" if health.up else "DOWN"
            log.warning("peer %s of upstream %s is %s: %s", target.address, target.upstream,
                        state, result.reason)
        self._write(target, health)

    def _write(self, target: Target, health: PeerHealth) -> None:
        state = UP if health.up else DOWN
        previous, _, changed_at = self.board.read(target.upstream, target.index)
        if previous != state or not changed_at:
            changed_at = time.time()
        self.board.write(target.upstream, target.index, state, health.health, changed_at)


def _carried(target: Target, old: HealthBoard | None) -> PeerHealth:
    """A peer's state from the board of the config before (a reload, or this
    checker's own board when it was restarted): a DOWN peer stays out."""
    check = target.check
    index = old.find(target.upstream, str(target.address)) if old is not None else None
    if index is None:
        return PeerHealth(check.rise, check.fall)
    state, counter, _ = old.read(target.upstream, index)
    if state == UNKNOWN:
        return PeerHealth(check.rise, check.fall)
    if state == DOWN:
        return PeerHealth(check.rise, check.fall, min(counter, check.rise - 1), up=False)
    return PeerHealth(check.rise, check.fall, max(counter, check.rise), up=True)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def run_checker(config: Config, generation: int, carry_from: HealthBoard | None,
                blocked: Iterable[signal.Signals] = ()) -> int:
    """The checker's whole life after fork; returns its exit status."""
    from setproctitle import setproctitle

    logs.set_process("health checker", generation)
    setproctitle(f"prefork-proxy: health checker [gen {generation}]")
    checker = Checker(config, carry_from)
    drop_privileges(config.user, config.group)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, lambda *_: checker.stop())
    for sig in blocked:
        if sig not in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_IGN)  # the master's (HUP, TTIN...) are not ours
    signal.pthread_sigmask(signal.SIG_UNBLOCK, list(blocked))
    log.info("checking %d peers of %d upstreams", len(checker.peers),
             len({target.upstream for target, _ in checker.peers}))
    checker.run()
    return 0
