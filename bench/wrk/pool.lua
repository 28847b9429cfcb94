-- scripts/bench: a new bearer token on every request, cycling through a slice of a token pool
-- (one token a line, from testkit's mint-tokens).
--   wrk ... -s bench/wrk/pool.lua URL -- POOL_FILE FIRST COUNT
-- uses lines FIRST .. FIRST+COUNT-1 (1-based; COUNT 0: to the end), wrapping around. Every
-- request is formatted once, up front, so the per-request Lua cost is a table lookup.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local requests = {}
local next_index = 0

function init(args)
   local path = args[1]
   local first = tonumber(args[2] or "1")
   local count = tonumber(args[3] or "0")
   if not path then
      error("pool.lua: usage: -- POOL_FILE [FIRST [COUNT]]")
   end
   local line_number = 0
   for line in io.lines(path) do
      line_number = line_number + 1
      if line_number >= first and (count == 0 or line_number < first + count) and line ~= "" then
         requests[#requests + 1] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
      end
   end
   if #requests == 0 then
      error("pool.lua: no tokens in " .. path .. " from line " .. first)
   end
end

function request()
   next_index = next_index % #requests + 1
   return requests[next_index]
end
