-- wrk script of bench/run.py: replays the requests listed in a file, round robin.
--
--   wrk -t2 -c32 -d10s -s bench/lua/requests.lua http://127.0.0.1:8080 -- requests.tsv
--
-- One request a line, fields separated by tabs:
--   METHOD <TAB> PATH <TAB> BODY (may be empty) <TAB> Header: value <TAB> Header: value ...
-- A BODY of "@/some/file" is that file's bytes (binary, e.g. a multipart upload), read once.
-- Every request is formatted once, in init(); request() only picks the next one. Each
-- thread starts at a different line, so threads do not send the same request in step.
-- done() prints one line, "wrk-json {...}", that bench/run.py reads.

local prepared = {}
local files = {}
local position = 0
local started = 0

function setup(thread)
  started = started + 1
  thread:set("thread_number", started)
end

local function fields_of(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    fields[#fields + 1] = field
  end
  return fields
end

function init(args)
  local path = args[1]
  if not path then
    error("give the requests file after --: wrk ... -s requests.lua URL -- FILE")
  end
  for line in io.lines(path) do
    if line ~= "" then
      local fields = fields_of(line)
      local headers = {}
      for i = 4, #fields do
        local name, value = fields[i]:match("^([^:]+):%s*(.*)$")
        if name then
          headers[name] = value
        end
      end
      local body = fields[3]
      if body == "" then
        body = nil
      elseif body:sub(1, 1) == "@" then
        local name = body:sub(2)
        if not files[name] then
          local file = assert(io.open(name, "rb"))
          files[name] = file:read("*a")
          file:close()
        end
        body = files[name]
      end
      prepared[#prepared + 1] = wrk.format(fields[1], fields[2], headers, body)
    end
  end
  if #prepared == 0 then
    error("no requests in " .. path)
  end
  position = ((thread_number or 1) - 1) * 7919 % #prepared
end

function request()
  position = position % #prepared + 1
  return prepared[position]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'wrk-json {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, errors.status,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
