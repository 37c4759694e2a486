-- perf/lib/login_wrk.lua: wrk's requests for perf/login (issue 6). One script, three modes,
-- chosen by the arguments after `--` (wrk hands them to init() as args[1..]):
--   login      FILE TENANT CLIENT_ID PASSWORD  one username a line; each request logs in the
--                                              next user of the file, in turn
--   refresh    FILE TENANT BASIC               one refresh token a line: each request spends the
--                                              oldest unused token, each 200 gives back the new
--                                              one (a session is never presented twice at once)
--   introspect FILE TENANT BASIC               one access token a line, in turn
-- Every answer is counted by status (200, 503 for a full worker queue, anything else); done()
-- prints them as one line `LUA ok=… busy=… other=… starved=… duration_us=…` that perf/login
-- reads. Requests are built in init() or request(): wrk adds its Host header only after the
-- script's body has run.

local mode, reqs, n, i = nil, {}, 0, 0
local pool, head, tail = {}, 1, 0       -- refresh: the tokens not in flight, oldest first
local tenant, basic
ok, busy, other, starved = 0, 0, 0, 0   -- globals: done() reads them through thread:get()

local FORM = "application/x-www-form-urlencoded"

local function refresh_request(rt)
    return wrk.format("POST", "/t/" .. tenant .. "/oauth2/token",
                      {["Authorization"] = "Basic " .. basic, ["Content-Type"] = FORM},
                      "grant_type=refresh_token&refresh_token=" .. rt)
end

init = function(args)
    mode, tenant = args[1], args[3]
    for line in io.lines(args[2]) do
        n = n + 1
        if mode == "login" then
            reqs[n] = wrk.format("POST", "/t/" .. tenant .. "/api/v1/auth/login",
                                 {["Content-Type"] = "application/json"},
                                 string.format('{"username":"%s","password":"%s","client_id":"%s"}',
                                               line, args[5], args[4]))
        elseif mode == "introspect" then
            reqs[n] = wrk.format("POST", "/t/" .. tenant .. "/oauth2/introspect",
                                 {["Authorization"] = "Basic " .. args[4],
                                  ["Content-Type"] = FORM}, "token=" .. line)
        elseif mode == "refresh" then
            basic = args[4]
            tail = tail + 1
            pool[tail] = line
        else
            error("login_wrk.lua: unknown mode " .. tostring(mode))
        end
    end
end

request = function()
    if mode == "refresh" then
        if head > tail then
            -- Every token is in flight or lost to a failed answer: a request that cannot
            -- rotate anything, counted apart so that the run says so.
            starved = starved + 1
            return refresh_request("rt_starved")
        end
        local rt = pool[head]
        pool[head] = nil
        head = head + 1
        return refresh_request(rt)
    end
    i = i % n + 1
    return reqs[i]
end

response = function(status, headers, body)
    if status == 200 then
        ok = ok + 1
        if mode == "refresh" then
            local rt = string.match(body, '"refresh_token"%s*:%s*"(rt_[^"]+)"')
            if rt then
                tail = tail + 1
                pool[tail] = rt
            end
        end
    elseif status == 503 then
        busy = busy + 1
    else
        other = other + 1
    end
end

local threads = {}

setup = function(thread)
    table.insert(threads, thread)
end

done = function(summary, latency, requests)
    local t_ok, t_busy, t_other, t_starved = 0, 0, 0, 0
    for _, t in ipairs(threads) do
        t_ok = t_ok + t:get("ok")
        t_busy = t_busy + t:get("busy")
        t_other = t_other + t:get("other")
        t_starved = t_starved + t:get("starved")
    end
    io.write(string.format("LUA ok=%d busy=%d other=%d starved=%d duration_us=%d\n",
                           t_ok, t_busy, t_other, t_starved, summary.duration))
end
