// `retentiond report` through the real binary: a files datastore that works and a Redis one that
// cannot be reached (exit 75, the report still written).
#include "support/process.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Site {
    TempDir dir;
    std::string config;

    explicit Site(bool with_redis) {
        dir.write("exports/Satisfaction_Submissions_2026-01-01.csv",
                  "\"Submission ID\",\"Respondent ID\",\"Submitted at\",\"Email\"\n"
                  "sub-old-1,r1,2020-03-01 10:00:00,alice@example.org\n"
                  "sub-new,r2,2099-01-01 10:00:00,bob@example.org\n"
                  "sub-old-2,r3,2021-05-01 10:00:00,carol@example.org\n");
        std::string yaml = "version: 1\n"
                           "daemon:\n"
                           "  audit_log: " +
                           dir.file("audit.jsonl") +
                           "\n"
                           "  timezone: Europe/Paris\n"
                           "datastores:\n"
                           "  exports: { kind: files, root: " +
                           dir.file("exports") + " }\n";
        if (with_redis) {
            yaml += "  sessions: { kind: redis, url: " + dir.file("no-such-redis.sock") + " }\n";
        }
        yaml += "rules:\n"
                "  - name: satisfaction-forms\n"
                "    datastore: exports\n"
                "    category: \"Formulaire de satisfaction (nom, e-mail)\"\n"
                "    legal_basis: Consentement\n"
                "    clock_label: { fr: \"à compter de la soumission\", en: \"from submission\" }\n"
                "    files: \"*_Submissions_*.csv\"\n"
                "    format: csv\n"
                "    clock: { field: \"Submitted at\", format: \"%Y-%m-%d %H:%M:%S\" }\n"
                "    retain: 2 years\n"
                "    action: delete\n";
        if (with_redis) {
            yaml += "  - name: web-sessions\n"
                    "    datastore: sessions\n"
                    "    category: Sessions\n"
                    "    legal_basis: Intérêt légitime\n"
                    "    keys: \"session:*\"\n"
                    "    clock: idle\n"
                    "    retain: 12 hours\n"
                    "    action: delete\n";
        }
        config = dir.write("retentiond.yaml", yaml);
    }
};

TEST(ReportCli, MarkdownOnStdoutByDefault) {
    Site site(false);
    const auto r = run_retentiond({"--config", site.config, "report"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("# Rapport de conservation des données"));
    EXPECT_THAT(r.out, HasSubstr("2 ans à compter de la soumission"));
    // Two submissions past two years, and no audit log yet: never run but already late.
    EXPECT_THAT(r.out, HasSubstr("**en retard**"));
    EXPECT_THAT(r.err, HasSubstr("runs cannot be shown"));
    for (const char* value : {"alice@example.org", "carol@example.org", "bob@example.org"}) {
        EXPECT_THAT(r.out, Not(HasSubstr(value)));
    }
}

TEST(ReportCli, UnreachableStoreIsUnknownAndExits75) {
    Site site(true);
    const auto out = site.dir.file("report.json");
    const auto r =
        run_retentiond({"--config", site.config, "report", "--output", out, "--lang", "en"});
    EXPECT_EQ(r.exit_code, 75) << r.err;
    EXPECT_THAT(r.err, HasSubstr("web-sessions"));
    ASSERT_TRUE(std::filesystem::exists(out));
    const auto doc = nlohmann::json::parse(read_file(out));
    EXPECT_EQ(doc["schema_version"], 1);
    EXPECT_EQ(doc["overall_status"], "unknown");
    ASSERT_EQ(doc["rules"].size(), 2u);
    EXPECT_EQ(doc["rules"][0]["status"], "overdue");
    EXPECT_EQ(doc["rules"][0]["dry_run"]["due"], 2);
    EXPECT_EQ(doc["rules"][0]["dry_run"]["in_scope"], 3);
    EXPECT_EQ(doc["rules"][1]["status"], "unknown");
    EXPECT_FALSE(doc["rules"][1]["error"].get<std::string>().empty());
    // No temporary file left beside the report.
    int files = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(site.dir.path())) {
        ++files;
    }
    EXPECT_EQ(files, 3); // exports/, retentiond.yaml, report.json: no temp file, no audit log
}

TEST(ReportCli, UnwritableOutputIsAnIoErrorNotAnAuditFailure) {
    Site site(false);
    const auto r = run_retentiond(
        {"--config", site.config, "report", "--output", site.dir.file("no-such-dir/report.md")});
    EXPECT_EQ(r.exit_code, 74) << r.err;
    EXPECT_THAT(r.err, HasSubstr("no-such-dir/"));
    EXPECT_THAT(r.err, Not(HasSubstr("nothing was touched"))) << "not the audit log's failure";
}

TEST(ReportCli, AFrenchReportShowsAStoreErrorInFrenchWithItsCode) {
    Site site(true);
    for (const char* format : {"md", "html", "csv", "json"}) {
        const auto r = run_retentiond({"--config", site.config, "report", "--format", format});
        EXPECT_EQ(r.exit_code, 75) << r.err;
        // The report: the code and its French message, no English driver text.
        EXPECT_THAT(r.out, HasSubstr("le service de données ne répond pas (RD-STORE-UNAVAILABLE)"))
            << format;
        for (const char* english : {"cannot connect", "Connection refused", "No such file",
                                    "unavailable", "datastore \""}) {
            EXPECT_THAT(r.out, Not(HasSubstr(english))) << format;
        }
        // The English detail stays in the log (stderr here, the journal under systemd).
        EXPECT_THAT(r.err, HasSubstr("report: rule web-sessions: RD-STORE-UNAVAILABLE: "));
        EXPECT_THAT(r.err, HasSubstr("no-such-redis.sock"));
    }
    const auto md = run_retentiond({"--config", site.config, "report"});
    EXPECT_THAT(md.out, HasSubstr("Service injoignable : le service de données ne répond pas "
                                  "(RD-STORE-UNAVAILABLE)"));
    const auto en = run_retentiond({"--config", site.config, "report", "--lang", "en"});
    EXPECT_THAT(en.out, HasSubstr("Datastore unreachable: the datastore does not answer "
                                  "(RD-STORE-UNAVAILABLE)"));
}

TEST(ReportCli, FormatFromExtensionAndOptions) {
    Site site(false);
    const auto html = site.dir.file("r.html");
    auto r = run_retentiond({"--config", site.config, "report", "--output", html});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto text = read_file(html);
    EXPECT_THAT(text, HasSubstr("<!DOCTYPE html>"));
    EXPECT_THAT(text, Not(HasSubstr("<script")));

    r = run_retentiond(
        {"--config", site.config, "report", "--format", "csv", "--rule", "satisfaction-forms"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("rule,datastore,kind,action,category"));
    EXPECT_THAT(r.out, HasSubstr("satisfaction-forms,exports,files,delete,"));

    EXPECT_EQ(run_retentiond({"--config", site.config, "report", "--format", "pdf"}).exit_code, 64);
    EXPECT_EQ(run_retentiond({"--config", site.config, "report", "--lang", "de"}).exit_code, 64);
    const auto unknown_rule = run_retentiond({"--config", site.config, "report", "--rule", "nope"});
    EXPECT_EQ(unknown_rule.exit_code, 64);
    EXPECT_THAT(unknown_rule.err, HasSubstr("unknown rule \"nope\""));
}

// The report's options go through the CLI's one option parser; the messages are the report's own.
TEST(ReportCli, OptionErrorsAreUsageErrorsNamingTheReport) {
    Site site(false);
    const auto usage = [&](std::vector<std::string> args) {
        args.insert(args.begin(), {"--config", site.config, "report"});
        const auto r = run_retentiond(args);
        EXPECT_EQ(r.exit_code, 64) << r.err;
        EXPECT_TRUE(r.out.empty()) << r.out;
        return r.err;
    };
    EXPECT_EQ(usage({"--format"}), "retentiond: report: --format needs a value\n");
    EXPECT_EQ(usage({"--output", "a.md", "--output=b.md"}),
              "retentiond: report: --output given more than once\n");
    EXPECT_EQ(usage({"--log", "a", "--log", "b"}),
              "retentiond: report: --log given more than once\n");
    EXPECT_EQ(usage({"--verbose"}), "retentiond: report: unexpected argument \"--verbose\"\n");
    EXPECT_EQ(usage({"--format=pdf"}),
              "retentiond: report: --format must be md, html, json or csv\n");
    EXPECT_EQ(usage({"--lang", "de"}), "retentiond: report: --lang must be fr or en\n");

    const auto help = run_retentiond({"--config", site.config, "report", "-h"});
    EXPECT_EQ(help.exit_code, 0);
    EXPECT_THAT(help.out, HasSubstr("Usage: retentiond report"));

    // --lang may be repeated (the last wins); --rule=NAME and --format=md are read as well.
    const auto r = run_retentiond({"--config", site.config, "report", "--lang", "fr", "--lang=en",
                                   "--rule=satisfaction-forms", "--format=md"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, Not(HasSubstr("# Rapport de conservation")));
    EXPECT_THAT(r.out, HasSubstr("satisfaction-forms"));
}

} // namespace
} // namespace retentiond::test
