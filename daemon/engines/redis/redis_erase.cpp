// Erasure requests on Redis: see redis_erase.hpp.
//
// Reading a hash field (HMGET) resets the key's idle time. Where the server has CLIENT NO-TOUCH
// (Redis 7.2+) the reads leave the idle clocks alone; on older servers, with `clock: idle`, every
// key of the pattern read by the request has its idle time restarted (its expiry delayed by at
// most `retain`, and never past max_ttl): counted in "idle_reset", journaled as an
// `idle_clock_reset` event, and said in the docs.
#include "redis_erase.hpp"

#include "redis_kind.hpp"
#include "redis_reads.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/timeutil.hpp"

namespace retentiond::redis_detail {

namespace {

// Re-checks each key's subject field (still the text read) and hold, then UNLINKs it; answers one
// letter per key (D deleted, S skipped).
constexpr std::string_view k_erase_script = R"lua(
local field, hold_field, hold_value = ARGV[1], ARGV[2], ARGV[3]
local out, del = {}, {}
for i, key in ipairs(KEYS) do
  local r = redis.pcall('HMGET', key, field, hold_field ~= '' and hold_field or field)
  local s = 'S'
  if not r.err and r[1] == ARGV[i + 3] and (hold_field == '' or r[2] ~= hold_value) then
    del[#del + 1] = key
    s = 'D'
  end
  out[i] = s
end
for i = 1, #del, 1000 do
  redis.call('UNLINK', unpack(del, i, math.min(i + 999, #del)))
end
return table.concat(out)
)lua";

struct Found {
    std::string field;             // the subject's hash field
    std::vector<std::string> keys; // the subject's keys, not held
    std::vector<std::string> raw;  // their field's text, re-checked by the script
    std::int64_t held = 0;
    std::int64_t in_scope = 0;
};

// One page: HMGET field [hold] of every key, pipelined.
void read_page(Connection& c, const RedisRule& spec, const SubjectQuery& query,
               const std::vector<std::string>& keys, Found& found) {
    const std::string& field = query.field.field;
    const std::string hold = spec.hold ? spec.hold->hash_field : field;
    std::vector<std::uint64_t> seqs;
    for (const auto& k : keys) {
        seqs.push_back(c.append({"HMGET", k, field, hold}));
    }
    c.flush();
    for (std::size_t i = 0; i < keys.size(); ++i) {
        const auto r = c.reply(seqs[i]);
        ++found.in_scope;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING) {
            continue; // not a hash, or no such field
        }
        const std::string raw(text_of(r->element[0]));
        if (!query.matches(raw)) {
            continue;
        }
        if (spec.hold && r->element[1]->type == REDIS_REPLY_STRING &&
            text_of(r->element[1]) == spec.hold->equals) {
            ++found.held;
            continue;
        }
        found.keys.push_back(keys[i]);
        found.raw.push_back(raw);
    }
}

Found scan_subject(Connection& c, const Rule& rule, const SubjectQuery& query) {
    const auto& spec = spec_of<RedisRule>(rule);
    const auto count = std::to_string(std::max(1, spec.scan_count));
    Found found;
    found.field = query.field.field;
    std::string cursor = "0";
    do {
        const auto r = c.call({"SCAN", cursor, "MATCH", spec.keys, "COUNT", count});
        std::vector<std::string> keys;
        read_scan_reply(r.get(), cursor, keys);
        if (!keys.empty()) {
            read_page(c, spec, query, keys, found);
        }
    } while (cursor != "0");
    return found;
}

// One batch: intent, script, outcome (keys the script kept are named in it).
void erase_batch(Connection& c, const std::string& store, const Rule& rule, const Found& f,
                 std::size_t start, std::size_t end, RunContext& ctx, RunResult& r) {
    const auto& spec = spec_of<RedisRule>(rule);
    BatchIntent intent;
    intent.rule = rule.name;
    intent.datastore = store;
    intent.target = spec.keys;
    intent.action = "delete";
    intent.cutoff = now_utc();
    intent.request = ctx.request;
    intent.keys.assign(f.keys.begin() + static_cast<long>(start),
                       f.keys.begin() + static_cast<long>(end));
    const auto id = ctx.journal != nullptr ? ctx.journal->intent(intent) : std::string();
    const std::string n = std::to_string(end - start);
    const std::string hold_field = spec.hold ? spec.hold->hash_field : std::string();
    const std::string hold_value = spec.hold ? spec.hold->equals : std::string();
    std::vector<std::string_view> args{"EVAL", k_erase_script, n};
    for (std::size_t i = start; i < end; ++i) {
        args.emplace_back(f.keys[i]);
    }
    args.insert(args.end(), {f.field, hold_field, hold_value});
    for (std::size_t i = start; i < end; ++i) {
        args.emplace_back(f.raw[i]);
    }
    const auto reply = c.call(args);
    if (reply->type != REDIS_REPLY_STRING) {
        if (!id.empty()) {
            ctx.journal->outcome(id, false, 0);
        }
        throw ReplyError("erase script: " + std::string(text_of(reply.get())));
    }
    const auto letters = text_of(reply.get());
    std::vector<std::string> kept;
    std::int64_t deleted = 0;
    for (std::size_t i = 0; i < letters.size(); ++i) {
        if (letters[i] == 'D') {
            ++deleted;
        } else {
            kept.push_back(f.keys[start + i]);
        }
    }
    if (!id.empty()) {
        ctx.journal->outcome_except(id, deleted, kept);
    }
    r.processed += deleted;
    r.counters["skipped_changed"] += static_cast<std::int64_t>(kept.size());
    ++r.batches;
}

// CLIENT NO-TOUCH (Redis 7.2+): the reads leave idle clocks alone. False when the server has none.
bool no_touch(Connection& c) {
    const auto r = c.call({"CLIENT", "NO-TOUCH", "on"});
    return r->type != REDIS_REPLY_ERROR;
}

} // namespace

RunResult erase_subject_keys(Connection& c, const std::string& store, const Rule& rule,
                             const SubjectQuery& query, RunContext& ctx, bool dry) {
    RunResult r;
    const bool untouched = no_touch(c);
    const Found found = scan_subject(c, rule, query);
    r.due = static_cast<std::int64_t>(found.keys.size());
    r.counters["held"] = found.held;
    r.counters["in_scope"] = found.in_scope;
    if (!untouched && spec_of<RedisRule>(rule).clock.kind == RedisClock::Kind::idle) {
        r.counters["idle_reset"] = found.in_scope;
        journal_event(ctx.journal, rule, "idle_clock_reset", {{"keys", found.in_scope}});
    }
    if (dry) {
        return r;
    }
    const auto batch = static_cast<std::size_t>(std::max(1, rule.batch_size));
    for (std::size_t start = 0; start < found.keys.size(); start += batch) {
        erase_batch(c, store, rule, found, start, std::min(found.keys.size(), start + batch), ctx,
                    r);
    }
    return r;
}

} // namespace retentiond::redis_detail
