"""nginx configs (the fixed-body upstream and the reference proxy) and how to run them.

Each nginx gets its own prefix directory. pid, error log and temp paths live in
it, so nginx runs as root without touching /var. It is started in the
foreground: `nginx -p PREFIX -c CONF -g 'daemon off;'`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench import procs

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UWSGI_PARAMS = Path("/etc/nginx/uwsgi_params")

# nginx's own uwsgi_params, for hosts where /etc/nginx is not there.
_UWSGI_PARAMS_FALLBACK = """\
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;
uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;
uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
"""


def _main_block(prefix: Path, workers: int) -> str:
    # worker_connections counts upstream connections too: 5,000 tunnels in one
    # worker hold 10,000 sockets.
    return f"""\
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 20000; }}
"""


def _http_common(prefix: Path) -> str:
    return f"""\
    access_log off;
    default_type text/plain;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""


def upstream_config(prefix: Path, port: int, files: Path, dav_root: Path) -> str:
    """The HTTP upstream: fixed small body, a 1 MiB static file, and a PUT sink.

    The sink is the dav module writing to tmpfs: it reads the whole body before
    it answers, which `return 200` does not (that answers first and discards).
    """
    return _main_block(prefix, 1) + f"""\
http {{
{_http_common(prefix)}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        location / {{ return 200 "hello, world: a small fixed response body\\n"; }}
        location = /1m {{ alias {files}/1m.bin; }}
        location /upload/ {{
            root {dav_root};
            client_body_temp_path {dav_root}/tmp;
            client_body_buffer_size 1m;
            dav_methods PUT;
        }}
    }}
}}
"""


def proxy_config(
    prefix: Path,
    port: int,
    workers: int,
    http_port: int,
    ws_port: int,
    uwsgi_port: int,
    ws_bulk_port: int,
) -> str:
    """nginx as a careful operator configures it for the same three routes."""
    params = prefix / "uwsgi_params"
    if UWSGI_PARAMS.exists():
        shutil.copyfile(UWSGI_PARAMS, params)
    else:
        params.write_text(_UWSGI_PARAMS_FALLBACK)
    return _main_block(prefix, workers) + f"""\
http {{
{_http_common(prefix)}
    upstream app {{
        server 127.0.0.1:{http_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
        # nginx's documented WebSocket proxying: three lines, default buffers.
        location /ws {{
            proxy_pass http://127.0.0.1:{ws_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }}
        location /wsbulk {{
            proxy_pass http://127.0.0.1:{ws_bulk_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }}
        location /uwsgi/ {{
            include {params};
            uwsgi_pass 127.0.0.1:{uwsgi_port};
        }}
    }}
}}
"""


def start(name: str, prefix: Path, config: str, log_dir: Path, nice: int = 0) -> procs.Process:
    """Write `config` into `prefix` and run nginx on it in the foreground."""
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)  # workers run as nobody when nginx starts as root
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    argv = [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    return procs.start(name, argv, log_dir, nice=nice)


def version() -> str:
    result = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False)
    text = (result.stderr or result.stdout).strip()
    return text.removeprefix("nginx version: ").removeprefix("nginx/")
