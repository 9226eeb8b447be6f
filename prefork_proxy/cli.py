"""Command line: run the master, check a config (-t), signal a master (-s), demo,
status (the running proxy's state as a table), --version."""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import sys

from prefork_proxy import logs
from prefork_proxy.config import Config, ConfigError, load_config
from prefork_proxy.pidfile import read_pid

DEFAULT_CONFIG = "/etc/prefork-proxy.toml"
# `-s` names, as nginx's: reload, stop (fast), quit (graceful), reopen (logs).
SIGNAL_NAMES = {"reload": signal.SIGHUP, "stop": signal.SIGTERM, "quit": signal.SIGQUIT,
                "reopen": signal.SIGUSR1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefork-proxy", description=__doc__)
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (TOML)")
    parser.add_argument("-t", "--test", action="store_true", help="check the config and exit")
    parser.add_argument("-v", "--version", action="store_true",
                        help="print the version (and Python's, gevent's, llhttp's) and exit")
    parser.add_argument("-s", "--signal", choices=sorted(SIGNAL_NAMES),
                        help="send a signal to the master named in the pidfile")
    parser.add_argument("command", nargs="?", choices=["demo", "status"],
                        help="demo: start the bundled demo upstreams and the proxy; "
                             "status: print the running proxy's state, read from "
                             "[status] listen")
    parser.add_argument("--watch", action="store_true",
                        help="status: redraw the table every --interval until Ctrl-C")
    parser.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS",
                        help="status --watch: seconds between samples (default 1)")
    args = parser.parse_args(argv)
    if args.command != "status" and (args.watch or args.interval != 1.0):
        parser.error("--watch and --interval go with the status command")

    if args.version:
        from prefork_proxy.version import version_line

        print(version_line())
        return 0
    if args.command == "demo":
        from prefork_proxy.demo import run_demo

        return run_demo()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for error in exc.errors:  # every error of the file, a line each
            print(f"prefork-proxy: {error.line}", file=sys.stderr)
        return 1
    if args.command == "status":
        from prefork_proxy.status_cli import run as run_status

        return run_status(config, args.config, watch=args.watch, interval=args.interval)
    if args.test:
        print(f"prefork-proxy: {args.config}: configuration is valid")
        return 0
    if args.signal:
        return send_signal(config.pidfile, args.signal)
    return run_master(config)


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.1 to 3600")
    return seconds


def send_signal(pidfile: str | None, name: str) -> int:
    if not pidfile:
        print("prefork-proxy: -s needs a pidfile in the config", file=sys.stderr)
        return 1
    pid = read_pid(pidfile)
    if pid is None:
        print(f"prefork-proxy: {pidfile}: no running master (cannot read a pid)",
              file=sys.stderr)
        return 1
    try:
        os.kill(pid, SIGNAL_NAMES[name])
    except ProcessLookupError:
        print(f"prefork-proxy: {pidfile}: process {pid} is not running", file=sys.stderr)
        return 1
    return 0


def run_master(config: Config) -> int:
    from setproctitle import setproctitle

    from prefork_proxy import listeners, reexec
    from prefork_proxy.master import Master

    logs.setup(config.error_log)
    # nginx's worker_rlimit_nofile: a tunnel holds two descriptors in a worker, so a
    # soft limit of 1024 (systemd's default) would fail near 500 tunnels. Raise it.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit: keep the soft
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    setproctitle(f"prefork-proxy: master -c {config.path}")
    master = Master(config, handover=reexec.is_handover())
    try:
        master.bind(listeners.inherited_sockets())
    except listeners.ListenError as exc:
        print(f"prefork-proxy: {exc}", file=sys.stderr)
        return 1
    return master.run()
