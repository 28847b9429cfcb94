-- scripts/bench: wrk's summary as one machine-readable line (latencies in microseconds).
-- Loaded alone for fixed requests (wrk then sends its prebuilt request, no Lua per request),
-- and by pool.lua.

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      "BENCH requests=%d seconds=%.3f rps=%.1f p50_us=%.0f p99_us=%.0f socket_errors=%d non2xx=%d\n",
      summary.requests,
      summary.duration / 1e6,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50),
      latency:percentile(99),
      errors.connect + errors.read + errors.write + errors.timeout,
      errors.status))
end
