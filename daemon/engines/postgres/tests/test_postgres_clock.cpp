// The clock guard: postgres rules stop when the host's clock and the database's disagree by more
// than daemon.max_clock_skew (a clock jump must not make a table due at once, nor keep it forever).
#include "contract/contract.hpp"
#include "postgres_kind.hpp"
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
        ctx.tz = find_zone("UTC");
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

} // namespace
} // namespace retentiond::test
