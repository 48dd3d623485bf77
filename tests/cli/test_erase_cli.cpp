// `retentiond erase` through the real binary (issue 20): DORA's schema with the shipped DORA
// policy, Tally exports and Redis sessions; one request erases a person's account with its
// dependents, export rows (the other rows byte-exact) and sessions; a held account is deferred
// then erased once the hold lifts; the deadline turns overdue; the limits refuse an over-broad
// match; a restore of a pre-erasure dump is undone by --reapply; the identifier is written nowhere.
#include "support/pg_cluster.hpp"
#include "support/process.hpp"
#include "support/redis_server.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

std::string new_database() {
    static std::atomic<int> counter{0};
    return PgCluster::shared().create_database("erase_" + std::to_string(::getpid()) + "_" +
                                               std::to_string(++counter));
}

const std::string k_header = "\"Submission ID\",\"Respondent ID\",\"Submitted at\",\"Email\"\n";
const std::string k_bob = "sub-2,r2,2026-11-01 10:00:00,bob@example.org\n";
const std::string k_carol = "sub-4,r4,2026-11-03 10:00:00,\"carol, the \"\"pro\"\"@example.org\"\n";

// Ten recent accounts (none due), two bookmarks, a staff account (held), a Tally export and two
// Redis sessions. Jane's e-mail is written in three spellings the normalization makes one.
struct Site {
    TempDir dir;
    RedisServer redis;
    std::string dsn = new_database();
    std::string csv;
    std::string config;

    explicit Site(const std::string& tally_limits = "{ max_fraction: 1 }") {
        pg_exec(dsn,
                read_file(std::string(RETENTIOND_SOURCE_DIR) + "/tests/fixtures/dora_schema.sql"));
        pg_exec(dsn, "INSERT INTO users_user (id, password, last_login, email, last_name, "
                     "first_name, is_active, is_valid, is_staff, is_manager, main_activity, "
                     "date_joined, newsletter, cgu_versions_accepted) "
                     "SELECT g, 'x', now(), CASE g WHEN 1 THEN 'Jane.Doe@Example.org' WHEN 2 THEN "
                     "'held.person@example.org' ELSE 'user' || g || '@example.org' END, 'L', 'F', "
                     "true, true, g = 2, false, 'autre', now(), false, '{}' "
                     "FROM generate_series(1, 10) g;"
                     "INSERT INTO services_bookmark (di_id, creation_date, user_id) VALUES "
                     "('a', now(), 1), ('b', now(), 3)");
        csv = dir.write("exports/Satisfaction_Submissions_2026-11-01.csv",
                        k_header + "sub-1,r1,2026-11-01 09:00:00, Jane.Doe@EXAMPLE.org \n" + k_bob +
                            "sub-3,r3,2026-11-02 10:00:00,jane.doe@example.org\n" + k_carol);
        redis_cmd(redis, {"HSET", "session:s1", "email", "JANE.DOE@example.org", "data", "x"});
        redis_cmd(redis, {"HSET", "session:s2", "email", "bob@example.org", "data", "y"});
        dir.write("audit-key", "erase-test-key-0123456789\n");
        config = dir.write(
            "retentiond.yaml",
            "version: 1\ndaemon:\n  audit_log: " + dir.file("audit.jsonl") +
                "\n  audit_key: ${file:" + dir.file("audit-key") +
                "}\n  metrics: \"off\"\ninclude: " + std::string(RETENTIOND_SOURCE_DIR) +
                "/policies/dora.yaml\n"
                "datastores:\n"
                "  tally: { kind: files, root: " +
                dir.file("exports") + " }\n  sessions: { kind: redis, url: \"" + redis.url() +
                "\" }\n"
                "rules:\n"
                "  - name: tally-exports\n    datastore: tally\n    category: c\n"
                "    files: \"*_Submissions_*.csv\"\n    format: csv\n"
                "    key_field: \"Submission ID\"\n"
                "    clock: { field: \"Submitted at\", format: \"%Y-%m-%d %H:%M:%S\" }\n"
                "    retain: 2 years\n    action: delete\n    subject: { email: \"Email\" }\n"
                "    limits: " +
                tally_limits +
                "\n"
                "  - name: web-sessions\n    datastore: sessions\n    category: c\n"
                "    keys: \"session:*\"\n    clock: idle\n    retain: 12 hours\n"
                "    action: delete\n    subject: { email: { hash_field: email } }\n"
                "    limits: { max_fraction: 1 }\n");
    }

    ProcessResult run(std::vector<std::string> args) const {
        args.insert(args.begin(), {"--config", config});
        return run_retentiond(args, {{"SCALINGO_POSTGRESQL_URL", dsn}});
    }
    std::string sql(const std::string& q) const { return pg_scalar(dsn, q); }
    std::string audit() const {
        return ::access(dir.file("audit.jsonl").c_str(), F_OK) == 0
                   ? read_file(dir.file("audit.jsonl"))
                   : std::string();
    }
};

bool redis_before_7_2(const RedisServer& redis) {
    const auto info = redis_cmd(redis, {"INFO", "server"});
    const auto at = info.find("redis_version:");
    int major = 0;
    int minor = 0;
    if (at == std::string::npos ||
        std::sscanf(info.c_str() + at, "redis_version:%d.%d", &major, &minor) != 2) {
        ADD_FAILURE() << info;
    }
    return major < 7 || (major == 7 && minor < 2);
}

// No spelling of Jane's e-mail in the output, the audit log or the pending files.
void expect_no_identifier(const ProcessResult& r, const Site& site) {
    for (const std::string& text : {r.out, r.err, site.audit()}) {
        EXPECT_THAT(lower(text), Not(HasSubstr("jane.doe"))) << text;
    }
}

TEST(EraseCli, OneRequestErasesTheAccountItsDependentsExportRowsAndSessions) {
    Site site;
    const auto dry = site.run({"erase", "--subject", "email=Jane.Doe@example.org", "--dry-run"});
    ASSERT_EQ(dry.exit_code, 0) << dry.err << dry.out;
    EXPECT_THAT(dry.out, HasSubstr("dry run, nothing changed"));
    EXPECT_THAT(dry.out, HasSubstr("would erase"));
    // Redis < 7.2 has no CLIENT NO-TOUCH: the reads restarted the sessions' idle time, said so.
    if (redis_before_7_2(site.redis)) {
        EXPECT_THAT(dry.out, HasSubstr("idle_reset: 2"));
    } else {
        EXPECT_THAT(dry.out, Not(HasSubstr("idle_reset")));
    }
    expect_no_identifier(dry, site);
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user"), "10");
    EXPECT_EQ(site.audit(), "");

    const auto r =
        site.run({"erase", "--subject", "email= jane.doe@example.ORG", "--request", "DPO-2026-14"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_THAT(r.out, HasSubstr("status: done"));
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user"), "9");
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 1"), "0");
    EXPECT_EQ(site.sql("SELECT string_agg(user_id::text, ',') FROM services_bookmark"), "3");
    EXPECT_EQ(read_file(site.csv), k_header + k_bob + k_carol); // the others byte-exact
    EXPECT_EQ(redis_cmd(site.redis, {"EXISTS", "session:s1"}), "0");
    EXPECT_EQ(redis_cmd(site.redis, {"EXISTS", "session:s2"}), "1");
    expect_no_identifier(r, site);
    EXPECT_THAT(site.audit(), HasSubstr("\"type\":\"erasure_request\""));
    EXPECT_THAT(site.audit(), HasSubstr("\"request\":\"DPO-2026-14\""));

    const auto proof = site.run({"audit", "prove", "--subject", "email=JANE.doe@example.org"});
    ASSERT_EQ(proof.exit_code, 0) << proof.err;
    EXPECT_THAT(proof.out, HasSubstr("request DPO-2026-14"));
    EXPECT_THAT(proof.out, HasSubstr("erased, done at"));
    EXPECT_THAT(proof.out, HasSubstr("dora-accounts: erased (1 erased"));
    EXPECT_THAT(proof.out, HasSubstr("tally-exports: erased (2 erased"));
    EXPECT_THAT(proof.out, HasSubstr("web-sessions: erased (1 erased"));
    const auto other = site.run({"audit", "prove", "--subject", "email=bob@example.org"});
    EXPECT_THAT(other.out, HasSubstr("never seen"));
    const auto status = site.run({"erase", "--status"});
    EXPECT_THAT(status.out, HasSubstr("0 open request(s), 0 overdue"));
    EXPECT_EQ(site.run({"audit", "verify"}).exit_code, 0);
}

TEST(EraseCli, AHeldAccountIsDeferredTurnsOverdueThenIsErasedWhenTheHoldLifts) {
    Site site;
    const auto r = site.run({"erase", "--subject", "email=held.person@example.org", "--request",
                             "DPO-7", "--received", "2020-01-01"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_THAT(r.out, HasSubstr("status: deferred"));
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 2"), "1");
    const auto status = site.run({"erase", "--status"});
    EXPECT_THAT(status.out, HasSubstr("DPO-7"));
    EXPECT_THAT(status.out, HasSubstr("overdue"));
    EXPECT_THAT(status.out, HasSubstr("2020-02-01"));
    EXPECT_THAT(status.out, HasSubstr("1 open request(s), 1 overdue"));

    // The DPO report: the request, overdue, and the rule whose hold defers its record.
    const auto md = site.run({"report", "--format", "md", "--lang", "en"});
    EXPECT_THAT(md.out, HasSubstr("## Erasure requests"));
    EXPECT_THAT(md.out, HasSubstr("1 open request(s), 1 of them overdue; 0 done"));
    EXPECT_THAT(md.out, HasSubstr("| DPO-7 | 2020-01-01T00:00:00Z | 2020-02-01T00:00:00Z | overdue "
                                  "| 0 | 1 (dora-accounts: 1) | 0 |"));
    const auto html = site.run({"report", "--format", "html", "--lang", "fr"});
    EXPECT_THAT(html.out, HasSubstr("<h2>Demandes d&#39;effacement</h2>"));
    const auto json = site.run({"report", "--format", "json"});
    EXPECT_THAT(json.out, HasSubstr("\"erasure_requests\""));
    for (const auto* report : {&md, &html, &json}) {
        EXPECT_THAT(lower(report->out), Not(HasSubstr("held.person"))) << report->out;
    }

    // Still held: a resume changes nothing.
    EXPECT_EQ(site.run({"erase", "--resume"}).exit_code, 0);
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 2"), "1");
    pg_exec(site.dsn, "UPDATE users_user SET is_staff = false WHERE id = 2");
    const auto resumed = site.run({"erase", "--resume"});
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err << resumed.out;
    EXPECT_THAT(resumed.out, HasSubstr("status: done"));
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 2"), "0");
    EXPECT_THAT(site.run({"erase", "--status"}).out, HasSubstr("0 open request(s)"));
    const auto proof = site.run({"audit", "prove", "--subject", "email=held.person@example.org"});
    EXPECT_THAT(proof.out, HasSubstr("request DPO-7 (received 2020-01-01"));
    EXPECT_THAT(proof.out, HasSubstr("erased, done at"));
    EXPECT_THAT(lower(site.audit()), Not(HasSubstr("held.person")));
}

TEST(EraseCli, LimitsRefuseAnOverBroadMatchTouchingNothing) {
    Site site("{ max_rows: 1, max_fraction: 1 }"); // Jane has two export rows
    const std::string before = read_file(site.csv);
    const auto r = site.run({"erase", "--subject", "email=jane.doe@example.org"});
    EXPECT_EQ(r.exit_code, 75) << r.err << r.out;
    EXPECT_THAT(r.err, HasSubstr("refused, nothing touched"));
    EXPECT_THAT(r.err, HasSubstr("max_rows 1"));
    EXPECT_EQ(read_file(site.csv), before);
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 1"), "1");
    EXPECT_EQ(redis_cmd(site.redis, {"EXISTS", "session:s1"}), "1");
    EXPECT_THAT(site.audit(), Not(HasSubstr("erasure_request")));
    expect_no_identifier(r, site);
}

TEST(EraseCli, AStoreDownMidRequestLeavesItOpenAndARerunResumesIt) {
    Site site;
    site.redis.stop();
    const auto r =
        site.run({"erase", "--subject", "email=jane.doe@example.org", "--request", "DPO-9"});
    EXPECT_EQ(r.exit_code, 69) << r.err << r.out;
    EXPECT_THAT(r.out, HasSubstr("status: open"));
    EXPECT_THAT(r.out, HasSubstr("unavailable"));
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 1"), "0"); // the others went
    EXPECT_EQ(read_file(site.csv), k_header + k_bob + k_carol);
    EXPECT_THAT(site.run({"erase", "--status"}).out, HasSubstr("1 open request(s), 0 overdue"));
    expect_no_identifier(r, site);

    site.redis.start();
    redis_cmd(site.redis, {"HSET", "session:s1", "email", "JANE.DOE@example.org", "data", "x"});
    // The same request again (the person's reminder): the open request is resumed, not a new one.
    const auto again = site.run({"erase", "--subject", "email=jane.doe@example.org"});
    ASSERT_EQ(again.exit_code, 0) << again.err << again.out;
    EXPECT_THAT(again.out, HasSubstr("request DPO-9 "));
    EXPECT_THAT(again.out, HasSubstr("status: done"));
    EXPECT_EQ(redis_cmd(site.redis, {"EXISTS", "session:s1"}), "0");
    EXPECT_THAT(site.run({"erase", "--status"}).out, HasSubstr("0 open request(s)"));
    const auto proof = site.run({"audit", "prove", "--subject", "email=jane.doe@example.org"});
    EXPECT_THAT(proof.out, HasSubstr("request DPO-9"));
    EXPECT_THAT(proof.out, HasSubstr("erased, done at"));
    EXPECT_THAT(proof.out, HasSubstr("4 record(s)"));
}

// A rerun of an open request keeps its received date: the same --received is honoured, another
// one is refused (exit 64) before anything is touched or recorded.
TEST(EraseCli, ReceivedOnARerunOfAnOpenRequestMustBeTheRecordedOne) {
    Site site;
    site.redis.stop();
    const auto r = site.run({"erase", "--subject", "email=jane.doe@example.org", "--request",
                             "DPO-11", "--received", "2026-11-01"});
    ASSERT_EQ(r.exit_code, 69) << r.err << r.out;
    site.redis.start();
    redis_cmd(site.redis, {"HSET", "session:s1", "email", "JANE.DOE@example.org", "data", "x"});
    const std::string audit_before = site.audit();
    const auto other =
        site.run({"erase", "--subject", "email=jane.doe@example.org", "--received", "2026-11-20"});
    EXPECT_EQ(other.exit_code, 64) << other.err << other.out;
    EXPECT_THAT(other.err, HasSubstr("request DPO-11 of this subject is still open, received "
                                     "2026-11-01T00:00:00Z"));
    EXPECT_EQ(site.audit(), audit_before);
    EXPECT_EQ(redis_cmd(site.redis, {"EXISTS", "session:s1"}), "1");
    expect_no_identifier(other, site);

    const auto same =
        site.run({"erase", "--subject", "email=jane.doe@example.org", "--received", "2026-11-01"});
    ASSERT_EQ(same.exit_code, 0) << same.err << same.out;
    EXPECT_THAT(same.out, HasSubstr("request DPO-11 (email, received 2026-11-01T00:00:00Z, "
                                    "deadline 2026-12-01T00:00:00Z)"));
    EXPECT_THAT(same.out, HasSubstr("status: done"));
    EXPECT_EQ(redis_cmd(site.redis, {"EXISTS", "session:s1"}), "0");
}

// Before any run there is no audit log: no request to list, nothing recorded to prove, and
// neither creates the log.
TEST(EraseCli, StatusAndProveBeforeAnyRunSayNothingIsRecorded) {
    Site site;
    const auto status = site.run({"erase", "--status"});
    EXPECT_EQ(status.exit_code, 0) << status.err;
    EXPECT_THAT(status.out, HasSubstr("0 open request(s), 0 overdue"));
    const auto proof = site.run({"audit", "prove", "--subject", "email=jane.doe@example.org"});
    EXPECT_EQ(proof.exit_code, 0) << proof.err;
    EXPECT_THAT(proof.out, HasSubstr("no erasure recorded"));
    EXPECT_THAT(proof.out, HasSubstr("does not exist yet"));
    EXPECT_EQ(::access(site.dir.file("audit.jsonl").c_str(), F_OK), -1);
}

// A postgres rule that anonymizes with strategies retentiond computes (hmac, email_domain) answers
// a request with the purge's own statements: the person's row anonymized, the others untouched.
TEST(EraseCli, AnAnonymizingRuleAppliesHmacAndEmailDomainToTheSubjectsRows) {
    TempDir dir;
    const auto dsn = new_database();
    pg_exec(dsn, "CREATE TABLE people (id int PRIMARY KEY, email text, name text, "
                 "seen timestamptz); INSERT INTO people VALUES "
                 "(1, 'Jane.Doe@Example.org', 'Jane Doe', now()), "
                 "(2, 'bob@example.org', 'Bob', now())");
    dir.write("audit-key", "erase-test-key-0123456789\n");
    const auto config =
        dir.write("retentiond.yaml",
                  "version: 1\ndaemon:\n  audit_log: " + dir.file("audit.jsonl") +
                      "\n  audit_key: ${file:" + dir.file("audit-key") +
                      "}\n  metrics: \"off\"\ndatastores:\n  app: { kind: postgres, dsn: \"" + dsn +
                      "\" }\nrules:\n  - name: people\n    datastore: app\n    category: c\n"
                      "    table: people\n    key: id\n    clock: seen\n    retain: 1 year\n"
                      "    action: anonymize\n    anonymize: { email: email_domain, name: hmac }\n"
                      "    subject: { email: email }\n    limits: { max_fraction: 1 }\n");
    const auto r =
        run_retentiond({"--config", config, "erase", "--subject", "email=jane.doe@example.org"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_THAT(r.out, HasSubstr("status: done"));
    EXPECT_EQ(pg_scalar(dsn, "SELECT email ~ '^anon-[0-9a-f]{12}@Example.org$' AND "
                             "name ~ '^[0-9a-f]{64}$' FROM people WHERE id = 1"),
              "t");
    EXPECT_EQ(pg_scalar(dsn, "SELECT email || ' ' || name FROM people WHERE id = 2"),
              "bob@example.org Bob");
    const auto proof = run_retentiond(
        {"--config", config, "audit", "prove", "--subject", "email=jane.doe@example.org"});
    EXPECT_THAT(proof.out, HasSubstr("people: erased (1 erased"));
    // The person's e-mail is gone from the row: a re-application finds nothing more.
    const auto again = run_retentiond({"--config", config, "erase", "--reapply"});
    ASSERT_EQ(again.exit_code, 0) << again.err << again.out;
    EXPECT_EQ(lower(read_file(dir.file("audit.jsonl"))).find("jane"), std::string::npos);
}

TEST(EraseCli, BadRequestsAreUsageErrors) {
    Site site;
    const auto unknown = site.run({"erase", "--subject", "phone=0612345678"});
    EXPECT_EQ(unknown.exit_code, 64);
    EXPECT_THAT(unknown.err, HasSubstr("no rule declares the identifier kind \"phone\""));
    EXPECT_THAT(unknown.err, HasSubstr("declared: email"));
    EXPECT_EQ(site.run({"erase", "--subject", "email"}).exit_code, 64);
    EXPECT_EQ(site.run({"erase", "--subject", "email=  "}).exit_code, 64);
    EXPECT_EQ(site.run({"erase"}).exit_code, 64);
    EXPECT_EQ(site.run({"erase", "--status", "--resume"}).exit_code, 64);
    EXPECT_EQ(site.run({"erase", "--subject", "email=a@b.c", "--received", "soon"}).exit_code, 64);
    EXPECT_EQ(site.audit(), "");
}

TEST(EraseCli, ReapplyErasesAgainWhatARestoreOfAPreErasureDumpBroughtBack) {
    Site site;
    const auto dump = site.dir.file("before.dump");
    const auto dumped = shell("pg_dump -Fc -f " + dump + " '" + site.dsn + "' 2>&1");
    ASSERT_EQ(dumped.status, 0) << dumped.text;
    const std::string csv_before = read_file(site.csv);
    ASSERT_EQ(site.run({"erase", "--subject", "email=jane.doe@example.org"}).exit_code, 0);
    ASSERT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 1"), "0");

    // The restore: the database from the dump, the export and the session as they were.
    const auto restored = shell("pg_restore --clean --if-exists --single-transaction -d '" +
                                site.dsn + "' " + dump + " 2>&1");
    ASSERT_EQ(restored.status, 0) << restored.text;
    ASSERT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 1"), "1");
    ASSERT_EQ(site.sql("SELECT count(*) FROM services_bookmark WHERE user_id = 1"), "1");
    site.dir.write("exports/Satisfaction_Submissions_2026-11-01.csv", csv_before);
    redis_cmd(site.redis, {"HSET", "session:s1", "email", "JANE.DOE@example.org", "data", "x"});

    const auto r = site.run({"erase", "--reapply"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_THAT(r.out, HasSubstr("re-application of request"));
    EXPECT_THAT(r.out, HasSubstr("1 request(s) re-applied"));
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user WHERE id = 1"), "0");
    EXPECT_EQ(site.sql("SELECT count(*) FROM services_bookmark WHERE user_id = 1"), "0");
    EXPECT_EQ(site.sql("SELECT count(*) FROM users_user"), "9");
    EXPECT_EQ(read_file(site.csv), k_header + k_bob + k_carol);
    EXPECT_EQ(redis_cmd(site.redis, {"EXISTS", "session:s1"}), "0");
    EXPECT_EQ(redis_cmd(site.redis, {"EXISTS", "session:s2"}), "1");
    expect_no_identifier(r, site);
    const auto proof = site.run({"audit", "prove", "--subject", "email=jane.doe@example.org"});
    EXPECT_THAT(proof.out, HasSubstr("re-applied after a restore: 4 record(s)"));
}

} // namespace
} // namespace retentiond::test
