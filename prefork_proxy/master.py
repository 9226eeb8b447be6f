"""The master: binds listeners, forks workers, and supervises them.

The loop reads like gunicorn's arbiter: signal handlers only queue the signal
and wake the loop; each turn dispatches the queued signals by name, then runs
one verb per step: reap, check health, advance a reload, keep the worker count.
Never imports gevent: the worker side is imported only in the child after fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass

from prefork_proxy import health, listeners, logs, systemd
from prefork_proxy.config import Config, ConfigError, load_config
from prefork_proxy.pidfile import Pidfile
from prefork_proxy.scoreboard import DRAINING, READY, Scoreboard

log = logging.getLogger("master")

# A worker that cannot start (bad privileges, import error) exits with this,
# so that the master can tell a boot failure from a crash.
EXIT_BOOT_FAILURE = 3
SIGNALS = ("HUP", "QUIT", "TERM", "INT", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD")
# A fast stop (TERM/INT) gives workers this long before SIGKILL.
FAST_STOP_GRACE = 5.0
# At most this many old generations drain at once (DESIGN.md, reload rule 5).
MAX_DRAINING_GENERATIONS = 2


@dataclass
class WorkerProcess:
    pid: int
    number: int
    generation: int
    slot: int
    started: float
    retiring: bool = False  # to be drained once a replacement is ready
    kill_at: float = 0.0  # SIGKILL deadline once it is draining


@dataclass
class PendingReload:
    config: Config
    generation: int
    deadline: float


class Master:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.scoreboard = Scoreboard()
        self.sockets: dict[str, socket.socket] = {}
        self.workers: dict[int, WorkerProcess] = {}
        self.generation = 1
        self.target = config.workers
        self.pending: PendingReload | None = None
        self.serving = False  # the first generation has become ready
        self.stop_deadline: float | None = None
        self.exit_status = 0
        self.signals: deque[str] = deque(maxlen=64)
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pidfile = Pidfile(config.pidfile)
        self.rss_watch = health.RssWatch(config.max_worker_rss)
        self.backoff = health.RespawnBackoff()
        self.request_limits: dict[int, int] = {}
        self.reexec_pid = 0
        self.next_sample = 0.0

    # -- start ----------------------------------------------------------------
    def bind(self, inherited: dict[str, socket.socket]) -> None:
        """Take inherited sockets for the addresses they match; bind the rest."""
        for key, listen in self.config.listens.items():
            self.sockets[key] = inherited.pop(key, None) or listeners.bind(listen)
        for key, sock in inherited.items():  # passed in but no longer configured
            listeners.close(key, sock)

    def run(self) -> int:
        for name in SIGNALS:
            signal.signal(getattr(signal, f"SIG{name}"), self._on_signal)
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        self.pidfile.write(os.getpid())
        log.info("master %d started, %d workers, config %s", os.getpid(), self.target,
                 self.config.path)
        try:
            while True:
                self.reap_workers()
                self.check_health()
                self.advance_reload()
                self.manage_workers()
                self.kill_overdue()
                if self._finished():
                    break
                self._sleep(1.0)
                while self.signals:
                    getattr(self, f"handle_{self.signals.popleft().lower()}")()
        finally:
            for key, sock in self.sockets.items():
                if not (self.reexec_pid and key.startswith("unix:")):
                    listeners.close(key, sock)
            self.pidfile.remove()
            systemd.notify("STOPPING=1")
        log.info("master %d exited", os.getpid())
        return self.exit_status

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only record it: no logging, I/O or locks in a handler. set_wakeup_fd
        # wakes the loop. SIGCHLDs coalesce, the rest are kept in order.
        name = signal.Signals(signum).name[3:]
        if name != "CHLD" or "CHLD" not in self.signals:
            self.signals.append(name)

    def _sleep(self, timeout: float) -> None:
        if self.signals:
            return
        with contextlib.suppress(InterruptedError):
            select.select([self.wake_read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_read, 4096):
                pass

    def _finished(self) -> bool:
        return self.stop_deadline is not None and not self.workers

    # -- signal handlers --------------------------------------------------------
    def handle_chld(self) -> None:
        pass  # reap_workers runs on every turn

    def handle_hup(self) -> None:
        """Reload: validate the new config first, then start a new generation."""
        if self.stop_deadline is not None:
            return
        systemd.notify("RELOADING=1", systemd.monotonic_usec())
        try:
            config = load_config(self.config.path)
            inherited = {key: sock for key, sock in self.sockets.items()}
            for key, listen in config.listens.items():
                if key not in inherited:
                    self.sockets[key] = listeners.bind(listen)
        except (ConfigError, listeners.ListenError) as exc:
            log.error("reload failed, still serving the running generation: %s", exc)
            systemd.notify("READY=1", f"STATUS=reload failed: {exc}")
            return
        if self.pending:  # a newer HUP wins: drop the generation not yet serving
            log.info("reload of generation %d superseded", self.pending.generation)
            self._signal_generation(self.pending.generation, signal.SIGKILL)
        number = max(self.generation, self.pending.generation if self.pending else 0) + 1
        deadline = time.monotonic() + max(config.worker_timeout, 10.0)
        self.pending = PendingReload(config, number, deadline)
        log.info("reloading: starting generation %d with %d workers", number, config.workers)
        for worker_number in range(1, config.workers + 1):
            self.spawn_worker(worker_number, number, config)

    def handle_quit(self) -> None:
        self._stop(signal.SIGQUIT, self.config.graceful_timeout, "graceful stop")

    def handle_term(self) -> None:
        self._stop(signal.SIGTERM, FAST_STOP_GRACE, "fast stop")

    handle_int = handle_term

    def _stop(self, sig: signal.Signals, grace: float, what: str) -> None:
        log.info("%s requested", what)
        systemd.notify("STOPPING=1")
        deadline = time.monotonic() + grace
        self.stop_deadline = min(self.stop_deadline or deadline, deadline)
        self.target = 0
        self.pending = None
        for worker in self.workers.values():
            worker.kill_at = min(worker.kill_at or deadline, deadline)
            self._kill(worker.pid, sig)

    def handle_ttin(self) -> None:
        self.target += 1
        log.info("TTIN: %d workers", self.target)

    def handle_ttou(self) -> None:
        if self.target <= 1:
            return
        self.target -= 1
        serving = self._serving_workers()
        if serving:
            self.drain(max(serving, key=lambda worker: worker.number))
        log.info("TTOU: %d workers", self.target)

    def handle_usr1(self) -> None:
        logs.reopen()
        for pid in list(self.workers):
            self._kill(pid, signal.SIGUSR1)
        log.info("log files reopened")

    def handle_usr2(self) -> None:
        """Re-exec the master binary with the listeners inherited, as nginx does."""
        if self.reexec_pid:
            log.warning("USR2 ignored: a new master (%d) is already running", self.reexec_pid)
            return
        self.pidfile.rename_to_oldbin()
        for sock in self.sockets.values():
            sock.set_inheritable(True)
        environ = dict(os.environ, **{listeners.INHERIT_ENV: listeners.inherit_env(self.sockets)})
        pid = os.fork()
        if pid == 0:
            try:
                os.execve(sys.executable, [sys.executable, "-m", "prefork_proxy", *sys.argv[1:]],
                          environ)
            finally:
                os._exit(127)
        self.reexec_pid = pid
        log.info("USR2: started a new master %d; old pidfile is %s", pid, self.pidfile.oldbin)

    def handle_winch(self) -> None:
        log.info("WINCH: draining all workers, the master stays")
        self.target = 0
        self.pending = None
        for worker in list(self.workers.values()):
            self.drain(worker)

    # -- the verbs of the loop ------------------------------------------------
    def reap_workers(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if pid == self.reexec_pid:
                log.error("new master %d exited (%s); this master keeps serving", pid, code)
                self.reexec_pid = 0
                self.pidfile.restore_from_oldbin(os.getpid())
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.scoreboard.release(worker.slot)
            self.rss_watch.forget(pid)
            self.request_limits.pop(pid, None)
            self._worker_exited(worker, code)

    def _worker_exited(self, worker: WorkerProcess, code: int) -> None:
        now = time.monotonic()
        expected = worker.kill_at or self.stop_deadline is not None
        if expected:
            return
        if code == EXIT_BOOT_FAILURE:
            if not self.serving:
                log.error("worker %d could not start (see above); stopping", worker.number)
                self.exit_status = 1
                self._stop(signal.SIGTERM, FAST_STOP_GRACE, "stop after a boot failure")
                return
            if self.pending and worker.generation == self.pending.generation:
                log.error("reload failed: a worker of generation %d could not start",
                          worker.generation)
                self._abort_reload("a new worker could not start")
                return
        log.warning("worker %d (pid %d, gen %d) exited unexpectedly with %s; replacing it",
                    worker.number, worker.pid, worker.generation, _describe_exit(code))
        self.backoff.worker_died(now - worker.started, now)

    def check_health(self) -> None:
        now = time.monotonic()
        sample = now >= self.next_sample
        if sample:
            self.next_sample = now + 1.0
        for worker in list(self.workers.values()):
            slot = self.scoreboard.read(worker.slot)
            if health.heartbeat_overdue(slot, now, self.config.worker_timeout):
                log.error("worker %d (pid %d) missed its heartbeat for %.0fs; killing it",
                          worker.number, worker.pid, now - max(slot.heartbeat, slot.started))
                self._kill(worker.pid, signal.SIGKILL)
                worker.kill_at = 0.0  # its exit is unexpected: replace it
                continue
            if worker.retiring or worker.kill_at or not sample:
                continue
            rss, cpu = health.sample_usage(worker.pid)
            self.scoreboard.set_usage(worker.slot, rss, cpu)
            if self.rss_watch.over_limit(worker.pid, rss):
                log.warning("worker %d (pid %d) RSS %d MiB is over max_worker_rss; recycling",
                            worker.number, worker.pid, rss >> 20)
                worker.retiring = True
            limit = self.request_limits.get(worker.pid, 0)
            if limit and slot.requests >= limit:
                log.info("worker %d (pid %d) served %d requests; recycling",
                         worker.number, worker.pid, slot.requests)
                worker.retiring = True

    def advance_reload(self) -> None:
        """Hand over to a pending generation once every new worker is ready."""
        pending = self.pending
        if pending is None:
            if not self.serving and self._ready_count(self.generation) >= self.target:
                self.serving = True
                systemd.notify("READY=1", self._status())
                log.info("generation %d is serving", self.generation)
            return
        if self._ready_count(pending.generation) >= pending.config.workers:
            old = self.generation
            self.generation, self.pending = pending.generation, None
            self._apply_config(pending.config)
            for worker in list(self.workers.values()):
                if worker.generation < self.generation:
                    self.drain(worker)
            self._limit_draining_generations()
            log.info("generation %d is serving; generation %d drains", self.generation, old)
            systemd.notify("READY=1", self._status())
        elif time.monotonic() > pending.deadline:
            self._abort_reload("the new workers did not become ready in time")

    def manage_workers(self) -> None:
        """Keep `target` serving workers in the current generation; retire extras."""
        if self.stop_deadline is not None:
            return
        serving = self._serving_workers()
        ready = [w for w in serving if self._slot_state(w) == READY]
        spare = len(ready) - self.target
        for worker in sorted(serving, key=lambda w: w.number):
            if worker.retiring and spare > 0:  # its replacement is ready: drain it now
                self.drain(worker)
                spare -= 1
        active = [w for w in serving if not w.retiring]
        used = {w.number for w in active}
        while len(used) < self.target and self.backoff.may_spawn(time.monotonic()):
            number = next(n for n in range(1, self.target + len(used) + 2) if n not in used)
            self.spawn_worker(number, self.generation, self.config)
            used.add(number)

    def kill_overdue(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.kill_at and now > worker.kill_at:
                log.warning("worker %d (pid %d) still running after its drain deadline; "
                            "killing it", worker.number, worker.pid)
                self._kill(worker.pid, signal.SIGKILL)
                worker.kill_at = now + 3600  # reaped shortly; don't repeat the message

    # -- workers --------------------------------------------------------------
    def spawn_worker(self, number: int, generation: int, config: Config) -> None:
        slot = self.scoreboard.claim(number, generation, time.monotonic())
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [getattr(signal, f"SIG{n}")
                                                            for n in SIGNALS])
        pid = os.fork()
        if pid == 0:  # the child: becomes a worker and never returns
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for name in SIGNALS:
                    signal.signal(getattr(signal, f"SIG{name}"), signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                os.close(self.wake_read)
                os.close(self.wake_write)
                from workers.worker import run_worker

                sockets = {key: self.sockets[key] for key in config.listens}
                code = run_worker(config, sockets, self.scoreboard, slot, number, generation)
            except BaseException:
                logging.getLogger("worker").exception("worker %d could not start", number)
                code = EXIT_BOOT_FAILURE
            finally:
                logging.shutdown()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.scoreboard.set_pid(slot, pid)
        self.workers[pid] = WorkerProcess(pid, number, generation, slot, time.monotonic())
        limit = health.request_limit(config.max_requests, config.max_requests_jitter)
        if limit:
            self.request_limits[pid] = limit

    def drain(self, worker: WorkerProcess) -> None:
        """Tell a worker to stop accepting and finish what it has in flight."""
        if worker.kill_at:
            return
        worker.retiring = True
        worker.kill_at = time.monotonic() + self.config.graceful_timeout
        self._kill(worker.pid, signal.SIGQUIT)

    def _serving_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers.values()
                if w.generation == self.generation and not w.kill_at]

    def _slot_state(self, worker: WorkerProcess) -> int:
        return self.scoreboard.read(worker.slot).state

    def _ready_count(self, generation: int) -> int:
        return sum(1 for w in self.workers.values() if w.generation == generation
                   and not w.kill_at and self._slot_state(w) in (READY, DRAINING))

    def _signal_generation(self, generation: int, sig: signal.Signals) -> None:
        for worker in self.workers.values():
            if worker.generation == generation:
                worker.kill_at = worker.kill_at or time.monotonic() + 1.0
                self._kill(worker.pid, sig)

    def _abort_reload(self, reason: str) -> None:
        pending, self.pending = self.pending, None
        if pending:
            self._signal_generation(pending.generation, signal.SIGKILL)
            self._close_unused_sockets(self.config)
        log.error("reload failed (%s); generation %d keeps serving", reason, self.generation)
        systemd.notify("READY=1", f"STATUS=reload failed: {reason}")

    def _apply_config(self, config: Config) -> None:
        self.target = config.workers
        self.config = config
        self.pidfile.path = config.pidfile or self.pidfile.path
        self.rss_watch.limit = config.max_worker_rss
        self._close_unused_sockets(config)
        logs.setup(config.error_log)

    def _close_unused_sockets(self, config: Config) -> None:
        # Old workers keep their own inherited copies while they drain.
        for key in [key for key in self.sockets if key not in config.listens]:
            listeners.close(key, self.sockets.pop(key))

    def _limit_draining_generations(self) -> None:
        old = sorted({w.generation for w in self.workers.values()
                      if w.generation < self.generation})
        for generation in old[:-MAX_DRAINING_GENERATIONS]:
            log.warning("more than %d generations draining; stopping generation %d now",
                        MAX_DRAINING_GENERATIONS, generation)
            self._signal_generation(generation, signal.SIGTERM)

    def _status(self) -> str:
        workers = len(self._serving_workers())
        return f"STATUS=serving: {workers} workers, generation {self.generation}"

    @staticmethod
    def _kill(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _describe_exit(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
