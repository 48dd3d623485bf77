// The clock guard: postgres rules stop when the host's clock and the database's disagree by more
// than daemon.max_clock_skew (a clock jump must not make a table due at once, nor keep it forever).
#include "contract/contract.hpp"
#include "pg_statements.hpp"
#include "postgres_kind.hpp"
#include "retentiond/duration.hpp"
#include "retentiond/timeutil.hpp"
#include "support/pg_cluster.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

namespace retentiond::test {
namespace {

class ClockSkew : public ::testing::Test {
protected:
    void SetUp() override {
        static int counter = 0;
        m_dsn = PgCluster::shared().create_database("skew_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        // now() seen by the engine's sessions is the real one shifted by `shift`.
        pg_exec(m_dsn, "CREATE TABLE accounts (id bigint PRIMARY KEY, last_login timestamptz);"
                       "INSERT INTO accounts SELECT g, now() - g * interval '1 day' "
                       "FROM generate_series(1, 100) g;"
                       "CREATE SCHEMA skewed; CREATE TABLE skewed.shift (d interval NOT NULL);"
                       "INSERT INTO skewed.shift VALUES ('0');"
                       "CREATE FUNCTION skewed.now() RETURNS timestamptz LANGUAGE sql STABLE "
                       "AS 'SELECT pg_catalog.now() + d FROM skewed.shift';");
        m_store.name = "db";
        m_store.kind = &postgres_kind();
        m_store.spec = spec_ptr(
            PostgresStore(Secret(m_dsn + " options='-c search_path=skewed,pg_catalog,public'")));
        m_rule.name = "accounts";
        m_rule.datastore = "db";
        m_rule.kind = &postgres_kind();
        m_rule.retain = parse_duration("30 days");
        m_rule.limits = Limits{std::nullopt, 1.0};
        PostgresRule pg;
        pg.table = "accounts";
        pg.key = {"id"};
        pg.clock = {"last_login"};
        m_rule.spec = spec_ptr(pg);
    }

    RunResult purge() {
        auto engine = make_postgres_engine(m_store, m_config);
        RunContext ctx;
        ctx.run_id = "skew";
        ctx.tz = find_zone(m_zone);
        ctx.audit_key = &m_key;
        ctx.journal = &m_journal;
        return engine->purge(m_rule, ctx);
    }

    std::string m_dsn;
    Datastore m_store;
    Rule m_rule;
    Config m_config;
    Secret m_key{"skew-key"};
    RecordingJournal m_journal;
    std::string m_zone = "UTC";
};

TEST_F(ClockSkew, DatabaseClockFarAheadStopsTheRuleAndTouchesNothing) {
    pg_exec(m_dsn, "UPDATE skewed.shift SET d = '400 days'"); // everything would be due
    const auto result = purge();
    EXPECT_EQ(result.status, RunResult::Status::refused);
    EXPECT_NE(result.message.find("max_clock_skew 300 s"), std::string::npos) << result.message;
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT count(*) FROM accounts"), "100");
    ASSERT_EQ(m_journal.m_events.size(), 1U);
    EXPECT_EQ(m_journal.m_events[0].first, "refusal");
    EXPECT_EQ(m_journal.m_events[0].second.at("reason"), "clock_skew");
    EXPECT_TRUE(m_journal.m_intents.empty());
}

TEST_F(ClockSkew, WithinTheAllowedSkewTheRuleRuns) {
    pg_exec(m_dsn, "UPDATE skewed.shift SET d = '-2 minutes'");
    const auto result = purge();
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 70); // 31..100 days old, judged by the database's (skewed) now()
}

TEST_F(ClockSkew, TheLimitIsConfigurable) {
    pg_exec(m_dsn, "UPDATE skewed.shift SET d = '-10 minutes'");
    EXPECT_EQ(purge().status, RunResult::Status::refused);
    m_config.daemon.max_clock_skew = std::chrono::seconds(3600);
    EXPECT_EQ(purge().status, RunResult::Status::ok);
}

// Due is clock + retain <= now in the rule's time zone, and across the end of DST that is not
// monotonic: with now = 2026-10-26 02:30 CET and retain 1 day, 02:40 CEST on the 25th (00:40Z) is
// not due (+1 day = 02:40 CET on the 26th, 10 minutes ahead) while 02:20 CET (01:20Z), later, is.
// The engine proves rows due by comparison only up to a bound found once per run; the bound must
// keep the step back of the offset (1 h) in hand, or 00:40Z would go 10 minutes early.
TEST_F(ClockSkew, AcrossTheEndOfDaylightSavingTimeNothingGoesEarly) {
    pg_exec(m_dsn, "TRUNCATE accounts;"
                   "INSERT INTO accounts SELECT row_number() OVER (), c FROM generate_series("
                   "timestamptz '2026-10-24 22:00:00+00', timestamptz '2026-10-25 04:00:00+00',"
                   " interval '1 minute') c;"
                   "UPDATE skewed.shift SET d = timestamptz '2026-10-26 01:30:00+00' - "
                   "pg_catalog.now();"
                   "SET TimeZone = 'Europe/Paris';"
                   "CREATE TABLE due AS SELECT id FROM accounts"
                   " WHERE last_login + interval '1 day' <= skewed.now();");
    // The data holds the case: a row not due before a row that is.
    ASSERT_EQ(pg_scalar(m_dsn, "SELECT EXISTS (SELECT FROM accounts a, accounts b WHERE"
                               " a.last_login < b.last_login AND b.id IN (SELECT id FROM due)"
                               " AND a.id NOT IN (SELECT id FROM due))"),
              "t");
    m_rule.retain = parse_duration("1 day");
    m_config.daemon.max_clock_skew = std::chrono::hours(24 * 3650);
    m_zone = "Europe/Paris";
    const auto result = purge();
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(std::to_string(result.processed), pg_scalar(m_dsn, "SELECT count(*) FROM due"));
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT count(*) FROM accounts WHERE id IN (SELECT id FROM due)"),
              "0");
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT count(*) FROM accounts"),
              pg_scalar(m_dsn, "SELECT 361 - count(*) FROM due"))
        << "a row not due was deleted";
}

TEST(DueStepBack, TheLargestOffsetChangeAroundTheDatesTheArithmeticTouchesAndClamps) {
    const auto now = *parse_timestamp("2026-12-06T12:00:00Z", "", nullptr);
    EXPECT_EQ(pg::due_step_back("UTC", parse_duration("1 year"), now), "0 seconds");
    // Paris, 1 day back from 6 December: no change of offset within a week either side.
    EXPECT_EQ(pg::due_step_back("Europe/Paris", parse_duration("1 day"), now), "0 seconds");
    // 1 year back spans the end of DST (25 October 2026, one hour back).
    EXPECT_EQ(pg::due_step_back("Europe/Paris", parse_duration("1 year"), now), "3600 seconds");
    // DST starting counts too: a local time in the skipped hour is read with the old offset.
    const auto spring = *parse_timestamp("2029-03-26T12:00:00Z", "", nullptr);
    EXPECT_EQ(pg::due_step_back("Europe/Paris", parse_duration("1 day"), spring), "3600 seconds");
    EXPECT_EQ(pg::due_step_back("Australia/Lord_Howe", parse_duration("1 year"), now),
              "1800 seconds");
    // 7 months back from 28 February 2025: 29 to 31 July all land on 28 February.
    const auto feb = *parse_timestamp("2025-02-28T17:00:00Z", "", nullptr);
    EXPECT_EQ(pg::due_step_back("UTC", parse_duration("7 months"), feb), "86400 seconds");
    EXPECT_EQ(pg::due_step_back("UTC", parse_duration("210 days"), feb), "0 seconds");
    EXPECT_EQ(pg::due_step_back("Nowhere/Atlantis", parse_duration("1 day"), now), "50 hours");
}

} // namespace
} // namespace retentiond::test
