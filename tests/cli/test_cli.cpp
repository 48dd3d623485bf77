// Drives the real retentiond binary: exit codes, messages, files written.
#include "support/process.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(Cli, VersionAndHelp) {
    const auto version = run_retentiond({"--version"});
    EXPECT_EQ(version.exit_code, 0);
    EXPECT_THAT(version.out, HasSubstr("retentiond 0."));

    const auto help = run_retentiond({"--help"});
    EXPECT_EQ(help.exit_code, 0);
    EXPECT_THAT(help.out, HasSubstr("78  configuration invalid"));

    for (const std::string verb :
         {"check", "purge", "policy-table", "audit", "report", "run", "erase"}) {
        const auto r = run_retentiond({verb, "--help"});
        EXPECT_EQ(r.exit_code, 0) << verb << ": " << r.err;
        EXPECT_THAT(r.out, HasSubstr("Usage: retentiond " + verb)) << verb;
        EXPECT_THAT(r.out, Not(HasSubstr("not implemented"))) << verb;
    }
    EXPECT_THAT(run_retentiond({"run", "--help"}).out, HasSubstr("SIGHUP reloads"));
    EXPECT_THAT(help.out, Not(HasSubstr("not built")));
    // Every sub-command too, wherever --help stands (it used to be an unexpected argument).
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"audit", "prove", "--help"},
          {"audit", "verify", "--help"},
          {"audit", "prove", "--rule", "x", "--help"}}) {
        const auto r = run_retentiond(args);
        EXPECT_EQ(r.exit_code, 0) << args[1] << ": " << r.err;
        EXPECT_THAT(r.out, HasSubstr("retentiond audit " + args[1])) << args[1];
    }
}

TEST(Cli, UsageErrorsExit64) {
    EXPECT_EQ(run_retentiond({}).exit_code, 64);
    const auto unknown = run_retentiond({"frobnicate"});
    EXPECT_EQ(unknown.exit_code, 64);
    EXPECT_THAT(unknown.err, HasSubstr("unknown command \"frobnicate\""));
    const auto no_now = run_retentiond({"purge"});
    EXPECT_EQ(no_now.exit_code, 64);
    EXPECT_THAT(no_now.err, HasSubstr("purge needs --now"));
    EXPECT_EQ(run_retentiond({"policy-table", "--format", "pdf"}).exit_code, 64);
}

// A files datastore with one Tally export: two submissions past 2 years, one recent.
struct FilesSite {
    TempDir dir;
    std::string csv;
    std::string config;

    explicit FilesSite(const std::string& daemon_block) {
        csv =
            dir.write("exports/Satisfaction_Submissions_2026-01-01.csv",
                      "\"Submission ID\",\"Respondent ID\",\"Submitted at\",\"Email\"\n"
                      "sub-old-1,r1,2020-03-01 10:00:00,alice@example.org\n"
                      "sub-new,r2,2099-01-01 10:00:00,bob@example.org\n"
                      "sub-old-2,r3,2021-05-01 10:00:00,\"carol, the \"\"pro\"\"@example.org\"\n");
        dir.write("audit-key", "demo-key-0123456789\n");
        config = dir.write("retentiond.yaml", "version: 1\n"
                                              "daemon:\n" +
                                                  daemon_block +
                                                  "datastores:\n"
                                                  "  exports:\n"
                                                  "    kind: files\n"
                                                  "    root: exports\n"
                                                  "rules:\n"
                                                  "  - name: cqlp-satisfaction-forms\n"
                                                  "    datastore: exports\n"
                                                  "    category: Formulaire de satisfaction\n"
                                                  "    files: \"**/*_Submissions_*.csv\"\n"
                                                  "    format: csv\n"
                                                  "    clock: { field: \"Submitted at\", format: "
                                                  "\"%Y-%m-%d %H:%M:%S\" }\n"
                                                  "    retain: 2 years\n"
                                                  "    action: delete\n"
                                                  "    limits: { max_fraction: 1 }\n");
    }
    std::string audit_block() const {
        return "  audit_log: " + dir.file("audit.jsonl") +
               "\n  audit_key: ${file:" + dir.file("audit-key") +
               "}\n  timezone: Europe/Paris\n  metrics: \"off\"\n";
    }
};

TEST(Cli, DanglingLinkOutOfTheRootIsNamedSoInTheDryRun) {
    FilesSite site("  metrics: \"off\"\n");
    // Relative, pointing out of the root, to nothing: not "not followed", but out of the root.
    std::filesystem::create_symlink("../elsewhere/Old_Submissions_1.csv",
                                    site.dir.file("exports/Old_Submissions_1.csv"));
    const auto r = run_retentiond({"--config", site.config, "purge", "--now", "--dry-run"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("Old_Submissions_1.csv: symbolic link out of the datastore root, "
                                 "skipped"));
}

TEST(Cli, TypoInConfigExits78WithPositionAndHint) {
    TempDir dir;
    const auto path = dir.write("bad.yaml", "version: 1\n"
                                            "datastores:\n"
                                            "  exports: { kind: files, root: /tmp }\n"
                                            "rules:\n"
                                            "  - name: forms\n"
                                            "    datastore: exports\n"
                                            "    files: \"*.csv\"\n"
                                            "    clock: mtime\n"
                                            "    format: whole\n"
                                            "    retian: 2 years\n"
                                            "    action: delete\n");
    const auto r = run_retentiond({"check", "--offline", "--config", path});
    EXPECT_EQ(r.exit_code, 78);
    EXPECT_THAT(r.err, HasSubstr(path + ":10:5: rule \"forms\": unknown key \"retian\" (did you "
                                        "mean \"retain\"?)"));
}

TEST(Cli, ConfigFromEnvironmentVariable) {
    FilesSite site("  metrics: \"off\"\n");
    const auto r = run_retentiond({"check", "--offline"}, {{"RETENTIOND_CONFIG", site.config}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("configuration valid: 1 rules"));
}

TEST(Cli, UnknownRuleIsAUsageError) {
    FilesSite site("  metrics: \"off\"\n");
    const auto r = run_retentiond({"--config", site.config, "purge", "--now", "--rule", "nope"});
    EXPECT_EQ(r.exit_code, 64);
    EXPECT_THAT(r.err, HasSubstr("unknown rule \"nope\""));
}

TEST(Cli, PurgeWithoutAuditKeyRefusesAndTouchesNothing) {
    TempDir other;
    FilesSite site("  audit_log: " + other.file("audit.jsonl") + "\n  metrics: \"off\"\n");
    const auto before = read_file(site.csv);
    const auto r = run_retentiond({"--config", site.config, "purge", "--now"});
    EXPECT_EQ(r.exit_code, 78);
    EXPECT_THAT(r.err, HasSubstr("audit_key is not set"));
    EXPECT_EQ(read_file(site.csv), before);
}

TEST(Cli, UnwritableAuditLogStopsBeforeTouchingAnything) {
    FilesSite site("  audit_log: /proc/retentiond-cannot-write/audit.jsonl\n"
                   "  audit_key: secret-key-for-test\n  metrics: \"off\"\n");
    const auto before = read_file(site.csv);
    const auto r = run_retentiond({"--config", site.config, "purge", "--now"});
    EXPECT_EQ(r.exit_code, 74) << r.err;
    EXPECT_THAT(r.err, HasSubstr("nothing was touched"));
    EXPECT_EQ(read_file(site.csv), before);
}

TEST(Cli, DryRunThenPurgeThenVerifyAndProve) {
    TempDir holder;
    FilesSite site("");
    // Rewrite the config with the audit block pointing into the site's own dir.
    const auto config = read_file(site.config);
    const auto with_daemon = std::string("version: 1\ndaemon:\n") + site.audit_block() +
                             config.substr(config.find("datastores:"));
    site.dir.write("retentiond.yaml", with_daemon);
    const auto before = read_file(site.csv);

    const auto dry = run_retentiond({"--config", site.config, "purge", "--dry-run"});
    EXPECT_EQ(dry.exit_code, 0) << dry.err;
    EXPECT_THAT(dry.out, HasSubstr("cqlp-satisfaction-forms"));
    EXPECT_EQ(read_file(site.csv), before) << "a dry run changed the file";
    EXPECT_FALSE(std::filesystem::exists(site.dir.file("audit.jsonl")));

    const auto purge = run_retentiond({"--config", site.config, "purge", "--now"});
    EXPECT_EQ(purge.exit_code, 0) << purge.out << purge.err;
    EXPECT_THAT(purge.out, HasSubstr("ok"));
    const auto after = read_file(site.csv);
    EXPECT_THAT(after, Not(HasSubstr("sub-old-1")));
    EXPECT_THAT(after, Not(HasSubstr("carol")));
    EXPECT_THAT(after, HasSubstr("sub-new,r2,2099-01-01 10:00:00,bob@example.org\n"));

    const auto log = read_file(site.dir.file("audit.jsonl"));
    for (const std::string personal :
         {"sub-old-1", "sub-old-2", "alice", "carol", "example.org", "demo-key-0123456789"}) {
        EXPECT_THAT(log, Not(HasSubstr(personal))) << "audit log holds " << personal;
    }

    const auto verify = run_retentiond({"--config", site.config, "audit", "verify"});
    EXPECT_EQ(verify.exit_code, 0) << verify.err;
    EXPECT_THAT(verify.out, HasSubstr("intact"));
    EXPECT_THAT(verify.out, HasSubstr("2 records"));

    const auto proof = run_retentiond({"--config", site.config, "audit", "prove", "--rule",
                                       "cqlp-satisfaction-forms", "--key", "sub-old-2"});
    EXPECT_EQ(proof.exit_code, 0) << proof.err;
    EXPECT_THAT(proof.out, HasSubstr("delete at"));
    const auto never = run_retentiond({"--config", site.config, "audit", "prove", "--rule",
                                       "cqlp-satisfaction-forms", "--key", "sub-new"});
    EXPECT_EQ(never.exit_code, 0);
    EXPECT_THAT(never.out, HasSubstr("never seen"));

    // Tampering: change one byte of the first line.
    auto tampered = log;
    tampered[tampered.find("run_start") + 1] = 'X';
    site.dir.write("audit.jsonl", tampered);
    const auto bad = run_retentiond({"--config", site.config, "audit", "verify"});
    EXPECT_EQ(bad.exit_code, 65);
    EXPECT_THAT(bad.err, HasSubstr(":1: ")) << bad.err;
}

TEST(Cli, UnparseableRecordExits65AndLeavesTheFileAlone) {
    FilesSite site("");
    const auto config = read_file(site.config);
    site.dir.write("retentiond.yaml", std::string("version: 1\ndaemon:\n") + site.audit_block() +
                                          config.substr(config.find("datastores:")));
    const auto broken =
        site.dir.write("exports/Broken_Submissions_2026-01-02.csv",
                       "\"Submission ID\",\"Respondent ID\",\"Submitted at\",\"Email\"\n"
                       "sub-x,r1,2020-03-01 10:00:00,dave@example.org\n"
                       "sub-y,r2,not a date,erin@example.org\n");
    const auto before = read_file(broken);
    const auto r = run_retentiond({"--config", site.config, "purge", "--now"});
    EXPECT_EQ(r.exit_code, 65) << r.out << r.err;
    EXPECT_THAT(r.out + r.err, HasSubstr("Broken_Submissions_2026-01-02.csv:3"));
    EXPECT_THAT(r.out + r.err, Not(HasSubstr("erin")));
    EXPECT_EQ(read_file(broken), before);
}

} // namespace
} // namespace retentiond::test
