-- wrk script for bench/ingest.py: replays pre-signed report requests, each exactly once.
--
-- Usage: wrk -t T -c C -d D -s ingest.lua URL -- PREFIX GATE_DIR T
--
-- Thread i loads the file PREFIX.i, complete HTTP requests each preceded by its length in
-- 8 decimal digits, so the threads send disjoint slices and no request is sent twice. A
-- thread that runs out of requests stops and the run is flagged "exhausted" (the bench
-- then needs more pre-signed data). done() prints one line "BENCH {json}".
--
-- Two wrk 4 details (src/wrk.c, src/script.c) this script works around:
-- * wrk starts each thread as soon as that thread's init() has run, but starts its clock
--   only after the last one; the first threads would send uncounted-for extra load. Each
--   thread therefore marks itself ready in GATE_DIR and waits, on its first request, until
--   all T threads are ready.
-- * wrk calls request() once on the first thread before the run, to check the request it
--   returns (script_verify_request); that request is never sent. It takes a request of its
--   own, so none can be sent twice, and is not counted as sent.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1] .. "." .. id, "rb"))
   local data = file:read("*a")
   file:close()
   queue = {}
   local n, pos = 0, 1
   while pos <= #data do
      local len = tonumber(data:sub(pos, pos + 7))
      n = n + 1
      queue[n] = data:sub(pos + 8, pos + 7 + len)
      pos = pos + 8 + len
   end
   size = n
   taken = 0
   sent = 0
   exhausted = 0
   gate = args[2]
   thread_count = tonumber(args[3])
   gate_open = false
   -- Never stored: answered 404 by tpas and 405 by the bare endpoint.
   filler = wrk.format("GET", "/bench-data-exhausted")
   assert(io.open(gate .. "/ready." .. id, "w")):close()
end

local function wait_for_all_threads()
   for i = 0, thread_count - 1 do
      while true do
         local marker = io.open(gate .. "/ready." .. i, "r")
         if marker then
            marker:close()
            break
         end
         os.execute("sleep 0.002")
      end
   end
   gate_open = true
end

function request()
   local verifying = id == 0 and taken == 0
   if not gate_open and not verifying then
      wait_for_all_threads()
   end
   if taken < size then
      taken = taken + 1
      if not verifying then
         sent = sent + 1
      end
      return queue[taken]
   end
   exhausted = 1
   wrk.thread:stop()
   return filler
end

function done(summary, latency, requests)
   local total_sent, total_exhausted = 0, 0
   for _, thread in ipairs(threads) do
      total_sent = total_sent + thread:get("sent")
      total_exhausted = total_exhausted + thread:get("exhausted")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,'
         .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,'
         .. '"p99_us":%d,"max_us":%d,"sent":%d,"exhausted":%d}\n',
      summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      total_sent, total_exhausted))
end
