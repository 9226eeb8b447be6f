"""The master: binds listeners, forks workers, and supervises them.

The loop reads like gunicorn's arbiter: signal handlers only queue the signal
and wake the loop; each turn runs one verb per step (reap, check health,
advance a reload, keep the worker count, kill the overdue), then dispatches
the queued signals by name to `handle_hup`, `handle_quit`... Reload
bookkeeping lives in generations.py, forking in children.py, USR2 in reexec.py.
Never imports gevent: the worker side is imported only in the child after fork.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time

from prefork_proxy import health, health_board, listeners, logs, reexec, systemd
from prefork_proxy.checker_process import HealthCheckers
from prefork_proxy.children import EXIT_BOOT_FAILURE, WorkerProcess
from prefork_proxy.config import Config, ConfigError, load_config
from prefork_proxy.generations import Generations
from prefork_proxy.metrics_board import config_names
from prefork_proxy.peer_board import config_peers
from prefork_proxy.pidfile import Pidfile
from prefork_proxy.scoreboard import Scoreboard
from prefork_proxy.signal_queue import SignalQueue
from prefork_proxy.workforce import FAST_STOP_GRACE, Workforce, kill

log = logging.getLogger("master")

SIGNALS = tuple(getattr(signal, f"SIG{name}") for name in
                ("HUP", "QUIT", "TERM", "INT", "TTIN", "TTOU", "USR1", "USR2", "WINCH", "CHLD"))
# How often the loop looks at the scoreboard while a worker is starting, so that
# a hand-over follows readiness closely; otherwise once a second.
STARTING_POLL = 0.05
IDLE_POLL = 1.0


class Master:
    def __init__(self, config: Config, handover: bool = False) -> None:
        self.config = health_board.attach(config)
        self.handover = handover  # started by an old master's USR2
        self.scoreboard = Scoreboard()
        self.metrics = self.scoreboard.metrics
        self.metrics.register(config_names(config))
        self.metrics.set_generation(1, time.time())
        self.scoreboard.peers.assign(config_peers(config), 1, alive=set())
        self.sockets: dict[str, socket.socket] = {}
        self.bound_here: set[str] = set()  # unix socket files this process may unlink
        self.generations = Generations()
        self.target = config.workers
        self.stop_deadline: float | None = None
        self.exit_status = 0
        self.signals = SignalQueue()
        self.workers = Workforce(self.scoreboard, SIGNALS, self.signals.fds)
        self.checkers = HealthCheckers(SIGNALS, self.signals.fds)
        self.pidfile = Pidfile(config.pidfile)
        self.rss_watch = health.RssWatch(config.max_worker_rss)
        self.backoff = health.RespawnBackoff()
        self.new_master = 0  # pid of the master started by USR2, while it lives
        self.next_sample = 0.0
        self.status = ""
        self.notifier = systemd.Notifier()

    # -- start ----------------------------------------------------------------
    def bind(self, inherited: dict[str, socket.socket]) -> None:
        """Take inherited sockets for the addresses they match; bind the rest."""
        for key, listen in self.config.listens.items():
            if key in inherited:
                self.sockets[key] = inherited.pop(key)
            else:
                self.sockets[key] = listeners.bind(listen)
                self.bound_here.add(key)
        for key, sock in inherited.items():  # passed in but not configured
            listeners.close(key, sock, unlink=False)

    def run(self) -> int:
        self.signals.install(SIGNALS)
        self.pidfile.write(os.getpid())
        log.info("master %d started, %d workers, config %s", os.getpid(), self.target,
                 self.config.path)
        try:
            while True:
                self.reap_workers()
                self.check_health()
                self.advance_reload()
                self.manage_workers()
                self.manage_checkers()
                self.workers.kill_overdue()
                self.publish_status()
                if self.stop_deadline is not None and not self.workers and not self.checkers:
                    break
                self.signals.wait(self._poll_interval())
                while name := self.signals.pop():
                    getattr(self, f"handle_{name.lower()}")()
        finally:
            for key, sock in self.sockets.items():
                listeners.close(key, sock, unlink=key in self.bound_here and not self.new_master)
            self.pidfile.remove()
            self._notify("STOPPING=1")
        log.info("master %d exited", os.getpid())
        return self.exit_status

    def _poll_interval(self) -> float:
        now = time.monotonic()
        interval = IDLE_POLL
        if self.workers.any_starting():
            interval = STARTING_POLL
        if not self.backoff.may_spawn(now):
            interval = min(interval, max(0.0, self.backoff.not_before - now))
        return interval

    def _notify(self, *lines: str) -> None:
        # Once a new master has taken over (USR2), systemd's MAINPID is the new one:
        # this master must not report READY or STOPPING for the service any more.
        if not self.new_master:
            self.notifier.notify(*lines)

    # -- signal handlers --------------------------------------------------------
    def handle_chld(self) -> None:
        pass  # reap_workers runs on every turn

    def handle_hup(self) -> None:
        """Reload: validate the new config first, then start a new generation."""
        if self.stop_deadline is not None:
            return
        self._notify("RELOADING=1", systemd.monotonic_usec())
        bound: list[str] = []
        try:
            config = health_board.attach(load_config(self.config.path))
            for key, listen in config.listens.items():
                if key not in self.sockets:  # unchanged addresses keep their socket
                    self.sockets[key] = listeners.bind(listen)
                    self.bound_here.add(key)
                    bound.append(key)
        except (ConfigError, listeners.ListenError) as exc:
            for key in bound:
                listeners.close(key, self.sockets.pop(key))
            # Every error of the file, a line each (`FILE: key: message`), as -t shows them.
            lines = [error.line for error in exc.errors] if isinstance(exc, ConfigError) \
                else [str(exc)]
            for line in lines:
                log.error("reload failed, generation %d keeps serving: %s",
                          self.generations.current, line)
            reason = "; ".join(lines)  # one line: sd_notify separates fields by newlines
            self._reload_failed(reason)
            self._notify("READY=1", f"STATUS=reload failed: {reason}")
            return
        superseded = self.generations.pending
        if superseded:  # the newest config wins; the older one drains unserved
            log.info("reload of generation %d superseded", superseded.number)
            self.workers.drain_generation(superseded.number, self.config.graceful_timeout)
        self.metrics.register(config_names(config))  # before the fork: workers map names
        try:  # unchanged peers keep their shared state; before the fork (peer_board.py)
            self.scoreboard.peers.assign(config_peers(config), self.generations.last_number + 1,
                                         self.workers.generations())
        except RuntimeError as exc:
            for key in bound:
                listeners.close(key, self.sockets.pop(key))
            log.error("reload failed, generation %d keeps serving: %s",
                      self.generations.current, exc)
            self._reload_failed(str(exc))
            self._notify("READY=1", f"STATUS=reload failed: {exc}")
            return
        number = self.generations.start(config, time.monotonic() + _ready_deadline(config))
        log.info("reloading: starting generation %d with %d workers", number, config.workers)
        for worker_number in range(1, config.workers + 1):
            if not self.workers.spawn(worker_number, number, config, self.sockets):
                self._abort_reload("cannot fork the new workers")
                return

    def handle_quit(self) -> None:
        self._stop(signal.SIGQUIT, self.config.graceful_timeout, "graceful stop")

    def handle_term(self) -> None:
        self._stop(signal.SIGTERM, FAST_STOP_GRACE, "fast stop")

    handle_int = handle_term

    def _stop(self, sig: signal.Signals, grace: float, what: str) -> None:
        log.info("%s requested", what)
        self._notify("STOPPING=1")
        deadline = time.monotonic() + grace
        self.stop_deadline = min(self.stop_deadline or deadline, deadline)
        self.target = 0
        self.generations.pending = None
        for worker in self.workers:
            self.workers.stop(worker, sig, grace)

    def handle_ttin(self) -> None:
        self.target += 1
        log.info("TTIN: %d workers", self.target)

    def handle_ttou(self) -> None:
        if self.target <= 1:
            return
        self.target -= 1
        serving = self.workers.serving(self.generations.current)
        if len(serving) > self.target:
            self.drain(max(serving, key=lambda worker: worker.number))
        log.info("TTOU: %d workers", self.target)

    def handle_usr1(self) -> None:
        logs.reopen()
        for worker in self.workers:
            kill(worker.pid, signal.SIGUSR1)
        log.info("log files reopened")

    def handle_usr2(self) -> None:
        """Re-exec the master binary with the listeners inherited, as nginx does."""
        if self.new_master:
            log.warning("USR2 ignored: a new master (%d) is already running", self.new_master)
            return
        try:
            self.new_master = reexec.start_new_master(self.config.path, self.sockets,
                                                      self.pidfile)
        except OSError as exc:
            log.error("USR2: cannot start a new master: %s", exc)
            return
        log.info("USR2: started a new master %d; old pidfile is %s", self.new_master,
                 self.pidfile.oldbin)

    def handle_winch(self) -> None:
        log.info("WINCH: draining all workers, the master stays")
        self.target = 0
        self.generations.pending = None
        for worker in self.workers:
            self.drain(worker)

    # -- the verbs of the loop ------------------------------------------------
    def reap_workers(self) -> None:
        for pid, code, worker in self.workers.reap():
            if worker is None and self.checkers.reaped(pid, code):
                continue
            if pid == self.new_master:
                self.new_master = 0
                self.pidfile.restore_from_oldbin(os.getpid())
                log.error("new master %d exited (%s); this master keeps serving",
                          pid, _describe_exit(code))
                if self.stop_deadline is None and self.target == 0:  # drained by WINCH
                    log.info("serving again with %d workers", self.config.workers)
                    self.target = self.config.workers
            elif worker is not None:
                self.rss_watch.forget(pid)
                self._worker_exited(worker, code)

    def _worker_exited(self, worker: WorkerProcess, code: int) -> None:
        self._count_restart(worker, code)
        if (worker.kill_at and not worker.hung) or self.stop_deadline is not None:
            return  # drained, retired or stopped: expected
        now = time.monotonic()
        pending = self.generations.pending
        if code == EXIT_BOOT_FAILURE and pending and worker.generation == pending.number:
            self._abort_reload(f"a worker of generation {worker.generation} could not start")
            return
        if code == EXIT_BOOT_FAILURE and not self.generations.serving:
            log.error("worker %d could not start (its error is logged above); stopping",
                      worker.number)
            self.exit_status = 1
            self._stop(signal.SIGTERM, FAST_STOP_GRACE, "stop after a boot failure")
            return
        delay = self.backoff.worker_died(now - worker.started, now)
        log.warning("worker %d (pid %d, gen %d) exited with %s; replacing it%s",
                    worker.number, worker.pid, worker.generation, _describe_exit(code),
                    f" in {delay:.1f}s" if delay else "")

    def _count_restart(self, worker: WorkerProcess, code: int) -> None:
        """Count a worker's exit by why it was replaced; a stop or a TTOU is no restart."""
        if worker.hung:
            reason = "heartbeat"
        elif worker.recycled_for:
            reason = worker.recycled_for
        elif not worker.kill_at and self.stop_deadline is None:
            reason = "crash"
        else:
            return
        self.metrics.count_restart(reason)
        self.metrics.add_event("restart", f"worker {worker.number} (pid {worker.pid}, "
                                          f"gen {worker.generation}): {reason}, "
                                          f"{_describe_exit(code)}")

    def check_health(self) -> None:
        """Kill hung workers; mark for recycling those over max_worker_rss or
        max_requests (sampled once a second)."""
        now = time.monotonic()
        sample = now >= self.next_sample
        if sample:
            self.next_sample = now + 1.0
            self.metrics.set_master_usage(*health.sample_usage(os.getpid()))
        self.workers.check_health(now, self.config.worker_timeout,
                                  self.rss_watch if sample else None)

    def advance_reload(self) -> None:
        """Hand over to a pending generation once every new worker is ready."""
        generations = self.generations
        pending = generations.pending
        if self.stop_deadline is not None:
            return
        if pending is None:
            ready = self.workers.ready_count(generations.current)
            if not generations.serving and ready >= self.target:
                generations.serving = True
                log.info("generation %d is serving", generations.current)
                self._announce_ready()
            return
        if self.workers.ready_count(pending.number) >= pending.config.workers:
            old = generations.take_over()
            logs.set_process("master", generations.current)  # its lines say what serves
            self._apply_config(pending.config)
            for worker in self.workers:
                if worker.generation < generations.current:
                    worker.recycled_for = worker.recycled_for or "reload"
                    self.drain(worker)
            self.metrics.count_reload(ok=True)
            self.metrics.set_generation(generations.current, time.time())
            self.metrics.add_event("reload", f"generation {generations.current} is serving")
            for number in generations.too_many_draining(self.workers.generations()):
                log.warning("more than %d generations draining; stopping generation %d now",
                            generations.max_draining, number)
                for worker in self.workers:
                    if worker.generation == number:
                        self.workers.stop(worker, signal.SIGTERM, FAST_STOP_GRACE)
            log.info("generation %d is serving; generation %d drains", generations.current, old)
            self._announce_ready()
        elif time.monotonic() > pending.deadline:
            self._abort_reload("the new workers did not become ready in time")

    def manage_workers(self) -> None:
        """Keep `target` serving workers in the current generation; drain retired ones
        once their replacement is ready (recycling never lowers the count)."""
        if self.stop_deadline is not None:
            return
        serving = self.workers.serving(self.generations.current)
        ready = sum(1 for w in serving if self.workers.is_ready(w))
        spare = ready - self.target
        for worker in sorted(serving, key=lambda w: w.number):
            if worker.retiring and spare > 0:
                self.drain(worker)
                spare -= 1
        used = {w.number for w in serving if not w.retiring}
        while len(used) < self.target and self.backoff.may_spawn(time.monotonic()):
            number = next(n for n in range(1, len(used) + 2) if n not in used)
            if not self.workers.spawn(number, self.generations.current, self.config,
                                      self.sockets):
                self.backoff.worker_died(0.0, time.monotonic())  # retry later
                return
            used.add(number)

    def manage_checkers(self) -> None:
        """One health checker for the serving generation, and one for a pending one
        (prefork_proxy/checker_process.py); none once stopping."""
        wanted = {}
        if self.stop_deadline is None:
            wanted[self.generations.current] = self.config
            pending = self.generations.pending
            if pending is not None:
                wanted[pending.number] = pending.config
        self.checkers.keep(wanted, self.sockets.values(), self.config.health_board)

    def publish_status(self) -> None:
        """Keep systemd's STATUS= line current (worker count and generation), and
        send the whole state again if a message was dropped (systemd.Notifier)."""
        if self.generations.serving and self.stop_deadline is None:
            status = self._status()
            if status != self.status:
                self.status = status
                self._notify(status)
        if self.notifier.pending and not self.new_master:
            self.notifier.flush()

    def drain(self, worker: WorkerProcess) -> None:
        self.workers.drain(worker, self.config.graceful_timeout)

    def _abort_reload(self, reason: str) -> None:
        pending, self.generations.pending = self.generations.pending, None
        if pending:
            # Drain, not kill: a worker that became ready may hold accepted requests.
            self.workers.drain_generation(pending.number, self.config.graceful_timeout)
            self._close_unused_sockets(self.config)
        log.error("reload failed (%s); generation %d keeps serving", reason,
                  self.generations.current)
        self._reload_failed(reason)
        self._notify("READY=1", f"STATUS=reload failed: {reason}")

    def _reload_failed(self, reason: str) -> None:
        self.metrics.count_reload(ok=False)
        self.metrics.add_event("reload", f"failed: {reason}")

    def _apply_config(self, config: Config) -> None:
        self.target = config.workers
        self.config = config
        if config.pidfile and config.pidfile != self.pidfile.path:
            self.pidfile.remove()
            self.pidfile.path = config.pidfile
            self.pidfile.write(os.getpid())
        self.rss_watch.limit = config.max_worker_rss
        self._close_unused_sockets(config)
        logs.setup(config.error_log)

    def _close_unused_sockets(self, config: Config) -> None:
        # Old workers keep their own inherited copies while they drain; the address
        # closes for good when the last of them exits.
        for key in [key for key in self.sockets if key not in config.listens]:
            listeners.close(key, self.sockets.pop(key), unlink=key in self.bound_here)
            self.bound_here.discard(key)

    def _announce_ready(self) -> None:
        lines = ["READY=1", self._status()]
        if self.handover:  # USR2: systemd follows the new master from now on
            lines.append(f"MAINPID={os.getpid()}")
        self._notify(*lines)

    def _status(self) -> str:
        serving = self.workers.serving(self.generations.current)
        return (f"STATUS=serving: {len(serving)} workers, "
                f"generation {self.generations.current}")


def _ready_deadline(config: Config) -> float:
    """How long a new generation may take to get ready before the reload is abandoned."""
    return max(config.worker_timeout, 10.0)


def _describe_exit(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
