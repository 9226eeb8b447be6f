-- The browser-head scenario: every request carries the head Chrome sends for a
-- page load (client hints, fetch metadata, Accept*, a Referer and a session's
-- cookies), 15 header lines besides Host. The upstream (/real/rid) answers with
-- an X-Request-Id that no other reply has, so no reply head repeats either.
wrk.headers["Connection"] = "keep-alive"
wrk.headers["sec-ch-ua"] = '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"'
wrk.headers["sec-ch-ua-mobile"] = "?0"
wrk.headers["sec-ch-ua-platform"] = '"Linux"'
wrk.headers["Upgrade-Insecure-Requests"] = "1"
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 " ..
  "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9," ..
  "image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
wrk.headers["Sec-Fetch-Mode"] = "navigate"
wrk.headers["Sec-Fetch-User"] = "?1"
wrk.headers["Sec-Fetch-Dest"] = "document"
wrk.headers["Referer"] = "http://127.0.0.1/real/"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
wrk.headers["Accept-Language"] = "en-GB,en-US;q=0.9,en;q=0.8"
wrk.headers["Cookie"] = "_ga=GA1.1.1439862614.1732550400; " ..
  "_ga_XK3T9Q2M7B=GS1.1.1732550400.3.1.1732553112.0.0.0; " ..
  "csrftoken=Xq7v1hTzL0wq2m9cYb3RkP8sNf4uJd6E; " ..
  "sessionid=k2j3h4g5f6d7s8a9q0w1e2r3t4y5u6i7; theme=dark"
