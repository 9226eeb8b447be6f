-- The "varied" uwsgi scenario: every request carries an X-Request header that no
-- other request has, and the app echoes it in its reply, so no request head and
-- no reply head repeats. It measures prefork-proxy without the lane's kept
-- parses (workers/known_replies.py, the header vars kept in workers/uwsgi.py).
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  counter = id * 1000000000
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, {["X-Request"] = tostring(counter)})
end
