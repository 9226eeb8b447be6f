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
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from prefork_proxy import health_check, next_upstream, proxy_ssl, shared_addresses, tls
from prefork_proxy.health_check import HealthCheck
from prefork_proxy.host_names import check_server_name
from prefork_proxy.next_upstream import NextUpstream, parse_next_upstream
from prefork_proxy.peer_names import resolve_peers
from prefork_proxy.proxy_ssl import UpstreamTls
from prefork_proxy.values import (
    Address,
    parse_address,
    parse_duration,
    parse_size,
    parse_timeout,
)

if TYPE_CHECKING:
    from prefork_proxy.health_board import HealthBoard


class ConfigError(Exception):
    """A config problem, rendered as `FILE: key.path: message`.

    A file with several problems raises one ConfigError for all of them:
    `errors` lists each (the first one's file, key and message are its own), and
    str() puts each on a line of its own, as `prefork-proxy -t` prints them.
    """

    def __init__(self, file: str, key: str, message: str,
                 errors: list[ConfigError] | None = None) -> None:
        self.errors = errors or [self]
        super().__init__("\n".join(error.line for error in self.errors) if errors
                         else _line(file, key, message))
        self.file, self.key, self.message = file, key, message

    @property
    def line(self) -> str:
        return _line(self.file, self.key, self.message)

    @classmethod
    def of(cls, errors: list[ConfigError]) -> ConfigError:
        """One error for `errors` (in the order found): the error itself if alone."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        return cls(first.file, first.key, first.message, errors)


def _line(file: str, key: str, message: str) -> str:
    return f"{file}: {key}: {message}" if key else f"{file}: {message}"


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
    # nginx's max_conns: at most N connections open to it, counted host-wide (0: no limit).
    max_conns: int = 0
    # nginx Plus / HAProxy slowstart: after a ban, its weight ramps up over this time.
    slow_start: float = 0.0
    # The host name written in `servers` when `address` is one of its addresses
    # (prefork_proxy/peer_names.py); None for an address written as such.
    name: str | None = None


def _parse_peer(text: object) -> Peer:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a string")
    address_text, *options = text.split()
    values: dict[str, Any] = {"address": parse_address(address_text)}
    for option in options:
        name, sep, raw = option.partition("=")
        if name == "backup" and not sep:
            values["backup"] = True
        elif name in ("weight", "max_fails", "max_conns") and sep and raw.isdigit():
            values[name] = int(raw)
        elif name in ("fail_timeout", "slow_start") and sep:
            values[name] = parse_duration(raw)
        else:
            raise ValueError(f"{option!r} is not weight=N, max_fails=N, fail_timeout=T, "
                             "max_conns=N, slow_start=T or backup")
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
    # HAProxy's maxqueue: requests that wait in a worker while every usable peer is
    # at max_conns (0: none wait; they are answered 503 at once), for queue_timeout.
    queue: int = _setting(0, _positive_int)
    queue_timeout: float = _setting(30.0, parse_timeout)
    # An active check (prefork_proxy/health_check.py), run by the one health checker.
    health_check: HealthCheck | None = None
    # Host names in `servers` are resolved when the config is read; with `resolve`
    # every worker resolves them again at this interval (0: never; workers/peer_resolver.py).
    resolve: float = _setting(0.0, parse_duration)


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
    # proxy_pass = "https://...": nginx's proxy_ssl_* settings (prefork_proxy/proxy_ssl.py).
    # verify and server_name default to on, unlike nginx: an unchecked TLS upstream
    # is no safer than a plain one.
    proxy_ssl_verify: bool = _setting(True, _boolean)
    proxy_ssl_trusted_certificate: str | None = _setting(None, _optional_text)
    proxy_ssl_server_name: bool = _setting(True, _boolean)
    proxy_ssl_name: str | None = _setting(None, _optional_text)  # default: proxy_pass's host
    proxy_ssl_protocols: tuple[str, ...] = _setting(("TLSv1.2", "TLSv1.3"),
                                                    proxy_ssl.parse_protocols)
    proxy_ssl_session_reuse: bool = _setting(True, _boolean)
    # nginx's proxy_next_upstream (prefork_proxy/next_upstream.py): default
    # `error timeout`; next_upstream_tries and next_upstream_timeout (0: no limit)
    # are folded into it by the reader.
    next_upstream: NextUpstream = _setting(next_upstream.DEFAULT, parse_next_upstream)
    next_upstream_tries: int = _setting(0, _positive_int)
    next_upstream_timeout: float = _setting(0.0, parse_duration)
    # Built from the above for an https:// proxy_pass; None speaks plain TCP.
    tls: UpstreamTls | None = None


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
    client_header_timeout: float = _setting(60.0, parse_timeout)
    # nginx client_body_timeout: the time between two reads of a request body.
    client_body_timeout: float = _setting(60.0, parse_timeout)
    # nginx send_timeout: the time between two successful writes to the client.
    client_send_timeout: float = _setting(60.0, parse_timeout)
    # nginx keepalive_timeout: the wait for the next request; 0 turns keep-alive off.
    client_keepalive_timeout: float = _setting(75.0, parse_duration)
    # nginx keepalive_requests: the answer to the last one says Connection: close.
    client_keepalive_requests: int = _setting(1000, _at_least_one)
    # nginx http2_max_concurrent_streams: SETTINGS_MAX_CONCURRENT_STREAMS on an
    # `http2` listener (workers/http2/session.py).
    http2_max_concurrent_streams: int = _setting(128, _at_least_one)


CLIENT_LIMITS = tuple(f.name for f in fields(ClientLimits))

TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")


def _tls_protocols(value: object) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value
            or any(item not in TLS_PROTOCOLS for item in value)):
        raise ValueError(f"{value!r} is not a non-empty list of {' and '.join(TLS_PROTOCOLS)}")
    return tuple(item for item in TLS_PROTOCOLS if item in value)


def _optional_path(value: object) -> str | None:
    return _text(value) or None


@dataclass(frozen=True)
class TlsSettings:
    """nginx's ssl_* settings for a server's `ssl` listeners (prefork_proxy/tls.py).

    Set at the top level of the file as defaults; a `[[server]]` may override any."""

    # PEM files; both are required by a server with an `ssl` listen.
    ssl_certificate: str | None = _setting(None, _optional_path)
    ssl_certificate_key: str | None = _setting(None, _optional_path)
    ssl_protocols: tuple[str, ...] = _setting(TLS_PROTOCOLS, _tls_protocols)
    # nginx's default; OpenSSL cipher-list syntax, for TLS 1.2 (TLS 1.3's suites are
    # OpenSSL's defaults: the stdlib cannot set them).
    ssl_ciphers: str = _setting("HIGH:!aNULL:!MD5", _text)
    ssl_session_tickets: bool = _setting(True, _boolean)
    # nginx's default. The stdlib cannot set the session lifetime (SSL_CTX_set_timeout):
    # checked and kept, but OpenSSL's default lifetime (2 h) applies.
    ssl_session_timeout: float = _setting(300.0, parse_timeout)


TLS_SETTINGS = tuple(f.name for f in fields(TlsSettings))

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


def _real_ip_header(value: object) -> str:
    # nginx takes any header name, or proxy_protocol (the PROXY header's address).
    if not isinstance(value, str) or not (value == "proxy_protocol"
                                          or _HEADER_NAME.fullmatch(value)):
        raise ValueError(f"{value!r} is not a header name (e.g. \"X-Forwarded-For\") "
                         f"or \"proxy_protocol\"")
    return value


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.1: a token


@dataclass(frozen=True)
class RealIp:
    """nginx's ngx_http_realip_module: the client address a trusted proxy names
    (workers/real_ip.py). Set at the top level (the defaults of every server and
    of the status listener); a `[[server]]` may set any of them again."""

    # The proxies whose word is taken; empty (the default) turns the rule off.
    real_ip_from: tuple[Network, ...] = _setting((), _networks)
    # nginx's default header; "proxy_protocol" takes the PROXY header's address.
    real_ip_header: str = _setting("X-Real-IP", _real_ip_header)
    # nginx's default off: the list's last address; on, the rightmost untrusted one.
    real_ip_recursive: bool = _setting(False, _boolean)


REAL_IP = tuple(f.name for f in fields(RealIp))


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
    # nginx server_name (prefork_proxy/host_names.py): the hosts that pick this server
    # among those sharing a listen address; none: only as the address's default.
    names: tuple[str, ...] = ()
    real_ip: RealIp = RealIp()
    tls: TlsSettings = TlsSettings()


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
    # The defaults of every server's RealIp, and the status listener's rule.
    real_ip: RealIp = RealIp()
    # The defaults of every server's TlsSettings (`ssl_certificate`...).
    tls: TlsSettings = TlsSettings()
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    servers: tuple[Server, ...] = ()
    status: Status = Status()
    # The SSLContext of each `ssl` listen address, built once per loaded file (before
    # the workers fork: they all hold the same session ticket keys, new per reload).
    tls_contexts: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The active checks' results (prefork_proxy/health_board.py): made by the master
    # for this config before it forks, shared with its workers and its checker.
    health_board: HealthBoard | None = field(default=None, compare=False, repr=False)

    @property
    def listens(self) -> dict[str, Listen]:
        """Every address the master binds: the servers' and the status listener's."""
        found = {listen.key: listen for server in self.servers for listen in server.listen}
        if self.status.listen is not None:
            found[str(self.status.listen)] = Listen(self.status.listen)
        return found

    @property
    def virtual_hosts(self) -> dict[str, tuple[Server, tuple[Server, ...]]]:
        """{address: (its default server, all its servers)} (shared_addresses.py)."""
        return shared_addresses.by_address(self.servers)


class _Reader:
    """Walks the TOML tree, remembering the file name for error messages.

    It reads on past an error, so that one run reports every error of a file
    (`prefork-proxy -t`): each setting, upstream, server and location is checked
    on its own, and an error is recorded (`errors`) where it is found. A part too
    broken to read further (a table that is not a table) raises, and `part()`
    records that and goes on with the next part.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[ConfigError] = []

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.file, key, message)

    def report(self, key: str, message: str) -> None:
        """Record an error and read on."""
        self.errors.append(self.error(key, message))

    def part(self, parse: Any, *args: Any) -> Any:
        """parse(*args), or None once the error that stopped it is recorded."""
        try:
            return parse(*args)
        except ConfigError as exc:
            self.errors.append(exc)
            return None

    def settings(self, cls: type, table: dict, key: str, skip: tuple[str, ...]) -> dict:
        """Parse the plain settings of `cls` from `table`; complain of unknown keys.
        A bad setting is reported and left out (its default stands in for it)."""
        known = {f.name: f for f in fields(cls) if f.metadata.get("parse")}
        values = {}
        for name, raw in table.items():
            where = f"{key}.{name}" if key else name
            if name in skip:
                continue
            if name not in known:
                self.report(where, "unknown setting")
                continue
            try:
                values[name] = known[name].metadata["parse"](raw)
            except ValueError as exc:
                self.report(where, str(exc))
        return values

    def upstream(self, name: str, table: object) -> Upstream:
        """An upstream, even a broken one (reported): a location naming it then
        finds it, and only the upstream's own errors are reported."""
        key = f"upstream.{name}"
        if not isinstance(table, dict):
            self.report(key, "must be a table")
            return Upstream(name=name)
        values = self.settings(Upstream, table, key,
                               skip=("servers", "balance", "health_check"))
        if "health_check" in table:
            check, errors = health_check.parse_health_check(table["health_check"],
                                                            f"{key}.health_check")
            for where, message in errors:
                self.report(where, message)
            values["health_check"] = check
        servers = table.get("servers")
        peers = []
        if not isinstance(servers, list) or not servers:
            self.report(f"{key}.servers", "must be a non-empty list of \"host:port\"")
        else:
            for index, text in enumerate(servers):
                try:
                    # nginx: a name stands for every address it has, each a peer
                    peers.extend(resolve_peers(_parse_peer(text)))
                except ValueError as exc:
                    self.report(f"{key}.servers[{index}]", str(exc))
            if peers and all(peer.backup for peer in peers):
                self.report(f"{key}.servers", "needs at least one server that is not backup")
        balance = "round_robin"
        try:
            balance = _balance(table.get("balance", "round_robin"))
        except ValueError as exc:
            self.report(f"{key}.balance", str(exc))
        return Upstream(name=name, peers=tuple(peers), balance=balance, **values)

    def location(self, table: object, key: str, upstreams: dict[str, Upstream]) -> Location:
        if not isinstance(table, dict):
            raise self.error(key, "must be a table")
        values = self.settings(
            Location, table, key, skip=("path", "proxy_pass", "uwsgi_pass")
        )
        path = table.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            self.report(f"{key}.path", f"{path!r} is not a path prefix starting with /")
            path = ""
        has_proxy, has_uwsgi = "proxy_pass" in table, "uwsgi_pass" in table
        if has_proxy == has_uwsgi:
            raise self.error(key, "needs exactly one of proxy_pass or uwsgi_pass")
        target_key = "proxy_pass" if has_proxy else "uwsgi_pass"
        try:
            target = _parse_target(table[target_key], target_key, upstreams)
        except ValueError as exc:
            raise self.error(f"{key}.{target_key}", str(exc)) from None
        if not has_proxy and target.uri_prefix is not None:
            self.report(f"{key}.uwsgi_pass", "a uwsgi_pass address takes no URI part")
        if target.tls_host is not None:
            if not has_proxy:
                raise self.error(f"{key}.uwsgi_pass", "uwsgi over TLS is not supported")
            values["tls"] = self.upstream_tls(values, target.tls_host, key)
        if "next_upstream_tries" in values or "next_upstream_timeout" in values:
            values["next_upstream"] = replace(
                values.get("next_upstream", next_upstream.DEFAULT),
                tries=values.get("next_upstream_tries", 0),
                time_limit=values.get("next_upstream_timeout", 0.0))
        return Location(
            path=path,
            upstream=target.upstream,
            protocol="http" if has_proxy else "uwsgi",
            uri_prefix=target.uri_prefix,
            **values,
        )

    def upstream_tls(self, values: dict, host: str, key: str) -> UpstreamTls:
        """A location's proxy_ssl_* settings, over their defaults, made one UpstreamTls."""
        settings = {f.name: values.get(f.name, f.default)
                    for f in fields(Location) if f.name.startswith("proxy_ssl_")}
        try:
            return proxy_ssl.build(
                # nginx: proxy_ssl_name defaults to the host of proxy_pass (an
                # upstream group's name, which then usually needs proxy_ssl_name).
                name=settings["proxy_ssl_name"] or host,
                verify=settings["proxy_ssl_verify"],
                trusted_certificate=settings["proxy_ssl_trusted_certificate"],
                server_name=settings["proxy_ssl_server_name"],
                protocols=settings["proxy_ssl_protocols"],
                session_reuse=settings["proxy_ssl_session_reuse"])
        except proxy_ssl.TlsSettingError as exc:
            raise self.error(f"{key}.{exc.setting}", str(exc)) from None

    def client_limits(self, table: dict, key: str, defaults: ClientLimits) -> ClientLimits:
        """The `client_*` settings of `table` over `defaults`."""
        own = {name: value for name, value in table.items() if name in CLIENT_LIMITS}
        return replace(defaults, **self.settings(ClientLimits, own, key, skip=()))

    def real_ip(self, table: dict, key: str, defaults: RealIp) -> RealIp:
        """The `real_ip_*` settings of `table` over `defaults`."""
        own = {name: value for name, value in table.items() if name in REAL_IP}
        return replace(defaults, **self.settings(RealIp, own, key, skip=()))

    def tls_settings(self, table: dict, key: str, defaults: TlsSettings) -> TlsSettings:
        """The `ssl_*` settings of `table` over `defaults`."""
        own = {name: value for name, value in table.items() if name in TLS_SETTINGS}
        values = self.settings(TlsSettings, own, key, skip=())
        for name in ("ssl_certificate", "ssl_certificate_key"):
            if values.get(name):  # nginx: a relative path is from the config's directory
                values[name] = os.path.join(os.path.dirname(os.path.abspath(self.file)),
                                            values[name])
        return replace(defaults, **values)

    def listen(self, text: object, where: str) -> Listen:
        if not isinstance(text, str):
            raise self.error(where, f"{text!r} is not a string")
        address_text, *options = text.split() or [""]
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
        return Listen(address, **flags)

    def server_names(self, value: object, key: str) -> tuple[str, ...]:
        """`server_name`: nginx's names (prefork_proxy/host_names.py), lowercased."""
        if not isinstance(value, list):
            self.report(key, "must be a list of names, e.g. [\"example.com\", \"*.example.com\"]")
            return ()
        names = []
        for index, name in enumerate(value):
            try:
                names.append(check_server_name(name))
            except ValueError as exc:
                self.report(f"{key}[{index}]", str(exc))
        return tuple(names)

    def server(self, table: object, key: str, upstreams: dict[str, Upstream],
               client: ClientLimits, real_ip: RealIp,
               tls_defaults: TlsSettings) -> Server | None:
        """A server, or None when it has no usable listen address or location (reported)."""
        if not isinstance(table, dict):
            raise self.error(key, "must be a table")
        for name in table:
            if (name not in _SERVER_KEYS and name not in CLIENT_LIMITS and name not in REAL_IP
                    and name not in TLS_SETTINGS):
                self.report(f"{key}.{name}", "unknown setting")
        names = self.server_names(table.get("server_name", []), f"{key}.server_name")
        listen_texts = table.get("listen")
        listens = []
        if not isinstance(listen_texts, list) or not listen_texts:
            self.report(f"{key}.listen", "must be a non-empty list of addresses")
        else:
            listens = [self.part(self.listen, text, f"{key}.listen[{index}]")
                       for index, text in enumerate(listen_texts)]
        location_tables = table.get("location", [])
        locations = []
        if not isinstance(location_tables, list) or not location_tables:
            self.report(f"{key}.location", "needs at least one [[server.location]]")
        else:
            locations = [self.part(self.location, item, f"{key}.location[{index}]", upstreams)
                         for index, item in enumerate(location_tables)]
        seen = set()
        for index, location in enumerate(locations):
            if location is None or not location.path:
                continue
            if location.path in seen:
                self.report(f"{key}.location[{index}].path", f"{location.path!r} repeats")
            seen.add(location.path)
        limits = self.client_limits(table, key, client)
        own_real_ip = self.real_ip(table, key, real_ip)
        own_tls = self.tls_settings(table, key, tls_defaults)
        if None in listens or None in locations or not listens or not locations:
            return None  # its errors are reported; the cross checks skip it
        return Server(tuple(listens), tuple(locations), limits, names, own_real_ip, own_tls)

    def tls_contexts(self, servers: list[tuple[int, Server]], tables: list,
                     top: dict) -> dict[str, Any]:
        """Every ssl address's SSLContext, its servers' certificates and keys loaded
        now, so that `-t` and a reload refuse a file OpenSSL cannot use, naming the
        key. The servers sharing an address are told apart by SNI (tls.py); the
        address's settings (protocols, ciphers, tickets, http2) are its default
        server's, as nginx takes the address's parameters from one place."""
        index_of = {id(server): index for index, server in servers}

        def where(index: int, name: str) -> str:
            # The key as written: the server's own, else the top-level default.
            return f"server[{index}].{name}" if name in tables[index] or name not in top \
                else name

        contexts = {}
        missing = set()
        for key, (default, sharing) in shared_addresses.by_address(
                server for _, server in servers).items():
            listen = next(item for item in default.listen if item.key == key)
            if not listen.ssl:
                continue
            for server in sharing:
                for name in ("ssl_certificate", "ssl_certificate_key"):
                    if getattr(server.tls, name) is None and (id(server), name) not in missing:
                        missing.add((id(server), name))
                        self.report(f"server[{index_of[id(server)]}].{name}",
                                    f"required by the ssl listen {key}")
            if missing:
                continue
            settings = default.tls
            try:
                contexts[key] = tls.address_context(
                    [(server.names, server.tls.ssl_certificate, server.tls.ssl_certificate_key)
                     for server in sharing],
                    default=sharing.index(default),
                    protocols=settings.ssl_protocols, ciphers=settings.ssl_ciphers,
                    tickets=settings.ssl_session_tickets, http2=listen.http2)
            except tls.TlsFileError as exc:
                self.report(where(index_of[id(sharing[exc.server])], exc.setting), exc.reason)
        return contexts


_SERVER_KEYS = ("listen", "location", "server_name")


@dataclass(frozen=True)
class _Target:
    """What a proxy_pass/uwsgi_pass names."""

    upstream: Upstream
    uri_prefix: bytes | None
    tls_host: str | None  # https://: the host (or upstream name) written, else None


def _parse_target(text: object, key: str, upstreams: dict[str, Upstream]) -> _Target:
    """proxy_pass/uwsgi_pass -> its upstream, URI prefix and TLS host.

    Accepts "host:port", "unix:/path", "http://host:port[/prefix]",
    "https://host[:port][/prefix]" (443 by default, as nginx), "uwsgi://host:port"
    and an upstream name in place of host:port.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not an address or upstream name")
    rest = text
    for scheme in ("http://", "https://", "uwsgi://"):
        if text.startswith(scheme):
            rest = text[len(scheme):]
            break
    else:
        scheme = ""
        if "://" in text:
            raise ValueError(f"{text!r}: only http://, https:// (proxy_pass) or uwsgi:// "
                             "is supported")
    uri_prefix = None
    if not rest.startswith("unix:") and "/" in rest:
        rest, slash, tail = rest.partition("/")
        uri_prefix = (slash + tail).encode("latin-1")
    tls = scheme == "https://"
    if rest in upstreams:
        return _Target(upstreams[rest], uri_prefix, rest if tls else None)
    if tls and (rest.endswith("]") or not rest.startswith(("unix:", "[")) and ":" not in rest):
        rest += ":443"  # nginx: https:// without a port is port 443
    try:
        address = parse_address(rest)
    except ValueError:
        raise ValueError(
            f"{text!r}: no [upstream.{rest}] is defined, and {rest!r} is not host:port"
        ) from None
    tls_host = None
    if tls:
        tls_host = address.host if not address.is_unix else "localhost"
    peers = resolve_peers(Peer(address))  # nginx resolves a proxy_pass host at load too
    return _Target(Upstream(name=str(address), peers=peers), uri_prefix, tls_host)


def parse_config(data: dict, file: str) -> Config:
    """Build a Config from an already-parsed TOML document; raises one ConfigError
    that lists every error found (ConfigError.errors)."""
    reader = _Reader(file)
    top = reader.settings(Config, data, "",
                          skip=("upstream", "server", "workers", "status", *CLIENT_LIMITS,
                                *REAL_IP, *TLS_SETTINGS))
    if top.get("group") and not top.get("user"):
        # Without `user` the workers would keep the master's uid (root, to bind).
        reader.report("group", "needs `user` too: workers change group only "
                               "when they drop to a user")
    client = reader.client_limits(data, "", ClientLimits())
    real_ip = reader.real_ip(data, "", RealIp())
    tls_defaults = reader.tls_settings(data, "", TlsSettings())
    workers = 1
    try:
        workers = _worker_count(data.get("workers", "auto"))
    except ValueError as exc:
        reader.report("workers", str(exc))
    upstream_tables = data.get("upstream", {})
    if not isinstance(upstream_tables, dict):
        reader.report("upstream", "must be a table of [upstream.NAME] tables")
        upstream_tables = {}
    upstreams = {name: reader.upstream(name, item) for name, item in upstream_tables.items()}
    server_tables = data.get("server")
    servers: list[tuple[int, Server]] = []
    if not isinstance(server_tables, list) or not server_tables:
        reader.report("server", "needs at least one [[server]] with a listen address")
    else:
        for index, item in enumerate(server_tables):
            server = reader.part(reader.server, item, f"server[{index}]", upstreams, client,
                                 real_ip, tls_defaults)
            if server is not None:
                servers.append((index, server))
    for key, message in shared_addresses.check(servers):
        reader.report(key, message)
    status = Status()
    status_table = data.get("status", {})
    if not isinstance(status_table, dict):
        reader.report("status", "must be a table: [status] listen = \"127.0.0.1:9901\"")
    else:
        status = Status(**reader.settings(Status, status_table, "status", skip=()))
    protocols = health_check.upstream_protocols(server for _, server in servers)
    for name, upstream in upstreams.items():
        if upstream.health_check is not None:
            message = health_check.protocol_error(upstream.health_check,
                                                  protocols.get(name, set()))
            if message:
                reader.report(f"upstream.{name}.health_check.path", message)
    owners = {listen.key: index for index, server in servers for listen in server.listen}
    if status.key in owners:
        reader.report("status.listen",
                      f"{status.key} is already used by server[{owners[status.key]}]")
    contexts = reader.tls_contexts(servers, server_tables or [], data)
    if reader.errors:
        raise ConfigError.of(reader.errors)
    return Config(path=os.path.abspath(file), workers=workers, upstreams=upstreams,
                  servers=tuple(server for _, server in servers), client=client,
                  real_ip=real_ip, tls=tls_defaults, status=status,
                  tls_contexts=contexts, **top)


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
