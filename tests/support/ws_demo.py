"""Run `prefork-proxy demo` for a test, on free ports instead of 8080/7001/7000/...

The demo reads its ports from environment variables, so a test never needs
the real ports to be free. `Demo.stop()` sends TERM to the launcher (which
stops its children in order), then kills any child left behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil

from prefork_proxy.demo import DemoPorts
from tests.support.processes import Process, free_port, wait_for


class Demo(Process):
    def __init__(self, log_path: Path) -> None:
        self.ports = DemoPorts(**{name: free_port() for name in DemoPorts.ENV})
        env = os.environ | {variable: str(getattr(self.ports, name))
                            for name, variable in DemoPorts.ENV.items()}
        super().__init__([sys.executable, "-m", "prefork_proxy", "demo"], log_path, env=env)
        wait_for(lambda: "demo is running" in self.log() or not self.alive(), timeout=60,
                 message="the demo to start")
        if not self.alive():
            raise AssertionError(f"the demo exited with {self.popen.returncode}:\n{self.log()}")
        self.children = psutil.Process(self.pid).children(recursive=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.proxy}"

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        for child in self.children:  # in sessions of their own: not in the demo's group
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def start_demo(started: list[Process], tmp_path: Path) -> Demo:
    demo = Demo(tmp_path / "demo.log")
    started.append(demo)
    return demo
