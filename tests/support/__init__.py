"""Helpers that start real processes (the proxy, upstreams) on ephemeral ports."""
