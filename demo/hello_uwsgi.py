"""The demo's uWSGI application: hello, world, plus what uWSGI was told.

    uwsgi --socket 127.0.0.1:7000 --wsgi-file demo/hello_uwsgi.py

The proxy reaches it with `uwsgi_pass = "127.0.0.1:7000"`; the lines below the
greeting show the uwsgi variables the proxy sent (nginx's uwsgi_params).
"""

SHOWN = ("REQUEST_METHOD", "REQUEST_URI", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL",
         "REMOTE_ADDR", "SERVER_NAME", "SERVER_PORT", "HTTP_HOST", "HTTP_USER_AGENT")


def application(environ, start_response):
    lines = ["Hello, world, from a uWSGI app behind prefork-proxy!", ""]
    lines += [f"{name} = {environ[name]}" for name in SHOWN if name in environ]
    body = ("\n".join(lines) + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
