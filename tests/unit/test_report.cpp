// The DPO report: one fixture (five rules, one per status, and a small audit log) rendered in
// every format and language.
#include "engines/files/csv.hpp"
#include "engines/files/files_kind.hpp"
#include "engines/postgres/postgres_kind.hpp"
#include "engines/redis/redis_kind.hpp"
#include "retentiond/report.hpp"
#include "retentiond/report_errors.hpp"
#include "retentiond/timeutil.hpp"

#include "support/process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace retentiond {
namespace {

using namespace std::chrono_literals;
using test::TempDir;

// Personal values planted in the fixture (notes, error and refusal messages): never rendered.
const std::vector<std::string> k_personal = {"jean.dupont@example.org", "Dupont", "06 12 34 56 78",
                                             "hunter2", "marie.curie@example.fr"};

TimePoint at(const std::string& text) {
    auto t = parse_timestamp(text, "", find_zone("UTC"));
    if (!t) {
        throw std::runtime_error("bad fixture time " + text);
    }
    return *t;
}

const TimePoint k_now = at("2026-08-14T10:00:00Z"); // Friday of ISO week 2026-W33

Rule make_rule(const std::string& name, const std::string& store, const Kind* kind,
               const std::string& retain, const std::string& category) {
    Rule r;
    r.name = name;
    r.datastore = store;
    r.kind = kind;
    r.category = category;
    r.legal_basis = "Mission d'intérêt public (art. 6-1-e RGPD)";
    r.retain = parse_duration(retain);
    r.schedule = parse_schedule("daily 03:00");
    r.clock_label = {"à compter de la dernière utilisation du compte",
                     "from the account's last use"};
    if (kind == &postgres_kind()) {
        PostgresRule pg;
        pg.table = name == "dora-orientations" ? "orientations_orientation" : "public.users_user";
        pg.key = {"id"};
        pg.clock = {"last_login"};
        r.spec = spec_ptr(pg);
    } else if (kind == &files_kind()) {
        r.spec = spec_ptr(FilesRule{});
    } else {
        r.spec = spec_ptr(RedisRule{});
    }
    return r;
}

Config fixture_config() {
    Config c;
    c.main_file = "/etc/retentiond/retentiond.yaml";
    c.sha256 = "3f5a0c1e9b7d2a4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5";
    c.daemon.timezone = "Europe/Paris";
    c.daemon.audit_key = Secret("hunter2");
    Datastore dora{"dora",
                   &postgres_kind(),
                   spec_ptr(PostgresStore(Secret("postgres://app:hunter2@db/dora"))),
                   {}};
    Datastore exports{"exports", &files_kind(), spec_ptr(FilesStore("/srv/exports")), {}};
    Datastore sessions{"sessions",
                       &redis_kind(),
                       spec_ptr(RedisStore(Secret("redis://:hunter2@10.0.0.5:6379/0"))),
                       {}};
    c.datastores = {{"dora", dora}, {"exports", exports}, {"sessions", sessions}};
    c.rules.push_back(
        make_rule("dora-inactive-accounts", "dora", &postgres_kind(), "12 months",
                  "Données relatives au compte (nom, prénom, nom d'utilisateur, e-mail)"));
    c.rules.push_back(make_rule("dora-orientations", "dora", &postgres_kind(), "12 months",
                                "Données des bénéficiaires orientés"));
    c.rules.back().action = Action::anonymize;
    c.rules.push_back(make_rule("cqlp-satisfaction-forms", "exports", &files_kind(), "2 years",
                                "Formulaire de satisfaction (Tally)"));
    c.rules.back().clock_label = {"à compter de la soumission", "from submission"};
    c.rules.push_back(
        make_rule("cqlp-search-logs", "dora", &postgres_kind(), "1 day", "Adresses recherchées"));
    c.rules.back().clock_label = {"à compter de la recherche", "from the search"};
    c.rules.push_back(make_rule("dora-web-sessions", "sessions", &redis_kind(), "12 hours",
                                "Sessions de navigation"));
    c.rules.back().clock_label = {"à compter de la dernière activité", "from the last activity"};
    return c;
}

DryRun dry(const Config& c, const std::string& rule) {
    DryRun d;
    d.now = k_now;
    d.cutoff = subtract(k_now, c.find_rule(rule)->retain, find_zone("Europe/Paris"));
    d.age_buckets.assign(17, 0);
    return d;
}

std::vector<RuleDryRun> fixture_dries(const Config& c) {
    std::vector<RuleDryRun> out;
    {
        auto d = dry(c, "dora-inactive-accounts");
        d.in_scope = 48213;
        d.held = 3;
        d.no_clock = 12;
        d.oldest_clock = k_now - 300 * 24h;
        d.due_7d = 15;
        d.due_30d = 210;
        d.due_90d = 1250;
        d.age_buckets = {9000, 8000, 7000, 6500, 6000, 5000, 4500, 2201, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        d.counters = {{"dependents.structures_structuremember.delete", 0}};
        d.notes = {"users_user: Jean Dupont jean.dupont@example.org 06 12 34 56 78"};
        out.push_back({"dora-inactive-accounts", "dora", d, false, ""});
    }
    {
        auto d = dry(c, "dora-orientations");
        d.in_scope = 5231;
        d.due = 42;
        d.oldest_clock = d.cutoff - 10 * 24h; // ten days late for a daily schedule
        d.due_7d = 7;
        d.due_30d = 30;
        d.due_90d = 95;
        d.age_buckets = {800, 700, 650, 600, 600, 580, 570, 500, 30, 12, 0, 0, 0, 0, 0, 0, 0};
        out.push_back({"dora-orientations", "dora", d, false, ""});
    }
    {
        auto d = dry(c, "cqlp-satisfaction-forms");
        d.in_scope = 12000;
        d.due = 9000;
        d.oldest_clock = d.cutoff - 3 * 24h;
        d.age_buckets = {300, 300, 300, 300, 300, 300, 300, 300, 9000, 0, 0, 0, 0, 0, 0, 0, 0};
        out.push_back({"cqlp-satisfaction-forms", "exports", d, false, ""});
    }
    {
        auto d = dry(c, "cqlp-search-logs");
        d.in_scope = 77;
        d.due = 3;
        d.oldest_clock = d.cutoff - 1h; // due, but within one schedule period: not overdue
        d.age_buckets = {10, 10, 10, 10, 10, 10, 10, 4, 3, 0, 0, 0, 0, 0, 0, 0, 0};
        out.push_back({"cqlp-search-logs", "dora", d, false, ""});
    }
    out.push_back({"dora-web-sessions", "sessions", std::nullopt, true,
                   "cannot connect to redis://:hunter2@10.0.0.5:6379/0 (asked by "
                   "marie.curie@example.fr): Connection refused"});
    return out;
}

std::string line(const nlohmann::json& j) {
    return j.dump() + "\n";
}

nlohmann::json audit_intent(const std::string& run, const std::string& ts, const std::string& batch,
                            const std::string& rule, const std::string& target,
                            const std::string& action, int count) {
    return {{"type", "intent"}, {"run", run},       {"ts", ts},         {"batch", batch},
            {"rule", rule},     {"target", target}, {"action", action}, {"count", count}};
}

nlohmann::json audit_outcome(const std::string& run, const std::string& ts,
                             const std::string& batch, bool committed, int count) {
    return {{"type", "outcome"},      {"run", run},    {"ts", ts}, {"batch", batch},
            {"committed", committed}, {"count", count}};
}

// Run 1 (Monday of W30): two rules purge, one of them with a dependent table's batch.
std::string fixture_first_run() {
    const std::string r1 = "20260720T010000Z-aaaa0001";
    const std::string t1 = "2026-07-20T01:00:05.000000Z";
    std::string log;
    log += line({{"type", "run_start"}, {"run", r1}, {"ts", t1}, {"mode", "purge"}});
    auto users = audit_intent(r1, t1, r1 + "-1", "dora-inactive-accounts", "public.users_user",
                              "delete", 100);
    users["digests"] = nlohmann::json::array({"ab12"});
    log += line(users);
    // A dependent table's batch: not "records purged" of the rule.
    log += line(audit_intent(r1, t1, r1 + "-2", "dora-inactive-accounts",
                             "structures_structuremember", "delete", 7));
    log += line(audit_outcome(r1, t1, r1 + "-2", true, 7));
    log += line(audit_outcome(r1, t1, r1 + "-1", true, 100));
    log += line(audit_intent(r1, t1, r1 + "-3", "cqlp-satisfaction-forms",
                             "forms/A_Submissions.csv", "delete", 12));
    log += line(audit_outcome(r1, t1, r1 + "-3", true, 12));
    log += line({{"type", "run_end"},
                 {"run", r1},
                 {"ts", t1},
                 {"status", "ok"},
                 {"summary",
                  {{{"rule", "dora-inactive-accounts"}, {"processed", 100}, {"ok", true}},
                   {{"rule", "cqlp-satisfaction-forms"}, {"processed", 12}, {"ok", true}},
                   {{"rule", "dora-orientations"}, {"processed", 0}, {"ok", true}}}}});
    return log;
}

// Run 2 (Thursday of W33): a rolled-back batch and a refusal, so the run is partial.
std::string fixture_second_run() {
    const std::string r2 = "20260813T010000Z-bbbb0002";
    const std::string t2 = "2026-08-13T01:00:05.000000Z";
    std::string log;
    log += line({{"type", "run_start"}, {"run", r2}, {"ts", t2}, {"mode", "purge"}});
    log += line(audit_intent(r2, t2, r2 + "-1", "dora-inactive-accounts", "public.users_user",
                             "delete", 20));
    log += line(audit_outcome(r2, t2, r2 + "-1", true, 20));
    log += line(audit_intent(r2, t2, r2 + "-2", "dora-orientations", "orientations_orientation",
                             "anonymize", 5000));
    log += line(audit_outcome(r2, t2, r2 + "-2", true, 5000));
    log += line(audit_intent(r2, t2, r2 + "-3", "dora-orientations", "orientations_orientation",
                             "anonymize", 10));
    log += line(audit_outcome(r2, t2, r2 + "-3", false, 0));
    log += line({{"type", "refusal"},
                 {"run", r2},
                 {"ts", t2},
                 {"rule", "cqlp-satisfaction-forms"},
                 {"message", "max_rows exceeded: 9000 due > 5000 (ask jean.dupont@example.org)"}});
    log += line({{"type", "run_end"},
                 {"run", r2},
                 {"ts", t2},
                 {"status", "partial"},
                 {"summary",
                  {{{"rule", "dora-inactive-accounts"}, {"processed", 20}, {"ok", true}},
                   {{"rule", "dora-orientations"}, {"processed", 5000}, {"ok", true}},
                   {{"rule", "cqlp-satisfaction-forms"}, {"processed", 0}, {"ok", false}}}}});
    return log;
}

// The audit log as daemon/audit/audit.cpp writes it (fields that matter here; prev/seq left out),
// with a damaged line between the two runs.
std::string fixture_audit_log() {
    return fixture_first_run() + "{not json at all\n" + fixture_second_run();
}

class ReportTest : public ::testing::Test {
protected:
    void SetUp() override {
        m_config = fixture_config();
        const auto log = m_dir.write("audit.jsonl", fixture_audit_log());
        m_data = build_report_data(m_config, fixture_dries(m_config), log, k_now);
    }

    const RuleReport& rule(const std::string& name) const {
        for (const auto& r : m_data.rules) {
            if (r.rule == name) {
                return r;
            }
        }
        throw std::runtime_error("no rule " + name);
    }

    TempDir m_dir;
    Config m_config;
    ReportData m_data;
};

TEST_F(ReportTest, StatusesFollowDryRunAndAuditLog) {
    EXPECT_EQ(rule("dora-inactive-accounts").status, RuleStatus::compliant);
    EXPECT_EQ(rule("dora-orientations").status, RuleStatus::overdue);
    EXPECT_EQ(rule("cqlp-satisfaction-forms").status, RuleStatus::failing);
    EXPECT_EQ(rule("cqlp-search-logs").status, RuleStatus::never_run);
    EXPECT_EQ(rule("dora-web-sessions").status, RuleStatus::unknown);
    EXPECT_EQ(m_data.overall, RuleStatus::unknown);
    EXPECT_TRUE(m_data.audit_log_read);
    EXPECT_EQ(m_data.audit_bad_lines, 1u);
    ASSERT_EQ(m_data.services.size(), 3u);
    EXPECT_EQ(m_data.services[0].name, "dora");
    EXPECT_EQ(m_data.services[0].rules, 3u);
}

TEST_F(ReportTest, LastRunsAndWeeklyCountsComeFromTheAuditLog) {
    const auto& accounts = rule("dora-inactive-accounts");
    ASSERT_TRUE(accounts.last_success);
    EXPECT_EQ(accounts.last_success->run_id, "20260813T010000Z-bbbb0002");
    EXPECT_EQ(accounts.last_success->processed, 20);
    EXPECT_EQ(accounts.last_success->batches, 1);
    ASSERT_EQ(m_data.weeks.size(), 12u);
    EXPECT_EQ(m_data.weeks.front(), "2026-W22");
    EXPECT_EQ(m_data.weeks.back(), "2026-W33");
    // The dependent table's 7 rows are not records of the rule.
    EXPECT_EQ(accounts.purged_in_window, 120);
    EXPECT_EQ(accounts.purged_per_week[8].week, "2026-W30");
    EXPECT_EQ(accounts.purged_per_week[8].count, 100);
    EXPECT_EQ(accounts.purged_per_week[11].count, 20);

    const auto& orientations = rule("dora-orientations");
    EXPECT_EQ(orientations.purged_in_window, 5000); // the rolled-back batch does not count
    EXPECT_TRUE(orientations.oldest_past_grace);

    const auto& forms = rule("cqlp-satisfaction-forms");
    ASSERT_TRUE(forms.last_run);
    EXPECT_FALSE(forms.last_run->ok);
    EXPECT_EQ(forms.last_run->failure, "refusal");
    EXPECT_EQ(forms.last_run->message, "max_rows exceeded: 9000 due > 5000 (ask <e-mail>)");
    ASSERT_TRUE(forms.last_success);
    EXPECT_EQ(forms.last_success->run_id, "20260720T010000Z-aaaa0001");
    EXPECT_EQ(forms.last_success->processed, 12);

    EXPECT_FALSE(rule("cqlp-search-logs").last_run);
    EXPECT_EQ(rule("dora-web-sessions").error,
              "cannot connect to redis://:<redacted>@10.0.0.5:6379/0 (asked by <e-mail>): "
              "Connection refused");
}

TEST_F(ReportTest, RecordsWhoseClockCannotBeReadKeepARuleFromBeingCompliant) {
    auto dries = fixture_dries(m_config);
    for (auto& d : dries) {
        if (d.rule == "dora-inactive-accounts") {
            ASSERT_TRUE(d.dry);
            d.dry->unparseable = 3;
        }
    }
    const auto data =
        build_report_data(m_config, dries, m_dir.write("audit2.jsonl", fixture_audit_log()), k_now);
    for (const auto& r : data.rules) {
        if (r.rule == "dora-inactive-accounts") {
            EXPECT_EQ(r.status, RuleStatus::unknown); // was compliant (StatusesFollow...)
            EXPECT_EQ(r.error_code, "RD-DATA-UNPARSEABLE");
        }
    }
    EXPECT_NE(render_report(data, "md", "en").find("3 record(s) whose clock cannot be read"),
              std::string::npos);
    EXPECT_NE(render_report(data, "md", "fr").find("date de référence est illisible"),
              std::string::npos);
}

TEST_F(ReportTest, MissingAuditLogMeansNeverRun) {
    const auto data = build_report_data(m_config, fixture_dries(m_config),
                                        m_dir.file("no-such-log.jsonl"), k_now);
    EXPECT_FALSE(data.audit_log_read);
    EXPECT_EQ(data.rules[0].status, RuleStatus::never_run);
    EXPECT_EQ(data.rules[1].status, RuleStatus::overdue); // overdue outranks never run
    EXPECT_EQ(data.rules[2].status, RuleStatus::overdue);
}

TEST_F(ReportTest, RotatedAuditLogsAreReadOldestFirst) {
    // Move the first run to path.1: the result must be the same.
    const auto log = fixture_audit_log();
    const auto split = log.find("{not json");
    TempDir dir;
    dir.write("audit.jsonl.1", log.substr(0, split));
    const auto path = dir.write("audit.jsonl", log.substr(split));
    const auto data = build_report_data(m_config, fixture_dries(m_config), path, k_now);
    EXPECT_EQ(data.rules[0].purged_in_window, 120);
    ASSERT_TRUE(data.rules[2].last_success);
    EXPECT_EQ(data.rules[2].last_success->processed, 12);
}

TEST_F(ReportTest, MarkdownHasTheNumbersAndStatusesInBothLanguages) {
    const auto fr = render_report(m_data, "md", "fr");
    EXPECT_NE(fr.find("# Rapport de conservation des données"), std::string::npos);
    EXPECT_NE(fr.find("| dora-orientations | Données des bénéficiaires orientés | **en retard** |"),
              std::string::npos)
        << fr;
    EXPECT_NE(fr.find("**conforme**"), std::string::npos);
    EXPECT_NE(fr.find("**en échec**"), std::string::npos);
    EXPECT_NE(fr.find("**jamais exécutée**"), std::string::npos);
    EXPECT_NE(fr.find("**inconnu**"), std::string::npos);
    EXPECT_NE(fr.find("48\u202f213"), std::string::npos); // in scope, French grouping
    EXPECT_NE(fr.find("12 mois à compter de la dernière utilisation du compte"), std::string::npos);
    EXPECT_NE(fr.find("15 / 210 / 1\u202f250"), std::string::npos); // forecast 7/30/90
    EXPECT_NE(fr.find("| 2026-W30 | 100 |"), std::string::npos);
    EXPECT_NE(fr.find("300\u00a0j (limite 12 mois, 82\u00a0%)"), std::string::npos) << fr;

    // Worst first for people: unknown, failing, overdue, never run, compliant.
    const auto pos = [&fr](const std::string& rule) { return fr.find("\n## " + rule + " "); };
    EXPECT_LT(pos("dora-web-sessions"), pos("cqlp-satisfaction-forms"));
    EXPECT_LT(pos("cqlp-satisfaction-forms"), pos("dora-orientations"));
    EXPECT_LT(pos("dora-orientations"), pos("cqlp-search-logs"));
    EXPECT_LT(pos("cqlp-search-logs"), pos("dora-inactive-accounts"));
    EXPECT_NE(pos("dora-inactive-accounts"), std::string::npos);

    const auto en = render_report(m_data, "md", "en");
    EXPECT_NE(en.find("# Data retention report"), std::string::npos);
    EXPECT_NE(en.find("| dora-orientations | Données des bénéficiaires orientés | **overdue** |"),
              std::string::npos);
    EXPECT_NE(en.find("**never run**"), std::string::npos);
    EXPECT_NE(en.find("48,213"), std::string::npos);
    EXPECT_NE(en.find("12 months from the account's last use"), std::string::npos);
    EXPECT_NE(en.find("Last run refused"), std::string::npos);
    // The policy's own texts are not translated.
    EXPECT_NE(en.find("Mission d'intérêt public"), std::string::npos);
    EXPECT_EQ(en.find("en retard"), std::string::npos);
}

TEST_F(ReportTest, ErrorsAreShownByCodeInTheReportsLanguage) {
    const auto fr = render_report(m_data, "md", "fr");
    EXPECT_NE(fr.find("Service injoignable : le service de données ne répond pas "
                      "(RD-STORE-UNAVAILABLE)"),
              std::string::npos)
        << fr;
    EXPECT_NE(fr.find(" : plus d'enregistrements échus que la limite max_rows de la règle "
                      "(RD-LIMIT-MAX-ROWS)"),
              std::string::npos)
        << fr;
    const auto en = render_report(m_data, "md", "en");
    EXPECT_NE(
        en.find("Datastore unreachable: the datastore does not answer (RD-STORE-UNAVAILABLE)"),
        std::string::npos)
        << en;
    // The English details (driver text, engine message) are in neither: they are in the log.
    for (const auto& doc :
         {fr, en, render_report(m_data, "html", "fr"), render_report(m_data, "csv", "fr"),
          render_report(m_data, "json", "fr")}) {
        EXPECT_EQ(doc.find("Connection refused"), std::string::npos);
        EXPECT_EQ(doc.find("max_rows exceeded"), std::string::npos);
    }
    const auto json = nlohmann::json::parse(render_report(m_data, "json", "fr"));
    for (const auto& r : json.at("rules")) {
        if (r.at("name") == "dora-web-sessions") {
            EXPECT_EQ(r.at("error_code"), "RD-STORE-UNAVAILABLE");
            EXPECT_EQ(r.at("error"), "le service de données ne répond pas (RD-STORE-UNAVAILABLE)");
        } else if (r.at("name") == "cqlp-satisfaction-forms") {
            EXPECT_EQ(r.at("last_run").at("error_code"), "RD-LIMIT-MAX-ROWS");
        }
    }
}

TEST(ReportErrors, StableCodesFromEventsAndDetails) {
    using nlohmann::json;
    EXPECT_EQ(classify_error("cannot connect to redis://x: Connection refused", false),
              "RD-STORE-UNAVAILABLE");
    EXPECT_EQ(classify_error("anything", true), "RD-STORE-UNAVAILABLE");
    EXPECT_EQ(classify_error("FATAL: password authentication failed for user \"x\"", true),
              "RD-STORE-AUTH");
    EXPECT_EQ(classify_error("exports/a.csv:17: unterminated quote", false), "RD-DATA-UNPARSEABLE");
    EXPECT_EQ(classify_error("something odd", false), "RD-ERROR");
    EXPECT_EQ(classify_event(json{{"type", "refusal"}, {"limit", "max_fraction"}}),
              "RD-LIMIT-MAX-FRACTION");
    EXPECT_EQ(classify_event(json{{"type", "refusal"}, {"reason", "clock_skew"}}), "RD-CLOCK-SKEW");
    EXPECT_EQ(classify_event(json{{"type", "error"}, {"sqlstate", "57014"}}), "RD-STORE-TIMEOUT");
    EXPECT_EQ(classify_event(json{{"type", "error"}, {"sqlstate", "42501"}}),
              "RD-STORE-PERMISSION");
    EXPECT_EQ(classify_event(json{{"type", "error"}, {"unavailable", true}, {"message", "x"}}),
              "RD-STORE-UNAVAILABLE");
    // Every code has both languages; an unknown code falls back to RD-ERROR.
    EXPECT_EQ(error_text("RD-NO-SUCH").code, "RD-ERROR");
    EXPECT_EQ(error_for_report("RD-IO", "en"), "disk read or write error (RD-IO)");
}

TEST_F(ReportTest, CsvParsesWithOneRowPerRule) {
    for (const char* lang : {"fr", "en"}) {
        const auto text = render_report(m_data, "csv", lang);
        csv::Reader reader(csv::string_reader(text), ',');
        csv::Record rec;
        std::vector<std::vector<std::string>> rows;
        while (reader.next(rec)) {
            std::vector<std::string> row;
            for (std::size_t i = 0; i < rec.size(); ++i) {
                row.push_back(rec.value(i));
            }
            rows.push_back(row);
        }
        ASSERT_EQ(rows.size(), 6u);
        for (const auto& row : rows) {
            EXPECT_EQ(row.size(), 27u);
        }
        EXPECT_EQ(rows[0][0], "rule");
        EXPECT_EQ(rows[0][8], "status");
        EXPECT_EQ(rows[1][0], "dora-inactive-accounts");
        // A field with a comma and quotes round-trips (RFC 4180 quoting).
        EXPECT_EQ(rows[1][4], m_config.rules[0].category);
        EXPECT_EQ(rows[1][8], "compliant");
        EXPECT_EQ(rows[1][10], "48213");
        EXPECT_EQ(rows[1][25], "120");
        EXPECT_EQ(rows[2][8], "overdue");
        EXPECT_EQ(rows[2][11], "42");
        EXPECT_EQ(rows[3][8], "failing");
        EXPECT_EQ(rows[3][22], "false");
        EXPECT_EQ(rows[4][8], "never_run");
        EXPECT_EQ(rows[5][8], "unknown");
        EXPECT_EQ(rows[5][10], "");
        EXPECT_EQ(rows[2][9], std::string(lang) == "fr" ? "en retard" : "overdue");
    }
}

TEST_F(ReportTest, JsonFollowsTheDocumentedSchema) {
    const auto doc = nlohmann::json::parse(render_report(m_data, "json", "en"));
    EXPECT_EQ(doc.at("schema_version"), 1);
    EXPECT_EQ(doc.at("generated_at"), "2026-08-14T10:00:00Z");
    EXPECT_EQ(doc.at("lang"), "en");
    EXPECT_EQ(doc.at("overall_status"), "unknown");
    EXPECT_EQ(doc.at("config").at("sha256"), m_config.sha256);
    EXPECT_EQ(doc.at("status_counts").at("overdue"), 1);
    EXPECT_EQ(doc.at("audit_log").at("bad_lines"), 1);
    EXPECT_EQ(doc.at("weeks").size(), 12u);
    const auto& rules = doc.at("rules");
    ASSERT_EQ(rules.size(), 5u);
    for (const auto& r : rules) {
        for (const char* key :
             {"name", "datastore", "kind", "action", "category", "legal_basis", "description",
              "retain", "schedule", "status", "status_text", "status_reason", "error", "dry_run",
              "last_run", "last_success", "purged_per_week", "purged_in_window"}) {
            EXPECT_TRUE(r.contains(key)) << key;
        }
    }
    const auto& orientations = rules.at(1);
    EXPECT_EQ(orientations.at("status"), "overdue");
    EXPECT_EQ(orientations.at("action"), "anonymize");
    EXPECT_EQ(orientations.at("retain").at("words"), "12 months from the account's last use");
    EXPECT_EQ(orientations.at("schedule").at("period_seconds"), 86400);
    const auto& dry = orientations.at("dry_run");
    EXPECT_EQ(dry.at("due"), 42);
    EXPECT_EQ(dry.at("forecast").at("90d"), 95);
    EXPECT_EQ(dry.at("age_buckets").size(), 17u);
    EXPECT_EQ(dry.at("oldest_past_grace"), true);
    EXPECT_EQ(dry.at("notes"), 0);
    EXPECT_EQ(rules.at(0).at("dry_run").at("notes"), 1); // counted, never shown
    EXPECT_EQ(orientations.at("last_success").at("processed"), 5000);
    EXPECT_EQ(rules.at(4).at("dry_run"), nullptr);
    EXPECT_EQ(rules.at(4).at("status"), "unknown");
    EXPECT_EQ(rules.at(3).at("last_run"), nullptr);
}

TEST_F(ReportTest, HtmlIsSelfContainedPrintableAndEscaped) {
    for (const char* lang : {"fr", "en"}) {
        const auto html = render_report(m_data, "html", lang);
        EXPECT_EQ(html.find("<script"), std::string::npos);
        EXPECT_EQ(html.find("http://"), std::string::npos);
        EXPECT_EQ(html.find("https://"), std::string::npos);
        EXPECT_EQ(html.find("<link"), std::string::npos);
        EXPECT_EQ(html.find("url("), std::string::npos);
        EXPECT_NE(html.find("size: A4"), std::string::npos);
        EXPECT_NE(html.find("page-break-inside: avoid"), std::string::npos);
        EXPECT_NE(html.find(m_config.sha256), std::string::npos);
        EXPECT_NE(html.find("dora (postgres), exports (files), sessions (redis)"),
                  std::string::npos);
        // An age histogram and a weekly chart per rule, a limit line in each histogram; none for
        // the unreadable store, which purged nothing in the window.
        std::size_t svgs = 0;
        for (auto p = html.find("<svg"); p != std::string::npos; p = html.find("<svg", p + 1)) {
            ++svgs;
        }
        EXPECT_EQ(svgs, 8u);
        EXPECT_NE(html.find("stroke-dasharray"), std::string::npos);
    }
    const auto fr = render_report(m_data, "html", "fr");
    EXPECT_NE(fr.find("<html lang=\"fr\">"), std::string::npos);
    EXPECT_NE(fr.find(">en retard</span>"), std::string::npos);
    EXPECT_NE(fr.find("Généré le"), std::string::npos);
    EXPECT_NE(fr.find("14/08/2026 12:00 (Europe/Paris)"), std::string::npos);
    const auto en = render_report(m_data, "html", "en");
    EXPECT_NE(en.find(">overdue</span>"), std::string::npos);
    EXPECT_NE(en.find("2026-08-14 12:00 (Europe/Paris)"), std::string::npos);
}

TEST_F(ReportTest, OnlyTheLatestRunOfARuleDecidesFailing) {
    const std::string rule = "cqlp-search-logs";
    const auto ev = [&](const std::string& run, const std::string& ts, nlohmann::json j) {
        j["run"] = run;
        j["ts"] = ts;
        j["rule"] = rule;
        return line(j);
    };
    TempDir dir;
    // Run 1 fails with an error event, run 2 succeeds (nothing due: only run_end mentions it).
    std::string log = ev("r1", "2026-08-12T01:00:00Z", {{"type", "error"}, {"message", "boom"}});
    log += line({{"type", "run_end"},
                 {"run", "r2"},
                 {"ts", "2026-08-13T01:00:00Z"},
                 {"summary", {{{"rule", rule}, {"processed", 0}, {"ok", true}}}}});
    auto data =
        build_report_data(m_config, fixture_dries(m_config), dir.write("a.jsonl", log), k_now);
    EXPECT_EQ(data.rules[3].status, RuleStatus::compliant);
    ASSERT_TRUE(data.rules[3].last_success);
    EXPECT_EQ(data.rules[3].last_success->run_id, "r2");

    // Run 3 ends not ok without an event of its own (stopped): failing, last success stays r2.
    log += line({{"type", "run_end"},
                 {"run", "r3"},
                 {"ts", "2026-08-14T01:00:00Z"},
                 {"summary", {{{"rule", rule}, {"processed", 0}, {"ok", false}}}}});
    data = build_report_data(m_config, fixture_dries(m_config), dir.write("b.jsonl", log), k_now);
    EXPECT_EQ(data.rules[3].status, RuleStatus::failing);
    EXPECT_EQ(data.rules[3].last_run->run_id, "r3");
    EXPECT_EQ(data.rules[3].last_success->run_id, "r2");
    const auto md = render_report(data, "md", "en");
    EXPECT_NE(md.find("Last run failed (2026-08-14 03:00)"), std::string::npos) << md;
}

TEST_F(ReportTest, DaemonRunsAreSplitByPauses) {
    // A daemon writes every line under one run id and sums its lifetime in run_end.
    const std::string rule = "dora-inactive-accounts";
    const std::string d = "20260801T000000Z-dddd0001";
    std::string log = line(
        {{"type", "run_start"}, {"run", d}, {"ts", "2026-08-01T00:00:00Z"}, {"mode", "daemon"}});
    log += line({{"type", "refused"},
                 {"run", d},
                 {"ts", "2026-08-12T01:00:00Z"},
                 {"rule", rule},
                 {"reason", "max_rows"},
                 {"due", 1200},
                 {"max_rows", 1000}});
    auto data =
        build_report_data(m_config, fixture_dries(m_config), m_dir.write("d1.jsonl", log), k_now);
    EXPECT_EQ(data.rules[0].status, RuleStatus::failing);
    EXPECT_EQ(data.rules[0].last_run->message, "max_rows (due 1200, max_rows 1000)");

    // The next day's run of the same rule commits a batch: a new run, successful.
    log += line({{"type", "intent"},
                 {"run", d},
                 {"ts", "2026-08-13T01:00:00Z"},
                 {"rule", rule},
                 {"batch", d + "-1"},
                 {"target", "public.users_user"},
                 {"action", "delete"},
                 {"count", 1000}});
    log += line({{"type", "outcome"},
                 {"run", d},
                 {"ts", "2026-08-13T01:00:01Z"},
                 {"batch", d + "-1"},
                 {"committed", true},
                 {"count", 1000}});
    log += line({{"type", "skipped"},
                 {"run", d},
                 {"ts", "2026-08-13T02:00:00Z"},
                 {"rule", rule},
                 {"reason", "running on another host (advisory lock)"}});
    log += line({{"type", "run_end"},
                 {"run", d},
                 {"ts", "2026-08-13T05:00:00Z"},
                 {"status", "ok"},
                 {"summary", {{{"rule", rule}, {"processed", 987654}, {"failures", 3}}}}});
    data =
        build_report_data(m_config, fixture_dries(m_config), m_dir.write("d2.jsonl", log), k_now);
    EXPECT_EQ(data.rules[0].status, RuleStatus::compliant);
    ASSERT_TRUE(data.rules[0].last_success);
    EXPECT_EQ(data.rules[0].last_success->processed, 1000); // not the lifetime total
    EXPECT_EQ(data.rules[0].purged_in_window, 1000);
}

TEST_F(ReportTest, PolicyTextsAreEscaped) {
    m_config.rules[0].category = "Compte <b>\"x\" & 'y'</b> | z";
    m_config.rules[0].legal_basis = "<script>alert(1)</script>";
    const auto data = build_report_data(m_config, fixture_dries(m_config), m_data.audit_log, k_now);
    const auto html = render_report(data, "html", "fr");
    EXPECT_NE(html.find("Compte &lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt; | z"),
              std::string::npos);
    EXPECT_EQ(html.find("<b>\"x"), std::string::npos);
    EXPECT_EQ(html.find("<script"), std::string::npos);
    const auto md = render_report(data, "md", "fr");
    EXPECT_NE(md.find("Compte &lt;b&gt;\"x\" &amp; 'y'&lt;/b&gt; \\| z"), std::string::npos) << md;
    EXPECT_EQ(md.find("<script"), std::string::npos);
    const auto doc = nlohmann::json::parse(render_report(data, "json", "fr"));
    EXPECT_EQ(doc["rules"][0]["category"], m_config.rules[0].category);
}

TEST_F(ReportTest, NoPersonalValueInAnyFormat) {
    for (const char* format : {"html", "md", "json", "csv"}) {
        for (const char* lang : {"fr", "en"}) {
            const auto text = render_report(m_data, format, lang);
            for (const auto& value : k_personal) {
                EXPECT_EQ(text.find(value), std::string::npos)
                    << value << " found in " << format << "/" << lang;
            }
        }
    }
}

TEST_F(ReportTest, RejectsUnknownFormatAndLanguage) {
    EXPECT_THROW(render_report(m_data, "pdf", "fr"), std::invalid_argument);
    EXPECT_THROW(render_report(m_data, "md", "de"), std::invalid_argument);
}

TEST(ReportMask, MasksEmailsAndPasswords) {
    EXPECT_EQ(mask_personal("user a.b+c@mail.example.com failed"), "user <e-mail> failed");
    EXPECT_EQ(mask_personal("host=db password=s3cret user=x"),
              "host=db password=<redacted> user=x");
    EXPECT_EQ(mask_personal("postgres://app:pw@db.example.org/dora"),
              "postgres://app:<redacted>@db.example.org/dora");
    EXPECT_EQ(mask_personal("plain text: 17 rows"), "plain text: 17 rows");
}

// The HTML in a real browser: headless Chromium renders it to a PNG without console errors.
// Chromium is a test dependency (scripts/install-deps.sh): when it is missing the test fails.
TEST_F(ReportTest, ChromiumRendersTheHtml) {
    auto data = m_data;
    data.audit_log = "/var/lib/retentiond/audit.jsonl"; // the example shows the usual path
    const auto html = m_dir.write("report.html", render_report(data, "html", "fr"));
    const auto png = m_dir.file("report.png");
    const auto profile = m_dir.file("profile");
    const auto log = m_dir.file("chromium.log");
    const std::string cmd =
        "timeout 120 chromium --headless --no-sandbox --disable-gpu "
        "--disable-background-networking --disable-component-update --disable-sync "
        "--no-first-run --enable-logging=stderr --v=0 --user-data-dir='" +
        profile + "' --screenshot='" + png + "' --window-size=1000,1400 'file://" + html + "' >'" +
        log + "' 2>&1";
    const int status = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(status)) << cmd;
    ASSERT_EQ(WEXITSTATUS(status), 0) << "chromium failed (is it installed?):\n"
                                      << test::read_file(log);
    ASSERT_TRUE(std::filesystem::exists(png)) << test::read_file(log);
    const auto bytes = test::read_file(png);
    ASSERT_GT(bytes.size(), 24u);
    EXPECT_EQ(bytes.substr(1, 3), "PNG");
    const auto be32 = [&bytes](std::size_t at) {
        return (static_cast<unsigned>(static_cast<unsigned char>(bytes[at])) << 24) |
               (static_cast<unsigned>(static_cast<unsigned char>(bytes[at + 1])) << 16) |
               (static_cast<unsigned>(static_cast<unsigned char>(bytes[at + 2])) << 8) |
               static_cast<unsigned>(static_cast<unsigned char>(bytes[at + 3]));
    };
    EXPECT_EQ(be32(16), 1000u); // IHDR width
    EXPECT_EQ(be32(20), 1400u); // IHDR height
    // A blank 1000x1400 page compresses to a few kilobytes; text and charts do not.
    EXPECT_GT(bytes.size(), 40000u);
    // Console messages are logged as "[...:INFO:CONSOLE:1] \"text\", source: ..." lines.
    const auto console = test::read_file(log);
    EXPECT_EQ(console.find(":CONSOLE"), std::string::npos) << console;
    if (const char* out = std::getenv("RETENTIOND_REPORT_EXAMPLE")) {
        std::filesystem::copy_file(png, out, std::filesystem::copy_options::overwrite_existing);
        std::filesystem::copy_file(html, std::string(out) + ".html",
                                   std::filesystem::copy_options::overwrite_existing);
    }
}

} // namespace
} // namespace retentiond
