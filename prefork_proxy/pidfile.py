"""The pidfile, including nginx's `.oldbin` dance during a USR2 binary upgrade."""

from __future__ import annotations

import contextlib
import os


class Pidfile:
    def __init__(self, path: str | None) -> None:
        self.path = path

    @property
    def oldbin(self) -> str | None:
        return f"{self.path}.oldbin" if self.path else None

    def write(self, pid: int) -> None:
        if not self.path:
            return
        temporary = f"{self.path}.{pid}.tmp"
        try:
            fd = _create(temporary)
        except FileExistsError:
            # Left by a crash, or planted (a symlink to a file someone wants
            # overwritten): unlink removes the name, never what a symlink names.
            os.unlink(temporary)
            fd = _create(temporary)
        with os.fdopen(fd, "w") as file:
            file.write(f"{pid}\n")
        os.replace(temporary, self.path)  # readers never see a half-written file

    def remove(self) -> None:
        """Remove the pidfile (or our .oldbin) only if it still names this process."""
        for path in (self.path, self.oldbin):
            if path and read_pid(path) == os.getpid():
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def rename_to_oldbin(self) -> None:
        if self.path and os.path.exists(self.path):
            os.replace(self.path, self.oldbin)

    def restore_from_oldbin(self, pid: int) -> None:
        """The new master failed: take the pidfile back."""
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.oldbin)
            self.write(pid)


def _create(path: str) -> int:
    """A new file of our own: never an existing one, never through a symlink."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o644)


def read_pid(path: str) -> int | None:
    try:
        with open(path) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None
