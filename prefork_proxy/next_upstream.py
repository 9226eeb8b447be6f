"""`next_upstream`: when a failed try is followed by one on the next peer (nginx's
proxy_next_upstream / uwsgi_next_upstream), read from a location's settings.

The values are nginx's: `error`, `timeout`, `invalid_header`, `http_500`,
`http_502`, `http_503`, `http_504`, `http_429`, `non_idempotent`, or `off` alone.
The default is nginx's `error timeout`. With it go `next_upstream_tries` (all the
tries, the first included; 0: no limit) and `next_upstream_timeout` (from the
first try's start; 0: no limit), which config.py folds into the same policy.
The rules that use it are in workers/exchange.py (`Tries`).
"""

from __future__ import annotations

from dataclasses import dataclass

# The reply statuses that may be listed (nginx's ngx_http_upstream_next_errors,
# without 403/404: they are never a failure here).
STATUS_VALUES = {"http_500": 500, "http_502": 502, "http_503": 503, "http_504": 504,
                 "http_429": 429}
VALUES = ("error", "timeout", "invalid_header", *STATUS_VALUES, "non_idempotent", "off")


@dataclass(frozen=True)
class NextUpstream:
    """What makes a failed try go on to the next peer."""

    error: bool = True
    timeout: bool = True
    invalid_header: bool = False
    statuses: frozenset[int] = frozenset()
    non_idempotent: bool = False  # POST, LOCK and PATCH may be sent again
    tries: int = 0  # next_upstream_tries: 0, no limit
    time_limit: float = 0.0  # next_upstream_timeout in seconds: 0, no limit


DEFAULT = NextUpstream()


def parse_next_upstream(value: object) -> NextUpstream:
    """A TOML list of nginx's values -> a NextUpstream (tries and time limit unset)."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{value!r} is not a non-empty list of values: "
                         f"{', '.join(VALUES)}")
    unknown = [item for item in value if item not in VALUES]
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))}: not a next_upstream value "
                         f"(one of {', '.join(VALUES)})")
    if "off" in value:
        if len(value) > 1:
            raise ValueError("\"off\" stands alone")  # nginx: "off" with others is invalid
        return NextUpstream(error=False, timeout=False)
    return NextUpstream(
        error="error" in value, timeout="timeout" in value,
        invalid_header="invalid_header" in value,
        statuses=frozenset(STATUS_VALUES[item] for item in value if item in STATUS_VALUES),
        non_idempotent="non_idempotent" in value)
