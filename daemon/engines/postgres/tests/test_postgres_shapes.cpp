// The shapes real deployments have: partitioned tables (range with a DEFAULT partition and
// sub-partitions, list, hash), inheritance children, views, a trigger that cancels deletes,
// row-level security that hides rows, and the advisories `check` gives for them. Every due row is
// processed, or the run fails and says why: never "ok" with due rows left.
#include "contract/contract.hpp"
#include "postgres_kind.hpp"
#include "retentiond/timeutil.hpp"
#include "support/pg_cluster.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include <functional>
#include <unistd.h>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;

class Shapes : public ::testing::Test {
protected:
    void SetUp() override {
        static int counter = 0;
        m_dsn = PgCluster::shared().create_database("shapes_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        m_store.name = "db";
        m_store.kind = &postgres_kind();
        m_store.spec = spec_ptr(PostgresStore(Secret(m_dsn)));
        m_engine = make_postgres_engine(m_store, m_config);
    }

    Rule rule(const std::string& table, std::vector<std::string> key = {"id", "time"}) {
        Rule r;
        r.name = "events";
        r.datastore = "db";
        r.kind = &postgres_kind();
        r.retain = parse_duration("30 days");
        r.limits = Limits{std::nullopt, 1.0};
        r.batch_size = 7;
        PostgresRule pg;
        pg.table = table;
        pg.key = std::move(key);
        pg.clock = {"time"};
        r.spec = spec_ptr(pg);
        return r;
    }

    RunResult purge(const Rule& r,
                    std::function<void(std::int64_t, std::int64_t)> on_progress = nullptr) {
        RunContext ctx;
        ctx.on_progress = std::move(on_progress);
        ctx.run_id = "shapes";
        ctx.tz = find_zone("UTC");
        ctx.audit_key = &m_key;
        ctx.journal = &m_journal;
        return m_engine->purge(r, ctx);
    }

    std::int64_t count(const std::string& where) {
        pqxx::connection c(m_dsn);
        pqxx::read_transaction tx(c);
        return tx.exec1("SELECT count(*) FROM " + where)[0].as<std::int64_t>();
    }

    std::int64_t journaled_keys() const {
        std::int64_t n = 0;
        for (const auto& i : m_journal.m_intents) {
            n += static_cast<std::int64_t>(i.keys.size());
        }
        return n;
    }

    std::string m_dsn;
    Datastore m_store;
    Config m_config;
    std::unique_ptr<Engine> m_engine;
    Secret m_key{"shapes-key"};
    RecordingJournal m_journal;
};

// 30 monthly partitions' worth of rows: one row every 2 days over the last 400 days.
constexpr const char* k_rows =
    "SELECT g, now() - g * interval '2 days' FROM generate_series(1, 200) g";

TEST_F(Shapes, RangePartitionsWithADefaultAndSubPartitionsAreEachWalked) {
    pg_exec(m_dsn,
            std::string("CREATE TABLE ev (id bigint, time timestamptz NOT NULL, PRIMARY KEY (id, "
                        "time)) PARTITION BY RANGE (time);"
                        "CREATE TABLE ev_old PARTITION OF ev FOR VALUES FROM (MINVALUE) TO "
                        "(now() - interval '200 days') PARTITION BY HASH (id);"
                        "CREATE TABLE ev_old0 PARTITION OF ev_old FOR VALUES WITH (MODULUS 2, "
                        "REMAINDER 0);"
                        "CREATE TABLE ev_old1 PARTITION OF ev_old FOR VALUES WITH (MODULUS 2, "
                        "REMAINDER 1);"
                        "CREATE TABLE ev_mid PARTITION OF ev FOR VALUES FROM (now() - interval "
                        "'200 days') TO (now() - interval '20 days');"
                        "CREATE TABLE ev_default PARTITION OF ev DEFAULT;"
                        "INSERT INTO ev ") +
                k_rows);
    const std::int64_t due = count("ev WHERE time <= now() - interval '30 days'");
    ASSERT_GT(due, 150);
    const auto result = purge(rule("ev"));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, due);
    EXPECT_EQ(count("ev WHERE time <= now() - interval '30 days'"), 0);
    EXPECT_EQ(count("ev"), 200 - due);
    EXPECT_EQ(journaled_keys(), due);
    EXPECT_EQ(result.counters.at("verification.remaining"), 0);
}

TEST_F(Shapes, ListPartitionsAndInheritanceChildrenAreWalkedToo) {
    pg_exec(m_dsn, std::string("CREATE TABLE lst (id bigint, kind text NOT NULL, time timestamptz, "
                               "PRIMARY KEY (id, kind)) PARTITION BY LIST (kind);"
                               "CREATE TABLE lst_a PARTITION OF lst FOR VALUES IN ('a');"
                               "CREATE TABLE lst_b PARTITION OF lst FOR VALUES IN ('b');"
                               "INSERT INTO lst SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE "
                               "'b' END, now() - g * interval '2 days' FROM generate_series(1, "
                               "200) g;"
                               "CREATE TABLE inh (id bigint PRIMARY KEY, time timestamptz);"
                               "CREATE TABLE inh_child (LIKE inh INCLUDING ALL) INHERITS (inh);"
                               "INSERT INTO inh ") +
                       k_rows + " WHERE g <= 100; INSERT INTO inh_child " + k_rows +
                       " WHERE g > 100");
    const auto listed = purge(rule("lst", {"id", "kind"}));
    EXPECT_EQ(listed.status, RunResult::Status::ok) << listed.message;
    EXPECT_EQ(count("lst WHERE time <= now() - interval '30 days'"), 0);
    EXPECT_EQ(count("lst"), 14); // 2-day steps: g <= 14 is within 30 days

    const auto inherited = purge(rule("inh", {"id"}));
    EXPECT_EQ(inherited.status, RunResult::Status::ok) << inherited.message;
    EXPECT_EQ(count("ONLY inh WHERE time <= now() - interval '30 days'"), 0);
    EXPECT_EQ(count("inh_child"), 0) << "every child row was due";
    EXPECT_EQ(count("inh"), 14) << "the parent's own recent rows stay";
}

TEST_F(Shapes, ATriggerThatCancelsDeletesFailsTheRunWithTheCount) {
    pg_exec(m_dsn, std::string("CREATE TABLE plain (id bigint PRIMARY KEY, time timestamptz);"
                               "INSERT INTO plain ") +
                       k_rows +
                       ";CREATE FUNCTION keep_odd() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$BEGIN IF OLD.id % 2 = 1 THEN RETURN NULL; END IF; RETURN OLD; END$$;"
                       "CREATE TRIGGER keep BEFORE DELETE ON plain FOR EACH ROW EXECUTE "
                       "FUNCTION keep_odd();");
    const auto r = rule("plain", {"id"});
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_THAT(result.message, HasSubstr("still due after the run"));
    EXPECT_GT(result.counters.at("verification.remaining"), 50);

    const auto advice = m_engine->check(r);
    ASSERT_FALSE(advice.empty());
    EXPECT_TRUE(advice.front().warning) << "a warning, not a refusal";
    EXPECT_THAT(advice.front().message, HasSubstr("trigger keep (BEFORE DELETE) on plain"));
}

// A trigger that turns the delete into an update (a soft delete) writes the row in the run's own
// transaction: the row is still due, and the run still fails.
TEST_F(Shapes, ATriggerThatTurnsDeletesIntoUpdatesFailsTheRunToo) {
    pg_exec(m_dsn, std::string("CREATE TABLE soft (id bigint PRIMARY KEY, time timestamptz, "
                               "deleted boolean NOT NULL DEFAULT false); INSERT INTO soft ") +
                       k_rows +
                       ";CREATE FUNCTION soft_delete() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$BEGIN UPDATE soft SET deleted = true WHERE id = OLD.id; RETURN NULL; "
                       "END$$; CREATE TRIGGER soft BEFORE DELETE ON soft FOR EACH ROW EXECUTE "
                       "FUNCTION soft_delete();");
    const auto result = purge(rule("soft", {"id"}));
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_THAT(result.message, HasSubstr("still due after the run"));
    EXPECT_EQ(result.counters.at("verification.remaining"), count("soft WHERE deleted"));
    EXPECT_GT(count("soft WHERE deleted"), 150);
}

// Rows another transaction inserts while the run goes on, with a clock already due, land where
// the walk will not pass: they are the next run's, and this run is not failed for them.
TEST_F(Shapes, RowsOthersWriteDuringTheRunAreTheNextRunsNotAFailure) {
    pg_exec(m_dsn, std::string("CREATE TABLE late (id bigint PRIMARY KEY, time timestamptz);"
                               "INSERT INTO late ") +
                       k_rows + ";");
    bool inserted = false;
    auto r = rule("late", {"id"});
    r.batch_size = 50;
    const auto result = purge(r, [&](std::int64_t, std::int64_t) {
        if (!inserted) { // after the first batch: on pages the walk did not count
            pg_exec(m_dsn, "INSERT INTO late SELECT 1000 + g, now() - interval '90 days' FROM "
                           "generate_series(1, 500) g");
            inserted = true;
        }
    });
    ASSERT_TRUE(inserted);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.counters.at("verification.remaining"), 0);
    EXPECT_GT(count("late WHERE id > 1000"), 0) << "the walk reached every inserted row";
    const auto next = purge(r);
    EXPECT_EQ(next.status, RunResult::Status::ok) << next.message;
    EXPECT_EQ(count("late WHERE time < now() - interval '30 days'"), 0);
}

TEST_F(Shapes, RowLevelSecurityThatHidesRowsFailsTheRun) {
    pg_exec(m_dsn, std::string("CREATE TABLE secret (id bigint PRIMARY KEY, time timestamptz);"
                               "INSERT INTO secret ") +
                       k_rows +
                       ";ALTER TABLE secret ENABLE ROW LEVEL SECURITY;"
                       "CREATE POLICY half ON secret USING (id % 2 = 0);"
                       "CREATE ROLE purger LOGIN; GRANT SELECT, DELETE ON secret TO purger;");
    Datastore as_purger = m_store;
    as_purger.spec = spec_ptr(PostgresStore(Secret(m_dsn + " user=purger")));
    const auto engine = make_postgres_engine(as_purger, m_config);
    RunContext ctx;
    ctx.run_id = "rls";
    ctx.tz = find_zone("UTC");
    ctx.audit_key = &m_key;
    ctx.journal = &m_journal;
    const auto r = rule("secret", {"id"});
    const auto result = engine->purge(r, ctx);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_THAT(result.message, HasSubstr("row-level security"));
    EXPECT_EQ(count("secret"), 200) << "nothing deleted";
    const auto advice = engine->check(r);
    ASSERT_FALSE(advice.empty());
    EXPECT_FALSE(advice.front().warning) << "a refusal";
}

TEST_F(Shapes, AViewIsRefusedAndNothingIsTouched) {
    pg_exec(m_dsn, std::string("CREATE TABLE base (id bigint PRIMARY KEY, time timestamptz);"
                               "INSERT INTO base ") +
                       k_rows + "; CREATE VIEW recent AS SELECT * FROM base;");
    const auto r = rule("recent", {"id"});
    const auto result = purge(r);
    EXPECT_NE(result.status, RunResult::Status::ok);
    EXPECT_THAT(result.message, HasSubstr("is a view"));
    EXPECT_EQ(count("base"), 200);
    const auto advice = m_engine->check(r);
    ASSERT_FALSE(advice.empty());
    EXPECT_THAT(advice.front().message, HasSubstr("is a view"));
    EXPECT_FALSE(advice.front().warning);
}

TEST_F(Shapes, CheckSaysWhichIndexAForeignKeyAndALargeTableNeed) {
    pg_exec(m_dsn, "CREATE TABLE big (id bigint PRIMARY KEY, time timestamptz);"
                   "INSERT INTO big SELECT g, now() - g * interval '1 minute' "
                   "FROM generate_series(1, 120000) g; ANALYZE big;"
                   "CREATE TABLE child (id bigint PRIMARY KEY, big_id bigint REFERENCES big "
                   "ON DELETE CASCADE);");
    const auto advice = m_engine->check(rule("big", {"id"}));
    std::string all;
    for (const auto& d : advice) {
        EXPECT_TRUE(d.warning) << d.message;
        all += d.message + "\n";
    }
    EXPECT_THAT(all, HasSubstr("CREATE INDEX ON child (big_id);"));
    EXPECT_THAT(all, HasSubstr("no index on its clock time"));
    EXPECT_THAT(all, HasSubstr("CREATE INDEX ON \"big\" (\"time\");"));
}

} // namespace
} // namespace retentiond::test
