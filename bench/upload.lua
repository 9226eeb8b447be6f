-- The 10 MiB upload scenario: every request PUTs a 10 MiB body. The upstream
-- (nginx's dav module writing to tmpfs) reads the whole body before it answers.
wrk.method = "PUT"
wrk.body = string.rep("x", 10 * 1024 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
