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
#include "redis_connection.hpp"
#include "redis_erase.hpp"
#include "redis_kind.hpp"
#include "redis_passes.hpp"
#include "redis_reads.hpp"
#include "redis_remembered.hpp"
#include "redis_url.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/timeutil.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <stdexcept>
#include <string_view>

namespace retentiond {
namespace redis_detail {

std::size_t g_remember_budget = std::size_t{16} << 20;

} // namespace redis_detail

namespace {

using namespace redis_detail;

constexpr std::size_t k_exists_chunk = 1000;

void require_redis(const Rule& rule) {
    if (!has_spec<RedisRule>(rule)) {
        throw std::invalid_argument("rule \"" + rule.name + "\" is not a redis rule");
    }
}

class RedisEngine final : public Engine {
public:
    explicit RedisEngine(const Datastore& store) : m_name(store.name) {
        try {
            m_url = parse_redis_url(spec_of<RedisStore>(store).url.reveal());
        } catch (const ParseError& e) {
            throw ParseError("datastore \"" + store.name + "\": " + e.what());
        }
    }

    std::vector<Diagnostic> check(const Rule& rule) override;
    DryRun dry_run(const Rule& rule, const RunContext& ctx) override;
    RunResult purge(const Rule& rule, RunContext& ctx) override;
    Presence records_present(const Rule& rule, const std::string& target,
                             const std::vector<std::string>& keys) override;
    RunResult erase_subject(const Rule& rule, const SubjectQuery& query, RunContext& ctx,
                            bool dry) override {
        require_redis(rule);
        Connection c(m_url, m_name, ctx.stop_requested);
        try {
            return erase_subject_keys(c, m_name, rule, query, ctx, dry);
        } catch (const ReplyError& e) {
            RunResult failed;
            failed.status = RunResult::Status::failed;
            failed.message = std::string("redis: ") + e.what();
            return failed;
        }
    }

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
    if (!has_spec<RedisRule>(rule)) {
        problem("not a redis rule");
        return out;
    }
    const auto& spec = spec_of<RedisRule>(rule);
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

// The dry run's figures beyond the verdicts.
struct DryTally {
    std::optional<long long> max_ttl;
    std::int64_t no_ttl = 0;
    std::int64_t above_max = 0;
};

DryVerdict dry_verdict(Verdict v) {
    switch (v) {
    case Verdict::due:
        return DryVerdict::due;
    case Verdict::held:
        return DryVerdict::held;
    case Verdict::unparseable:
        return DryVerdict::unparseable;
    case Verdict::no_clock:
        return DryVerdict::no_clock;
    case Verdict::not_due:
    case Verdict::gone:
        break;
    }
    return DryVerdict::not_due;
}

// Counts one key of the dry run.
void dry_count(const Observed& o, const Rule& rule, const DryRunTally& figures, DryTally& t,
               DryRun& d) {
    if (!o.exists) {
        return;
    }
    if (o.ttl == -1) {
        ++t.no_ttl;
    }
    if (t.max_ttl && o.ttl > *t.max_ttl) {
        ++t.above_max;
    }
    const bool parsed = o.clock == Observed::Clock::parsed;
    figures.add(d, dry_verdict(judge(o, rule, d.cutoff)),
                parsed ? std::optional<TimePoint>(o.at) : std::nullopt);
}

DryRun RedisEngine::dry_run(const Rule& rule, const RunContext& ctx) {
    require_redis(rule);
    const auto& spec = spec_of<RedisRule>(rule);
    const auto* tz = zone_or_utc(ctx.tz);
    const bool idle = spec.clock.kind == RedisClock::Kind::idle;
    Connection c(m_url, m_name);

    DryRun d;
    d.now = server_now(c);
    d.cutoff = subtract(d.now, rule.retain, tz);
    d.age_buckets.assign(k_age_buckets, 0);
    const DryRunTally figures(d.now, d.cutoff, rule.retain, tz);
    DryTally t;
    t.max_ttl = max_ttl_seconds(spec);
    const bool hold_unread = idle && spec.hold.has_value();

    ReadPlan plan;
    plan.ttl = true;
    plan.hold = !idle && spec.hold.has_value();
    scan_all(c, rule, plan, d.now, tz,
             [&](const std::vector<std::string>&, const std::vector<Observed>& seen) {
                 for (const auto& o : seen) {
                     dry_count(o, rule, figures, t, d);
                 }
                 return true;
             });
    d.counters["no_ttl"] = t.no_ttl;
    if (t.max_ttl) {
        d.counters["ttl_above_max"] = t.above_max;
    }
    if (hold_unread) {
        d.counters["hold_not_read"] = d.due;
        d.notes.push_back("clock: idle: the hold field was not read (reading it would reset the "
                          "keys' idle time); \"due\" includes held keys");
    }
    if (d.unparseable > 0) {
        d.notes.push_back(std::to_string(d.unparseable) +
                          " key(s) whose clock field does not parse (epoch seconds, epoch "
                          "milliseconds or ISO 8601): a purge leaves them and fails the rule");
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

// Reads the server's clock and derives the cutoff and what the passes read.
PurgeSetup prepare(Connection& c, const Rule& rule, const RunContext& ctx,
                   std::optional<long long> max_ttl) {
    const auto& spec = spec_of<RedisRule>(rule);
    PurgeSetup s;
    s.tz = zone_or_utc(ctx.tz);
    s.idle = spec.clock.kind == RedisClock::Kind::idle;
    s.max_ttl = max_ttl;
    s.now = server_now(c);
    s.cutoff = subtract(s.now, rule.retain, s.tz);
    // Idle mode: due <=> now - idle <= cutoff <=> idle >= ceil(now - cutoff).
    s.min_idle =
        static_cast<long long>(std::ceil(std::chrono::duration<double>(s.now - s.cutoff).count()));
    // TTL tells a vanished key from a hash without the clock field: needed for max_ttl and for
    // clock_null_due only (the delete script re-checks existence anyway).
    s.plan.ttl = max_ttl.has_value() || (!s.idle && rule.clock_null_due);
    s.plan.hold = !s.idle && spec.hold.has_value();
    return s;
}

// Keys whose clock does not parse are never judged, so never deleted: the rule cannot say it
// kept its promise. They are counted (the `unparseable` counter, a `clock_unparseable` event)
// and the rule fails as a data error (exit 65), as the files engine does for a record that does
// not parse; the due keys were deleted all the same.
void fail_on_unparseable(const Rule& rule, RunContext& ctx, std::int64_t count, RunResult& res) {
    if (count == 0) {
        return;
    }
    const auto& spec = spec_of<RedisRule>(rule);
    res.counters["unparseable"] = count;
    journal_event(ctx.journal, rule, "clock_unparseable",
                  {{"keys", count}, {"field", spec.clock.hash_field}});
    if (res.status != RunResult::Status::ok) {
        return; // stopped or refused: that is the run's message
    }
    res.status = RunResult::Status::failed;
    res.data_error = true;
    res.message = std::to_string(count) + " key(s) matching " + spec.keys +
                  " whose clock field \"" + spec.clock.hash_field +
                  "\" does not parse (epoch seconds, epoch milliseconds or ISO 8601): left in "
                  "place, never judged";
}

RunResult RedisEngine::run(const Rule& rule, RunContext& ctx) {
    const auto max_ttl = max_ttl_seconds(spec_of<RedisRule>(rule));
    RunResult res;
    if (max_ttl && *max_ttl < 1) {
        res.status = RunResult::Status::failed;
        res.message = "max_ttl must be at least one second";
        return res;
    }
    Connection c(m_url, m_name, ctx.stop_requested);
    const PurgeSetup setup = prepare(c, rule, ctx, max_ttl);
    res.cutoff = setup.cutoff;
    TtlTally ttl{max_ttl};

    // Limits are checked before the first UNLINK: a first pass reads every key as the purge
    // does and counts; the due keys and the keys to clamp it finds are kept (Remembered, up to
    // its budget), so the purge then needs no second scan. Past the budget, it only counts and
    // the purge scans again.
    const bool limits_apply =
        !ctx.force && (rule.limits.max_rows.has_value() || rule.limits.max_fraction < 1.0);
    std::optional<Remembered> remembered;
    if (limits_apply) {
        ctx.phase("counting");
        Counted counted = count_due(c, rule, setup, ttl);
        if (!counted.found.overflowed()) {
            remembered = std::move(counted.found);
        } else {
            ttl = TtlTally{max_ttl}; // counted again by the purge's scan
        }
        res.due = counted.due;
        const LimitScope scope{counted.due, counted.in_scope, "keys",
                               "matching " + spec_of<RedisRule>(rule).keys};
        if (refuse_over_limits(rule, ctx, scope, res)) {
            return res;
        }
        if (counted.due == 0 && !max_ttl) {
            fail_on_unparseable(rule, ctx, ttl.unparseable, res);
            return res;
        }
    }

    ctx.phase("batches");
    BatchSender sender(c, rule, ctx, setup, res);
    if (remembered) {
        purge_remembered(*remembered, sender);
    } else {
        purge_scanning(c, rule, setup, ttl, sender);
    }
    sender.finish();

    if (!limits_apply) {
        res.due = sender.found_due();
    }
    if (sender.stopped()) {
        res.status = RunResult::Status::stopped;
        res.message = stopped_message(res.processed, "keys");
    }
    res.counters["held"] = sender.held();
    res.counters["skipped_changed"] = sender.skipped();
    res.counters["no_ttl"] = ttl.no_ttl;
    if (max_ttl) {
        res.counters["expired"] = sender.expired();
        res.counters["ttl_above_max"] = ttl.above_max;
    }
    fail_on_unparseable(rule, ctx, ttl.unparseable, res);
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
