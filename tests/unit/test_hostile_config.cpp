// Hostile configurations through the real binary against a real PostgreSQL: every one gets a
// precise error or a refusal, and nothing is touched (the data is compared before and after).
#include "support/pg_cluster.hpp"
#include "support/process.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <unistd.h>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class HostileConfig : public ::testing::Test {
protected:
    void SetUp() override {
        static std::atomic<int> counter{0};
        m_dsn = PgCluster::shared().create_database("hostile_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        m_dir.write("audit-key", "hostile-audit-key-0123456789\n");
    }

    // A main file with one postgres datastore (dsn) and the given rules block.
    std::string config(const std::string& rules, const std::string& dsn = "") {
        return m_dir.write("retentiond.yaml",
                           "version: 1\n"
                           "daemon:\n"
                           "  audit_log: " +
                               m_dir.file("audit.jsonl") +
                               "\n  audit_key: ${file:" + m_dir.file("audit-key") +
                               "}\n  metrics: \"off\"\n  timezone: UTC\n"
                               "datastores:\n"
                               "  app:\n"
                               "    kind: postgres\n"
                               "    dsn: \"" +
                               (dsn.empty() ? m_dsn : dsn) + "\"\n" + "rules:\n" + rules);
    }

    std::string table_digest(const std::string& quoted) {
        return pg_scalar(m_dsn, "SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), "
                                "'empty') FROM " +
                                    quoted + " x");
    }
    std::string audit() { return read_file(m_dir.file("audit.jsonl")); }
    bool audit_exists() { return ::access(m_dir.file("audit.jsonl").c_str(), F_OK) == 0; }

    ProcessResult run(const std::vector<std::string>& args) {
        std::vector<std::string> full = {"--config", m_dir.file("retentiond.yaml")};
        full.insert(full.end(), args.begin(), args.end());
        return run_retentiond(full);
    }

    TempDir m_dir;
    std::string m_dsn;
};

const std::string k_rule_tail = "    retain: 30 days\n"
                                "    action: delete\n"
                                "    limits: { max_fraction: 1 }\n";

TEST_F(HostileConfig, InjectionShapedIdentifiersAreNamesNotSql) {
    pg_exec(m_dsn,
            "CREATE TABLE x (id int PRIMARY KEY); INSERT INTO x VALUES (1), (2);"
            "CREATE TABLE \"users\"\"; DROP TABLE x; --\" (\"id /* k */\" bigint PRIMARY KEY,"
            " \"dernière_connexion; --\" timestamptz, \"hold\"\"\" boolean);"
            "INSERT INTO \"users\"\"; DROP TABLE x; --\" VALUES "
            "(1, now() - interval '40 days', false), (2, now() - interval '1 day', false),"
            "(3, now() - interval '40 days', true), (4, NULL, false);");
    const auto x_before = table_digest("x");
    config("  - name: hostile-names\n"
           "    datastore: app\n"
           "    category: comptes\n"
           "    table: 'users\"; DROP TABLE x; --'\n"
           "    key: 'id /* k */'\n"
           "    clock: 'dernière_connexion; --'\n"
           "    hold: { column: 'hold\"', equals: true }\n" +
           k_rule_tail);
    const auto offline = run({"check", "--offline"});
    EXPECT_EQ(offline.exit_code, 0) << offline.err;
    const auto online = run({"check"});
    EXPECT_EQ(online.exit_code, 0) << online.out << online.err;
    const auto purge = run({"purge", "--now"});
    EXPECT_EQ(purge.exit_code, 0) << purge.out << purge.err;
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT string_agg(\"id /* k */\"::text, ',' ORDER BY 1) FROM "
                               "\"users\"\"; DROP TABLE x; --\""),
              "2,3,4");
    EXPECT_EQ(table_digest("x"), x_before) << "a table outside the rule changed";
    EXPECT_EQ(run({"audit", "verify"}).exit_code, 0);
}

TEST_F(HostileConfig, RetainZeroOnAccountTableIsRefusedByMaxFraction) {
    pg_exec(m_dsn, "CREATE TABLE users_user (id bigint PRIMARY KEY, last_login timestamptz, "
                   "email text); INSERT INTO users_user SELECT g, now() - g * interval '1 hour', "
                   "'u' || g || '@exemple.fr' FROM generate_series(1, 10) g;");
    const auto before = table_digest("users_user");
    config("  - name: accounts\n"
           "    datastore: app\n"
           "    category: comptes\n"
           "    table: users_user\n"
           "    key: id\n"
           "    clock: last_login\n"
           "    retain: 0\n"
           "    action: delete\n");
    const auto offline = run({"check", "--offline"});
    EXPECT_EQ(offline.exit_code, 0) << offline.err;
    const auto purge = run({"purge", "--now"});
    EXPECT_EQ(purge.exit_code, 75) << purge.out << purge.err;
    EXPECT_THAT(purge.out, HasSubstr("refused: 10 of 10 rows due (100%) exceed max_fraction 0.5 in "
                                     "users_user; use --force to proceed"));
    EXPECT_EQ(table_digest("users_user"), before);
    EXPECT_THAT(audit(), HasSubstr("\"due\":10,\"limit\":\"max_fraction\",\"max_fraction\":0.5,"));
    EXPECT_THAT(audit(), HasSubstr("\"type\":\"refusal\""));
    EXPECT_THAT(audit(), Not(HasSubstr("exemple.fr")));
    EXPECT_EQ(run({"audit", "verify"}).exit_code, 0);
}

TEST_F(HostileConfig, HoldOnMissingColumnIsRefusedAndTouchesNothing) {
    pg_exec(m_dsn, "CREATE TABLE items (id bigint PRIMARY KEY, created_at timestamptz);"
                   "INSERT INTO items SELECT g, now() - interval '90 days' FROM "
                   "generate_series(1, 5) g;");
    const auto before = table_digest("items");
    config("  - name: items\n"
           "    datastore: app\n"
           "    category: items\n"
           "    table: items\n"
           "    key: id\n"
           "    clock: created_at\n"
           "    hold: { column: legal_hold, equals: true }\n" +
           k_rule_tail);
    const auto check = run({"check"});
    EXPECT_EQ(check.exit_code, 78);
    EXPECT_THAT(check.out + check.err,
                HasSubstr("retentiond.yaml:12:5: rule \"items\": hold column legal_hold not found "
                          "in items"));
    const auto purge = run({"purge", "--now"});
    EXPECT_EQ(purge.exit_code, 75) << purge.out << purge.err;
    EXPECT_THAT(purge.out, HasSubstr("hold column legal_hold not found in items"));
    EXPECT_EQ(table_digest("items"), before);
}

TEST_F(HostileConfig, ClockColumnNotATimestampIsRefused) {
    pg_exec(m_dsn, "CREATE TABLE items (id bigint PRIMARY KEY, created_at text, n int);"
                   "INSERT INTO items SELECT g, '2001-01-01', g FROM generate_series(1, 5) g;");
    const auto before = table_digest("items");
    for (const std::string column : {"created_at", "n"}) {
        config("  - name: items\n"
               "    datastore: app\n"
               "    category: items\n"
               "    table: items\n"
               "    key: id\n"
               "    clock: " +
               column + "\n" + k_rule_tail);
        const auto check = run({"check"});
        EXPECT_EQ(check.exit_code, 78) << column << ": " << check.out;
        EXPECT_THAT(check.out + check.err,
                    HasSubstr("retentiond.yaml:12:5: rule \"items\": clock column items." + column +
                              " is of type"));
        EXPECT_THAT(check.out + check.err, HasSubstr("not a timestamp, timestamptz or date"));
        const auto purge = run({"purge", "--now"});
        EXPECT_EQ(purge.exit_code, 75) << column << ": " << purge.out << purge.err;
        EXPECT_EQ(table_digest("items"), before) << column;
    }
}

TEST_F(HostileConfig, GlobEscapingTheRootIsAConfigErrorWithPosition) {
    TempDir root;
    const auto victim = root.write("inside/a.csv", "id,at\n1,2001-01-01 00:00:00\n");
    const auto path =
        m_dir.write("retentiond.yaml", "version: 1\n"
                                       "daemon:\n"
                                       "  audit_log: " +
                                           m_dir.file("audit.jsonl") +
                                           "\n  audit_key: ${file:" + m_dir.file("audit-key") +
                                           "}\n  metrics: \"off\"\n"
                                           "datastores:\n"
                                           "  exports: { kind: files, root: " +
                                           root.path() + "/inside }\n" +
                                           "rules:\n"
                                           "  - name: escape\n"
                                           "    datastore: exports\n"
                                           "    category: x\n"
                                           "    files: \"../../etc/*\"\n"
                                           "    format: whole\n"
                                           "    clock: mtime\n"
                                           "    retain: 1 day\n"
                                           "    action: delete\n"
                                           "    limits: { max_fraction: 1 }\n");
    const auto check = run_retentiond({"check", "--offline", "--config", path});
    EXPECT_EQ(check.exit_code, 78);
    EXPECT_THAT(check.err, HasSubstr(path + ":12:12: rule \"escape\": files: the glob "
                                            "\"../../etc/*\" escapes the datastore root"));
    const auto purge = run_retentiond({"purge", "--now", "--config", path});
    EXPECT_EQ(purge.exit_code, 78);
    EXPECT_EQ(read_file(victim), "id,at\n1,2001-01-01 00:00:00\n");
    EXPECT_FALSE(audit_exists()) << "a rejected config must not start a run";
}

TEST_F(HostileConfig, InlineDsnPasswordIsWarnedAndNeverPrinted) {
    // The test cluster trusts local connections: the password is ignored by the server, so the
    // run proceeds and every output can be searched for it.
    const std::string password = "S3cr3t-Pa55w0rd-xyzzy";
    pg_exec(m_dsn, "CREATE TABLE items (id bigint PRIMARY KEY, created_at timestamptz);"
                   "INSERT INTO items VALUES (1, now() - interval '90 days'), (2, now());");
    config("  - name: items\n"
           "    datastore: app\n"
           "    category: items\n"
           "    table: items\n"
           "    key: id\n"
           "    clock: created_at\n" +
               k_rule_tail,
           m_dsn + " password=" + password);
    std::string all;
    for (const auto& args : std::vector<std::vector<std::string>>{{"check", "--offline"},
                                                                  {"check"},
                                                                  {"purge", "--now", "--dry-run"},
                                                                  {"purge", "--now"},
                                                                  {"audit", "verify"},
                                                                  {"policy-table"}}) {
        const auto r = run(args);
        all += r.out + r.err;
        if (args[0] == "check" && args.size() == 2) {
            EXPECT_THAT(r.out + r.err, HasSubstr("password")) << "the inline password is warned";
        }
    }
    EXPECT_EQ(pg_scalar(m_dsn, "SELECT string_agg(id::text, ',') FROM items"), "2");
    EXPECT_THAT(all, Not(HasSubstr(password)));
    EXPECT_THAT(audit(), Not(HasSubstr(password)));
}

} // namespace
} // namespace retentiond::test
