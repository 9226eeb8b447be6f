"""TLS to an upstream (proxy_pass https://): wrap, handshake, sessions, idle peek.

The driver (workers/driver.py) opens the TCP connection as for http://, then
wraps it here with the location's SSLContext (prefork_proxy/proxy_ssl.py) and
steps the handshake in callbacks: `handshake_step` answers which watcher to
wait on, or raises the failure as an UpstreamError (502, a connect failure:
the next peer is tried, as for a refused connection). After it, the request
and the reply go over the SSLSocket by the driver's own paths; WOULD_BLOCK is
what stands there for BlockingIOError.

Sessions (nginx's proxy_ssl_session_reuse): the last session of each peer is
kept per location and offered on the next connection to that peer. TLS 1.3
delivers its tickets after the handshake, read with the reply's first bytes,
so a session is taken again when a connection is let go.
"""

from __future__ import annotations

import _socket
import socket
import ssl

from prefork_proxy.proxy_ssl import UpstreamTls
from workers.certificate_names import certificate_matches
from workers.errors import UpstreamError

# An SSLSocket's "would block": it reads or writes TLS records, so a read may
# need the socket writable and a write readable (a renegotiation; never in TLS
# 1.3). The driver waits on its usual watcher either way.
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
DONE, WANT_READ, WANT_WRITE = range(3)

# (id of the location's UpstreamTls, peer index) -> the last session of that peer.
_sessions: dict[tuple[int, int], ssl.SSLSession] = {}


def wrap(sock: _socket.socket, tls: UpstreamTls, peer_index: int) -> ssl.SSLSocket:
    """The connected, non-blocking `sock` as an SSLSocket on the same descriptor
    (the Stream's watchers stay valid), its handshake not begun."""
    session = _sessions.get((id(tls), peer_index)) if tls.session_reuse else None
    return tls.context.wrap_socket(sock, server_side=False, server_hostname=tls.server_name,
                                   do_handshake_on_connect=False, session=session)


def handshake_step(sock: ssl.SSLSocket, tls: UpstreamTls, peer: object) -> int:
    """Advance the handshake: DONE, or the watcher to wait on (WANT_READ/WANT_WRITE).
    Raises UpstreamError when it failed or the certificate is refused."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return WANT_READ
    except ssl.SSLWantWriteError:
        return WANT_WRITE
    except ssl.SSLCertVerificationError as exc:
        raise _failure(peer, f"certificate verify failed: {exc.verify_message}") from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        raise _failure(peer, "the upstream closed the connection") from None
    except ssl.SSLError as exc:
        raise _failure(peer, exc.reason or str(exc)) from None
    except OSError as exc:
        raise _failure(peer, exc.strerror or str(exc)) from None
    if tls.check_name_after and not certificate_matches(sock.getpeercert(), tls.name):
        raise _failure(peer, f"certificate verify failed: the certificate does not name "
                             f"{tls.name!r} (proxy_ssl_name)")
    return DONE


def _failure(peer: object, reason: str) -> UpstreamError:
    # nginx counts a failed handshake as a connect failure: proxy_next_upstream error.
    return UpstreamError(502, f"TLS handshake with {peer} failed: {reason}", retryable=True,
                         cause="tls_handshake")


def remember_session(sock: ssl.SSLSocket, tls: UpstreamTls, peer_index: int) -> None:
    """Keep `sock`'s session for the next connection to the peer, if it can resume:
    a ticket, or a TLS 1.2 session id (a TLS 1.3 session is resumable only once
    its ticket has come)."""
    if not tls.session_reuse:
        return
    session = sock.session
    if session is not None and (session.has_ticket
                                or (session.id and sock.version() != "TLSv1.3")):
        _sessions[(id(tls), peer_index)] = session


def idle_alive(sock: ssl.SSLSocket) -> bool:
    """An idle pooled TLS connection has nothing to read: no plaintext left in the
    TLS layer (it would never make the descriptor readable), and nothing on the
    descriptor (peeked with the plain socket's recv, as SSLSocket refuses flags)."""
    if sock.pending():
        return False
    try:
        _socket.socket.recv(sock, 1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # a byte (a record nobody asked for, a close_notify) or the close
