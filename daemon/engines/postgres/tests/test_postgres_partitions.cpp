// Whole partitions (pg_partitions.cpp): a leaf of a range on the clock whose every row is due is
// detached and dropped (or kept detached) in one transaction with one partition-level audit
// intent; a leaf with no due row is not read; a held row, a lock that does not come, or
// `partitions: rows` sends the leaf through the batches. `audit prove` answers by the bounds.
#include "contract/contract.hpp"
#include "postgres_kind.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/timeutil.hpp"
#include "support/pg_cluster.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;

class Partitions : public ::testing::Test {
protected:
    void SetUp() override {
        static int counter = 0;
        m_dsn = PgCluster::shared().create_database("parts_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        m_store.name = "db";
        m_store.kind = &postgres_kind();
        m_store.spec = spec_ptr(PostgresStore(Secret(m_dsn)));
        m_engine = make_postgres_engine(m_store, m_config);
        // ev: 12 partitions of 30 days, the newest ending 30 days from now, one row a day.
        // Retention 100 days: the 7 oldest are wholly due, one straddles the cutoff, 4 are not due.
        std::string sql = "CREATE TABLE ev (id bigint, time timestamptz NOT NULL, held boolean "
                          "NOT NULL DEFAULT false, PRIMARY KEY (id, time)) "
                          "PARTITION BY RANGE (time);";
        for (int i = 0; i < 12; ++i) {
            const auto from = std::to_string(330 - 30 * i);
            const auto to = std::to_string(300 - 30 * i);
            sql += "CREATE TABLE ev_" + std::to_string(i) +
                   " PARTITION OF ev FOR VALUES FROM (date_trunc('day', now()) - interval '" +
                   from + " days') TO (date_trunc('day', now()) - interval '" + to + " days');";
        }
        sql += "INSERT INTO ev (id, time) SELECT g, date_trunc('day', now()) - interval '329 days' "
               "+ g * interval '1 day' + interval '1 hour' FROM generate_series(0, 350) g;"
               "ANALYZE ev;";
        pg_exec(m_dsn, sql);
    }

    Rule rule(PostgresRule::Partitions mode = PostgresRule::Partitions::drop) {
        Rule r;
        r.name = "events";
        r.datastore = "db";
        r.kind = &postgres_kind();
        r.retain = parse_duration("100 days");
        r.limits = Limits{std::nullopt, 1.0};
        r.batch_size = 7;
        PostgresRule pg;
        pg.table = "ev";
        pg.key = {"id", "time"};
        pg.clock = {"time"};
        pg.hold = PgHold{"held", PgHold::Kind::equals, "true"};
        pg.partitions = mode;
        pg.lock_timeout = std::chrono::milliseconds(300);
        r.spec = spec_ptr(pg);
        return r;
    }

    RunResult purge(const Rule& r, BatchJournal* journal = nullptr) {
        RunContext ctx;
        ctx.run_id = "parts";
        ctx.tz = find_zone("UTC");
        ctx.audit_key = &m_key;
        ctx.journal = journal != nullptr ? journal : &m_journal;
        return m_engine->purge(r, ctx);
    }

    std::int64_t count(const std::string& from_where) {
        return std::stoll(pg_scalar(m_dsn, "SELECT count(*) FROM " + from_where));
    }

    std::vector<const BatchIntent*> partition_intents() const {
        std::vector<const BatchIntent*> out;
        for (const auto& i : m_journal.m_intents) {
            if (i.partition) {
                out.push_back(&i);
            }
        }
        return out;
    }

    std::string m_dsn;
    Datastore m_store;
    Config m_config;
    std::unique_ptr<Engine> m_engine;
    Secret m_key{"parts-key-0123456789-0123456789"};
    RecordingJournal m_journal;
};

constexpr const char* k_due = "ev WHERE time + interval '100 days' <= now()";

TEST_F(Partitions, WhollyDuePartitionsAreDroppedWithOnePartitionLevelIntentEach) {
    const auto due = count(k_due);
    const auto whole_rows = count("ev WHERE time < date_trunc('day', now()) - interval '120 days'");
    ASSERT_EQ(whole_rows, 209);
    const auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.due, due);
    EXPECT_EQ(result.processed, due);
    EXPECT_EQ(count(k_due), 0);
    EXPECT_EQ(result.counters.at("partitions.dropped"), 7);
    EXPECT_EQ(result.counters.at("partitions.skipped_not_due"), 4);
    for (int i = 0; i < 7; ++i) {
        EXPECT_EQ(pg_scalar(m_dsn, "SELECT to_regclass('ev_" + std::to_string(i) + "') IS NULL"),
                  "t");
    }
    const auto intents = partition_intents();
    ASSERT_EQ(intents.size(), 7U);
    std::int64_t rows = 0;
    for (const auto* i : intents) {
        EXPECT_TRUE(i->keys.empty()); // no digest per key unless partition_digests: keys
        EXPECT_EQ(i->partition->disposition, "dropped");
        EXPECT_EQ(i->partition->key_index, 1);
        EXPECT_LT(i->partition->from_us.value_or(0), i->partition->to_us);
        rows += i->partition->rows;
    }
    EXPECT_EQ(rows, whole_rows);
    // The boundary partition went through the batches: one digest per key.
    std::int64_t keys = 0;
    for (const auto& i : m_journal.m_intents) {
        keys += static_cast<std::int64_t>(i.keys.size());
    }
    EXPECT_EQ(keys, due - whole_rows);
}

// The row count a dropped partition's intent carries: by default the planner's estimate (no row
// read), labelled as such; `partition_rows: exact` counts the detached leaf in the transaction.
TEST_F(Partitions, APartitionsRowCountIsThePlannersEstimateUnlessExactIsAsked) {
    // Five rows arrive in ev_0 after the ANALYZE of SetUp: the estimate no longer says them.
    const std::string late = "INSERT INTO ev (id, time) SELECT g, date_trunc('day', now()) - "
                             "interval '310 days' + interval '2 hours' FROM generate_series(1000, "
                             "1004) g";
    for (const bool exact : {false, true}) {
        SCOPED_TRACE(exact ? "partition_rows: exact" : "partition_rows: estimate");
        if (exact) {
            SetUp(); // a fresh database
        }
        pg_exec(m_dsn, late);
        m_journal = RecordingJournal();
        Rule r = rule();
        edit_spec<PostgresRule>(r).hold.reset(); // with a hold, whole leaves are counted first
        edit_spec<PostgresRule>(r).partition_rows_exact = exact;
        const auto result = purge(r);
        EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
        EXPECT_EQ(count(k_due), 0); // the late rows went with their partition either way
        const BatchIntent* ev0 = nullptr;
        for (const auto* i : partition_intents()) {
            EXPECT_EQ(i->partition->rows_estimated, !exact);
            ev0 = i->target == "public.ev_0" ? i : ev0;
        }
        ASSERT_NE(ev0, nullptr);
        EXPECT_EQ(ev0->partition->rows, exact ? 34 : 29);
        EXPECT_EQ(result.counters.count("partitions.rows_estimated"), exact ? 0U : 1U);
        if (!exact) {
            EXPECT_EQ(result.counters.at("partitions.rows_estimated"), 209);
        }
    }
}

TEST_F(Partitions, DetachKeepsTheTablesOutsideTheParent) {
    const auto result = purge(rule(PostgresRule::Partitions::detach));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.counters.at("partitions.detached"), 7);
    EXPECT_EQ(count(k_due), 0);
    EXPECT_EQ(count("ev_0"), 29); // detached, intact
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT relispartition FROM pg_class WHERE oid = 'ev_0'::regclass"),
              "f");
    EXPECT_EQ(m_engine->records_present(rule(), "public.ev_0", {}), Presence::absent);
    EXPECT_EQ(m_engine->records_present(rule(), "public.ev_11", {}), Presence::present);
}

TEST_F(Partitions, AHeldRowSendsItsPartitionThroughTheBatches) {
    pg_exec(m_dsn, "UPDATE ev SET held = true WHERE id = 3");
    const auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.counters.at("partitions.dropped"), 6);
    EXPECT_EQ(result.counters.at("partitions.kept_attached"), 1);
    EXPECT_EQ(count("ev_0"), 1); // the held row, attached
    EXPECT_EQ(count(std::string(k_due) + " AND NOT held"), 0);
    EXPECT_EQ(result.processed, result.due);
    bool said = false;
    for (const auto& [type, fields] : m_journal.m_events) {
        said = said ||
               (type == "partition_kept" && fields.dump().find("held row") != std::string::npos);
    }
    EXPECT_TRUE(said);
}

TEST_F(Partitions, ADetachThatCannotGetItsLockLeavesThePartitionAttachedAndIntact) {
    pqxx::connection other(m_dsn);
    pqxx::work reader(other);
    reader.exec("SELECT count(*) FROM ev_0"); // ACCESS SHARE on ev_0 until the end of `reader`
    const auto result = purge(rule());
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT relispartition FROM pg_class WHERE oid = 'ev_0'::regclass"),
              "t");
    EXPECT_GE(result.counters.at("partitions.kept_attached"), 1);
    bool said = false;
    for (const auto& [type, fields] : m_journal.m_events) {
        said = said || (type == "partition_kept" && fields.value("sqlstate", "") == "55P03");
    }
    EXPECT_TRUE(said);
    reader.abort();
}

TEST_F(Partitions, RowsModePurgesRowByRow) {
    const auto due = count(k_due);
    const auto result = purge(rule(PostgresRule::Partitions::rows));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, due);
    EXPECT_EQ(result.counters.count("partitions.dropped"), 0U);
    EXPECT_TRUE(partition_intents().empty());
    EXPECT_EQ(count("ev_0"), 0); // emptied, still attached
}

TEST_F(Partitions, ARowUpdatedToALaterClockMidRunStays) {
    // id 185 is due, in ev_6, walked after ev_0's first batch; moved to today's partition then.
    ASSERT_EQ(count("ev_6 WHERE id = 185"), 1);
    const auto due = count(k_due);
    RunContext ctx;
    ctx.run_id = "parts";
    ctx.tz = find_zone("UTC");
    ctx.audit_key = &m_key;
    ctx.journal = &m_journal;
    bool moved = false;
    ctx.on_progress = [&](std::int64_t, std::int64_t) {
        if (!moved) {
            pg_exec(m_dsn, "UPDATE ev SET time = now() WHERE id = 185");
            moved = true;
        }
    };
    const auto result = m_engine->purge(rule(PostgresRule::Partitions::rows), ctx);
    ASSERT_TRUE(moved);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, due - 1);
    EXPECT_EQ(count("ev WHERE id = 185 AND time > now() - interval '1 day'"), 1);
    EXPECT_EQ(count(k_due), 0);
    EXPECT_EQ(result.counters.at("verification.remaining"), 0);
}

TEST_F(Partitions, ListPartitionsWhollyDueByTheirClockExtremesAreDroppedToo) {
    pg_exec(m_dsn, "CREATE TABLE lst (id bigint, kind text NOT NULL, time timestamptz, held "
                   "boolean NOT NULL DEFAULT false, PRIMARY KEY (id, kind, time)) "
                   "PARTITION BY LIST (kind);"
                   "CREATE TABLE lst_old PARTITION OF lst FOR VALUES IN ('old');"
                   "CREATE TABLE lst_new PARTITION OF lst FOR VALUES IN ('new');"
                   "CREATE TABLE lst_noidx PARTITION OF lst FOR VALUES IN ('noidx');"
                   "CREATE INDEX ON lst_old (time); CREATE INDEX ON lst_new (time);"
                   "INSERT INTO lst SELECT g, 'old', now() - interval '200 days' - g * interval "
                   "'1 day' FROM generate_series(1, 40) g;"
                   "INSERT INTO lst SELECT g, 'new', now() - g * interval '5 days' FROM "
                   "generate_series(1, 40) g;"
                   "INSERT INTO lst SELECT g, 'noidx', now() - interval '300 days' FROM "
                   "generate_series(1, 10) g;");
    auto r = rule();
    edit_spec<PostgresRule>(r).table = "lst";
    edit_spec<PostgresRule>(r).key = {"id", "kind", "time"};
    const auto due = count("lst WHERE time + interval '100 days' <= now()");
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, due);
    EXPECT_EQ(result.counters.at("partitions.dropped"), 1); // lst_old; lst_noidx has no index
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT to_regclass('lst_old') IS NULL"), "t");
    EXPECT_EQ(count("lst_noidx"), 0); // purged by the batches
    EXPECT_EQ(count("lst WHERE time + interval '100 days' <= now()"), 0);
    ASSERT_EQ(partition_intents().size(), 1U);
    const auto& part = *partition_intents()[0]->partition;
    EXPECT_EQ(part.rows, 40);
    EXPECT_EQ(part.key_index, 2);
    EXPECT_LT(*part.from_us, part.to_us);
}

TEST_F(Partitions, AuditProveAnswersByTheBoundsAndDigestsOnRequest) {
    const auto dir =
        std::filesystem::temp_directory_path() / ("retentiond-parts-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string log = (dir / "audit.jsonl").string();
    const std::string in_whole = pg_scalar(m_dsn, "SELECT time::text FROM ev WHERE id = 5");
    const std::string in_boundary = pg_scalar(m_dsn, "SELECT time::text FROM ev WHERE id = 220");
    {
        AuditLog audit(log, m_key, new_run_id());
        const auto result = purge(rule(), &audit);
        ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    }
    const auto whole = prove(log, m_key, "events", canonical_key({"5", in_whole}));
    ASSERT_EQ(whole.size(), 1U);
    EXPECT_EQ(whole[0].target, "public.ev_0");
    EXPECT_EQ(prove(log, m_key, "events", canonical_key({"220", in_boundary})).size(), 1U);
    EXPECT_TRUE(
        prove(log, m_key, "events", canonical_key({"5", "2001-01-01 00:00:00+00"})).empty());
    EXPECT_TRUE(verify_audit_log(log).ok);
    std::filesystem::remove_all(dir);

    pg_exec(m_dsn, "DROP TABLE ev; CREATE TABLE ev (id bigint, time timestamptz NOT NULL, held "
                   "boolean NOT NULL DEFAULT false) PARTITION BY RANGE (time);"
                   "CREATE TABLE ev_old PARTITION OF ev FOR VALUES FROM (MINVALUE) TO (now() - "
                   "interval '200 days'); INSERT INTO ev SELECT g, now() - interval '300 days' "
                   "FROM generate_series(1, 40) g;");
    auto r = rule();
    edit_spec<PostgresRule>(r).partition_digests = true;
    m_journal = RecordingJournal{};
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    ASSERT_EQ(partition_intents().size(), 1U);
    EXPECT_EQ(partition_intents()[0]->keys.size(), 40U);
    EXPECT_FALSE(partition_intents()[0]->partition->from_us.has_value()); // MINVALUE
}

// With partition_digests: keys the keys are streamed and digested as they arrive: the digests
// are those of the keys a plain query reads (tabs, newlines, backslashes, quotes, UTF-8, the text
// \N, an empty string), for the audit log, and the keys themselves for a journal that does not
// digest.
TEST_F(Partitions, StreamedPartitionDigestsAreThoseOfTheKeysAQueryReads) {
    const auto make = [this] {
        pg_exec(m_dsn,
                "DROP TABLE IF EXISTS tk; CREATE TABLE tk (name text, time timestamptz NOT NULL, "
                "held boolean NOT NULL DEFAULT false, PRIMARY KEY (name, time)) "
                "PARTITION BY RANGE (time); CREATE TABLE tk_old PARTITION OF tk FOR VALUES FROM "
                "(MINVALUE) TO (now() - interval '200 days'); CREATE TABLE tk_new PARTITION OF tk "
                "FOR VALUES FROM (now() - interval '200 days') TO (MAXVALUE);"
                "INSERT INTO tk (name, time) SELECT n, now() - interval '300 days' FROM unnest("
                "ARRAY[E'tab\\there', E'new\\nline', E'back\\\\slash', 'quote\"d', 'été 日本',"
                " '\\N', '', E'cr\\rx']) n;"
                "INSERT INTO tk (name, time) SELECT 'user' || g, now() - interval '250 days' - g "
                "* interval '1 minute' FROM generate_series(1, 300) g; ANALYZE tk;");
    };
    const auto old_keys = [this] { // as a plain query reads them
        std::set<std::string> keys;
        pqxx::connection conn(m_dsn);
        for (const auto& row :
             pqxx::nontransaction(conn).exec("SELECT name::text, time::text FROM tk_old")) {
            keys.insert(canonical_key({row[0].c_str(), row[1].c_str()}));
        }
        return keys;
    };
    make();
    auto keys = old_keys();
    ASSERT_EQ(keys.size(), 308U);
    auto r = rule();
    edit_spec<PostgresRule>(r).table = "tk";
    edit_spec<PostgresRule>(r).key = {"name", "time"};
    edit_spec<PostgresRule>(r).partition_digests = true;
    ASSERT_EQ(purge(r).status, RunResult::Status::ok);
    ASSERT_EQ(partition_intents().size(), 1U);
    const auto& recorded = partition_intents()[0]->keys;
    EXPECT_EQ(std::set<std::string>(recorded.begin(), recorded.end()), keys);

    make(); // new clocks: new keys
    keys = old_keys();
    const auto dir = std::filesystem::temp_directory_path() /
                     ("retentiond-digests-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string log = (dir / "audit.jsonl").string();
    {
        AuditLog audit(log, m_key, new_run_id());
        ASSERT_EQ(purge(r, &audit).status, RunResult::Status::ok);
    }
    std::set<std::string> want;
    for (const auto& key : keys) {
        want.insert(record_digest(m_key, "events", key));
    }
    std::ifstream in(log);
    std::string line;
    std::optional<nlohmann::json> intent;
    while (std::getline(in, line)) {
        const auto j = nlohmann::json::parse(line);
        if (j.value("type", "") == "intent" && j.contains("partition")) {
            intent = j;
        }
    }
    ASSERT_TRUE(intent.has_value());
    EXPECT_EQ((*intent)["count"], 308);
    EXPECT_EQ((*intent)["digests"].get<std::set<std::string>>(), want);
    EXPECT_EQ((*intent)["digests"].size(), 308U);
    EXPECT_TRUE(verify_audit_log(log).ok);
    std::filesystem::remove_all(dir);
}

} // namespace
} // namespace retentiond::test
