"""The worker side of prefork-proxy: everything that runs under a gevent hub."""
