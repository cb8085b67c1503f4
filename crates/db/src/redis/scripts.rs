//! The Lua scripts every write runs in Redis, so that a write's checks (row exists, unique value
//! taken) and its changes (row hash, key set, unique indexes) happen as one atomic step, also
//! with writers on other machines. Sent once per connection and then called by SHA
//! (`redis::Script` does EVALSHA and falls back to EVAL on NOSCRIPT).
//!
//! Calling convention shared by every script: KEYS[1] is the row hash, KEYS[2] the table's key
//! set, KEYS[3..] one unique-index hash per unique column of the table. ARGV[1] is the encoded
//! primary key; then one pair per unique column: the row's hidden field holding its entry
//! (`#col`) and what the write wants there: `+bytes` (this encoded value), `-` (none: NULL) or
//! `=` (leave it as it is); then the script's own arguments from ARGV[2 + 2 * #unique].
//! Replies: 1 done, 0 no such row, -1 the key exists, -2 a unique value belongs to another row
//! (incr replies with the row, flat field/value pairs, instead of 1).

/// Helpers every script starts with.
const PRELUDE: &str = r#"
local row, set, pk = KEYS[1], KEYS[2], ARGV[1]
local nu = #KEYS - 2
local rest = 2 + 2 * nu
local function uniq_taken()
  for i = 1, nu do
    local want = ARGV[2 * i + 1]
    if string.sub(want, 1, 1) == '+' then
      local owner = redis.call('HGET', KEYS[2 + i], string.sub(want, 2))
      if owner and owner ~= pk then return true end
    end
  end
  return false
end
local function uniq_old()
  local olds = {}
  for i = 1, nu do olds[i] = redis.call('HGET', row, ARGV[2 * i]) end
  return olds
end
local function uniq_move(olds)
  for i = 1, nu do
    local name, want = ARGV[2 * i], ARGV[2 * i + 1]
    local tag = string.sub(want, 1, 1)
    if tag ~= '=' then
      local old, new = olds[i], false
      if tag == '+' then new = string.sub(want, 2) end
      if old and old ~= new and redis.call('HGET', KEYS[2 + i], old) == pk then
        redis.call('HDEL', KEYS[2 + i], old)
      end
      if new then
        redis.call('HSET', KEYS[2 + i], new, pk)
        redis.call('HSET', row, name, new)
      else
        redis.call('HDEL', row, name)
      end
    end
  end
end
"#;

/// put / add: ARGV[rest] is `put` or `add`, then the row's field/value pairs.
const PUT: &str = r#"
local exists = redis.call('EXISTS', row) == 1
if ARGV[rest] == 'add' and exists then return -1 end
if uniq_taken() then return -2 end
local olds = uniq_old()
if exists then redis.call('DEL', row) end
if #ARGV > rest then redis.call('HSET', row, unpack(ARGV, rest + 1, #ARGV)) end
redis.call('ZADD', set, 0, pk)
uniq_move(olds)
return 1
"#;

/// add (and put) of a table without unique columns (the same arguments as [`PUT`] with none): no
/// unique bookkeeping, no closures to allocate. (The driver sends a put of such a table as
/// MULTI/EXEC instead, cheaper still.)
const PUT_PLAIN: &str = r#"
local row = KEYS[1]
if ARGV[2] == 'add' then
  if redis.call('EXISTS', row) == 1 then return -1 end
else
  redis.call('DEL', row)
end
redis.call('HSET', row, unpack(ARGV, 3, #ARGV))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"#;

/// update: ARGV[rest] is the number of field/value pairs to set, then those, then the fields to
/// remove (NULL).
const UPDATE: &str = r#"
if redis.call('EXISTS', row) == 0 then return 0 end
if uniq_taken() then return -2 end
local olds = uniq_old()
local nset = tonumber(ARGV[rest])
if nset > 0 then redis.call('HSET', row, unpack(ARGV, rest + 1, rest + 2 * nset)) end
if #ARGV > rest + 2 * nset then redis.call('HDEL', row, unpack(ARGV, rest + 2 * nset + 1, #ARGV)) end
uniq_move(olds)
return 1
"#;

/// incr: ARGV[rest] is the number of field/value pairs of the row to create when it is missing,
/// then those; then the number of increments and one triple each (field, `i` integer / `f` real
/// / `n` NULL, amount); then the number of field/value pairs to set and those; then the fields
/// to remove. An integer amount goes through HINCRBY; a real one, a non-integer stored value or
/// an overflow is added as a double (SQLite's `COALESCE(old, 0) + n`), written with 17 digits;
/// NaN and infinities become NULL as in SQLite.
const INCR: &str = r#"
local i = rest
local ncreate = tonumber(ARGV[i])
if uniq_taken() then return -2 end
local olds = uniq_old()
if redis.call('EXISTS', row) == 0 then
  redis.call('HSET', row, unpack(ARGV, i + 1, i + 2 * ncreate))
  redis.call('ZADD', set, 0, pk)
  uniq_move(olds)
  return redis.call('HGETALL', row)
end
i = i + 2 * ncreate + 1
local ninc = tonumber(ARGV[i])
for j = 0, ninc - 1 do
  local f, kind, n = ARGV[i + 1 + 3 * j], ARGV[i + 2 + 3 * j], ARGV[i + 3 + 3 * j]
  if kind == 'n' then
    redis.call('HDEL', row, f)
  else
    local done = false
    if kind == 'i' then
      done = type(redis.pcall('HINCRBY', row, f, n)) == 'number'
    end
    if not done then
      local old, o = redis.call('HGET', row, f), 0
      if old then
        o = tonumber(old) or tonumber(string.match(old, '^"(.*)"$') or '') or 0
      end
      local v = o + tonumber(n)
      if v ~= v or v == math.huge or v == -math.huge then
        redis.call('HDEL', row, f)
      else
        redis.call('HSET', row, f, string.format('%.17g', v))
      end
    end
  end
end
i = i + 3 * ninc + 1
local nset = tonumber(ARGV[i])
if nset > 0 then redis.call('HSET', row, unpack(ARGV, i + 1, i + 2 * nset)) end
if #ARGV > i + 2 * nset then redis.call('HDEL', row, unpack(ARGV, i + 2 * nset + 1, #ARGV)) end
uniq_move(olds)
return redis.call('HGETALL', row)
"#;

/// del: no arguments of its own (every unique pair is `-`).
const DEL: &str = r#"
if redis.call('EXISTS', row) == 0 then return 0 end
uniq_move(uniq_old())
redis.call('DEL', row)
redis.call('ZREM', set, pk)
return 1
"#;

/// The scripts of one driver.
pub(super) struct Scripts {
    pub(super) put: redis::Script,
    pub(super) put_plain: redis::Script,
    pub(super) update: redis::Script,
    pub(super) incr: redis::Script,
    pub(super) del: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let s = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            put: s(PUT),
            put_plain: redis::Script::new(PUT_PLAIN),
            update: s(UPDATE),
            incr: s(INCR),
            del: s(DEL),
        }
    }
}
