-- wrk script of the end-to-end benchmark: POSTs OpenAI chat requests whose prompts start with one
-- of KVB_PREFIXES distinct prefixes (cycled), so a prefix-aware balancer has keys to spread.
-- Environment: KVB_BODY_BYTES (body size, default 512), KVB_PREFIXES (64), KVB_ECHO_BYTES
-- (response padding asked of kvsteer-gpu-emu, 0), KVB_CLOSE=1 (one request per connection),
-- KVB_STREAM=1 (SSE), KVB_MAX_TOKENS (1), KVB_THREAD_ADDRS ("ip:port ip:port ...": wrk's
-- threads connect to these in turn instead of the URL's host; the Host header stays the URL's),
-- KVB_THREADS (wrk's -t, to spread the threads' starting prefixes).
-- done() prints one line "KVB_JSON {...}" with counts, errors and latency percentiles (us).
local size = tonumber(os.getenv("KVB_BODY_BYTES") or "512")
local nprefix = tonumber(os.getenv("KVB_PREFIXES") or "64")
local echo = tonumber(os.getenv("KVB_ECHO_BYTES") or "0")
local close = os.getenv("KVB_CLOSE") == "1"
local stream = os.getenv("KVB_STREAM") == "1"
local max_tokens = tonumber(os.getenv("KVB_MAX_TOKENS") or "1")
local reqs = {}
local idx = 0

local thread_addrs = {}
for a in string.gmatch(os.getenv("KVB_THREAD_ADDRS") or "", "%S+") do
   thread_addrs[#thread_addrs + 1] = a
end
local nthreads = 0

function setup(thread)
   thread:set("tid", nthreads)  -- each thread starts its own stretch of the prefixes (init)
   nthreads = nthreads + 1
   if #thread_addrs == 0 then return end
   local a = thread_addrs[(nthreads - 1) % #thread_addrs + 1]
   local host, port = a:match("^(.+):(%d+)$")
   if not host then error("KVB_THREAD_ADDRS: '" .. a .. "' is not ip:port") end
   thread.addr = wrk.lookup(host, port)[1]
end

function init(args)
   for i = 1, nprefix do
      local prefix = string.format("System prompt %04d. ", i) .. string.rep(string.char(97 + i % 26), 280)
      local head = '{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":' .. max_tokens ..
         ',"stream":' .. (stream and "true" or "false") .. ',"messages":[{"role":"user","content":"'
      local tail = '"}]}'
      local fill = size - #head - #tail - #prefix
      local body = head .. prefix .. string.rep("q", math.max(1, fill)) .. tail
      local hdr = {["Content-Type"] = "application/json"}
      if close then hdr["Connection"] = "close" end
      if echo > 0 then hdr["x-kvsteer-echo-bytes"] = tostring(echo) end
      reqs[i] = wrk.format("POST", "/v1/chat/completions", hdr, body)
   end
   -- Each thread's Lua state is unseeded (every thread draws the same number): thread k of
   -- KVB_THREADS starts k / KVB_THREADS of the way round, so the threads' connections send
   -- distinct prefixes at once, as one thread's do.
   local threads = math.max(1, tonumber(os.getenv("KVB_THREADS") or "1"))
   idx = (math.random(nprefix) + (tid or 0) * math.floor(nprefix / threads)) % nprefix
end

function request()
   idx = idx % nprefix + 1
   return reqs[idx]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'KVB_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "err_connect": %d, "err_read": %d, ' ..
      '"err_write": %d, "err_status": %d, "err_timeout": %d, "lat_mean_us": %.1f, "lat_p50_us": %d, ' ..
      '"lat_p90_us": %d, "lat_p99_us": %d, "lat_max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
