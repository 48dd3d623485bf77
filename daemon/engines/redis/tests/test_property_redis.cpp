// Differential property test of the redis engine: random hash keys with a `last_seen` clock
// (decimal epoch seconds with microseconds, or missing), holds, TTLs, keys outside the pattern;
// random retains; purged by the engine and compared with an oracle written here.
//
// The clock is the server's TIME: the oracle brackets it (TIME before and after the purge) and
// checks that the engine's reported cutoff lies between the two oracle cutoffs, then compares
// every key exactly against it.
//
// Seed: RETENTIOND_PROPERTY_SEED; cases: RETENTIOND_PROPERTY_CASES; one case:
// RETENTIOND_PROPERTY_ONLY.
#include "contract/contract.hpp"
#include "redis_kind.hpp"
#include "retentiond/timeutil.hpp"
#include "support/oracle.hpp"
#include "support/redis_server.hpp"

#include <date/date.h>
#include <date/tz.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>

namespace retentiond::test {
namespace {

using namespace std::chrono_literals;
using std::chrono::microseconds;

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

TimePoint server_time(RedisServer& server) {
    const auto t = lines(redis_cmd(server, {"TIME"}));
    return TimePoint(std::chrono::seconds(std::stoll(t.at(0))) + microseconds(std::stoll(t.at(1))));
}

std::string epoch_text(TimePoint t) {
    const auto us = t.time_since_epoch().count();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%lld.%06lld", static_cast<long long>(us / 1000000),
                  static_cast<long long>(us % 1000000));
    return buf;
}

struct Gen {
    std::mt19937_64 rng;
    std::uint64_t pick(std::uint64_t n) {
        return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng);
    }
};

// A case's retain (hours, days or months) and time zone.
struct Retain {
    const date::time_zone* tz = nullptr;
    int months = 0;
    int days = 0;
    std::int64_t micros = 0;
};

Retain pick_retain(Gen& g) {
    Retain r;
    r.tz = find_zone(g.pick(2) == 0 ? "UTC" : "Europe/Paris");
    switch (g.pick(3)) {
    case 0:
        r.micros = static_cast<std::int64_t>(1 + g.pick(72)) * 3600000000LL;
        break;
    case 1:
        r.days = 1 + static_cast<int>(g.pick(60));
        break;
    default:
        r.months = 1 + static_cast<int>(g.pick(12));
    }
    return r;
}

// The keys a case seeds: each key's clock and whether it is held.
struct Seeded {
    std::map<std::string, std::optional<TimePoint>> clocks;
    std::map<std::string, bool> held;
};

// Seeds up to 29 keys around the estimated cutoff est with one EVAL, each with a twin outside
// the pattern; counts the clocks within 1 µs of est in boundary.
Seeded seed_keys(RedisServer& server, Gen& g, TimePoint est, microseconds span, bool with_hold,
                 int& boundary) {
    Seeded out;
    // One EVAL seeds the case: ARGV = key, last_seen ("" = none), hold, ttl ("" = none), ...
    std::vector<std::string> eval = {"EVAL",
                                     "for i = 1, #ARGV, 4 do "
                                     "  redis.call('HSET', ARGV[i], 'user', 'Élodie \"x\", ' .. i) "
                                     "  if ARGV[i+1] ~= '' then redis.call('HSET', ARGV[i], "
                                     "'last_seen', ARGV[i+1]) end "
                                     "  if ARGV[i+2] ~= '' then redis.call('HSET', ARGV[i], "
                                     "'hold', ARGV[i+2]) end "
                                     "  if ARGV[i+3] ~= '' then redis.call('EXPIRE', ARGV[i], "
                                     "ARGV[i+3]) end "
                                     "end return 1",
                                     "0"};
    const int n = static_cast<int>(g.pick(30));
    for (int i = 0; i < n; ++i) {
        const auto key = "sess:" + std::to_string(i) + (g.pick(4) == 0 ? ":é*[x]" : "");
        std::optional<TimePoint> clock;
        const auto kind = g.pick(8);
        if (kind != 0) {
            clock = kind <= 3 ? est + microseconds(static_cast<std::int64_t>(kind) - 2)
                              : est + microseconds(std::uniform_int_distribution<std::int64_t>(
                                          -span.count() * 3, span.count() * 3)(g.rng));
            if (*clock >= est - 1us && *clock <= est + 1us) {
                ++boundary;
            }
        }
        const bool h = with_hold && g.pick(4) == 0;
        const std::string hold_value =
            h ? "yes" : (g.pick(3) == 0 ? "no" : (g.pick(2) == 0 ? "YES" : ""));
        out.clocks[key] = clock;
        out.held[key] = h;
        eval.insert(eval.end(), {key, clock ? epoch_text(*clock) : "", hold_value,
                                 g.pick(3) == 0 ? std::to_string(100000 + g.pick(1000)) : ""});
        // A key outside the pattern with the same content: never touched.
        eval.insert(eval.end(), {"keep:" + key, clock ? epoch_text(*clock) : "", "", ""});
    }
    if (n > 0) {
        redis_cmd(server, eval);
    }
    return out;
}

// A key's content and whether it has a TTL.
std::string fingerprint(RedisServer& server, const std::string& k) {
    return redis_cmd(server, {"HGETALL", k}) +
           "|ttl>0:" + (std::stoll(redis_cmd(server, {"TTL", k})) > 0 ? "y" : "n");
}

Rule make_rule(const Retain& retain, bool with_hold, bool null_due, Gen& g) {
    Rule rule;
    rule.name = "prop-redis";
    rule.datastore = "cache";
    rule.kind = &redis_kind();
    rule.retain.months = retain.months;
    rule.retain.days = retain.days;
    rule.retain.micros = retain.micros;
    rule.retain.text = "generated";
    rule.batch_size = 1 + static_cast<int>(g.pick(7));
    rule.clock_null_due = null_due;
    rule.limits = Limits{std::nullopt, 1.0};
    RedisRule spec;
    spec.keys = "sess:*";
    spec.clock.kind = RedisClock::Kind::hash_field;
    spec.clock.hash_field = "last_seen";
    if (with_hold) {
        spec.hold = RedisHold{"hold", "yes"};
    }
    spec.scan_count = 1 + static_cast<int>(g.pick(10));
    rule.spec = spec_ptr(spec);
    return rule;
}

// Compares the keys left and the journal with what the oracle expects at cutoff cut.
void check_keys(RedisServer& server, const std::map<std::string, std::string>& before,
                const Seeded& seeded, bool null_due, TimePoint cut, const RunResult& result,
                const RecordingJournal& journal, const std::string& where) {
    std::set<std::string> expected;
    for (const auto& [k, clock] : seeded.clocks) {
        if ((clock ? *clock <= cut : null_due) && !seeded.held.at(k)) {
            expected.insert(k);
        }
    }
    std::set<std::string> removed;
    for (const auto& [k, fp] : before) {
        if (redis_cmd(server, {"EXISTS", k}) == "1") {
            EXPECT_EQ(fingerprint(server, k), fp) << where << ": a kept key changed";
        } else {
            removed.insert(k);
        }
    }
    EXPECT_EQ(removed, expected) << where << ": cutoff " << format_utc(cut);
    EXPECT_EQ(result.processed, static_cast<std::int64_t>(expected.size())) << where;
    std::set<std::string> journaled;
    for (const auto& o : journal.m_outcomes) {
        if (o.committed) {
            const auto& keys = journal.m_intents.at(o.intent).keys;
            journaled.insert(keys.begin(), keys.end());
        }
    }
    for (const auto& k : removed) {
        EXPECT_EQ(journaled.count(k), 1U) << where << ": removed without a committed intent";
    }
    for (const auto& k : journaled) {
        EXPECT_EQ(expected.count(k), 1U) << where << ": journal names a key not due";
    }
}

void run_case(RedisServer& server, std::uint64_t seed, int number, int& boundary) {
    const auto where = "seed=" + std::to_string(seed) + " case=" + std::to_string(number) +
                       " (replay: RETENTIOND_PROPERTY_SEED=" + std::to_string(seed) +
                       " RETENTIOND_PROPERTY_ONLY=" + std::to_string(number) + ")";
    Gen g{std::mt19937_64(seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(number + 1)))};
    const Retain retain = pick_retain(g);
    const auto& [tz, months, days, micros] = retain;
    const auto est = oracle_cutoff(server_time(server), months, days, micros, tz);
    if (!est) {
        return;
    }
    redis_cmd(server, {"FLUSHDB"});
    const auto span = microseconds(micros) + date::days{months * 30 + days};
    const bool with_hold = g.pick(2) == 0;
    const bool null_due = g.pick(4) == 0;
    const Seeded seeded = seed_keys(server, g, *est, span, with_hold, boundary);
    std::map<std::string, std::string> before;
    for (const auto& k : lines(redis_cmd(server, {"KEYS", "*"}))) {
        before[k] = fingerprint(server, k);
    }
    const Rule rule = make_rule(retain, with_hold, null_due, g);

    Datastore store;
    store.name = "cache";
    store.kind = &redis_kind();
    store.spec = spec_ptr(RedisStore(Secret(server.url(0))));
    Config config;
    auto engine = make_redis_engine(store, config);
    RecordingJournal journal;
    Secret audit_key("property-key");
    RunContext ctx;
    ctx.run_id = "prop";
    ctx.tz = tz;
    ctx.audit_key = &audit_key;
    ctx.journal = &journal;
    const auto t_before = server_time(server);
    const auto result = engine->purge(rule, ctx);
    const auto t_after = server_time(server);
    ASSERT_EQ(result.status, RunResult::Status::ok) << where << ": " << result.message;
    const auto wrong =
        exact_cutoff_error(result.cutoff, t_before, t_after, months, days, micros, tz);
    ASSERT_TRUE(wrong.empty()) << where << ": " << wrong;
    check_keys(server, before, seeded, null_due, result.cutoff, result, journal, where);
}

TEST(PropertyRedis, EngineMatchesOracle) {
    auto& server = RedisServer::shared();
    const auto seed = env_u64("RETENTIOND_PROPERTY_SEED", 20261126);
    const auto cases = static_cast<int>(env_u64("RETENTIOND_PROPERTY_CASES", 2000));
    const char* only = std::getenv("RETENTIOND_PROPERTY_ONLY");
    std::cout << "property seed " << seed << ", " << cases << " cases\n";
    int boundary = 0;
    for (int n = 0; n < cases; ++n) {
        if (only != nullptr && std::stoi(only) != n) {
            continue;
        }
        run_case(server, seed, n, boundary);
        if (::testing::Test::HasFailure()) {
            break;
        }
    }
    std::cout << boundary << " keys at the generation-time cutoff or 1 us from it\n";
}

} // namespace
} // namespace retentiond::test
