// The redis engine against a real redis-server (tests/support). Idle times are produced without
// waiting: RESTORE ... IDLETIME sets a key's idle time exactly.
#include "contract/contract.hpp"
#include "redis_kind.hpp"
#include "retentiond/timeutil.hpp"
#include "support/redis_server.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <sstream>

namespace retentiond::test {
namespace {

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

class RedisEngineTest : public ::testing::Test {
protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        m_prefix = std::string("t:") + info->name() + ":";
        m_store.name = "sessions";
        m_store.kind = &redis_kind();
        m_store.spec = spec_ptr(RedisStore(Secret(server().url(0))));
        // Leftovers of an earlier run of the same test in this process' server.
        for (const auto& k : lines(cmd({"KEYS", m_prefix + "*"}))) {
            cmd({"UNLINK", k});
        }
    }

    void TearDown() override {
        try {
            for (const auto& k : lines(cmd({"KEYS", m_prefix + "*"}))) {
                cmd({"UNLINK", k});
            }
        } catch (const std::exception&) {
            // a test that left its server stopped has already failed
        }
    }

    virtual RedisServer& server() { return RedisServer::shared(); }
    std::string cmd(const std::vector<std::string>& args, int db = 0) {
        return redis_cmd(server(), args, db);
    }
    std::string key(const std::string& k) const { return m_prefix + k; }
    long long now() { return std::stoll(lines(cmd({"TIME"})).at(0)); }

    // A session hash whose clock field is `last_seen`.
    void session(const std::string& k, std::optional<std::string> last_seen, bool held = false) {
        std::vector<std::string> args = {"HSET",   key(k),       "user",
                                         "u-" + k, "legal_hold", held ? "yes" : "no"};
        if (last_seen) {
            args.push_back("last_seen");
            args.push_back(*last_seen);
        }
        cmd(args);
    }
    // ttl_seconds 0 = no TTL. EXPIRE would reset the idle time: RESTORE sets both.
    void idle_key(const std::string& k, long long idle_seconds, long long ttl_seconds = 0) {
        cmd({"HSET", key(k), "user", "u-" + k});
        set_idle(k, idle_seconds, ttl_seconds);
    }
    // Gives an existing key this idle time (a write resets it), and this TTL (0: none).
    void set_idle(const std::string& k, long long idle_seconds, long long ttl_seconds = 0) {
        const auto dump = cmd({"DUMP", key(k)});
        cmd({"RESTORE", key(k), std::to_string(ttl_seconds * 1000), dump, "REPLACE", "IDLETIME",
             std::to_string(idle_seconds)});
    }
    // Runs `write` once, between the scan's reads (and the limits' counting pass) and the first
    // delete batch: the engine calls stop_requested before each batch.
    static void once_before_first_batch(RunContext& ctx, std::function<void()> write) {
        ctx.stop_requested = [write = std::move(write), done = false]() mutable {
            if (!done) {
                done = true;
                write();
            }
            return false;
        };
    }
    long long idle_of(const std::string& k) {
        return std::stoll(cmd({"OBJECT", "IDLETIME", key(k)}));
    }
    long long ttl_of(const std::string& k) { return std::stoll(cmd({"TTL", key(k)})); }
    bool exists(const std::string& k) { return cmd({"EXISTS", key(k)}) == "1"; }

    Rule rule(const std::string& retain, bool idle = false) {
        Rule r;
        r.name = "sessions";
        r.datastore = m_store.name;
        r.kind = &redis_kind();
        r.retain = parse_duration(retain);
        r.limits = Limits{std::nullopt, 1.0};
        RedisRule spec;
        spec.keys = m_prefix + "*";
        if (idle) {
            spec.clock.kind = RedisClock::Kind::idle;
        } else {
            spec.clock.kind = RedisClock::Kind::hash_field;
            spec.clock.hash_field = "last_seen";
        }
        spec.scan_count = 5;
        r.spec = spec_ptr(spec);
        return r;
    }
    std::unique_ptr<Engine> engine() { return make_redis_engine(m_store, m_config); }
    RunContext context() {
        RunContext ctx;
        ctx.run_id = "unit";
        ctx.tz = find_zone("Europe/Paris");
        ctx.journal = &m_journal;
        return ctx;
    }
    RunResult purge(const Rule& r) {
        auto ctx = context();
        return engine()->purge(r, ctx);
    }
    DryRun dry_run(const Rule& r) { return engine()->dry_run(r, context()); }

    std::string m_prefix;
    Datastore m_store;
    Config m_config;
    RecordingJournal m_journal;
};

TEST_F(RedisEngineTest, HashFieldClockTakesEpochSecondsAndIso8601) {
    const auto t = now();
    session("epoch-old", std::to_string(t - 40 * 86400));
    session("epoch-new", std::to_string(t - 2 * 86400));
    session("iso-old", format_utc_seconds(TimePoint(std::chrono::seconds(t - 90 * 86400))));
    session("iso-offset-new", "2999-01-01T00:00:00+02:00");
    session("garbage", "last tuesday");
    session("no-clock", std::nullopt);
    cmd({"SET", key("a-string"), "not a hash"});

    const auto r = rule("30 days");
    const auto dry = dry_run(r);
    EXPECT_EQ(dry.in_scope, 7);
    EXPECT_EQ(dry.due, 2);
    EXPECT_EQ(dry.no_clock, 2) << "a missing field and a non-hash key have no clock";
    EXPECT_EQ(dry.unparseable, 1);
    EXPECT_EQ(dry.counters.at("no_ttl"), 7);

    // The due keys are deleted; the one whose clock does not parse fails the rule (exit 65).
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_TRUE(result.data_error);
    EXPECT_EQ(result.message, "1 key(s) matching " + key("*") +
                                  " whose clock field \"last_seen\" does not parse (epoch "
                                  "seconds, epoch milliseconds or ISO 8601): left in place, "
                                  "never judged");
    EXPECT_EQ(result.counters.at("unparseable"), 1);
    EXPECT_EQ(result.processed, 2);
    EXPECT_FALSE(exists("epoch-old"));
    EXPECT_FALSE(exists("iso-old"));
    for (const auto* k : {"epoch-new", "iso-offset-new", "garbage", "no-clock", "a-string"}) {
        EXPECT_TRUE(exists(k)) << k;
    }
}

// Issue 23, item 5: the clock policy of kind redis (read_clock). 13 digits are epoch
// milliseconds (Date.now()); 0, negative numbers and an empty text are sentinels, no clock, so
// due only with clock_null: due; numbers before 1973 (" 123 ") or past 2286 in milliseconds are
// not clocks: counted as unparseable, never deleted, and the rule fails.
TEST_F(RedisEngineTest, MillisecondClocksAreDueSentinelsAreNoClock) {
    const auto t = now();
    session("ms-old", std::to_string((t - 40 * 86400) * 1000 + 123));
    session("ms-new", std::to_string((t - 2 * 86400) * 1000));
    session("ms-frac-old", std::to_string((t - 40 * 86400) * 1000) + ".5");
    session("s-padded-old", "  " + std::to_string(t - 40 * 86400) + " ");
    session("zero", "0");
    session("minus-one", "-1");
    session("empty", "");
    session("tiny", " 123 ");
    session("huge", "17000000000000000");

    auto r = rule("30 days");
    const auto dry = dry_run(r);
    EXPECT_EQ(dry.in_scope, 9);
    EXPECT_EQ(dry.due, 3) << "ms-old, ms-frac-old, s-padded-old";
    EXPECT_EQ(dry.no_clock, 3) << "zero, minus-one, empty";
    EXPECT_EQ(dry.unparseable, 2) << "tiny, huge";
    EXPECT_EQ(dry.due_7d, 0);
    EXPECT_EQ(dry.due_30d, 1) << "ms-new falls due in 28 days";

    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_TRUE(result.data_error);
    EXPECT_EQ(result.processed, 3);
    EXPECT_EQ(result.counters.at("unparseable"), 2);
    ASSERT_FALSE(m_journal.m_events.empty());
    EXPECT_EQ(m_journal.m_events.back().first, "clock_unparseable");
    EXPECT_EQ(m_journal.m_events.back().second.at("keys"), 2);
    for (const auto* k : {"ms-old", "ms-frac-old", "s-padded-old"}) {
        EXPECT_FALSE(exists(k)) << k;
    }
    for (const auto* k : {"ms-new", "zero", "minus-one", "empty", "tiny", "huge"}) {
        EXPECT_TRUE(exists(k)) << k;
    }

    // clock_null: due takes the sentinels as "no clock, due"; still not the unparseable ones.
    r.clock_null_due = true;
    const auto again = purge(r);
    EXPECT_TRUE(again.data_error);
    EXPECT_EQ(again.processed, 3) << again.message;
    for (const auto* k : {"zero", "minus-one", "empty"}) {
        EXPECT_FALSE(exists(k)) << k;
    }
    for (const auto* k : {"ms-new", "tiny", "huge"}) {
        EXPECT_TRUE(exists(k)) << k;
    }
}

// Unparseable clocks fail the rule on every path: here the limits' counting pass finds nothing
// due and the purge ends there.
TEST_F(RedisEngineTest, UnparseableClockFailsTheRuleWhenNothingIsDue) {
    session("garbage", "last tuesday");
    session("recent", std::to_string(now() - 60));
    auto r = rule("30 days");
    r.limits = Limits{std::nullopt, 0.5};
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_TRUE(result.data_error);
    EXPECT_EQ(result.counters.at("unparseable"), 1);
    EXPECT_TRUE(exists("garbage"));
}

// A sentinel written between the read and the batch keeps the key: the script's 'n' re-check
// takes 0 as no clock, not as 1970.
TEST_F(RedisEngineTest, SentinelWrittenBeforeTheBatchKeepsTheKey) {
    session("a", std::to_string(now() - 100 * 86400));
    auto r = rule("30 days");
    auto ctx = context();
    once_before_first_batch(ctx, [&] { cmd({"HSET", key("a"), "last_seen", "0"}); });
    const auto result = engine()->purge(r, ctx);
    EXPECT_EQ(result.processed, 0) << result.message;
    EXPECT_TRUE(exists("a"));
}

TEST_F(RedisEngineTest, NonHashKeyIsDueOnlyWithClockNullDue) {
    cmd({"SET", key("plain"), "x"});
    session("no-clock", std::nullopt);
    auto r = rule("1 day");
    EXPECT_EQ(purge(r).processed, 0);
    r.clock_null_due = true;
    const auto result = purge(r);
    EXPECT_EQ(result.processed, 2) << result.message;
    EXPECT_FALSE(exists("plain"));
    EXPECT_FALSE(exists("no-clock"));
}

TEST_F(RedisEngineTest, IdleClockDeletesOnlyKeysIdleLongerThanRetain) {
    idle_key("idle-2h", 7200);
    idle_key("idle-3d", 3 * 86400);
    idle_key("idle-10m", 600);
    cmd({"HSET", key("fresh"), "user", "u"});

    const auto r = rule("1 hour", true);
    const auto dry = dry_run(r);
    EXPECT_EQ(dry.in_scope, 4);
    EXPECT_EQ(dry.due, 2);
    EXPECT_EQ(dry.no_clock, 0);

    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    EXPECT_FALSE(exists("idle-2h"));
    EXPECT_FALSE(exists("idle-3d"));
    EXPECT_TRUE(exists("idle-10m"));
    EXPECT_TRUE(exists("fresh"));
    EXPECT_GE(idle_of("idle-10m"), 600) << "a purge with clock: idle reset a kept key's idle time";
}

TEST_F(RedisEngineTest, DryRunDoesNotResetIdleTime) {
    idle_key("old", 50000);
    idle_key("younger", 1000, 999999);
    auto r = rule("10 hours", true);
    auto& spec = edit_spec<RedisRule>(r);
    spec.max_ttl = parse_duration("12 hours");
    spec.hold = RedisHold{"legal_hold", "yes"};

    const auto dry = dry_run(r);
    EXPECT_EQ(dry.in_scope, 2);
    EXPECT_EQ(dry.due, 1);
    EXPECT_EQ(dry.counters.at("no_ttl"), 1);
    EXPECT_EQ(dry.counters.at("ttl_above_max"), 1) << "counted apart from keys without TTL";
    EXPECT_EQ(dry.counters.at("hold_not_read"), 1);
    EXPECT_GE(idle_of("old"), 50000);
    EXPECT_GE(idle_of("younger"), 1000);
    EXPECT_TRUE(m_journal.m_intents.empty());
}

TEST_F(RedisEngineTest, IdleClockRespectsTheHold) {
    idle_key("held", 7200);
    cmd({"HSET", key("held"), "legal_hold", "yes"}); // HSET resets idle: set it again
    set_idle("held", 7200);
    idle_key("free", 7200);
    auto r = rule("1 hour", true);
    edit_spec<RedisRule>(r).hold = RedisHold{"legal_hold", "yes"};
    const auto result = purge(r);
    EXPECT_EQ(result.processed, 1) << result.message;
    EXPECT_EQ(result.counters.at("held"), 1);
    EXPECT_TRUE(exists("held"));
    EXPECT_FALSE(exists("free"));
}

TEST_F(RedisEngineTest, HashFieldHoldIsNeverDeletedNorJournaled) {
    const auto t = std::to_string(now() - 100 * 86400);
    session("held", t, true);
    session("free", t, false);
    auto r = rule("30 days");
    edit_spec<RedisRule>(r).hold = RedisHold{"legal_hold", "yes"};
    const auto dry = dry_run(r);
    EXPECT_EQ(dry.due, 1);
    EXPECT_EQ(dry.held, 1);
    const auto result = purge(r);
    EXPECT_EQ(result.processed, 1);
    EXPECT_TRUE(exists("held"));
    EXPECT_FALSE(exists("free"));
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].keys, std::vector<std::string>{key("free")});
}

TEST_F(RedisEngineTest, MaxTtlClampsKeysWithoutOrWithALongerTtl) {
    const auto recent = std::to_string(now() - 60);
    session("no-ttl", recent);
    session("long-ttl", recent);
    cmd({"EXPIRE", key("long-ttl"), "864000"});
    session("short-ttl", recent);
    cmd({"EXPIRE", key("short-ttl"), "60"});
    session("held-no-ttl", recent, true);
    auto r = rule("12 hours");
    auto& spec = edit_spec<RedisRule>(r);
    spec.max_ttl = parse_duration("1 hour");
    spec.hold = RedisHold{"legal_hold", "yes"};

    const auto dry = dry_run(r);
    EXPECT_EQ(dry.counters.at("no_ttl"), 2);
    EXPECT_EQ(dry.counters.at("ttl_above_max"), 1);
    EXPECT_EQ(ttl_of("no-ttl"), -1) << "a dry run gave a TTL";

    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 0);
    EXPECT_EQ(result.counters.at("expired"), 2);
    EXPECT_GT(ttl_of("no-ttl"), 3500);
    EXPECT_LE(ttl_of("no-ttl"), 3600);
    EXPECT_GT(ttl_of("long-ttl"), 3500);
    EXPECT_LE(ttl_of("long-ttl"), 3600);
    EXPECT_LE(ttl_of("short-ttl"), 60);
    EXPECT_EQ(ttl_of("held-no-ttl"), -1) << "a held key was given a TTL";
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].action, "expire");
    ASSERT_EQ(m_journal.m_outcomes.size(), 1U);
    EXPECT_EQ(m_journal.m_outcomes[0].count, 2);
}

TEST_F(RedisEngineTest, KeyChangedAfterTheScanIsNotDeleted) {
    const auto old = std::to_string(now() - 100 * 86400);
    for (int i = 0; i < 6; ++i) {
        session("s" + std::to_string(i), old);
    }
    auto r = rule("30 days");
    r.batch_size = 3;
    edit_spec<RedisRule>(r).scan_count = 100;
    auto ctx = context();
    bool touched = false;
    // After the first batch, the application refreshes every remaining session.
    ctx.on_progress = [&](std::int64_t, std::int64_t) {
        if (!touched) {
            touched = true;
            for (const auto& k : lines(cmd({"KEYS", m_prefix + "*"}))) {
                cmd({"HSET", k, "last_seen", std::to_string(now())});
            }
        }
    };
    const auto result = engine()->purge(r, ctx);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 3);
    EXPECT_EQ(result.counters.at("skipped_changed"), 3);
    EXPECT_EQ(lines(cmd({"KEYS", m_prefix + "*"})).size(), 3U);
}

// A write between the scan's read and the delete batch (here from stop_requested, which runs
// after a page's reads and before each batch): the batch re-checks atomically, so a refreshed
// clock or a hold set in between keeps the key.
TEST_F(RedisEngineTest, WriteBetweenReadAndDeleteIsRechecked) {
    const auto old = std::to_string(now() - 100 * 86400);
    for (int i = 0; i < 5; ++i) {
        session("s" + std::to_string(i), old);
    }
    auto r = rule("30 days");
    auto& spec = edit_spec<RedisRule>(r);
    spec.scan_count = 100;
    spec.hold = RedisHold{"legal_hold", "yes"};
    auto ctx = context();
    once_before_first_batch(ctx, [&] {
        cmd({"HSET", key("s1"), "last_seen", std::to_string(now())});
        cmd({"HSET", key("s2"), "legal_hold", "yes"});
    });
    const auto result = engine()->purge(r, ctx);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 3);
    EXPECT_EQ(result.counters.at("skipped_changed"), 1);
    EXPECT_EQ(result.counters.at("held"), 1);
    EXPECT_TRUE(exists("s1"));
    EXPECT_TRUE(exists("s2"));
    EXPECT_FALSE(exists("s0"));
    ASSERT_FALSE(m_journal.m_outcomes.empty());
    EXPECT_EQ(m_journal.m_outcomes.back().count, 3);
}

// A TTL given by the application after the read is not lengthened back to max_ttl.
TEST_F(RedisEngineTest, TtlShortenedAfterTheReadIsNotClamped) {
    const auto recent = std::to_string(now() - 60);
    session("a", recent);
    session("b", recent);
    auto r = rule("12 hours");
    auto& spec = edit_spec<RedisRule>(r);
    spec.scan_count = 100;
    spec.max_ttl = parse_duration("1 hour");
    auto ctx = context();
    once_before_first_batch(ctx, [&] { cmd({"EXPIRE", key("a"), "30"}); });
    const auto result = engine()->purge(r, ctx);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.counters.at("expired"), 1);
    EXPECT_LE(ttl_of("a"), 30);
    EXPECT_GT(ttl_of("b"), 3500);
}

// Batches are pipelined behind the next page's reads: each intent must still be journaled
// before its keys are touched, and settled (outcome) before the next intent.
TEST_F(RedisEngineTest, PipelinedBatchesJournalBeforeDeletingAndSettleInOrder) {
    const auto old = std::to_string(now() - 100 * 86400);
    const auto recent = std::to_string(now() - 60);
    for (int i = 0; i < 60; ++i) {
        session("due" + std::to_string(i), old);
    }
    for (int i = 0; i < 40; ++i) {
        session("keep" + std::to_string(i), recent);
    }
    struct CheckingJournal : RecordingJournal {
        std::function<bool(const std::string&)> exists;
        std::vector<std::string> order;
        std::size_t present_at_intent = 0;
        std::size_t gone_at_outcome = 0;
        std::string intent(const BatchIntent& b) override {
            order.push_back("I");
            for (const auto& k : b.keys) {
                present_at_intent += exists(k) ? 1 : 0;
            }
            return RecordingJournal::intent(b);
        }
        void outcome(const std::string& id, bool committed, std::int64_t count) override {
            order.push_back("O");
            for (const auto& k : m_intents.at(std::stoul(id)).keys) {
                gone_at_outcome += exists(k) ? 0 : 1;
            }
            RecordingJournal::outcome(id, committed, count);
        }
    } journal;
    journal.exists = [&](const std::string& k) { return cmd({"EXISTS", k}) == "1"; };
    auto r = rule("30 days");
    r.batch_size = 8;
    edit_spec<RedisRule>(r).scan_count = 7;
    auto ctx = context();
    ctx.journal = &journal;
    const auto result = engine()->purge(r, ctx);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 60);
    EXPECT_EQ(result.batches, 8); // 60 keys, 8 per batch
    EXPECT_EQ(journal.present_at_intent, 60U) << "a key was deleted before its intent";
    EXPECT_EQ(journal.gone_at_outcome, 60U) << "an outcome came before its batch ran";
    ASSERT_EQ(journal.order.size(), 16U);
    for (std::size_t i = 0; i < journal.order.size(); ++i) {
        EXPECT_EQ(journal.order[i], i % 2 == 0 ? "I" : "O")
            << "more than one batch in flight at " << i;
    }
    EXPECT_TRUE(lines(cmd({"KEYS", m_prefix + "due*"})).empty());
    EXPECT_EQ(lines(cmd({"KEYS", m_prefix + "keep*"})).size(), 40U);
}

// Intents are written by a journal thread while the scan goes on; a batch is sent only once its
// intent is durable. An intent that fails (audit log unwritable) stops the run with that batch
// and every later one unsent.
TEST_F(RedisEngineTest, FailedIntentSendsNoFurtherBatch) {
    const auto old = std::to_string(now() - 100 * 86400);
    for (int i = 0; i < 20; ++i) {
        session("s" + std::to_string(i), old);
    }
    struct FailingJournal : RecordingJournal {
        std::string intent(const BatchIntent& b) override {
            if (!m_intents.empty()) {
                throw std::runtime_error("audit log: disk full");
            }
            return RecordingJournal::intent(b);
        }
    } journal;
    auto r = rule("30 days");
    r.batch_size = 5;
    auto ctx = context();
    ctx.journal = &journal;
    EXPECT_THROW(engine()->purge(r, ctx), std::runtime_error);
    ASSERT_EQ(journal.m_intents.size(), 1U);
    ASSERT_EQ(journal.m_outcomes.size(), 1U);
    EXPECT_EQ(journal.m_outcomes[0].count, 5);
    EXPECT_EQ(lines(cmd({"KEYS", m_prefix + "s*"})).size(), 15U)
        << "a batch was sent without a durable intent";
}

// Batches call the scripts by SHA1; a script cache flushed mid-run (SCRIPT FLUSH, a failover)
// answers NOSCRIPT, and the batch is sent again with the script's body.
TEST_F(RedisEngineTest, ScriptCacheFlushedMidRunFallsBackToTheBody) {
    const auto old = std::to_string(now() - 100 * 86400);
    for (int i = 0; i < 12; ++i) {
        session("s" + std::to_string(i), old);
    }
    session("no-ttl", std::to_string(now() - 60));
    auto r = rule("30 days");
    r.batch_size = 5;
    auto& spec = edit_spec<RedisRule>(r);
    spec.max_ttl = parse_duration("1 hour");
    auto ctx = context();
    int flushes = 0;
    ctx.stop_requested = [&] {
        cmd({"SCRIPT", "FLUSH"}); // before every batch is sent
        ++flushes;
        return false;
    };
    const auto result = engine()->purge(r, ctx);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_GE(flushes, 4);
    EXPECT_EQ(result.processed, 12);
    EXPECT_EQ(result.counters.at("expired"), 1);
    EXPECT_GT(ttl_of("no-ttl"), 3500);
    ASSERT_EQ(m_journal.m_outcomes.size(), 4U);
    std::int64_t total = 0;
    for (const auto& o : m_journal.m_outcomes) {
        EXPECT_TRUE(o.committed);
        total += o.count;
    }
    EXPECT_EQ(total, 13);
    EXPECT_EQ(lines(cmd({"KEYS", m_prefix + "s*"})).size(), 0U);
}

// The delete script re-reads idle times with OBJECT IDLETIME, which does not touch the key even
// inside Lua: a key that became recent between the read and the batch is kept with its idle time
// intact (not reset to 0).
TEST_F(RedisEngineTest, IdleRecheckInTheScriptDoesNotTouchKeptKeys) {
    idle_key("a", 7200);
    idle_key("b", 7200);
    auto r = rule("1 hour", true);
    edit_spec<RedisRule>(r).scan_count = 100;
    auto ctx = context();
    // read as due; now idle 20 minutes only
    once_before_first_batch(ctx, [&] { set_idle("b", 1200); });
    const auto result = engine()->purge(r, ctx);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(result.counters.at("skipped_changed"), 1);
    EXPECT_FALSE(exists("a"));
    ASSERT_TRUE(exists("b"));
    EXPECT_GE(idle_of("b"), 1200) << "the script's re-check reset the idle time";
}

// With limits (no --force) the counting pass reads every key as the purge does and keeps the
// due keys (and keys to clamp), so the purge runs from them without a second SCAN; each batch
// still re-checks atomically: a key refreshed after the counting pass is kept. Long keys and
// clock texts (several LEB128 length bytes), ISO clocks, no-clock keys and clamps go through it.
TEST_F(RedisEngineTest, LimitsPassKeepsTheDueKeysAndThePurgeDoesNotScanAgain) {
    const auto t = now();
    const std::string long_name = "long-" + std::string(300, 'x');
    for (int i = 0; i < 6; ++i) {
        session("old" + std::to_string(i), std::to_string(t - 40 * 86400));
    }
    session(long_name, format_utc_seconds(TimePoint(std::chrono::seconds(t - 90 * 86400))) +
                           std::string(200, ' '));
    session("recent", std::to_string(t - 60));
    session("recent-no-ttl", std::to_string(t - 60));
    cmd({"SET", key("plain"), "x"});
    cmd({"EXPIRE", key("recent"), "60"});
    auto r = rule("30 days");
    r.limits = Limits{std::nullopt, 0.9};
    r.clock_null_due = true; // "plain" (no clock) is due too
    r.batch_size = 3;
    auto& spec = edit_spec<RedisRule>(r);
    spec.scan_count = 1000;
    spec.max_ttl = parse_duration("1 hour");
    auto ctx = context();
    // runs before each batch, after the counting pass
    once_before_first_batch(ctx, [&] {
        cmd({"HSET", key("old5"), "last_seen", std::to_string(now())});
        cmd({"HSET", key("old4"), "last_seen", std::to_string(now() - 50 * 86400)});
    });
    cmd({"CONFIG", "RESETSTAT"});
    const auto result = engine()->purge(r, ctx);
    const auto stats = cmd({"INFO", "commandstats"});
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.due, 8);
    EXPECT_EQ(result.processed, 7) << "old5 was refreshed after the counting pass";
    EXPECT_EQ(result.counters.at("skipped_changed"), 1);
    EXPECT_EQ(result.counters.at("expired"), 1);
    EXPECT_EQ(result.counters.at("no_ttl"), 9);
    EXPECT_TRUE(exists("old5"));
    EXPECT_FALSE(exists("old4")) << "a clock changed to another due epoch is still due";
    EXPECT_FALSE(exists(long_name));
    EXPECT_FALSE(exists("plain"));
    EXPECT_TRUE(exists("recent"));
    EXPECT_LE(ttl_of("recent"), 60);
    EXPECT_GT(ttl_of("recent-no-ttl"), 3500);
    EXPECT_NE(stats.find("cmdstat_scan:calls=1,"), std::string::npos)
        << "the purge scanned again:\n"
        << stats;
    std::size_t journaled = 0;
    for (const auto& i : m_journal.m_intents) {
        journaled += i.action == "delete" ? i.keys.size() : 0;
    }
    EXPECT_EQ(journaled, 8U);
}

// clock: idle with limits and a hold: the counting pass reads idle times only (no touch), keeps
// the idle-due keys, held ones included (it cannot read the hold); the batches from them re-check
// the idle time and read the hold. A key used again after the counting pass is kept, and neither
// it nor the kept idle key has its idle time reset.
TEST_F(RedisEngineTest, IdleLimitsPassKeepsKeysAndTheBatchesRecheck) {
    idle_key("old", 7200);
    idle_key("old-used-again", 7200);
    idle_key("held", 7200);
    cmd({"HSET", key("held"), "legal_hold", "yes"}); // HSET resets idle: set it again
    set_idle("held", 7200);
    idle_key("young", 600);
    auto r = rule("1 hour", true);
    r.limits = Limits{std::nullopt, 0.8};
    auto& spec = edit_spec<RedisRule>(r);
    spec.scan_count = 1000;
    spec.hold = RedisHold{"legal_hold", "yes"};
    auto ctx = context();
    once_before_first_batch(ctx, [&] { set_idle("old-used-again", 1200); });
    cmd({"CONFIG", "RESETSTAT"});
    const auto result = engine()->purge(r, ctx);
    const auto stats = cmd({"INFO", "commandstats"});
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.due, 3) << "held keys count as due in idle mode";
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(result.counters.at("held"), 1);
    EXPECT_EQ(result.counters.at("skipped_changed"), 1);
    EXPECT_FALSE(exists("old"));
    EXPECT_TRUE(exists("held"));
    ASSERT_TRUE(exists("old-used-again"));
    EXPECT_GE(idle_of("old-used-again"), 1200) << "the re-check reset the idle time";
    EXPECT_GE(idle_of("young"), 600) << "the counting pass reset the idle time";
    EXPECT_NE(stats.find("cmdstat_scan:calls=1,"), std::string::npos) << stats;
}

// Past the budget of kept keys the counting pass only counts, and the purge scans again: same
// result.
TEST_F(RedisEngineTest, LimitsPassOverItsBudgetScansAgain) {
    const auto t = now();
    for (int i = 0; i < 5; ++i) {
        session("old" + std::to_string(i), std::to_string(t - 40 * 86400));
    }
    session("recent", std::to_string(t - 60));
    auto r = rule("30 days");
    r.limits = Limits{std::nullopt, 0.9};
    edit_spec<RedisRule>(r).scan_count = 1000;
    set_redis_remember_budget(0);
    cmd({"CONFIG", "RESETSTAT"});
    const auto result = purge(r);
    const auto stats = cmd({"INFO", "commandstats"});
    set_redis_remember_budget(std::size_t{16} << 20);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.due, 5);
    EXPECT_EQ(result.processed, 5);
    EXPECT_TRUE(exists("recent"));
    EXPECT_NE(stats.find("cmdstat_scan:calls=2,"), std::string::npos) << stats;
}

// The delete script re-checks an epoch-seconds clock by the due condition itself, and any other
// clock text (ISO 8601, fractions) by its exact value: a clock rewritten to another text is kept.
TEST_F(RedisEngineTest, RecheckByDueConditionForEpochSecondsByValueOtherwise) {
    const auto t = now();
    session("epoch", std::to_string(t - 40 * 86400));
    session("epoch-refreshed", std::to_string(t - 40 * 86400));
    session("iso", format_utc_seconds(TimePoint(std::chrono::seconds(t - 90 * 86400))));
    session("fraction", std::to_string(t - 40 * 86400) + ".5");
    auto r = rule("30 days");
    edit_spec<RedisRule>(r).scan_count = 1000;
    auto ctx = context();
    once_before_first_batch(ctx, [&] {
        cmd({"HSET", key("epoch"), "last_seen", std::to_string(t - 41 * 86400)});
        cmd({"HSET", key("epoch-refreshed"), "last_seen", std::to_string(t)});
        cmd({"HSET", key("iso"), "last_seen",
             format_utc_seconds(TimePoint(std::chrono::seconds(t - 91 * 86400)))});
        cmd({"HSET", key("fraction"), "last_seen", std::to_string(t - 41 * 86400) + ".5"});
    });
    const auto result = engine()->purge(r, ctx);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 1);
    EXPECT_FALSE(exists("epoch"));
    EXPECT_TRUE(exists("epoch-refreshed"));
    EXPECT_TRUE(exists("iso")) << "changed text: not the value judged due";
    EXPECT_TRUE(exists("fraction"));
}

TEST_F(RedisEngineTest, AnonymizeIsRefusedClearly) {
    session("x", std::to_string(now() - 100 * 86400));
    auto r = rule("1 day");
    r.action = Action::anonymize;
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_NE(result.message.find("anonymize"), std::string::npos) << result.message;
    EXPECT_TRUE(exists("x"));
    const auto problems = engine()->check(r);
    ASSERT_FALSE(problems.empty());
    EXPECT_NE(problems[0].message.find("anonymize"), std::string::npos);
}

TEST_F(RedisEngineTest, RecordsPresent) {
    session("a", std::nullopt);
    session("b", std::nullopt);
    auto e = engine();
    const auto r = rule("1 day");
    EXPECT_EQ(e->records_present(r, "", {key("a"), key("b"), key("a")}), Presence::present);
    EXPECT_EQ(e->records_present(r, "", {key("gone1"), key("gone2")}), Presence::absent);
    EXPECT_EQ(e->records_present(r, "", {key("a"), key("gone")}), Presence::unknown);
}

TEST_F(RedisEngineTest, CheckPassesForASoundRule) {
    EXPECT_TRUE(engine()->check(rule("1 day", true)).empty());
    EXPECT_TRUE(engine()->check(rule("1 day")).empty());
}

// A private server: these tests stop it or set a password.
class RedisPrivateServerTest : public RedisEngineTest {
protected:
    RedisServer& server() override {
        static RedisServer own;
        return own;
    }
};

TEST_F(RedisPrivateServerTest, RestartMidScanFailsTheRunThenTheNextRunFinishes) {
    const auto old = std::to_string(now() - 100 * 86400);
    const auto recent = std::to_string(now() - 86400);
    for (int i = 0; i < 40; ++i) {
        session("due" + std::to_string(i), old);
    }
    for (int i = 0; i < 15; ++i) {
        session("keep" + std::to_string(i), recent);
    }
    auto r = rule("30 days");
    r.batch_size = 10;
    edit_spec<RedisRule>(r).scan_count = 10;

    auto ctx = context();
    int batches = 0;
    ctx.on_progress = [&](std::int64_t, std::int64_t) {
        if (++batches == 1) {
            cmd({"SAVE"}); // the restarted server comes back with this state
            server().stop();
            server().start();
        }
    };
    EXPECT_THROW(engine()->purge(r, ctx), UnavailableError);
    ASSERT_EQ(m_journal.m_outcomes.size(), 1U);
    EXPECT_EQ(m_journal.m_outcomes[0].count, 10);
    EXPECT_EQ(lines(cmd({"KEYS", m_prefix + "due*"})).size(), 30U);

    m_journal = RecordingJournal();
    const auto again = purge(r);
    EXPECT_EQ(again.status, RunResult::Status::ok) << again.message;
    EXPECT_EQ(again.processed, 30);
    EXPECT_TRUE(lines(cmd({"KEYS", m_prefix + "due*"})).empty());
    EXPECT_EQ(lines(cmd({"KEYS", m_prefix + "keep*"})).size(), 15U);
    cmd({"FLUSHALL"});
    cmd({"SAVE"}); // later restarts of this server start empty
}

TEST_F(RedisPrivateServerTest, ServerDownIsUnavailable) {
    server().stop();
    const auto r = rule("1 day");
    EXPECT_THROW(dry_run(r), UnavailableError);
    EXPECT_THROW(purge(r), UnavailableError);
    EXPECT_THROW(engine()->check(r), UnavailableError);
    server().start();
}

TEST_F(RedisPrivateServerTest, PasswordUserDbAndUnixSocketUrls) {
    const std::string password = "pa:ss@w%rd";
    const auto port = std::to_string(server().port());
    cmd({"HSET", key("in-db3"), "user", "x"}, 3);
    cmd({"ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "+@all"});
    cmd({"CONFIG", "SET", "requirepass", password});
    struct Restore {
        RedisServer& s;
        ~Restore() {
            // Back to no password for the other tests of this server.
            s.stop();
            s.start();
        }
    } restore{server()};

    auto dry_with = [&](const std::string& url) {
        Datastore store = m_store;
        store.spec = spec_ptr(RedisStore(Secret(url)));
        auto ctx = context();
        return make_redis_engine(store, m_config)->dry_run(rule("1 day"), ctx);
    };
    EXPECT_EQ(dry_with("redis://:pa%3Ass%40w%25rd@127.0.0.1:" + port + "/3").in_scope, 1);
    EXPECT_EQ(dry_with("redis://alice:alice-pw@127.0.0.1:" + port + "/3").in_scope, 1);
    EXPECT_EQ(dry_with("redis://:pa%3Ass%40w%25rd@127.0.0.1:" + port + "/4").in_scope, 0);
    EXPECT_EQ(
        dry_with("unix://" + server().socket_path() + "?db=3&password=pa%3Ass%40w%25rd").in_scope,
        1);
    EXPECT_EQ(dry_with("unix://alice:alice-pw@" + server().socket_path() + "?db=3").in_scope, 1);

    try {
        dry_with("redis://:wrong-secret@127.0.0.1:" + port + "/3");
        ADD_FAILURE() << "a wrong password was accepted";
    } catch (const UnavailableError& e) {
        EXPECT_EQ(std::string(e.what()).find("wrong-secret"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("authentication"), std::string::npos) << e.what();
    }
    EXPECT_THROW(dry_with("redis://127.0.0.1:" + port + "/3"), UnavailableError) << "no password";
}

TEST_F(RedisPrivateServerTest, BareSocketPathUsesDb0) {
    cmd({"HSET", key("k"), "user", "x"});
    Datastore store = m_store;
    store.spec = spec_ptr(RedisStore(Secret(server().socket_path())));
    auto ctx = context();
    EXPECT_EQ(make_redis_engine(store, m_config)->dry_run(rule("1 day"), ctx).in_scope, 1);
}

} // namespace
} // namespace retentiond::test
