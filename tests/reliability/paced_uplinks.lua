-- wrk script for tests/reliability/test_overload.py: distinct signed uplinks, sent either
-- as fast as the connections allow (closed loop) or on a fixed schedule (open loop).
--
-- Usage: wrk -t T -c C -d D -s paced_uplinks.lua URL -- SPEC OUT RATE TAG
--
-- SPEC   a file written by the test, one value per line: the application path, the AS key,
--        then templates of the JSON body, of the token's body elements, of the signed
--        query (decoded values) and of the query as sent; in each, DEVEUI_SENTINEL and
--        FCNT_SENTINEL stand for the DevEUI and FCntUp of one request.
-- OUT    where done() writes one JSON object: requests sent and answered, statuses,
--        refusal reasons, latency (wrk's: from writing a request to its answer), the
--        largest lateness of a send behind its schedule, and the ids of the 200 answers.
-- RATE   requests per second for this thread, on a fixed schedule; 0: closed loop.
-- TAG    a number that keeps the DevEUIs of this run apart from those of other runs.
--
-- The token is computed here (SHA-256 through LuaJIT's FFI from the libcrypto wrk is
-- linked with), so every request is distinct and freshly signed without pre-signing
-- hundreds of thousands of them; the recipe itself comes from tpas through the templates.
--
-- Pacing (RATE > 0): wrk asks delay() before every request on a connection. Each thread
-- keeps one schedule, a slot every 1/RATE s, and hands the next slot to whichever of its
-- connections asks; a connection waits for its slot. When every connection is busy (the
-- server answers slowly) a slot is taken late: the thread records the largest lateness, so
-- that the time a request waited to be sent counts (no coordinated omission), and keeps to
-- the schedule afterwards by sending the late requests at once.

local ffi = require("ffi")
ffi.cdef [[
unsigned char *SHA256(const unsigned char *data, size_t length, unsigned char *digest);
typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
int clock_gettime(int clock, paced_timespec *now);
]]

local function sha256_function()
   local ok, fn = pcall(function() return ffi.C.SHA256 end)
   if ok then
      return fn
   end
   return ffi.load("crypto").SHA256
end

local SHA256 = sha256_function()
local digest = ffi.new("unsigned char[32]")
local clock = ffi.new("paced_timespec")
local HEX = {}
for i = 0, 255 do
   HEX[i] = string.format("%02x", i)
end

local function sha256_hex(text)
   SHA256(text, #text, digest)
   local parts = {}
   for i = 0, 31 do
      parts[i + 1] = HEX[digest[i]]
   end
   return table.concat(parts)
end

local function now_ms()
   ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
   return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local function replace(text, sentinel, value)
   local first, last = text:find(sentinel, 1, true)
   while first do
      text = text:sub(1, first - 1) .. value .. text:sub(last + 1)
      first, last = text:find(sentinel, first + #value, true)
   end
   return text
end

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local lines = {}
   for line in io.lines(args[1]) do
      lines[#lines + 1] = line
   end
   path, key, body_tpl, elements_tpl, signed_tpl, query_tpl = unpack(lines, 1, 6)
   out = args[2]
   rate = tonumber(args[3])
   tag = tonumber(args[4])
   counter = 0
   headers = { ["Content-Type"] = "application/json" }
   ids = {}
   statuses = {}
   reasons = {}
   spooled = 0
   no_retry_after = 0
   lateness_ms = 0
   if rate > 0 then
      interval_ms = 1000 / rate
   else
      delay = nil -- closed loop: wrk sends again as soon as an answer arrives
   end
end

function delay()
   local now = now_ms()
   if next_slot == nil then
      next_slot = now
   end
   local slot = next_slot
   next_slot = next_slot + interval_ms
   if slot < now then
      if now - slot > lateness_ms then
         lateness_ms = now - slot
      end
      return 0
   end
   return math.floor(slot - now)
end

function request()
   counter = counter + 1
   local dev_eui = string.format("%04X%04X%08X", tag % 65536, id, counter)
   local fcnt = tostring(counter)
   local body = replace(replace(body_tpl, "DEVEUI_SENTINEL", dev_eui), "FCNT_SENTINEL", fcnt)
   local elements = replace(replace(elements_tpl, "DEVEUI_SENTINEL", dev_eui), "FCNT_SENTINEL", fcnt)
   local signed = replace(signed_tpl, "DEVEUI_SENTINEL", dev_eui)
   local query = replace(query_tpl, "DEVEUI_SENTINEL", dev_eui)
   local token = sha256_hex(elements .. signed .. key)
   return wrk.format("POST", path .. "?" .. query .. "&Token=" .. token, headers, body)
end

function response(status, response_headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 200 then
      local report_id = body:match('"id":(%d+)')
      if report_id then
         ids[#ids + 1] = report_id
      else
         spooled = spooled + 1 -- 200 with "spooled": true carries no id
      end
   else
      local reason = body:match('"error":"([%w_]+)"') or "none"
      reasons[reason] = (reasons[reason] or 0) + 1
      if status == 503 and not response_headers["retry-after"] then
         no_retry_after = no_retry_after + 1
      end
   end
end

local function counts(map)
   local parts = {}
   for name, count in pairs(map) do
      parts[#parts + 1] = string.format('"%s":%d', tostring(name), count)
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   -- Runs in wrk's main state once the threads have stopped: their globals are copied.
   local ids, statuses, reasons = {}, {}, {}
   local sent, spooled, no_retry_after, lateness = 0, 0, 0, 0
   for _, thread in ipairs(threads) do
      for _, report_id in ipairs(thread:get("ids")) do
         ids[#ids + 1] = report_id
      end
      for status, count in pairs(thread:get("statuses")) do
         statuses[status] = (statuses[status] or 0) + count
      end
      for reason, count in pairs(thread:get("reasons")) do
         reasons[reason] = (reasons[reason] or 0) + count
      end
      sent = sent + thread:get("counter")
      spooled = spooled + thread:get("spooled")
      no_retry_after = no_retry_after + thread:get("no_retry_after")
      lateness = math.max(lateness, thread:get("lateness_ms"))
   end
   local e = summary.errors
   local file = assert(io.open(threads[1]:get("out"), "w"))
   file:write(string.format(
      '{"sent":%d,"answered":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,'
         .. '"write_errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"lateness_ms":%.1f,'
         .. '"spooled":%d,"no_retry_after":%d,"statuses":%s,"reasons":%s,"ids":[%s]}\n',
      sent, summary.requests, summary.duration, e.connect, e.read, e.write,
      latency:percentile(50), latency:percentile(99), latency.max, lateness, spooled, no_retry_after,
      counts(statuses), counts(reasons), table.concat(ids, ",")))
   file:close()
end
