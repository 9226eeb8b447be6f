-- The chunked POST scenario: every request POSTs 100 KiB with
-- Transfer-Encoding: chunked (16 KiB chunks), as a client streaming an upload
-- sends it. wrk.format() adds a Content-Length whenever it is given a body, so
-- the head is formatted without one and the chunked body is appended to it.
-- The upstream (/real/post) reads the whole body before it answers.
local size, chunk = 100 * 1024, 16 * 1024
local parts, left = {}, size
while left > 0 do
  local n = math.min(chunk, left)
  parts[#parts + 1] = string.format("%x\r\n", n) .. string.rep("x", n) .. "\r\n"
  left = left - n
end
parts[#parts + 1] = "0\r\n\r\n"
local body = table.concat(parts)

wrk.headers["Transfer-Encoding"] = "chunked"
wrk.headers["Content-Type"] = "application/octet-stream"
local formatted = nil

function request()
  if formatted == nil then
    formatted = wrk.format("POST", nil, nil, nil) .. body
  end
  return formatted
end
