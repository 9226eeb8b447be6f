"""The configuration: TOML -> frozen dataclasses.

Every setting is declared once, as a dataclass field whose metadata carries its
parser; defaults follow nginx unless a comment says why not. Every error names
the file and the key path ("proxy.toml: server[0].location[1].proxy_pass: ..."),
and unknown keys are errors, so a typo never passes silently.
`etc/prefork-proxy.toml` documents each setting.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from prefork_proxy.values import Address, parse_address, parse_duration, parse_size


class ConfigError(Exception):
    """A config problem, rendered as `FILE: key.path: message`."""

    def __init__(self, file: str, key: str, message: str) -> None:
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")
        self.file, self.key, self.message = file, key, message


def _setting(default: Any, parse: Any = None, **kw: Any) -> Any:
    return field(default=default, metadata={"parse": parse}, **kw)


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a whole number >= 0")
    return value


def _at_least_one(value: object) -> int:
    if _positive_int(value) < 1:
        raise ValueError(f"{value!r} must be at least 1")
    return value


def _timeout(value: object) -> float:
    """A duration above 0: a wait that may not last at all would close everything."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be more than 0s")
    return seconds


def _byte(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError(f"{value!r} is not a number from 0 to 255")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _optional_text(value: object) -> str | None:
    return _text(value) or None


def _worker_count(value: object) -> int:
    if value == "auto":
        # The cores this process may run on, which cgroups/taskset can narrow.
        return len(os.sched_getaffinity(0))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 512:
        raise ValueError(f"{value!r} is not \"auto\" or a number of workers from 1 to 512")
    return value


def _byte_table(value: object) -> tuple[tuple[bytes, bytes], ...]:
    if not isinstance(value, dict):
        raise ValueError("must be a table, e.g. { SCRIPT_NAME = \"/app\" }")
    pairs = []
    for name, item in value.items():
        if not isinstance(item, str | int):
            raise ValueError(f"{name}: {item!r} is not a string")
        pairs.append((name.encode("latin-1"), str(item).encode("latin-1")))
    return tuple(pairs)


@dataclass(frozen=True)
class Peer:
    """One server of an upstream: `"host:port weight=2 max_fails=1 fail_timeout=10s backup"`."""

    address: Address
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False


def _parse_peer(text: object) -> Peer:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a string")
    address_text, *options = text.split()
    values: dict[str, Any] = {"address": parse_address(address_text)}
    for option in options:
        name, sep, raw = option.partition("=")
        if name == "backup" and not sep:
            values["backup"] = True
        elif name in ("weight", "max_fails") and sep and raw.isdigit():
            values[name] = int(raw)
        elif name == "fail_timeout" and sep:
            values[name] = parse_duration(raw)
        else:
            raise ValueError(f"{option!r} is not weight=N, max_fails=N, fail_timeout=T or backup")
    if values.get("weight", 1) < 1:
        raise ValueError("weight must be at least 1")
    return Peer(**values)


@dataclass(frozen=True)
class Upstream:
    """A named pool of peers (`[upstream.NAME]`), or one made for a bare host:port."""

    name: str
    peers: tuple[Peer, ...] = ()
    balance: str = _setting("round_robin")
    # nginx 1.29.7 default: 32 idle connections kept per worker.
    keepalive: int = _setting(32, _positive_int)
    keepalive_requests: int = _setting(1000, _positive_int)
    keepalive_timeout: float = _setting(60.0, parse_duration)


BALANCE_METHODS = ("round_robin", "least_conn", "ip_hash")


def _balance(value: object) -> str:
    if value not in BALANCE_METHODS:
        raise ValueError(f"{value!r} is not one of {', '.join(BALANCE_METHODS)}")
    return str(value)


@dataclass(frozen=True)
class Location:
    """A `[[server.location]]`: a path prefix and where its requests go."""

    path: str = ""
    upstream: Upstream | None = None
    protocol: str = "http"  # "http" (proxy_pass) or "uwsgi" (uwsgi_pass)
    # proxy_pass with a URI part: that part replaces the matched location path (nginx).
    uri_prefix: bytes | None = None
    # nginx's proxy_{connect,read,send}_timeout default to 60 s; each measures the
    # time between two successive operations, not the whole transfer.
    connect_timeout: float = _setting(60.0, parse_duration)
    read_timeout: float = _setting(60.0, parse_duration)
    send_timeout: float = _setting(60.0, parse_duration)
    # Unlike nginx, upgrades need no config; `websocket = false` refuses them.
    websocket: bool = _setting(True, _boolean)
    # nginx's client_max_body_size default is 1m; "0" means unlimited.
    client_max_body_size: int = _setting(1 << 20, parse_size)
    # nginx's proxy_request_buffering on: a chunked request body is read whole (in
    # memory up to client_body_buffer_size, then a temporary file) and sent with a
    # Content-Length; false streams it as received.
    request_buffering: bool = _setting(True, _boolean)
    client_body_buffer_size: int = _setting(16 << 10, parse_size)
    # nginx's proxy_buffering on: a reply is read as fast as the upstream sends it;
    # what the client cannot take yet is held in memory up to buffers_size, then in
    # a temporary file up to max_temp_file_size ("0": memory only).
    buffering: bool = _setting(True, _boolean)
    buffers_size: int = _setting(64 << 10, parse_size)
    max_temp_file_size: int = _setting(1 << 30, parse_size)

    @property
    def reply_buffering(self) -> tuple[bool, int, int]:
        """(on, memory limit, file limit), as workers/buffering.py takes them."""
        return (self.buffering, self.buffers_size, self.max_temp_file_size)
    uwsgi_param: tuple[tuple[bytes, bytes], ...] = _setting((), _byte_table)
    # Each is one byte of the uwsgi packet header (0 = a WSGI request).
    uwsgi_modifier1: int = _setting(0, _byte)
    uwsgi_modifier2: int = _setting(0, _byte)


# nginx's listen parameters that prefork-proxy has; "reuseport" is nginx's spelling.
_LISTEN_OPTIONS = {"reuse_port": "reuse_port", "reuseport": "reuse_port",
                   "default_server": "default_server", "ssl": "ssl", "http2": "http2",
                   "proxy_protocol": "proxy_protocol"}


@dataclass(frozen=True)
class Listen:
    """One listening address of a server, with nginx's listen parameters:
    `reuse_port` opts in to SO_REUSEPORT; `default_server` makes this server the
    one a host no server names selects; `ssl` terminates TLS; `http2` speaks
    HTTP/2 (ALPN "h2" on ssl, prior knowledge without); `proxy_protocol` reads a
    PROXY protocol header first. As in nginx, the parameters other than
    default_server belong to the address: servers sharing it must agree."""

    address: Address
    reuse_port: bool = False
    default_server: bool = False
    ssl: bool = False
    http2: bool = False
    proxy_protocol: bool = False

    @property
    def key(self) -> str:
        return str(self.address)


@dataclass(frozen=True)
class ClientLimits:
    """How long a client connection may take, with nginx's meanings and defaults.

    Set at the top level of the file; a `[[server]]` may override any of them.
    """

    # nginx client_header_timeout: a deadline for the whole request head, counted
    # from the accept for a connection's first request, from the first byte of a
    # later one (before that byte the keep-alive timeout runs).
    client_header_timeout: float = _setting(60.0, _timeout)
    # nginx client_body_timeout: the time between two reads of a request body.
    client_body_timeout: float = _setting(60.0, _timeout)
    # nginx send_timeout: the time between two successful writes to the client.
    client_send_timeout: float = _setting(60.0, _timeout)
    # nginx keepalive_timeout: the wait for the next request; 0 turns keep-alive off.
    client_keepalive_timeout: float = _setting(75.0, parse_duration)
    # nginx keepalive_requests: the answer to the last one says Connection: close.
    client_keepalive_requests: int = _setting(1000, _at_least_one)
    # nginx http2_max_concurrent_streams: SETTINGS_MAX_CONCURRENT_STREAMS on an
    # `http2` listener (workers/http2/session.py).
    http2_max_concurrent_streams: int = _setting(128, _at_least_one)


CLIENT_LIMITS = tuple(f.name for f in fields(ClientLimits))

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: object) -> tuple[Network, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of addresses or networks, e.g. [\"127.0.0.1/32\"]")
    networks = []
    for item in value:
        if not isinstance(item, str):  # ipaddress would read 1 as 0.0.0.1
            raise ValueError(f"{item!r} is not an address or network")
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except (TypeError, ValueError):
            raise ValueError(f"{item!r} is not an address or network") from None
    return tuple(networks)


def _status_listen(value: object) -> Address:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return parse_address(value)


def _log_format(value: object) -> str:
    if value not in ("combined", "json"):
        raise ValueError(f"{value!r} is not \"combined\" or \"json\"")
    return str(value)


@dataclass(frozen=True)
class Status:
    """`[status]`: the status listener (/metrics, /status.json, the dashboard).

    Off unless `listen` is set. The workers serve it, never the master."""

    listen: Address | None = _setting(None, _status_listen)
    # Who may read it; anyone else gets 403, and the refusal is logged.
    allow: tuple[Network, ...] = _setting(
        (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")), _networks)
    # Clients whose own X-Request-Id is kept (others get a new one: logs cannot be
    # forged from outside).
    trusted: tuple[Network, ...] = _setting((), _networks)

    @property
    def key(self) -> str | None:
        return None if self.listen is None else str(self.listen)


@dataclass(frozen=True)
class Server:
    listen: tuple[Listen, ...]
    locations: tuple[Location, ...]
    client: ClientLimits = ClientLimits()


@dataclass(frozen=True)
class Config:
    """The whole file. `path` is where it came from, for messages and reloads."""

    path: str = ""
    workers: int = _setting(1, _worker_count)  # replaced by "auto" in load_config
    graceful_timeout: float = _setting(30.0, parse_duration)
    worker_timeout: float = _setting(30.0, parse_duration)
    pidfile: str | None = _setting(None, _optional_text)
    access_log: str = _setting("-", _text)
    # nginx's combined format, or one JSON object per line (workers/access_log.py).
    access_log_format: str = _setting("combined", _log_format)
    # X-Request-Id upstream (HTTP_X_REQUEST_ID for uwsgi) when the client sent none
    # or is not in [status] trusted; in the access log and the error lines.
    request_id: bool = _setting(True, _boolean)
    error_log: str = _setting("-", _text)
    # nginx's default is 512 connections per worker.
    worker_connections: int = _setting(512, _positive_int)
    max_requests: int = _setting(0, _positive_int)
    max_requests_jitter: int = _setting(0, _positive_int)
    max_worker_rss: int = _setting(0, parse_size)
    user: str | None = _setting(None, _optional_text)
    group: str | None = _setting(None, _optional_text)
    # The defaults of every server's ClientLimits (`client_header_timeout`...).
    client: ClientLimits = ClientLimits()
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    servers: tuple[Server, ...] = ()
    status: Status = Status()

    @property
    def listens(self) -> dict[str, Listen]:
        """Every address the master binds: the servers' and the status listener's."""
        found = {listen.key: listen for server in self.servers for listen in server.listen}
        if self.status.listen is not None:
            found[str(self.status.listen)] = Listen(self.status.listen)
        return found


class _Reader:
    """Walks the TOML tree, remembering the file name for error messages."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.file, key, message)

    def settings(self, cls: type, table: dict, key: str, skip: tuple[str, ...]) -> dict:
        """Parse the plain settings of `cls` from `table`; complain of unknown keys."""
        known = {f.name: f for f in fields(cls) if f.metadata.get("parse")}
        values = {}
        for name, raw in table.items():
            where = f"{key}.{name}" if key else name
            if name in skip:
                continue
            if name not in known:
                raise self.error(where, "unknown setting")
            try:
                values[name] = known[name].metadata["parse"](raw)
            except ValueError as exc:
                raise self.error(where, str(exc)) from None
        return values

    def upstream(self, name: str, table: object) -> Upstream:
        key = f"upstream.{name}"
        if not isinstance(table, dict):
            raise self.error(key, "must be a table")
        values = self.settings(Upstream, table, key, skip=("servers", "balance"))
        servers = table.get("servers")
        if not isinstance(servers, list) or not servers:
            raise self.error(f"{key}.servers", "must be a non-empty list of \"host:port\"")
        peers = []
        for index, text in enumerate(servers):
            try:
                peers.append(_parse_peer(text))
            except ValueError as exc:
                raise self.error(f"{key}.servers[{index}]", str(exc)) from None
        if all(peer.backup for peer in peers):
            raise self.error(f"{key}.servers", "needs at least one server that is not backup")
        try:
            balance = _balance(table.get("balance", "round_robin"))
        except ValueError as exc:
            raise self.error(f"{key}.balance", str(exc)) from None
        return Upstream(name=name, peers=tuple(peers), balance=balance, **values)

    def location(self, table: object, key: str, upstreams: dict[str, Upstream]) -> Location:
        if not isinstance(table, dict):
            raise self.error(key, "must be a table")
        values = self.settings(
            Location, table, key, skip=("path", "proxy_pass", "uwsgi_pass")
        )
        path = table.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise self.error(f"{key}.path", f"{path!r} is not a path prefix starting with /")
        has_proxy, has_uwsgi = "proxy_pass" in table, "uwsgi_pass" in table
        if has_proxy == has_uwsgi:
            raise self.error(key, "needs exactly one of proxy_pass or uwsgi_pass")
        target_key = "proxy_pass" if has_proxy else "uwsgi_pass"
        try:
            upstream, uri_prefix = _parse_target(table[target_key], target_key, upstreams)
        except ValueError as exc:
            raise self.error(f"{key}.{target_key}", str(exc)) from None
        if not has_proxy and uri_prefix is not None:
            raise self.error(f"{key}.uwsgi_pass", "a uwsgi_pass address takes no URI part")
        return Location(
            path=path,
            upstream=upstream,
            protocol="http" if has_proxy else "uwsgi",
            uri_prefix=uri_prefix,
            **values,
        )

    def client_limits(self, table: dict, key: str, defaults: ClientLimits) -> ClientLimits:
        """The `client_*` settings of `table` over `defaults`."""
        own = {name: value for name, value in table.items() if name in CLIENT_LIMITS}
        return replace(defaults, **self.settings(ClientLimits, own, key, skip=()))

    def server(self, table: object, key: str, upstreams: dict[str, Upstream],
               client: ClientLimits) -> Server:
        if not isinstance(table, dict):
            raise self.error(key, "must be a table")
        for name in table:
            if name not in ("listen", "location") and name not in CLIENT_LIMITS:
                raise self.error(f"{key}.{name}", "unknown setting")
        listen_texts = table.get("listen")
        if not isinstance(listen_texts, list) or not listen_texts:
            raise self.error(f"{key}.listen", "must be a non-empty list of addresses")
        listens = []
        for index, text in enumerate(listen_texts):
            where = f"{key}.listen[{index}]"
            if not isinstance(text, str):
                raise self.error(where, f"{text!r} is not a string")
            address_text, *options = text.split()
            try:
                address = parse_address(address_text, default_host="0.0.0.0")
            except ValueError as exc:
                raise self.error(where, str(exc)) from None
            flags = {}
            for option in options:
                name = _LISTEN_OPTIONS.get(option)
                if name is None:
                    raise self.error(where, f"{option!r} is not a listen option "
                                            f"({', '.join(sorted(set(_LISTEN_OPTIONS.values())))})")
                flags[name] = True
            listens.append(Listen(address, **flags))
        location_tables = table.get("location", [])
        if not isinstance(location_tables, list) or not location_tables:
            raise self.error(f"{key}.location", "needs at least one [[server.location]]")
        locations = [
            self.location(item, f"{key}.location[{index}]", upstreams)
            for index, item in enumerate(location_tables)
        ]
        seen = set()
        for index, location in enumerate(locations):
            if location.path in seen:
                raise self.error(f"{key}.location[{index}].path", f"{location.path!r} repeats")
            seen.add(location.path)
        return Server(tuple(listens), tuple(locations), self.client_limits(table, key, client))


def _parse_target(
    text: object, key: str, upstreams: dict[str, Upstream]
) -> tuple[Upstream, bytes | None]:
    """proxy_pass/uwsgi_pass -> (upstream, URI prefix or None).

    Accepts "host:port", "unix:/path", "http://host:port[/prefix]", "uwsgi://host:port"
    and an upstream name in place of host:port.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not an address or upstream name")
    rest = text
    for scheme in ("http://", "uwsgi://"):
        if text.startswith(scheme):
            rest = text[len(scheme):]
            break
    else:
        if "://" in text:
            raise ValueError(f"{text!r}: only http:// (proxy_pass) or uwsgi:// is supported")
    uri_prefix = None
    if not rest.startswith("unix:") and "/" in rest:
        rest, slash, tail = rest.partition("/")
        uri_prefix = (slash + tail).encode("latin-1")
    if rest in upstreams:
        return upstreams[rest], uri_prefix
    try:
        address = parse_address(rest)
    except ValueError:
        raise ValueError(
            f"{text!r}: no [upstream.{rest}] is defined, and {rest!r} is not host:port"
        ) from None
    return Upstream(name=str(address), peers=(Peer(address),)), uri_prefix


def parse_config(data: dict, file: str) -> Config:
    """Build a Config from an already-parsed TOML document."""
    reader = _Reader(file)
    top = reader.settings(Config, data, "",
                          skip=("upstream", "server", "workers", "status", *CLIENT_LIMITS))
    if top.get("group") and not top.get("user"):
        # Without `user` the workers would keep the master's uid (root, to bind).
        raise reader.error("group", "needs `user` too: workers change group only "
                                    "when they drop to a user")
    client = reader.client_limits(data, "", ClientLimits())
    try:
        workers = _worker_count(data.get("workers", "auto"))
    except ValueError as exc:
        raise reader.error("workers", str(exc)) from None
    upstream_tables = data.get("upstream", {})
    if not isinstance(upstream_tables, dict):
        raise reader.error("upstream", "must be a table of [upstream.NAME] tables")
    upstreams = {name: reader.upstream(name, item) for name, item in upstream_tables.items()}
    server_tables = data.get("server")
    if not isinstance(server_tables, list) or not server_tables:
        raise reader.error("server", "needs at least one [[server]] with a listen address")
    servers = tuple(
        reader.server(item, f"server[{index}]", upstreams, client)
        for index, item in enumerate(server_tables)
    )
    owners: dict[str, int] = {}
    for index, server in enumerate(servers):
        for listen in server.listen:
            if listen.key in owners:
                other = owners[listen.key]
                raise reader.error(
                    f"server[{index}].listen", f"{listen.key} is already used by server[{other}]"
                )
            owners[listen.key] = index
    status_table = data.get("status", {})
    if not isinstance(status_table, dict):
        raise reader.error("status", "must be a table: [status] listen = \"127.0.0.1:9901\"")
    status = Status(**reader.settings(Status, status_table, "status", skip=()))
    if status.key in owners:
        raise reader.error("status.listen",
                           f"{status.key} is already used by server[{owners[status.key]}]")
    return Config(path=os.path.abspath(file), workers=workers, upstreams=upstreams,
                  servers=servers, client=client, status=status, **top)


def load_config(path: str) -> Config:
    """Read and check a config file; raises ConfigError naming the file and key."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(path, "", exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return parse_config(data, path)
