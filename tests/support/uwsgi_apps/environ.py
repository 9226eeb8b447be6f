"""Answers with its WSGI environ as JSON, plus the sha256 and length of the body it read.

Only the CGI-style string variables are dumped (uWSGI's own ``uwsgi.*`` and
``wsgi.*`` entries are objects or describe the server, not the request).
The body is read to the end of ``wsgi.input``, which uWSGI bounds by
CONTENT_LENGTH, so the digest shows exactly what the proxy delivered.
"""

import hashlib
import json


def application(environ, start_response):
    digest = hashlib.sha256()
    length = 0
    stream = environ["wsgi.input"]
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        length += len(chunk)
    variables = {
        key: value
        for key, value in environ.items()
        if isinstance(value, str) and not key.startswith(("wsgi.", "uwsgi."))
    }
    payload = json.dumps(
        {"environ": variables, "body_sha256": digest.hexdigest(), "body_length": length},
        sort_keys=True,
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]
