// The path a run takes (pg_paths.cpp): a keyset walk of the clock's btree index when few rows are
// due, the page walk otherwise; and the verification after the last batch, which counts the rows
// still due unless the run proves none can remain (nothing else wrote to the cluster, no trigger
// or rule, every selected row deleted).
#include "contract/contract.hpp"
#include "postgres_kind.hpp"
#include "retentiond/timeutil.hpp"
#include "support/pg_cluster.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include <unistd.h>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class Paths : public ::testing::Test {
protected:
    void SetUp() override {
        static int counter = 0;
        m_dsn = PgCluster::shared().create_database("paths_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        m_store.name = "db";
        m_store.kind = &postgres_kind();
        m_store.spec = spec_ptr(PostgresStore(Secret(m_dsn)));
        m_engine = make_postgres_engine(m_store, m_config);
    }

    // acc: `rows` rows, one due every `every` rows; 12 of the due rows share one clock value so
    // that batches of 5 split ties; `held` of the due rows are held. Index on the clock unless
    // told.
    void load(int rows, int every, int held, bool index = true) {
        pg_exec(m_dsn, "CREATE TABLE acc (id bigint PRIMARY KEY, time timestamptz, held boolean "
                       "NOT NULL DEFAULT false, done boolean NOT NULL DEFAULT false) "
                       "WITH (autovacuum_enabled = false);"
                       "INSERT INTO acc (id, time) SELECT g, CASE WHEN g % " +
                           std::to_string(every) +
                           " <> 0 THEN now() - g % 300 * interval '1 day' WHEN g % 7 = 0 THEN "
                           "'2020-01-01 00:00:00+00' ELSE now() - interval '400 days' - g * "
                           "interval '1 minute' END FROM generate_series(1, " +
                           std::to_string(rows) + ") g;" +
                           "UPDATE acc SET held = true WHERE id IN (SELECT id FROM acc WHERE "
                           "time < now() - interval '365 days' ORDER BY id LIMIT " +
                           std::to_string(held) + ");" +
                           (index ? "CREATE INDEX ON acc (time);" : ""));
        pg_exec(m_dsn, "VACUUM ANALYZE acc");
    }

    Rule rule(Action action = Action::remove) {
        Rule r;
        r.name = "accounts";
        r.datastore = "db";
        r.kind = &postgres_kind();
        r.retain = parse_duration("365 days");
        r.limits = Limits{std::nullopt, 1.0};
        r.batch_size = 5;
        r.action = action;
        PostgresRule pg;
        pg.table = "acc";
        pg.key = {"id"};
        pg.clock = {"time"};
        pg.hold = PgHold{"held", PgHold::Kind::equals, "true"};
        if (action == Action::anonymize) {
            pg.mark = "done";
            r.anonymize = {{"time", Strategy{}, {}}};
        }
        r.spec = spec_ptr(pg);
        return r;
    }

    RunResult purge(const Rule& r, const std::string& zone = "UTC") {
        RunContext ctx;
        ctx.run_id = "paths";
        ctx.tz = find_zone(zone);
        ctx.audit_key = &m_key;
        ctx.journal = &m_journal;
        return m_engine->purge(r, ctx);
    }

    std::int64_t count(const std::string& where) {
        return std::stoll(pg_scalar(m_dsn, "SELECT count(*) FROM acc WHERE " + where));
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
    Secret m_key{"paths-key"};
    RecordingJournal m_journal;
};

constexpr const char* k_due = "time <= now() - interval '365 days'";

TEST_F(Paths, FewDueRowsFollowTheClockIndexAcrossTiesAndHolds) {
    load(3000, 50, 3); // 60 due, 3 of them held, 8 sharing one clock value
    const auto due = count(std::string(k_due) + " AND NOT held");
    const auto kept = count("NOT (" + std::string(k_due) + ") OR held");
    ASSERT_EQ(due, 57);
    ASSERT_GE(count("time = '2020-01-01 00:00:00+00'"), 8);
    const auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_THAT(result.path, StartsWith("index "));
    EXPECT_THAT(result.path, HasSubstr("acc_time_idx"));
    EXPECT_EQ(result.due, due);
    EXPECT_EQ(result.processed, due);
    EXPECT_EQ(journaled_keys(), due);
    EXPECT_EQ(count(std::string(k_due) + " AND NOT held"), 0);
    EXPECT_EQ(count("true"), kept); // every other row untouched, the held ones included
    EXPECT_EQ(result.counters.at("verification.remaining"), 0);
}

// The index path walks the clock's order, not the order of its text: in Europe/Paris the hour
// after the end of summer time prints "02:10:00+01" below "02:20:00+02" though it comes after it.
// Sorting by the text (the output column was once named like the clock) let the keyset jump past
// rows of the first 02:xx hour, which the verification then found still due. Both index paths:
// clock ranges (delete) and the selection in (clock, ctid) order (anonymize with a mark).
TEST_F(Paths, TheIndexPathFollowsTheClockAcrossTheEndOfSummerTime) {
    for (const Action action : {Action::remove, Action::anonymize}) {
        SCOPED_TRACE(action == Action::remove ? "delete" : "anonymize");
        pg_exec(m_dsn, "DROP TABLE IF EXISTS acc");
        load(3000, 3001, 0); // no due row yet
        // 25 due rows, one every 10 minutes from 2025-10-25 23:00Z (01:00 CEST) to 03:00Z (04:00
        // CET): the local hour 02:00-03:00 happens twice, first at +02 then at +01.
        pg_exec(m_dsn, "INSERT INTO acc (id, time) SELECT g, '2025-10-25 23:00:00+00'::timestamptz "
                       "+ (g - 10001) * interval '10 minutes' FROM generate_series(10001, 10025) g;"
                       "ANALYZE acc");
        Rule r = rule(action);
        edit_spec<PostgresRule>(r).hold.reset();
        m_journal = RecordingJournal();
        const auto result = purge(r, "Europe/Paris");
        EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
        EXPECT_THAT(result.path, StartsWith("index "));
        EXPECT_EQ(result.processed, 25);
        EXPECT_EQ(count(action == Action::remove ? "id > 10000" : "done"),
                  action == Action::remove ? 0 : 25);
        for (const auto& i : m_journal.m_intents) {
            EXPECT_LE(i.keys.size(), 5U); // batch_size
        }
    }
}

TEST_F(Paths, ManyDueRowsOrNoClockIndexTakeThePageWalk) {
    load(600, 2, 0); // half due
    auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.path, "pages");
    EXPECT_EQ(count(k_due), 0);

    pg_exec(m_dsn, "DROP TABLE acc");
    load(3000, 50, 0, false); // few due, no index
    result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.path, "pages");
    EXPECT_EQ(result.processed, 60);
    EXPECT_EQ(count(k_due), 0);
}

TEST_F(Paths, AnonymizeWithAMarkFollowsTheIndexToo) {
    load(3000, 50, 0);
    const auto result = purge(rule(Action::anonymize));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_THAT(result.path, StartsWith("index "));
    EXPECT_EQ(result.processed, 60);
    EXPECT_EQ(count("done"), 60);
    EXPECT_EQ(count("done AND time IS NOT NULL"), 0);
}

TEST_F(Paths, ACancellingTriggerOnTheIndexPathFailsTheRunWithTheRowsLeft) {
    load(3000, 50, 0);
    pg_exec(m_dsn, "CREATE FUNCTION keep_odd() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "IF OLD.id % 100 = 50 THEN RETURN NULL; END IF; RETURN OLD; END $$;"
                   "CREATE TRIGGER keep BEFORE DELETE ON acc FOR EACH ROW EXECUTE FUNCTION "
                   "keep_odd();");
    const auto left = count(std::string(k_due) + " AND id % 100 = 50");
    ASSERT_GT(left, 0);
    const auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_THAT(result.path, StartsWith("index "));
    EXPECT_EQ(result.counters.at("verification.remaining"), left);
    EXPECT_THAT(result.message, HasSubstr("still due after the run"));
}

TEST_F(Paths, AQuietRunProvesNothingIsLeftWithoutCounting) {
    load(600, 2, 0);
    const auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.counters.at("verification.remaining"), 0);
    EXPECT_EQ(result.counters.count("verification.proven_without_count"), 1U);
}

TEST_F(Paths, AnotherWriterOrATriggerMakesTheRunCount) {
    load(600, 2, 0);
    {
        // A transaction with an id, open across the whole run: its rows could land anywhere.
        pqxx::connection other(m_dsn);
        pqxx::work tx(other);
        tx.exec("SELECT pg_current_xact_id()");
        const auto result = purge(rule());
        EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
        EXPECT_EQ(result.counters.at("verification.remaining"), 0);
        EXPECT_EQ(result.counters.count("verification.proven_without_count"), 0U);
    }
    pg_exec(m_dsn, "INSERT INTO acc (id, time) SELECT g, now() - interval '400 days' FROM "
                   "generate_series(10001, 10100) g;"
                   "CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN "
                   "NULL; END $$;"
                   "CREATE TRIGGER audit_deletes AFTER DELETE ON acc FOR EACH ROW EXECUTE "
                   "FUNCTION noop();");
    const auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 100);
    EXPECT_EQ(result.counters.at("verification.remaining"), 0);
    EXPECT_EQ(result.counters.count("verification.proven_without_count"), 0U);
}

} // namespace
} // namespace retentiond::test
