// kind: redis (policy-format.md, "kind redis"; docs in the comment block below).
//
// How a run reads and deletes without disturbing what it measures:
// - Keys are found with SCAN MATCH pattern COUNT scan_count, one page at a time (constant memory).
// - Per page, one pipeline reads each key's clock and TTL. `OBJECT IDLETIME` and `TTL` look keys
//   up with LOOKUP_NOTOUCH, so reading an idle clock never resets it. `HGET` does touch the key's
//   LRU clock: it is used for hash_field clocks (where the idle time is not the clock) and for the
//   hold field. With `clock: idle` a dry run therefore reads OBJECT IDLETIME and TTL only and does
//   not evaluate the hold (noted in the report); GET/HGETALL are never used.
// - Deletion is a Lua script per batch (atomic): for each candidate it re-checks that the key is
//   still due (idle mode: OBJECT IDLETIME >= the threshold, which does not touch the key inside
//   Lua either; hash_field mode: a clock of epoch seconds (1 to 12 digits) is still at or before
//   the cutoff, i.e. the due condition itself; any other clock text (ISO 8601, fractions, which
//   Lua does not parse) still holds the exact value that was judged due), that it is not held
//   (read with the clock by one HMGET in hash_field mode; an HGET in idle mode, which does touch
//   a due key that turns out held), and only then
//   UNLINKs it (one UNLINK per 1000 keys). A session touched between the scan and the batch
//   survives. The script answers one letter per key (D deleted, H held, S skipped), so the outcome
//   count is exact; keys it kept are named (digests) in the outcome and counted in a
//   `redis_not_deleted` event. The scripts are loaded once (SCRIPT LOAD) and called by SHA1
//   (EVALSHA); NOSCRIPT (cache flushed) resends the body.
// - Pipelining: the server is kept a page ahead (the next SCAN and page reads are queued before
//   this page is judged), and a batch's script travels behind the next page's reads. Journal calls
//   run in order on one worker thread: a batch is sent only once its intent is durable (checked
//   between pages), so the scan goes on during the fsyncs. At most one batch is in flight: it is
//   settled (outcome journaled, on_progress) before the next batch's intent.
// - max_ttl: a key with no TTL or a longer one gets EXPIRE max_ttl from a second script that
//   re-reads TTL and the hold atomically (so it never lengthens a TTL the application shortened in
//   between). EXPIRE itself touches the key (Redis looks it up for writing): with `clock: idle`, a
//   clamped key's idle time restarts, which is bounded by the TTL just given.
// - Limits need the number of due keys before the first UNLINK: when a limit can refuse the run
//   (no --force, and max_rows set or max_fraction < 1), a counting pass scans and reads
//   everything first (the same reads as the purge), and keeps the due keys and the keys to clamp
//   in memory (Remembered, up to 16 MiB: a key costs its length + 2 bytes, + its clock text for
//   clocks that are not epoch seconds; 800 000 due keys of 17 bytes fit). Within that budget the
//   purge then sends its batches from them without a second scan; every batch re-checks each key
//   atomically as after a scan, so a key refreshed in between is kept. Past the budget the pass
//   only counts and the purge scans again. With `clock: idle` and a hold, the counting pass
//   cannot read the hold without touching keys, so it counts held keys as due (a conservative
//   upper bound; the delete script reads the hold).
// - Where the server's time goes (INFO commandstats, 1M keys, bench/redis_bench.sh): the cost is
//   memory latency of key lookups (dictFind in the keyspace and in the expires table), about
//   equal parts SCAN, the read of each key, and the delete script's re-read + UNLINK of each due
//   key. Moving the page reads into a Lua script per SCAN page (one EVALSHA per page, only due
//   keys returned) was tried and cost more server CPU (10.1-10.8 s vs 8.4 s at load 3-4): each
//   redis.call from Lua costs about what a pipelined command does, plus the interpreter's work per
//   key. The delete script costs its two lookups per key and little more: on the bench's 500 000
//   due keys, 100 batches cost 2.3-3.0 s of server CPU, the same batches doing only the HGET
//   1.06 s, only the UNLINK 1.01 s (a pipelined DEL of the same keys: 0.78-0.93 s).
// - A lost connection (Redis restarted mid-scan) throws UnavailableError: the rule fails this run.
//   The batch in flight, if any, was applied atomically or not at all; its intent stays unresolved
//   for crash recovery (records_present), and the next run re-checks every key, so nothing is
//   deleted twice or wrongly.
#include "redis_kind.hpp"
#include "redis_url.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/timeutil.hpp"

#include <hiredis/hiredis.h>
#include <pthread.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <functional>
#include <future>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <unordered_set>

namespace retentiond {
namespace {

using namespace std::chrono_literals;

struct ContextFree {
    void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

constexpr timeval k_connect_timeout{5, 0};
constexpr timeval k_command_timeout{60, 0};
constexpr std::size_t k_exists_chunk = 1000;

// One letter per key: D deleted, H held, S skipped (no longer due, changed, or gone).
// ARGV: mode (idle | field), min idle seconds or the clock field, hold field ('' = none), hold
// value, the cutoff in whole epoch seconds (field mode), then in field mode one flag per key and
// the expected values of the '=' keys, in order. Flags: 'n' the clock is still 1 to 12 decimal
// digits (epoch seconds) at or before the cutoff (the due condition itself, evaluated now); '='
// the field still holds exactly the text judged due (clocks Lua cannot parse: ISO 8601,
// fractions); '-' still no clock. In field mode the clock and the hold are one HMGET (one lookup
// of the key). UNLINK runs once per 1000 keys (per-call overhead dominates in Lua).
constexpr std::string_view k_delete_script = R"lua(
local mode, arg, hold_field, hold_value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cutoff, flags, j = tonumber(ARGV[5]), ARGV[6], 6
local min_idle = tonumber(arg)
local out, del = {}, {}
for i, key in ipairs(KEYS) do
  local due, held = false, false
  if mode == 'idle' then
    local idle = redis.call('OBJECT', 'IDLETIME', key)
    due = idle and idle >= min_idle
    if due and hold_field ~= '' then
      held = redis.pcall('HGET', key, hold_field) == hold_value
    end
  else
    local v
    if hold_field ~= '' then
      local r = redis.pcall('HMGET', key, arg, hold_field)
      if r.err then v = r else v, held = r[1], r[2] == hold_value end
    else
      v = redis.pcall('HGET', key, arg)
    end
    local f = string.byte(flags, i)
    if f == 110 then -- 'n'
      due = type(v) == 'string' and #v <= 12 and string.find(v, '^%d+$') ~= nil and
        tonumber(v) <= cutoff
    elseif f == 61 then -- '='
      j = j + 1
      due = v == ARGV[j]
    elseif type(v) == 'table' then
      due = true -- not a hash: no clock
    else
      due = not v and redis.call('EXISTS', key) == 1
    end
  end
  local s = 'S'
  if due then
    if held then
      s = 'H'
    else
      del[#del + 1] = key
      s = 'D'
    end
  end
  out[i] = s
end
for i = 1, #del, 1000 do
  redis.call('UNLINK', unpack(del, i, math.min(i + 999, #del)))
end
return table.concat(out)
)lua";

// One letter per key: E expired, H held, S skipped (TTL already short enough, or key gone).
constexpr std::string_view k_expire_script = R"lua(
local max, hold_field, hold_value = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
for i, key in ipairs(KEYS) do
  local s = 'S'
  if hold_field ~= '' and redis.pcall('HGET', key, hold_field) == hold_value then
    s = 'H'
  else
    local ttl = redis.call('TTL', key)
    if ttl == -1 or ttl > max then
      redis.call('EXPIRE', key, max)
      s = 'E'
    end
  end
  out[i] = s
end
return table.concat(out)
)lua";

// A command answered with an error reply that is not about availability.
class ReplyError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

std::string_view text_of(const redisReply* r) {
    return {r->str, r->len};
}

// Writing to a connection the server closed (a restart) raises SIGPIPE, whose default action
// kills the process; hiredis sends without MSG_NOSIGNAL. While a connection lives, SIGPIPE is
// blocked in this thread (the write then fails with EPIPE: UnavailableError), and a SIGPIPE left
// pending by such a write is consumed before the mask is restored.
class SigpipeBlock {
public:
    SigpipeBlock() {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe, &m_old);
    }
    ~SigpipeBlock() {
        if (sigismember(&m_old, SIGPIPE) == 1) {
            return; // blocked by someone else already: theirs to handle
        }
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        sigset_t pending;
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
            const timespec zero{};
            while (sigtimedwait(&pipe, nullptr, &zero) == SIGPIPE) {
            }
        }
        pthread_sigmask(SIG_SETMASK, &m_old, nullptr);
    }
    SigpipeBlock(const SigpipeBlock&) = delete;
    SigpipeBlock& operator=(const SigpipeBlock&) = delete;

private:
    sigset_t m_old{};
};

// One connection, AUTH and SELECT done. Every I/O failure throws UnavailableError.
class Connection {
public:
    Connection(const RedisUrl& url, const std::string& store) {
        m_where = "redis datastore \"" + store + "\" (" + url.describe() + ")";
        m_ctx.reset(url.socket_path.empty()
                        ? redisConnectWithTimeout(url.host.c_str(), url.port, k_connect_timeout)
                        : redisConnectUnixWithTimeout(url.socket_path.c_str(), k_connect_timeout));
        if (!m_ctx) {
            throw UnavailableError(m_where + ": cannot allocate a connection");
        }
        if (m_ctx->err != 0) {
            throw UnavailableError(m_where + ": cannot connect: " + m_ctx->errstr);
        }
        redisSetTimeout(m_ctx.get(), k_command_timeout);
        if (!url.password.empty()) {
            auto r = url.user.empty() ? call({"AUTH", url.password.reveal()})
                                      : call({"AUTH", url.user, url.password.reveal()});
            if (r->type == REDIS_REPLY_ERROR) {
                // The reply names no secret ("WRONGPASS invalid username-password pair").
                throw UnavailableError(m_where +
                                       ": authentication failed: " + std::string(text_of(r.get())));
            }
        }
        if (url.db != 0) {
            const auto db = std::to_string(url.db);
            auto r = call({"SELECT", db});
            if (r->type == REDIS_REPLY_ERROR) {
                throw UnavailableError(m_where +
                                       ": SELECT failed: " + std::string(text_of(r.get())));
            }
        }
    }

    const std::string& where() const { return m_where; }

    // Pipelining: append() queues a command and returns its sequence number; reply(seq) returns
    // that command's reply, reading (and keeping) the replies of earlier commands not claimed
    // yet. So a delete batch can be sent while a page's reads are still in flight, and each
    // consumer claims its own replies in any order.
    std::uint64_t append(std::initializer_list<std::string_view> args) {
        return append(args.begin(), args.size());
    }
    std::uint64_t append(const std::string_view* args, std::size_t n) {
        m_argv.clear();
        m_lens.clear();
        for (std::size_t i = 0; i < n; ++i) {
            m_argv.push_back(args[i].data());
            m_lens.push_back(args[i].size());
        }
        if (redisAppendCommandArgv(m_ctx.get(), static_cast<int>(n), m_argv.data(),
                                   m_lens.data()) != REDIS_OK) {
            lost();
        }
        return m_sent++;
    }
    std::uint64_t append(const std::vector<std::string_view>& args) {
        return append(args.data(), args.size());
    }
    // Sends what is queued without waiting for a reply: the server works while we do.
    void flush() {
        int done = 0;
        while (done == 0) {
            if (redisBufferWrite(m_ctx.get(), &done) != REDIS_OK) {
                lost();
            }
        }
    }
    // The reply to command `seq`; error replies are returned, except those meaning "not
    // available" (thrown as UnavailableError).
    ReplyPtr reply(std::uint64_t seq) {
        if (seq < m_base || seq >= m_sent) {
            throw std::logic_error("redis: reply " + std::to_string(seq) + " is not pending");
        }
        while (m_base + m_stash.size() <= seq) {
            m_stash.push_back(read_next());
        }
        ReplyPtr r = std::move(m_stash[seq - m_base]);
        if (!r) {
            throw std::logic_error("redis: reply " + std::to_string(seq) + " claimed twice");
        }
        while (!m_stash.empty() && !m_stash.front()) {
            m_stash.pop_front();
            ++m_base;
        }
        return r;
    }
    ReplyPtr call(std::initializer_list<std::string_view> args) { return reply(append(args)); }
    ReplyPtr call(const std::vector<std::string_view>& args) { return reply(append(args)); }
    // A reply that must not be an error.
    ReplyPtr call_ok(std::initializer_list<std::string_view> args) {
        auto r = call(args);
        if (r->type == REDIS_REPLY_ERROR) {
            throw ReplyError(std::string(*args.begin()) + ": " + std::string(text_of(r.get())));
        }
        return r;
    }

private:
    [[noreturn]] void lost() {
        throw UnavailableError(m_where + ": connection lost: " + m_ctx->errstr);
    }
    // The next reply on the wire (redisGetReply first sends whatever is still queued).
    ReplyPtr read_next() {
        void* raw = nullptr;
        if (redisGetReply(m_ctx.get(), &raw) != REDIS_OK || raw == nullptr) {
            lost();
        }
        ReplyPtr r(static_cast<redisReply*>(raw));
        if (r->type == REDIS_REPLY_ERROR) {
            const auto t = text_of(r.get());
            for (const std::string_view code :
                 {"LOADING", "BUSY", "MASTERDOWN", "NOAUTH", "TRYAGAIN", "CLUSTERDOWN"}) {
                if (t.starts_with(code)) {
                    throw UnavailableError(m_where + ": " + std::string(t));
                }
            }
        }
        return r;
    }

    SigpipeBlock m_sigpipe; // first: outlives the context
    ContextPtr m_ctx;
    std::string m_where;
    std::vector<const char*> m_argv;
    std::vector<std::size_t> m_lens;
    std::uint64_t m_sent = 0;     // commands appended
    std::uint64_t m_base = 0;     // sequence number of m_stash.front()
    std::deque<ReplyPtr> m_stash; // replies read, in order; claimed ones are null
};

// A batch script, loaded once (SCRIPT LOAD) and then called by its SHA1 (EVALSHA): the body is
// not sent and hashed again for every batch. Without SCRIPT permission the body is sent (EVAL).
class Script {
public:
    Script(Connection& c, std::string_view body) : m_body(body) {
        auto r = c.call({"SCRIPT", "LOAD", body});
        if (r->type == REDIS_REPLY_STRING) {
            m_sha.assign(r->str, r->len);
        }
    }
    std::string_view body() const { return m_body; }
    const std::string& sha() const { return m_sha; }

private:
    std::string_view m_body;
    std::string m_sha; // empty: use EVAL
};

// The server's clock (TIME): the datastore's now, as postgres uses now().
TimePoint server_now(Connection& c) {
    auto r = c.call_ok({"TIME"});
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        throw ReplyError("TIME: unexpected reply");
    }
    long long secs = 0;
    long long micros = 0;
    const auto s = text_of(r->element[0]);
    const auto u = text_of(r->element[1]);
    std::from_chars(s.data(), s.data() + s.size(), secs);
    std::from_chars(u.data(), u.data() + u.size(), micros);
    return TimePoint(std::chrono::seconds(secs) + std::chrono::microseconds(micros));
}

// What one pipeline learned about one key.
struct Observed {
    bool exists = false;
    enum class Clock { none, parsed, unparseable } clock = Clock::none;
    TimePoint at{};
    std::string raw; // hash_field mode: the field's text, to re-check before deleting
    bool held = false;
    bool ttl_known = false;
    long long ttl = -1; // seconds; -1 = no TTL
};

struct ReadPlan {
    bool ttl = false;
    bool hold = false; // hash_field mode only: HGET touches keys
};

// Queues the page's reads; returns the sequence number of the first (the rest follow in order).
std::uint64_t append_reads(Connection& c, const Rule& rule, const std::vector<std::string>& keys,
                           const ReadPlan& plan) {
    const auto& spec = rule.redis();
    std::uint64_t first = 0;
    bool any = false;
    auto add = [&](std::initializer_list<std::string_view> args) {
        const auto seq = c.append(args);
        if (!any) {
            first = seq;
            any = true;
        }
    };
    const bool idle = spec.clock.kind == RedisClock::Kind::idle;
    for (const auto& key : keys) {
        // The clock first: nothing before it may touch the key.
        if (idle) {
            add({"OBJECT", "IDLETIME", key});
        } else {
            add({"HGET", key, spec.clock.hash_field});
        }
        if (plan.hold) {
            add({"HGET", key, spec.hold->hash_field});
        }
        if (plan.ttl) {
            add({"TTL", key});
        }
    }
    return first;
}

void collect_reads(Connection& c, const Rule& rule, const std::vector<std::string>& keys,
                   std::uint64_t seq, const ReadPlan& plan, TimePoint now,
                   const date::time_zone* tz, std::vector<Observed>& out) {
    const auto& spec = rule.redis();
    const bool idle = spec.clock.kind == RedisClock::Kind::idle;
    out.assign(keys.size(), Observed{});
    for (auto& o : out) {
        auto r = c.reply(seq++);
        if (idle) {
            if (r->type == REDIS_REPLY_INTEGER) {
                o.exists = true;
                o.clock = Observed::Clock::parsed;
                o.at = now - std::chrono::seconds(r->integer);
            } else if (r->type == REDIS_REPLY_ERROR) {
                // e.g. an LFU maxmemory-policy: idle time is not tracked
                throw ReplyError("OBJECT IDLETIME: " + std::string(text_of(r.get())));
            }
        } else {
            o.exists = true; // corrected by TTL below
            if (r->type == REDIS_REPLY_STRING) {
                o.raw.assign(r->str, r->len);
                if (auto t = parse_epoch_or_iso(o.raw, tz)) {
                    o.clock = Observed::Clock::parsed;
                    o.at = *t;
                } else {
                    o.clock = Observed::Clock::unparseable;
                }
            }
            // NIL: no field (or no key); ERROR (WRONGTYPE): not a hash, so no clock
        }
        if (plan.hold) {
            auto h = c.reply(seq++);
            o.held = h->type == REDIS_REPLY_STRING && text_of(h.get()) == spec.hold->equals;
        }
        if (plan.ttl) {
            auto t = c.reply(seq++);
            if (t->type != REDIS_REPLY_INTEGER) {
                throw ReplyError("TTL: unexpected reply");
            }
            o.ttl_known = true;
            o.ttl = t->integer;
            if (t->integer == -2) {
                o.exists = false;
            }
        }
    }
}

// Parses a SCAN reply into the next cursor and the page's keys.
void read_scan_reply(const redisReply* r, std::string& cursor, std::vector<std::string>& keys) {
    if (r->type == REDIS_REPLY_ERROR) {
        throw ReplyError("SCAN: " + std::string(text_of(r)));
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        throw ReplyError("SCAN: unexpected reply");
    }
    cursor = std::string(text_of(r->element[0]));
    keys.clear();
    const auto* page = r->element[1];
    for (std::size_t i = 0; i < page->elements; ++i) {
        keys.emplace_back(text_of(page->element[i]));
    }
}

// SCANs the whole keyspace for the rule's pattern and reads every key as `plan` says; calls
// per_page(keys, observed) for every non-empty page, and stops when it returns false.
// The server is kept a page ahead: a page's keys are known when the previous SCAN answers, and
// the next SCAN is sent before the page's reads, so its cursor comes back while the server is
// still reading; the following page's SCAN and reads are queued before per_page() judges this
// page (and journals and sends its batches). Neither side waits for the other.
template <class PerPage>
void scan_all(Connection& c, const Rule& rule, const ReadPlan& plan, TimePoint now,
              const date::time_zone* tz, PerPage&& per_page) {
    const auto& spec = rule.redis();
    const auto count = std::to_string(std::max(1, spec.scan_count));
    struct Page {
        std::vector<std::string> keys;
        std::uint64_t reads = 0;
        std::optional<std::uint64_t> scan; // the next SCAN, when the cursor is not 0
    };
    auto send_page = [&](std::vector<std::string> keys, const std::string& cursor) {
        Page p;
        p.keys = std::move(keys);
        if (cursor != "0") {
            p.scan = c.append({"SCAN", cursor, "MATCH", spec.keys, "COUNT", count});
        }
        p.reads = append_reads(c, rule, p.keys, plan);
        c.flush();
        return p;
    };
    std::string cursor;
    std::vector<std::string> keys;
    std::vector<Observed> seen;
    read_scan_reply(c.call({"SCAN", "0", "MATCH", spec.keys, "COUNT", count}).get(), cursor, keys);
    Page page = send_page(std::move(keys), cursor);
    for (;;) {
        std::optional<Page> next;
        if (page.scan) {
            keys = {};
            read_scan_reply(c.reply(*page.scan).get(), cursor, keys);
            next = send_page(std::move(keys), cursor);
        }
        collect_reads(c, rule, page.keys, page.reads, plan, now, tz, seen);
        if (!page.keys.empty() && !per_page(page.keys, seen)) {
            return; // the next page's replies, if any, are left unclaimed
        }
        if (!next) {
            return;
        }
        page = std::move(*next);
    }
}

// A clock the scripts judge themselves: 1 to 12 decimal digits, epoch seconds (the same value
// parse_epoch_or_iso gives: due when <= the cutoff's whole seconds).
bool epoch_digits(std::string_view v) {
    return !v.empty() && v.size() <= 12 &&
           std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

enum class Verdict { gone, unparseable, no_clock, not_due, due, held };

Verdict judge(const Observed& o, const Rule& rule, TimePoint cutoff) {
    if (!o.exists) {
        return Verdict::gone;
    }
    switch (o.clock) {
    case Observed::Clock::unparseable:
        return Verdict::unparseable;
    case Observed::Clock::none:
        if (!rule.clock_null_due) {
            return Verdict::no_clock;
        }
        break;
    case Observed::Clock::parsed:
        if (o.at > cutoff) {
            return Verdict::not_due;
        }
        break;
    }
    return o.held ? Verdict::held : Verdict::due;
}

std::optional<long long> max_ttl_seconds(const RedisRule& spec) {
    if (!spec.max_ttl) {
        return std::nullopt;
    }
    return std::chrono::duration_cast<std::chrono::seconds>(spec.max_ttl->approx()).count();
}

bool ttl_above_max(const Observed& o, std::optional<long long> max_ttl) {
    return max_ttl && o.ttl_known && (o.ttl == -1 || o.ttl > *max_ttl);
}

const date::time_zone* zone_or_utc(const date::time_zone* tz) {
    return tz != nullptr ? tz : find_zone("UTC");
}

void require_redis(const Rule& rule) {
    if (rule.kind != DatastoreKind::redis || !std::holds_alternative<RedisRule>(rule.spec)) {
        throw std::invalid_argument("rule \"" + rule.name + "\" is not a redis rule");
    }
}

// The due keys and the keys to clamp found by the limits' pass, kept so that the purge needs no
// second scan, up to a budget of bytes (16 MiB, like the files engine's staged keys; past it the
// keys are dropped and the purge scans again). Chunks of 1 MiB, never reallocated, so the peak
// memory is the budget. Entry: kind ('n' '=' '-' a due key with its delete flag, 'i' a due key
// in idle mode, 'e' a key to clamp), the key's length (LEB128) and bytes, and for '=' the clock
// text the same way.
std::size_t g_remember_budget = std::size_t{16} << 20;

class Remembered {
public:
    // False once over the budget: everything is dropped and later adds are ignored.
    bool add(char kind, std::string_view key, std::string_view value) {
        if (m_overflow) {
            return false;
        }
        const std::size_t need = 1 + 10 + key.size() + (kind == '=' ? 10 + value.size() : 0);
        if (m_chunks.empty() || m_chunks.back().capacity() - m_chunks.back().size() < need) {
            const std::size_t size = std::max(need, k_chunk);
            if (m_bytes + size > g_remember_budget) {
                m_overflow = true;
                m_chunks = {};
                return false;
            }
            m_chunks.emplace_back().reserve(size);
            m_bytes += size;
        }
        auto& c = m_chunks.back();
        c += kind;
        put(c, key);
        if (kind == '=') {
            put(c, value);
        }
        return true;
    }
    bool overflowed() const { return m_overflow; }
    // f(kind, key, value) for every entry, in order, until it returns false.
    template <class F> void each(F&& f) const {
        for (const auto& c : m_chunks) {
            std::size_t at = 0;
            while (at < c.size()) {
                const char kind = c[at++];
                const auto key = get(c, at);
                const auto value = kind == '=' ? get(c, at) : std::string_view();
                if (!f(kind, key, value)) {
                    return;
                }
            }
        }
    }

private:
    static constexpr std::size_t k_chunk = std::size_t{1} << 20;
    static void put(std::string& c, std::string_view s) {
        auto n = s.size();
        do {
            c += static_cast<char>((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
            n >>= 7;
        } while (n != 0);
        c.append(s);
    }
    static std::string_view get(const std::string& c, std::size_t& at) {
        std::size_t n = 0;
        for (int shift = 0;; shift += 7) {
            const auto b = static_cast<unsigned char>(c[at++]);
            n |= static_cast<std::size_t>(b & 0x7f) << shift;
            if ((b & 0x80) == 0) {
                break;
            }
        }
        const std::string_view s(c.data() + at, n);
        at += n;
        return s;
    }
    std::vector<std::string> m_chunks;
    std::size_t m_bytes = 0;
    bool m_overflow = false;
};

// Runs the journal's calls on one thread, in the order they are made, so the scan keeps reading
// pages (and the server keeps working) while an intent is written and fsynced. A batch is sent
// only once its intent() future is ready; a failed journal write fails every later call, so no
// batch is sent after it. The destructor waits for the calls queued so far.
class JournalWorker {
public:
    explicit JournalWorker(BatchJournal* journal) : m_journal(journal) {
        if (m_journal != nullptr) {
            m_thread = std::thread([this] { loop(); });
        }
    }
    ~JournalWorker() {
        if (m_thread.joinable()) {
            {
                const std::lock_guard lock(m_mutex);
                m_closing = true;
            }
            m_wake.notify_one();
            m_thread.join();
        }
    }
    JournalWorker(const JournalWorker&) = delete;
    JournalWorker& operator=(const JournalWorker&) = delete;

    std::future<std::string> intent(BatchIntent batch) {
        auto done = std::make_shared<std::promise<std::string>>();
        auto id = done->get_future();
        if (m_journal == nullptr) {
            done->set_value("");
            return id;
        }
        post([this, done, batch = std::move(batch)] { done->set_value(m_journal->intent(batch)); },
             [done](std::exception_ptr e) { done->set_exception(e); });
        return id;
    }
    void outcome_except(std::string id, std::int64_t count, std::vector<std::string> kept) {
        if (m_journal != nullptr) {
            post([this, id = std::move(id), count, kept = std::move(kept)] {
                m_journal->outcome_except(id, count, kept);
            });
        }
    }
    void event(std::string type, nlohmann::json fields) {
        if (m_journal != nullptr) {
            post([this, type = std::move(type), fields = std::move(fields)] {
                m_journal->event(type, fields);
            });
        }
    }
    // Waits until every call made so far has run; rethrows the first failure.
    void drain() {
        std::unique_lock lock(m_mutex);
        m_idle.wait(lock, [this] { return m_tasks.empty() && !m_busy; });
        if (m_error) {
            std::rethrow_exception(m_error);
        }
    }

private:
    struct Task {
        std::function<void()> run;
        std::function<void(std::exception_ptr)> fail; // may be empty
    };
    void post(std::function<void()> run, std::function<void(std::exception_ptr)> fail = {}) {
        {
            const std::lock_guard lock(m_mutex);
            m_tasks.push_back(Task{std::move(run), std::move(fail)});
        }
        m_wake.notify_one();
    }
    void loop() {
        std::unique_lock lock(m_mutex);
        for (;;) {
            m_wake.wait(lock, [this] { return m_closing || !m_tasks.empty(); });
            if (m_tasks.empty()) {
                return; // closing, and everything queued has run
            }
            Task task = std::move(m_tasks.front());
            m_tasks.pop_front();
            m_busy = true;
            const auto failed = m_error;
            lock.unlock();
            std::exception_ptr error;
            if (failed) {
                error = failed; // the log is unusable: later calls fail without writing
            } else {
                try {
                    task.run();
                } catch (...) {
                    error = std::current_exception();
                }
            }
            if (error && task.fail) {
                task.fail(error);
            }
            lock.lock();
            if (error && !m_error) {
                m_error = error;
            }
            m_busy = false;
            if (m_tasks.empty()) {
                m_idle.notify_all();
            }
        }
    }

    BatchJournal* m_journal;
    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::condition_variable m_idle;
    std::deque<Task> m_tasks;
    bool m_busy = false;
    bool m_closing = false;
    std::exception_ptr m_error;
    std::thread m_thread; // last: started once the members it uses exist
};

// A batch of keys waiting for one script call.
struct Batch {
    std::vector<std::string> keys;
    std::string flags;               // delete, hash_field mode: 'n', '=' or '-' (k_delete_script)
    std::vector<std::string> expect; // the clock values of the '=' keys
    std::unordered_set<std::string> seen; // SCAN may return a key twice

    bool add(const std::string& key) { return seen.insert(key).second; }
    void clear() {
        keys.clear();
        flags.clear();
        expect.clear();
        seen.clear();
    }
};

class RedisEngine final : public Engine {
public:
    explicit RedisEngine(const Datastore& store) : m_name(store.name) {
        try {
            m_url = parse_redis_url(store.url.reveal());
        } catch (const ParseError& e) {
            throw ParseError("datastore \"" + store.name + "\": " + e.what());
        }
    }

    std::vector<Diagnostic> check(const Rule& rule) override;
    DryRun dry_run(const Rule& rule, const RunContext& ctx) override;
    RunResult purge(const Rule& rule, RunContext& ctx) override;
    Presence records_present(const Rule& rule, const std::string& target,
                             const std::vector<std::string>& keys) override;

private:
    RunResult run(const Rule& rule, RunContext& ctx);
    std::string m_name;
    RedisUrl m_url;
};

std::vector<Diagnostic> RedisEngine::check(const Rule& rule) {
    std::vector<Diagnostic> out;
    auto problem = [&](std::string message) {
        out.push_back(Diagnostic{rule.pos, rule.name, std::move(message)});
    };
    if (rule.kind != DatastoreKind::redis || !std::holds_alternative<RedisRule>(rule.spec)) {
        problem("not a redis rule");
        return out;
    }
    const auto& spec = rule.redis();
    if (rule.action == Action::anonymize) {
        problem("action: anonymize is not supported for redis keys; use action: delete");
    }
    if (spec.keys.empty()) {
        problem("keys: an empty pattern");
    }
    if (const auto max = max_ttl_seconds(spec); max && *max < 1) {
        problem("max_ttl: must be at least one second");
    }
    if (spec.clock.kind == RedisClock::Kind::hash_field && spec.clock.hash_field.empty()) {
        problem("clock.hash_field: empty");
    }
    Connection c(m_url, m_name);
    auto pong = c.call({"PING"});
    if (pong->type == REDIS_REPLY_ERROR) {
        problem("PING failed: " + std::string(text_of(pong.get())));
        return out;
    }
    if (spec.clock.kind == RedisClock::Kind::idle) {
        // OBJECT IDLETIME answers an error under an LFU eviction policy. CONFIG may be renamed
        // away: then the first run tells.
        auto r = c.call({"CONFIG", "GET", "maxmemory-policy"});
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            text_of(r->element[1]).find("lfu") != std::string_view::npos) {
            problem(
                "clock: idle needs idle times, which Redis does not track under maxmemory-policy " +
                std::string(text_of(r->element[1])) + "; use { hash_field: ... }");
        }
    }
    return out;
}

DryRun RedisEngine::dry_run(const Rule& rule, const RunContext& ctx) {
    require_redis(rule);
    const auto& spec = rule.redis();
    const auto* tz = zone_or_utc(ctx.tz);
    const bool idle = spec.clock.kind == RedisClock::Kind::idle;
    Connection c(m_url, m_name);

    DryRun d;
    d.now = server_now(c);
    d.cutoff = subtract(d.now, rule.retain, tz);
    d.age_buckets.assign(17, 0);
    const Forecast forecast(d.now, rule.retain, tz);
    const auto retain_us = rule.retain.approx().count();
    const auto max_ttl = max_ttl_seconds(spec);
    const bool hold_unread = idle && spec.hold.has_value();
    std::int64_t no_ttl = 0;
    std::int64_t above_max = 0;

    ReadPlan plan;
    plan.ttl = true;
    plan.hold = !idle && spec.hold.has_value();
    scan_all(c, rule, plan, d.now, tz,
             [&](const std::vector<std::string>&, const std::vector<Observed>& seen) {
                 for (const auto& o : seen) {
                     if (!o.exists) {
                         continue;
                     }
                     ++d.in_scope;
                     if (o.ttl == -1) {
                         ++no_ttl;
                     }
                     if (max_ttl && o.ttl > *max_ttl) {
                         ++above_max;
                     }
                     if (o.clock == Observed::Clock::none) {
                         ++d.no_clock;
                     }
                     if (o.clock == Observed::Clock::parsed) {
                         if (!d.oldest_clock || o.at < *d.oldest_clock) {
                             d.oldest_clock = o.at;
                         }
                         const auto age = (d.now - o.at).count();
                         std::int64_t bucket = 16;
                         if (retain_us > 0) {
                             bucket = std::clamp<std::int64_t>(age * 8 / retain_us, 0, 16);
                         } else if (age < 0) {
                             bucket = 0;
                         }
                         ++d.age_buckets[static_cast<std::size_t>(bucket)];
                     }
                     switch (judge(o, rule, d.cutoff)) {
                     case Verdict::due:
                         ++d.due;
                         break;
                     case Verdict::held:
                         ++d.held;
                         break;
                     case Verdict::unparseable:
                         ++d.unparseable;
                         break;
                     case Verdict::not_due:
                         forecast.count(o.at, d);
                         break;
                     case Verdict::gone:
                     case Verdict::no_clock:
                         break;
                     }
                 }
                 return true;
             });
    d.counters["no_ttl"] = no_ttl;
    if (max_ttl) {
        d.counters["ttl_above_max"] = above_max;
    }
    if (hold_unread) {
        d.counters["hold_not_read"] = d.due;
        d.notes.push_back("clock: idle: the hold field was not read (reading it would reset the "
                          "keys' idle time); \"due\" includes held keys");
    }
    if (d.unparseable > 0) {
        d.notes.push_back(std::to_string(d.unparseable) + " key(s) whose clock field does not "
                                                          "parse as epoch seconds or ISO 8601");
    }
    return d;
}

RunResult RedisEngine::purge(const Rule& rule, RunContext& ctx) {
    require_redis(rule);
    if (rule.action == Action::anonymize) {
        RunResult refused;
        refused.status = RunResult::Status::failed;
        refused.message = "action anonymize is not supported for redis keys (use action: delete)";
        if (ctx.journal != nullptr) {
            ctx.journal->event("error", {{"rule", rule.name}, {"reason", "unsupported_action"}});
        }
        return refused;
    }
    try {
        return run(rule, ctx);
    } catch (const ReplyError& e) {
        RunResult failed;
        failed.status = RunResult::Status::failed;
        failed.message = std::string("redis: ") + e.what();
        if (ctx.journal != nullptr) {
            ctx.journal->event("error", {{"rule", rule.name}, {"reason", failed.message}});
        }
        return failed;
    }
}

RunResult RedisEngine::run(const Rule& rule, RunContext& ctx) {
    const auto& spec = rule.redis();
    const auto* tz = zone_or_utc(ctx.tz);
    const bool idle = spec.clock.kind == RedisClock::Kind::idle;
    const auto max_ttl = max_ttl_seconds(spec);
    RunResult res;
    if (max_ttl && *max_ttl < 1) {
        res.status = RunResult::Status::failed;
        res.message = "max_ttl must be at least one second";
        return res;
    }
    Connection c(m_url, m_name);
    const TimePoint now = server_now(c);
    const TimePoint cutoff = subtract(now, rule.retain, tz);
    res.cutoff = cutoff;
    // Idle mode: due <=> now - idle <= cutoff <=> idle >= ceil(now - cutoff).
    const auto min_idle =
        static_cast<long long>(std::ceil(std::chrono::duration<double>(now - cutoff).count()));
    // TTL tells a vanished key from a hash without the clock field: needed for max_ttl and for
    // clock_null_due only (the delete script re-checks existence anyway).
    ReadPlan plan;
    plan.ttl = max_ttl.has_value() || (!idle && rule.clock_null_due);
    plan.hold = !idle && spec.hold.has_value();
    // The delete flag of a due key (hash_field mode; see k_delete_script).
    auto flag_of = [](const Observed& o) {
        return o.clock == Observed::Clock::none ? '-' : epoch_digits(o.raw) ? 'n' : '=';
    };
    std::int64_t no_ttl = 0;
    std::int64_t above_max = 0;
    // Counts the TTL figures of a key; true when it is to be clamped.
    auto count_ttl = [&](const Observed& o) {
        no_ttl += o.ttl_known && o.ttl == -1 ? 1 : 0;
        const bool clamp = ttl_above_max(o, max_ttl);
        above_max += clamp && o.ttl != -1 ? 1 : 0;
        return clamp;
    };

    // Limits are checked before the first UNLINK: a first pass reads every key as the purge
    // does and counts; the due keys and the keys to clamp it finds are kept (Remembered, up to
    // its budget), so the purge then needs no second scan. Past the budget, it only counts and
    // the purge scans again.
    const bool limits_apply =
        !ctx.force && (rule.limits.max_rows.has_value() || rule.limits.max_fraction < 1.0);
    std::optional<Remembered> remembered;
    if (limits_apply) {
        ctx.phase("counting");
        Remembered found;
        std::int64_t in_scope = 0;
        std::int64_t due = 0;
        scan_all(c, rule, plan, now, tz,
                 [&](const std::vector<std::string>& keys, const std::vector<Observed>& seen) {
                     for (std::size_t i = 0; i < keys.size(); ++i) {
                         const auto& o = seen[i];
                         const auto v = judge(o, rule, cutoff);
                         if (v == Verdict::gone) {
                             continue;
                         }
                         ++in_scope;
                         const bool clamp = count_ttl(o);
                         if (v == Verdict::due) {
                             ++due;
                             const char kind = idle ? 'i' : flag_of(o);
                             found.add(kind, keys[i], kind == '=' ? o.raw : std::string());
                         } else if (clamp && v != Verdict::held) {
                             found.add('e', keys[i], {});
                         }
                     }
                     return true;
                 });
        if (!found.overflowed()) {
            remembered = std::move(found);
        } else {
            no_ttl = 0; // counted again by the purge's scan
            above_max = 0;
        }
        res.due = due;
        if (refuse_over_limits(rule, ctx, {due, in_scope, "keys", "matching " + spec.keys}, res)) {
            return res;
        }
        if (due == 0 && !max_ttl) {
            return res;
        }
    }

    ctx.phase("batches"); // Purge pass.
    const std::string hold_field = spec.hold ? spec.hold->hash_field : "";
    const std::string hold_value = spec.hold ? spec.hold->equals : "";
    const std::string min_idle_text = std::to_string(min_idle);
    const std::string cutoff_s_text =
        std::to_string(std::chrono::floor<std::chrono::seconds>(cutoff.time_since_epoch()).count());
    const std::string max_ttl_text = max_ttl ? std::to_string(*max_ttl) : "";
    const std::size_t batch_size = static_cast<std::size_t>(std::max(1, rule.batch_size));
    std::int64_t found_due = 0;
    std::int64_t held = 0;
    std::int64_t skipped = 0;
    std::int64_t expired = 0;
    bool stopped = false;
    Batch to_delete;
    Batch to_expire;
    std::vector<std::string_view> args;
    Script delete_script(c, k_delete_script);
    Script expire_script(c, k_expire_script);
    JournalWorker journal(ctx.journal); // every journal call of this pass goes through it

    // At most one batch is in flight: sent after its intent, settled (outcome journaled) before
    // the next batch's intent, so on_progress and a stop request still fall between batches.
    struct InFlight {
        Batch batch;
        std::string action;
        Script* script = nullptr;
        std::vector<std::string> head;   // ARGV before the per-key values
        std::future<std::string> intent; // the intent's batch id, once durable
        std::string id;
        bool sent = false;
        std::uint64_t seq = 0;
    };
    std::optional<InFlight> in_flight;

    auto stop_now = [&] {
        if (!stopped && ctx.stop_requested && ctx.stop_requested()) {
            stopped = true;
        }
        return stopped;
    };
    auto send = [&](InFlight& f, bool by_sha) {
        const auto numkeys = std::to_string(f.batch.keys.size());
        args.clear();
        if (by_sha && !f.script->sha().empty()) {
            args.assign({"EVALSHA", f.script->sha(), numkeys});
        } else {
            args.assign({"EVAL", f.script->body(), numkeys});
        }
        args.insert(args.end(), f.batch.keys.begin(), f.batch.keys.end());
        args.insert(args.end(), f.head.begin(), f.head.end());
        if (!f.batch.flags.empty()) {
            args.push_back(f.batch.flags);
            args.insert(args.end(), f.batch.expect.begin(), f.batch.expect.end());
        }
        f.seq = c.append(args);
        c.flush();
        f.sent = true;
    };
    // Sends the batch in flight once its intent is durable: now if `wait`, else only if the
    // journal is already done with it (checked between pages).
    auto launch = [&](bool wait) {
        if (!in_flight || in_flight->sent) {
            return;
        }
        auto& f = *in_flight;
        if (!wait && f.intent.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
            return;
        }
        f.id = f.intent.get(); // rethrows a failed intent: the batch is never sent
        send(f, true);
    };
    // Reads the in-flight batch's per-key letters, journals its outcome.
    auto settle = [&] {
        if (!in_flight) {
            return;
        }
        launch(true);
        InFlight f = std::move(*in_flight);
        in_flight.reset();
        auto r = c.reply(f.seq);
        if (r->type == REDIS_REPLY_ERROR && text_of(r.get()).starts_with("NOSCRIPT")) {
            // The script cache was flushed since SCRIPT LOAD: nothing ran; send the body.
            send(f, false);
            r = c.reply(f.seq);
        }
        // No outcome on an error: the intent stays unresolved for crash recovery.
        if (r->type != REDIS_REPLY_STRING || r->len != f.batch.keys.size()) {
            throw ReplyError("EVAL (" + f.action + " batch): " +
                             (r->type == REDIS_REPLY_ERROR ? std::string(text_of(r.get()))
                                                           : std::string("unexpected reply")));
        }
        const std::string_view letters = text_of(r.get());
        const auto done = std::count_if(letters.begin(), letters.end(),
                                        [](char l) { return l == 'D' || l == 'E'; });
        if (ctx.journal != nullptr) {
            // Keys the script re-checked and kept are named so `audit prove` never claims them.
            std::vector<std::string> kept;
            for (std::size_t i = 0; i < letters.size(); ++i) {
                if (letters[i] != 'D' && letters[i] != 'E') {
                    kept.push_back(f.batch.keys[i]);
                }
            }
            journal.outcome_except(f.id, done, std::move(kept));
        }
        ++res.batches;
        if (f.action == "delete") {
            const auto d = std::count(letters.begin(), letters.end(), 'D');
            const auto h = std::count(letters.begin(), letters.end(), 'H');
            const auto s = std::count(letters.begin(), letters.end(), 'S');
            res.processed += d;
            held += h;
            skipped += s;
            if (h + s > 0) {
                journal.event("redis_not_deleted",
                              {{"rule", rule.name}, {"held", h}, {"changed_since_read", s}});
            }
        } else {
            expired += std::count(letters.begin(), letters.end(), 'E');
        }
        if (f.action == "delete" && ctx.on_progress) {
            ctx.on_progress(res.processed, std::max(res.due, res.processed));
        }
    };
    // Queues the batch's intent; the batch is sent once the intent is durable (launch), while
    // the scan goes on.
    auto apply = [&](Batch& b, const std::string& action, Script& script,
                     std::vector<std::string> head) {
        settle();
        if (stop_now()) {
            return;
        }
        InFlight f;
        f.batch = std::move(b);
        b.clear();
        f.action = action;
        f.script = &script;
        f.head = std::move(head);
        BatchIntent intent;
        if (ctx.journal != nullptr) {
            intent.rule = rule.name;
            intent.datastore = rule.datastore;
            intent.target = spec.keys;
            intent.action = action;
            intent.cutoff = cutoff;
            intent.keys = f.batch.keys;
        }
        f.intent = journal.intent(std::move(intent));
        in_flight = std::move(f);
        launch(false);
    };
    auto flush_delete = [&] {
        if (to_delete.keys.empty() || stopped) {
            return;
        }
        apply(to_delete, "delete", delete_script,
              {idle ? "idle" : "field", idle ? min_idle_text : spec.clock.hash_field, hold_field,
               hold_value, cutoff_s_text});
    };
    auto flush_expire = [&] {
        if (to_expire.keys.empty() || stopped) {
            return;
        }
        apply(to_expire, "expire", expire_script, {max_ttl_text, hold_field, hold_value});
    };

    auto add_due = [&](std::string_view key, char flag, std::string_view expect) {
        std::string k(key);
        if (to_delete.add(k)) {
            ++found_due;
            to_delete.keys.push_back(std::move(k));
            if (!idle) {
                to_delete.flags += flag;
                if (flag == '=') {
                    to_delete.expect.emplace_back(expect);
                }
            }
        }
        if (to_delete.keys.size() >= batch_size) {
            flush_delete();
        }
    };
    auto add_clamp = [&](std::string_view key) {
        std::string k(key);
        if (to_expire.add(k)) {
            to_expire.keys.push_back(std::move(k));
            if (to_expire.keys.size() >= batch_size) {
                flush_expire();
            }
        }
    };
    if (remembered) {
        // The keys the limits' pass found; the scripts re-check each one as after a scan.
        remembered->each([&](char kind, std::string_view key, std::string_view value) {
            if (kind == 'e') {
                add_clamp(key);
            } else {
                add_due(key, kind, value);
            }
            return !stopped;
        });
    } else {
        scan_all(c, rule, plan, now, tz,
                 [&](const std::vector<std::string>& keys, const std::vector<Observed>& seen) {
                     launch(false);
                     if (stop_now()) {
                         return false;
                     }
                     for (std::size_t i = 0; i < keys.size() && !stopped; ++i) {
                         const auto& o = seen[i];
                         const auto v = judge(o, rule, cutoff);
                         if (v == Verdict::gone) {
                             continue;
                         }
                         const bool clamp = count_ttl(o);
                         if (v == Verdict::due) {
                             add_due(keys[i], idle ? 'i' : flag_of(o), o.raw);
                         } else if (clamp && v != Verdict::held) {
                             add_clamp(keys[i]);
                         }
                     }
                     return !stopped;
                 });
    }
    flush_delete();
    flush_expire();
    settle(); // also after a stop: the batch in flight is finished, its outcome is due
    journal.drain();

    if (!limits_apply) {
        res.due = found_due;
    }
    if (stopped) {
        res.status = RunResult::Status::stopped;
        res.message = "stopped on request after " + std::to_string(res.processed) + " keys";
    }
    res.counters["held"] = held;
    res.counters["skipped_changed"] = skipped;
    res.counters["no_ttl"] = no_ttl;
    if (max_ttl) {
        res.counters["expired"] = expired;
        res.counters["ttl_above_max"] = above_max;
    }
    return res;
}

Presence RedisEngine::records_present(const Rule& rule, const std::string&,
                                      const std::vector<std::string>& keys) {
    require_redis(rule);
    const std::set<std::string> unique(keys.begin(), keys.end());
    if (unique.empty()) {
        return Presence::absent;
    }
    Connection c(m_url, m_name);
    std::size_t present = 0;
    std::vector<std::string_view> args;
    auto it = unique.begin();
    while (it != unique.end()) {
        args.assign({"EXISTS"});
        for (std::size_t n = 0; n < k_exists_chunk && it != unique.end(); ++n, ++it) {
            args.push_back(*it);
        }
        auto r = c.call(args);
        if (r->type != REDIS_REPLY_INTEGER) {
            return Presence::unknown;
        }
        present += static_cast<std::size_t>(r->integer);
    }
    if (present == 0) {
        return Presence::absent;
    }
    // A batch script is atomic, but it keeps keys touched since the scan: a mix means "ran".
    return present == unique.size() ? Presence::present : Presence::unknown;
}

} // namespace

std::unique_ptr<Engine> make_redis_engine(const Datastore& store, const Config&) {
    return std::make_unique<RedisEngine>(store);
}

void set_redis_remember_budget(std::size_t bytes) {
    g_remember_budget = bytes;
}

} // namespace retentiond
