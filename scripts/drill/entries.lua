-- wrk script of the drill: POST an entry, each request as the next member.
--
-- TOKENS: a file of `member token` lines (bench's `mint_tokens`); EVENT: the
-- event id. Each wrk thread walks its own stride of the file, so with
-- enough members every request is a different member (a first entry).
local tokens = {}
local counter = 1
local threads = {}

local path = os.getenv("TOKENS") or "tokens.txt"
local event = os.getenv("EVENT") or "prof-1"
local body = '{"answers":{"satisfaction":"5","recommend":"yes"},"client":{"channel":"wrk"}}'

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local nthreads = tonumber(os.getenv("THREADS") or "2")
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == (id - 1) then
      local _, _, token = string.find(line, "^%S+ (%S+)$")
      tokens[#tokens + 1] = token
    end
    i = i + 1
  end
  next_index = 1
  wrk.method = "POST"
  wrk.path = "/api/events/" .. event .. "/entries"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = body
end

function request()
  local token = tokens[next_index]
  next_index = next_index + 1
  if next_index > #tokens then next_index = 1 end
  wrk.headers["Authorization"] = "Bearer " .. token
  return wrk.format()
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
