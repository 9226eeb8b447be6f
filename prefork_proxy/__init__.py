"""prefork-proxy: the master side (config, listeners, supervision). Never imports gevent."""

__version__ = "0.1.0"
