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


def main_block(prefix: Path, workers: int) -> str:
    # worker_connections counts upstream connections too: 5,000 tunnels in one
    # worker hold 10,000 sockets.
    return f"""\
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 20000; }}
"""


def http_common(prefix: Path) -> str:
    return f"""\
    access_log off;
    default_type text/plain;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""


def upstream_config(prefix: Path, port: int, files: Path, dav_root: Path,
                    pool_ports: tuple[int, ...] = ()) -> str:
    """The HTTP upstream: fixed small body, static files, a PUT sink and a POST sink.

    The PUT sink is the dav module writing to tmpfs: it reads the whole body before
    it answers, which `return 200` does not (that answers first and discards).
    The POST sink (/real/post) reads the whole body too: the mirror module's
    `mirror_request_body on` reads it in the precontent phase, before the content
    phase answers (the static module's 404, turned into a 200).
    `pool_ports` are more listening ports of the same server: the three-server pool.
    /real/rid adds an X-Request-Id that no other reply has ($request_id).
    """
    listens = "".join(f"        listen 127.0.0.1:{extra} backlog=4096;\n"
                      for extra in pool_ports)
    return main_block(prefix, 1) + f"""\
http {{
{http_common(prefix)}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
{listens}        client_max_body_size 0;
        location / {{ return 200 "hello, world: a small fixed response body\\n"; }}
        location = /1m {{ alias {files}/1m.bin; }}
        location = /real/10m {{ alias {files}/10m.bin; }}
        location /real/rid {{
            add_header X-Request-Id $request_id;
            return 200 "hello, world: a small fixed response body\\n";
        }}
        location = /real/post {{
            mirror /real/mirror;
            mirror_request_body on;
            client_body_buffer_size 128k;
            log_not_found off;
            error_page 404 405 =200 @posted;
        }}
        location = /real/mirror {{ internal; return 204; }}
        location @posted {{ return 200 "posted\\n"; }}
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
    pool_ports: tuple[int, ...] = (),
    uwsgi_one_port: int | None = None,
) -> str:
    """nginx as a careful operator configures it for the same routes.

    /real/ and /pool/ (the real-traffic scenarios) send what prefork-proxy sends by
    default: X-Forwarded-For appended, X-Real-IP, X-Forwarded-Proto,
    X-Forwarded-Host and X-Request-Id set, Host passed through; /pool/ balances
    round robin over three servers. The uwsgi locations send HTTP_X_REQUEST_ID,
    as prefork-proxy's request_id does.
    """
    params = prefix / "uwsgi_params"
    if UWSGI_PARAMS.exists():
        shutil.copyfile(UWSGI_PARAMS, params)
    else:
        params.write_text(_UWSGI_PARAMS_FALLBACK)
    return main_block(prefix, workers) + f"""\
http {{
{http_common(prefix)}
    upstream app {{
        server 127.0.0.1:{http_port};
        keepalive 32;
    }}
{_pool_block(pool_ports)}    server {{
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
            uwsgi_param HTTP_X_REQUEST_ID $request_id;  # prefork-proxy's request_id
            uwsgi_pass 127.0.0.1:{uwsgi_port};
        }}
        location /real/ {{
            proxy_pass http://app;
{FORWARDED}        }}
{_pool_location(pool_ports)}{_uwsgi_one_location(params, uwsgi_one_port)}    }}
}}
"""


# What prefork-proxy sends upstream by default, spelled for nginx (a location's
# proxy_set_header lines replace the inherited ones, so all of them are here).
FORWARDED = """\
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-Id $request_id;
"""


def _pool_block(ports: tuple[int, ...]) -> str:
    if not ports:
        return ""
    servers = "".join(f"        server 127.0.0.1:{port};\n" for port in ports)
    return f"    upstream pool {{\n{servers}        keepalive 32;\n    }}\n"


def _pool_location(ports: tuple[int, ...]) -> str:
    if not ports:
        return ""
    return (f"        location /pool/ {{\n            proxy_pass http://pool;\n"
            f"{FORWARDED}        }}\n")


def _uwsgi_one_location(params: Path, port: int | None) -> str:
    if port is None:
        return ""
    return (f"        location /uwsgi1/ {{\n            include {params};\n"
            "            uwsgi_param HTTP_X_REQUEST_ID $request_id;\n"
            f"            uwsgi_pass 127.0.0.1:{port};\n        }}\n")


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
