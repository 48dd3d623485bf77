// Notice before deletion (issue 11) against a real PostgreSQL, with a notifier script that records
// what it receives. Time passing is simulated by moving clocks and notice times in the database.
#include "contract/contract.hpp"
#include "postgres_kind.hpp"
#include "retentiond/timeutil.hpp"
#include "support/pg_cluster.hpp"
#include "support/process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <sstream>

namespace retentiond::test {
namespace {

std::vector<nlohmann::json> lines_of(const std::string& text) {
    std::vector<nlohmann::json> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty()) {
            out.push_back(nlohmann::json::parse(line));
        }
    }
    return out;
}

class NoticeTest : public ::testing::Test {
protected:
    void SetUp() override {
        static std::atomic<int> counter{0};
        m_dsn = PgCluster::shared().create_database("notice_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        pg_exec(m_dsn, "CREATE TABLE users_user (id bigint PRIMARY KEY, email text NOT NULL, "
                       "first_name text NOT NULL, last_name text NOT NULL DEFAULT 'secret-name', "
                       "last_login timestamptz, is_staff boolean NOT NULL DEFAULT false)");
        m_store.name = "dora";
        m_store.kind = &postgres_kind();
        m_store.spec = spec_ptr(PostgresStore(Secret(m_dsn)));
        m_notifier = m_dir.write("notify.sh", "#!/bin/sh\ncat >> '" + m_dir.file("received") +
                                                  "'\nexit $(cat '" + m_dir.file("exit_code") +
                                                  "' 2>/dev/null || echo 0)\n");
        chmod(m_notifier.c_str(), 0755);
    }

    Rule rule(const std::string& name = "dora-accounts") const {
        Rule r;
        r.name = name;
        r.datastore = "dora";
        r.kind = &postgres_kind();
        r.retain = parse_duration("30 days");
        r.limits = Limits{std::nullopt, 1.0};
        PostgresRule pg;
        pg.table = "users_user";
        pg.key = {"id"};
        pg.clock = {"last_login"};
        pg.hold = PgHold{"is_staff", PgHold::Kind::equals, "true"};
        Notice notice;
        notice.before = parse_duration("10 days");
        notice.fields = {"email", "first_name"};
        notice.command = m_notifier;
        notice.timeout = std::chrono::seconds(10);
        pg.notice = notice;
        r.spec = spec_ptr(pg);
        return r;
    }

    RunResult purge(const Rule& r, Engine* engine = nullptr) {
        auto own = make_postgres_engine(m_store, m_config);
        RunContext ctx;
        ctx.run_id = "notice";
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        ctx.journal = &m_journal;
        return (engine != nullptr ? *engine : *own).purge(r, ctx);
    }

    DryRun dry_run(const Rule& r) {
        auto engine = make_postgres_engine(m_store, m_config);
        RunContext ctx;
        ctx.run_id = "notice-dry";
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        return engine->dry_run(r, ctx);
    }

    void add_user(int id, const std::string& age, bool staff = false) {
        pg_exec(m_dsn, "INSERT INTO users_user (id, email, first_name, last_login, is_staff) "
                       "VALUES (" +
                           std::to_string(id) + ", 'user" + std::to_string(id) +
                           "@example.org', 'Prénom" + std::to_string(id) + "', now() - interval '" +
                           age + "', " + (staff ? "true" : "false") + ")");
    }

    // The notice period passes: every notice is now `days` older.
    void age_notices(int days) {
        pg_exec(m_dsn, "UPDATE retentiond.notice SET retentiond_noticed_at = "
                       "retentiond_noticed_at - interval '" +
                           std::to_string(days) + " days'");
    }

    std::string users() {
        return pg_scalar(m_dsn, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') "
                                "FROM users_user");
    }
    std::vector<nlohmann::json> received() { return lines_of(read_file(m_dir.file("received"))); }

    TempDir m_dir;
    std::string m_notifier;
    std::string m_dsn;
    Config m_config;
    Datastore m_store;
    Secret m_key{"notice-audit-key"};
    RecordingJournal m_journal;
};

TEST_F(NoticeTest, FirstRunNoticesDueAndSoonDueRecordsAndDeletesNothing) {
    add_user(1, "40 days");                 // already due, never noticed
    add_user(2, "25 days");                 // due in 5 days: inside the 10-day window
    add_user(3, "1 day");                   // far from due
    add_user(4, "40 days", /*staff=*/true); // held: never noticed, never deleted
    const auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 0);
    EXPECT_EQ(users(), "1,2,3,4") << "nothing is deleted without notice";

    const auto got = received();
    ASSERT_EQ(got.size(), 2U);
    std::set<std::string> keys;
    for (const auto& line : got) {
        keys.insert(line.at("key").get<std::string>());
        EXPECT_EQ(line.at("rule"), "dora-accounts");
        EXPECT_TRUE(line.contains("email"));
        EXPECT_TRUE(line.contains("first_name"));
        EXPECT_FALSE(line.contains("last_name")) << "only the listed fields are handed over";
        EXPECT_FALSE(line.at("due").get<std::string>().empty());
    }
    EXPECT_EQ(keys, (std::set<std::string>{"1", "2"}));
    EXPECT_EQ(got[0].at("key") == "1" ? got[0].at("email") : got[1].at("email"),
              "user1@example.org");

    // The audit journal recorded the notices (digests come from the keys).
    std::size_t noticed = 0;
    for (const auto& intent : m_journal.m_intents) {
        if (intent.action == "notice") {
            noticed += intent.keys.size();
        }
    }
    EXPECT_EQ(noticed, 2U);
}

TEST_F(NoticeTest, NeverSentTwiceAndDeletedOnlyAfterTheNoticePeriod) {
    add_user(1, "40 days");
    add_user(2, "25 days");
    ASSERT_EQ(purge(rule()).status, RunResult::Status::ok);
    ASSERT_EQ(received().size(), 2U);

    // Immediately again: no duplicate notice, still nothing deleted.
    const auto again = purge(rule());
    EXPECT_EQ(again.processed, 0);
    EXPECT_EQ(received().size(), 2U) << "a notice is never sent twice for the same due date";
    EXPECT_EQ(users(), "1,2");

    auto dry = dry_run(rule());
    EXPECT_EQ(dry.due, 0);
    EXPECT_EQ(dry.counters.at("notice.to_send"), 0);
    EXPECT_EQ(dry.counters.at("notice.waiting"), 2);

    // Nine days later: still inside the notice period.
    age_notices(9);
    EXPECT_EQ(purge(rule()).processed, 0);
    EXPECT_EQ(users(), "1,2");

    // Ten days after the notices: user 1 (due, noticed 10 days ago) goes; user 2 is noticed as
    // long but not due yet (only the notices aged, not its clock).
    age_notices(1);
    dry = dry_run(rule());
    EXPECT_EQ(dry.due, 1) << "user 1 is due and was noticed 10 days ago";
    const auto result = purge(rule());
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(users(), "2");
    EXPECT_EQ(received().size(), 2U);

    // The state row went with its record.
    purge(rule());
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT string_agg(retentiond_key, ',') FROM retentiond.notice"),
              "2");
}

TEST_F(NoticeTest, LoginVoidsTheNotice) {
    add_user(1, "40 days");
    ASSERT_EQ(purge(rule()).status, RunResult::Status::ok);
    ASSERT_EQ(received().size(), 1U);
    age_notices(11);
    // The user comes back before the deletion run.
    pg_exec(m_dsn, "UPDATE users_user SET last_login = now() WHERE id = 1");
    const auto result = purge(rule());
    EXPECT_EQ(result.processed, 0);
    EXPECT_EQ(users(), "1");
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT count(*) FROM retentiond.notice"), "0")
        << "the notice for the old due date is void";
    EXPECT_EQ(received().size(), 1U) << "not noticed again until it nears its new due date";

    // Long after: the record nears its new due date and is noticed again, once.
    pg_exec(m_dsn, "UPDATE users_user SET last_login = now() - interval '35 days' WHERE id = 1");
    purge(rule());
    EXPECT_EQ(received().size(), 2U);
    EXPECT_EQ(users(), "1") << "the new notice must age before deletion";
}

TEST_F(NoticeTest, FailingNotifierMarksNothingAndIsRetried) {
    add_user(1, "40 days");
    add_user(2, "38 days");
    m_dir.write("exit_code", "3\n");
    const auto failed = purge(rule());
    EXPECT_EQ(failed.status, RunResult::Status::failed);
    EXPECT_NE(failed.message.find("notifier exited with status 3"), std::string::npos)
        << failed.message;
    EXPECT_EQ(failed.message.find("example.org"), std::string::npos) << "no personal data";
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT count(*) FROM retentiond.notice"), "0");
    bool refusal = false;
    for (const auto& [type, fields] : m_journal.m_events) {
        refusal = refusal || (type == "refusal" && fields.at("reason") == "notifier failed");
    }
    EXPECT_TRUE(refusal);

    // Even very old notices-to-be stay undeleted; the next run with a working notifier sends.
    m_dir.write("exit_code", "0\n");
    m_dir.write("received", "");
    const auto retried = purge(rule());
    EXPECT_EQ(retried.status, RunResult::Status::ok) << retried.message;
    EXPECT_EQ(received().size(), 2U);
    EXPECT_EQ(users(), "1,2");
}

TEST_F(NoticeTest, NotifierTimeoutKillsItAndMarksNothing) {
    add_user(1, "40 days");
    const auto slow = m_dir.write("slow.sh", "#!/bin/sh\ncat >/dev/null\nsleep 30\n");
    chmod(slow.c_str(), 0755);
    auto r = rule();
    auto& notice = *edit_spec<PostgresRule>(r).notice;
    notice.command = slow;
    notice.timeout = std::chrono::seconds(1);
    const auto started = std::chrono::steady_clock::now();
    const auto result = purge(r);
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_NE(result.message.find("timed out"), std::string::npos) << result.message;
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT count(*) FROM retentiond.notice"), "0");
}

TEST_F(NoticeTest, TwoDaemonsShareTheNoticeState) {
    add_user(1, "40 days");
    auto host_a = make_postgres_engine(m_store, m_config);
    auto host_b = make_postgres_engine(m_store, m_config);
    ASSERT_EQ(purge(rule(), host_a.get()).status, RunResult::Status::ok);
    ASSERT_EQ(received().size(), 1U);
    // The other host sees the notice: no second mail, no early deletion.
    EXPECT_EQ(purge(rule(), host_b.get()).processed, 0);
    EXPECT_EQ(received().size(), 1U);
    age_notices(10);
    EXPECT_EQ(purge(rule(), host_b.get()).processed, 1);
    EXPECT_EQ(users(), "");
}

} // namespace
} // namespace retentiond::test
