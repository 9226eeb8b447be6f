"""Dropping root after fork: the `user` and `group` settings, as nginx's workers do.

Plain Python, shared by the workers (workers/worker.py) and the health checker.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd

log = logging.getLogger("worker")


class PrivilegeError(Exception):
    """The switch cannot be made: one line for the operator."""


def drop_privileges(user: str | None, group: str | None) -> None:
    """Become `user`/`group` after the master bound the sockets.

    Raises PrivilegeError with the cause; a child never runs with more
    privileges than the config asked for.
    """
    if not user and not group:
        return
    try:
        entry = pwd.getpwnam(user) if user else None
    except KeyError:
        raise PrivilegeError(f"user {user!r} does not exist") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else (entry.pw_gid if entry else os.getgid())
    except KeyError:
        raise PrivilegeError(f"group {group!r} does not exist") from None
    if os.geteuid() != 0:
        # nginx: "the "user" directive makes sense only if the master runs as root".
        log.warning("user/group set but the master is not root; keeping uid %d", os.geteuid())
        return
    try:
        if entry:
            os.initgroups(entry.pw_name, gid)
        else:
            os.setgroups([])
        os.setgid(gid)
        if entry:
            os.setuid(entry.pw_uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to user {user!r} group {group!r}: {exc}") from None
