-- apply.lua merges one delta into one image's keys, atomically (all keys
-- share the image's hash tag). KEYS: meta, the plain sets, the folded
-- hash, the sections, in ImageKeys.all order. ARGV: now, first, events,
-- losses, partial, pauses, the section cap, the ceiling in bytes, the
-- per-member overhead; then for each plain set a count and its members;
-- then for each section its groups (sectionArgs): a fold field ("" for an
-- exact section), the coarser field it gives way to when the folded hash
-- holds cap fields, a count and (score, member) pairs. ZADD LT keeps the
-- earliest first-seen time, so that replays and other nodes merge to the
-- same result. A bounded section keeps at most cap members and counts the
-- new members past it under the group's fold field; past the ceiling
-- nothing new is stored, only counted, and the profile is truncated. The
-- counts count reports: a file folded on two nodes counts twice. It returns the meta
-- hash and the sizes of the containers and nodes sets.
local meta, folded = KEYS[1], KEYS[6]
local now, first = tonumber(ARGV[1]), tonumber(ARGV[2])
local cap, ceiling, overhead = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
local dropped = 0
local i = 10
for k = 2, 5 do -- the plain sets
  local n = tonumber(ARGV[i]); i = i + 1
  local s = i
  while s < i + n do
    local e = math.min(s + 999, i + n - 1)
    redis.call('SADD', KEYS[k], unpack(ARGV, s, e))
    s = e + 1
  end
  i = i + n
end
-- unseen counts the members of the pairs ARGV[s..e] that key does not hold.
local function unseen(key, s, e)
  local n = 0
  while s <= e do
    local c = math.min(s + 1999, e)
    local members = {}
    for j = s + 1, c, 2 do members[#members + 1] = ARGV[j] end
    for _, score in ipairs(redis.call('ZMSCORE', key, unpack(members))) do
      if not score then n = n + 1 end
    end
    s = c + 1
  end
  return n
end
-- zadd adds the pairs ARGV[s..e] to key a chunk at a time while the profile
-- is under its ceiling, and counts the new members past it as dropped.
local function zadd(key, s, e)
  local added = 0
  while s <= e do
    if bytes >= ceiling then
      dropped = dropped + unseen(key, s, e)
      break
    end
    -- no more members than fit below the ceiling, at a typical size
    local c = math.min(s + 1999, e, s + 2 * math.ceil((ceiling - bytes) / (overhead + 64)) - 1)
    local n = redis.call('ZADD', key, 'LT', unpack(ARGV, s, c))
    if n > 0 then
      local len = 0
      for j = s + 1, c, 2 do len = len + #ARGV[j] end
      bytes = bytes + n * (overhead + len * 2 / (c - s + 1))
    end
    added = added + n
    s = c + 1
  end
  return added
end
local added = 0
for k = 7, #KEYS do -- the sections
  local groups = tonumber(ARGV[i]); i = i + 1
  local card
  for g = 1, groups do
    local field, coarse, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]) * 2
    i = i + 3
    if field == '' then
      added = added + zadd(KEYS[k], i, i + n - 1)
    else
      card = card or redis.call('ZCARD', KEYS[k])
      local keep = math.min(math.max(cap - card, 0) * 2, n)
      local a = zadd(KEYS[k], i, i + keep - 1)
      card = card + a
      added = added + a
      if keep < n then
        local over = unseen(KEYS[k], i + keep, i + n - 1)
        if over > 0 then
          if redis.call('HEXISTS', folded, field) == 0 and redis.call('HLEN', folded) >= cap then
            field = coarse
          end
          if redis.call('HINCRBY', folded, field, over) == over then
            bytes = bytes + overhead + #field
            added = added + 1
          end
        end
      end
    end
    i = i + n
  end
end
redis.call('HSET', meta, 'bytes', math.floor(bytes))
if dropped > 0 then
  redis.call('HINCRBY', meta, 'dropped', dropped)
  redis.call('HSET', meta, 'truncated', 1)
end
local old = tonumber(redis.call('HGET', meta, 'first_seen') or '0')
if old == 0 or first < old then redis.call('HSET', meta, 'first_seen', first) end
old = tonumber(redis.call('HGET', meta, 'last_seen') or '0')
if now > old then redis.call('HSET', meta, 'last_seen', now) end
redis.call('HINCRBY', meta, 'events', ARGV[3])
redis.call('HINCRBY', meta, 'losses', ARGV[4])
redis.call('HINCRBY', meta, 'partial_containers', ARGV[5])
redis.call('HINCRBY', meta, 'guard_pauses', ARGV[6])
if added > 0 then
  redis.call('HINCRBY', meta, 'revision', 1)
  old = tonumber(redis.call('HGET', meta, 'last_new') or '0')
  if now > old then redis.call('HSET', meta, 'last_new', now) end
end
return {redis.call('HGETALL', meta), redis.call('SCARD', KEYS[3]), redis.call('SCARD', KEYS[4])}
