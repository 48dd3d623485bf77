// `retentiond coverage` (and check's summary line) through the real binary: DORA's schema with
// the shipped DORA policy, an added table no rule covers, acknowledgements (one that silences it,
// a stale one), an exports folder with an unmatched CSV, Redis with an unmatched key pattern, exit
// codes, and no planted value in any output.
#include "support/pg_cluster.hpp"
#include "support/process.hpp"
#include "support/redis_server.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <atomic>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Distinctive values planted in the stores: none may appear in any output.
const std::vector<std::string> k_planted = {
    "zorglub.planted@example.org", "06 12 34 56 78", "0612345678",
    "owner.planted@example.net",   "client:9f8e7d",  "FR7630006000011234567890189"};

void expect_no_value(const ProcessResult& r) {
    for (const auto& v : k_planted) {
        EXPECT_THAT(r.out, Not(HasSubstr(v))) << v;
        EXPECT_THAT(r.err, Not(HasSubstr(v))) << v;
    }
}

std::string new_database() {
    static std::atomic<int> counter{0};
    return PgCluster::shared().create_database("coverage_" + std::to_string(::getpid()) + "_" +
                                               std::to_string(++counter));
}

struct DoraSite {
    TempDir dir;
    std::string dsn = new_database();
    std::string config;

    explicit DoraSite(const std::string& coverage_section = "") {
        pg_exec(dsn,
                read_file(std::string(RETENTIOND_SOURCE_DIR) + "/tests/fixtures/dora_schema.sql"));
        // What the anonymize dependent blanks: e-mails in notificationlog.owner.
        pg_exec(dsn, "INSERT INTO notifications_notificationlog "
                     "SELECT gen_random_uuid(), 't', 's', 1, now(), "
                     "'owner.planted@example.net', NULL FROM generate_series(1, 20)");
        // An application table no rule knows: an e-mail column and a JSON column with phones.
        pg_exec(dsn, "CREATE TABLE public.app_contact (id serial PRIMARY KEY, email text, "
                     "payload jsonb, iban text);"
                     "INSERT INTO public.app_contact (email, payload, iban) "
                     "SELECT 'zorglub.planted@example.org', "
                     "'{\"request\": {\"tel\": \"06 12 34 56 78\", \"note\": \"0612345678\"}}', "
                     "'FR7630006000011234567890189' FROM generate_series(1, 50)");
        config = dir.write("retentiond.yaml", "version: 1\n"
                                              "daemon:\n  audit_log: " +
                                                  dir.file("audit.jsonl") +
                                                  "\n"
                                                  "include: " +
                                                  std::string(RETENTIOND_SOURCE_DIR) +
                                                  "/policies/dora.yaml\n" + coverage_section);
    }

    ProcessResult run(std::vector<std::string> args) const {
        args.insert(args.begin(), {"--config", config});
        return run_retentiond(args, {{"SCALINGO_POSTGRESQL_URL", dsn}});
    }
};

const nlohmann::json* find(const nlohmann::json& doc, const std::string& location) {
    for (const auto& store : doc["datastores"]) {
        for (const auto& f : store["findings"]) {
            if (f["location"] == location) {
                return &f;
            }
        }
    }
    return nullptr;
}

TEST(CoverageCli, DoraPolicyCoversItsTargetsAndDependentsAndNotTheAddedTable) {
    DoraSite site;
    const auto r = site.run({"coverage", "--format", "json"});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    expect_no_value(r);
    const auto doc = nlohmann::json::parse(r.out);
    EXPECT_FALSE(doc["complete"].get<bool>());

    const auto* email = find(doc, "public.users_user.email");
    ASSERT_NE(email, nullptr) << r.out;
    EXPECT_EQ((*email)["status"], "covered");
    EXPECT_EQ((*email)["covered_by"], "dora-accounts (target, delete)");
    const auto* first = find(doc, "public.users_user.first_name");
    ASSERT_NE(first, nullptr);
    EXPECT_EQ((*first)["status"], "covered");
    // Found by its values, covered by the anonymize dependent that blanks it.
    const auto* owner = find(doc, "public.notifications_notificationlog.owner");
    ASSERT_NE(owner, nullptr) << r.out;
    EXPECT_EQ((*owner)["status"], "covered");
    EXPECT_THAT((*owner)["covered_by"].get<std::string>(), HasSubstr("dora-"));
    EXPECT_THAT((*owner)["why"].dump(), HasSubstr("values: e-mail 20/20"));

    const auto* contact = find(doc, "public.app_contact.email");
    ASSERT_NE(contact, nullptr);
    EXPECT_EQ((*contact)["status"], "uncovered");
    EXPECT_THAT((*contact)["why"].dump(), HasSubstr("name: e-mail"));
    EXPECT_THAT((*contact)["why"].dump(), HasSubstr("values: e-mail 50/50"));
    const auto* payload = find(doc, "public.app_contact.payload");
    ASSERT_NE(payload, nullptr);
    EXPECT_EQ((*payload)["status"], "uncovered");
    EXPECT_THAT((*payload)["why"].dump(), HasSubstr("values: key: phone 50/50"));
    EXPECT_THAT((*payload)["why"].dump(), HasSubstr("values: phone 50/50"));
    const auto* iban = find(doc, "public.app_contact.iban");
    ASSERT_NE(iban, nullptr);
    EXPECT_THAT((*iban)["why"].dump(), HasSubstr("values: IBAN 50/50"));
    // A set_null dependent leaves the row: its other personal columns are not covered.
    const auto* service = find(doc, "public.structures_structure.email");
    ASSERT_NE(service, nullptr) << site.run({"coverage"}).out;
    EXPECT_EQ((*service)["status"], "uncovered");
    EXPECT_THAT((*service)["note"].get<std::string>(),
                HasSubstr("dora-accounts (dependent, set_null creator_id)"));
    // A flag or a timestamp named after an e-mail is not personal data.
    EXPECT_EQ(find(doc, "public.orientations_orientation.last_reminder_email_sent"), nullptr);

    for (const char* format : {"text", "md"}) {
        const auto t = site.run({"coverage", "--format", format});
        EXPECT_EQ(t.exit_code, 1) << format;
        EXPECT_THAT(t.out, HasSubstr("public.app_contact.email")) << format;
        EXPECT_THAT(t.out, HasSubstr("look personal and no rule covers them")) << format;
        expect_no_value(t);
    }
}

TEST(CoverageCli, AnAcknowledgementSilencesAndAStaleOneIsFlagged) {
    DoraSite site("coverage:\n"
                  "  ignore:\n"
                  "    - { datastore: dora, table: app_contact, reason: \"contacts: DPIA 12\" }\n"
                  "    - { datastore: dora, table: public.gone, column: email, reason: old }\n");
    const auto r = site.run({"coverage", "--format", "json"});
    expect_no_value(r);
    const auto doc = nlohmann::json::parse(r.out);
    const auto* contact = find(doc, "public.app_contact.email");
    ASSERT_NE(contact, nullptr);
    EXPECT_EQ((*contact)["status"], "acknowledged");
    EXPECT_EQ((*contact)["acknowledged"], "contacts: DPIA 12");
    ASSERT_EQ(doc["stale"].size(), 1u);
    EXPECT_EQ(doc["stale"][0]["what"], "dora: table public.gone column email");
    const auto text = site.run({"coverage"});
    EXPECT_THAT(text.out, HasSubstr("stale acknowledgement: "));
    EXPECT_THAT(text.out, HasSubstr("dora: table public.gone column email matches nothing"));
}

TEST(CoverageCli, EverythingCoveredOrAcknowledgedExitsZero) {
    DoraSite site("coverage:\n"
                  "  ignore:\n"
                  "    - { datastore: dora, table: app_contact, reason: \"DPIA 12\" }\n"
                  "    - { table: services_service, reason: \"professional contacts\" }\n"
                  "    - { table: structures_structure, reason: \"professional contacts\" }\n"
                  "    - { table: orientations_orientation, reason: \"orientations rule\" }\n");
    const auto r = site.run({"coverage"});
    // Whatever else the scan finds is named in the output: the test lists DORA's blind spots.
    if (r.exit_code != 0) {
        ADD_FAILURE() << r.out;
    }
    EXPECT_THAT(r.out, HasSubstr("every location that looks personal is covered or "
                                 "acknowledged"));
}

TEST(CoverageCli, AnUnmatchedCsvInTheExportsFolderIsFound) {
    TempDir dir;
    dir.write("exports/Satisfaction_Submissions_2026-01-01.csv",
              "\"Submission ID\",\"Submitted at\",\"Email\"\ns1,2020-03-01 10:00:00,"
              "zorglub.planted@example.org\n");
    dir.write("exports/crm/clients.csv",
              "id;Nom;Téléphone\n1;Zorglub;06 12 34 56 78\n2;Zorglub;0612345678\n");
    const auto config =
        dir.write("retentiond.yaml",
                  "version: 1\ndaemon:\n  audit_log: " + dir.file("audit.jsonl") +
                      "\ndatastores:\n  exports: { kind: files, root: " + dir.file("exports") +
                      " }\nrules:\n  - name: forms\n    datastore: exports\n    category: c\n"
                      "    legal_basis: l\n    files: \"*_Submissions_*.csv\"\n    format: csv\n"
                      "    clock: { field: \"Submitted at\", format: \"%Y-%m-%d %H:%M:%S\" }\n"
                      "    retain: 2 years\n    action: delete\n");
    const auto r = run_retentiond({"--config", config, "coverage", "--format", "json"});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    expect_no_value(r);
    const auto doc = nlohmann::json::parse(r.out);
    const auto* crm = find(doc, "crm/clients.csv");
    ASSERT_NE(crm, nullptr) << r.out;
    EXPECT_EQ((*crm)["status"], "uncovered");
    const auto why = (*crm)["why"].dump();
    EXPECT_THAT(why, HasSubstr("no rule's glob matches"));
    EXPECT_THAT(why, HasSubstr("column Téléphone (name: phone; values: phone 2/2)"));
    EXPECT_THAT(why, HasSubstr("column Nom (name: name)"));
    const auto* forms = find(doc, "Satisfaction_Submissions_2026-01-01.csv");
    ASSERT_NE(forms, nullptr);
    EXPECT_EQ((*forms)["status"], "covered");
    EXPECT_EQ((*forms)["covered_by"], "forms (files *_Submissions_*.csv)");
}

TEST(CoverageCli, AnUnmatchedRedisKeyPatternIsFound) {
    RedisServer redis;
    for (int i = 0; i < 30; ++i) {
        redis_cmd(redis, {"HSET", "client:9f8e7d" + std::to_string(i), "email",
                          "zorglub.planted@example.org", "phone", "0612345678"});
        redis_cmd(redis, {"SET", "session:abc" + std::to_string(i), "x"});
    }
    TempDir dir;
    const auto config = dir.write(
        "retentiond.yaml", "version: 1\ndaemon:\n  audit_log: " + dir.file("audit.jsonl") +
                               "\ndatastores:\n  cache: { kind: redis, url: \"" + redis.url() +
                               "\" }\nrules:\n  - name: sessions\n    datastore: cache\n"
                               "    category: c\n    legal_basis: l\n    keys: \"session:*\"\n"
                               "    clock: idle\n    retain: 12 hours\n    action: delete\n");
    auto r = run_retentiond({"--config", config, "coverage", "--format", "json"});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    expect_no_value(r);
    const auto doc = nlohmann::json::parse(r.out);
    const auto* clients = find(doc, "client:*");
    ASSERT_NE(clients, nullptr) << r.out;
    EXPECT_EQ((*clients)["status"], "uncovered");
    const auto why = (*clients)["why"].dump();
    EXPECT_THAT(why, HasSubstr("30 keys sampled (hash)"));
    EXPECT_THAT(why, HasSubstr("field email name: e-mail"));
    EXPECT_THAT(why, HasSubstr("values: e-mail"));
    const auto* sessions = find(doc, "session:*");
    ASSERT_NE(sessions, nullptr);
    EXPECT_EQ((*sessions)["status"], "covered");

    // Acknowledged by pattern: exit 0.
    dir.write("retentiond.yaml", read_file(config) +
                                     "coverage:\n  ignore:\n    - { datastore: cache, pattern: "
                                     "\"client:*\", reason: \"CRM cache, 1 day TTL\" }\n");
    r = run_retentiond({"--config", config, "coverage"});
    EXPECT_EQ(r.exit_code, 0) << r.out;

    // Down: 69.
    redis.stop();
    r = run_retentiond({"--config", config, "coverage"});
    EXPECT_EQ(r.exit_code, 69) << r.out;
    EXPECT_THAT(r.out, HasSubstr("UNAVAILABLE"));
}

TEST(CoverageCli, UsageAndConfigErrors) {
    TempDir dir;
    const auto config = dir.write(
        "retentiond.yaml",
        "version: 1\ndatastores:\n  exports: { kind: files, root: " + dir.path() +
            " }\nrules: []\ncoverage:\n  ignore:\n    - { datastore: exprts, files: \"*.csv\" }\n");
    auto r = run_retentiond({"--config", config, "coverage"});
    EXPECT_EQ(r.exit_code, 78);
    EXPECT_THAT(r.err, HasSubstr("retentiond.yaml:7:7: coverage.ignore: missing key \"reason\""));
    EXPECT_THAT(r.err, HasSubstr("unknown datastore \"exprts\" (did you mean \"exports\"?)"));
    r = run_retentiond({"--config", config, "coverage", "--format", "xml"});
    EXPECT_EQ(r.exit_code, 64);
    r = run_retentiond({"coverage", "--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_THAT(r.out, HasSubstr("--datastore NAME"));
}

TEST(CoverageCli, CheckPrintsOneSummaryLineWithoutChangingItsExitCode) {
    DoraSite site;
    const auto r = site.run({"check"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("look personal and no rule covers them"));
    EXPECT_THAT(r.out, HasSubstr("see retentiond coverage"));
    expect_no_value(r);
}

TEST(CoverageCli, TheDpoReportListsPersonalDataWithoutARuleInItsLanguage) {
    DoraSite site("coverage:\n"
                  "  ignore:\n"
                  "    - { datastore: dora, table: app_contact, column: iban, reason: \"RIB: "
                  "contrat\" }\n");
    const auto md = site.run({"report", "--format", "md", "--lang", "en"});
    expect_no_value(md);
    EXPECT_THAT(md.out, HasSubstr("## Personal data without a rule"));
    EXPECT_THAT(md.out, HasSubstr("look personal and no rule covers them"));
    EXPECT_THAT(md.out, HasSubstr("public.app_contact.email"));
    EXPECT_THAT(md.out, HasSubstr("acknowledged: RIB: contrat"));
    const auto fr = site.run({"report", "--format", "html", "--lang", "fr"});
    expect_no_value(fr);
    EXPECT_THAT(fr.out, HasSubstr("Données personnelles sans règle"));
    EXPECT_THAT(fr.out, HasSubstr("aucune règle"));
    const auto json = site.run({"report", "--format", "json"});
    expect_no_value(json);
    const auto doc = nlohmann::json::parse(json.out);
    EXPECT_FALSE(doc["coverage"]["complete"].get<bool>());
    EXPECT_GE(doc["coverage"]["uncovered"].get<int>(), 2);
    EXPECT_EQ(doc["coverage"]["acknowledged"].get<int>(), 1);
}
} // namespace
} // namespace retentiond::test
