#include "engines/files/files_kind.hpp"
#include "engines/postgres/postgres_kind.hpp"
#include "engines/redis/redis_kind.hpp"
#include "retentiond/config.hpp"
#include "retentiond/crypto.hpp"
#include "retentiond/registry.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace retentiond {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string k_source_dir = RETENTIOND_SOURCE_DIR;

// A postgres datastore, a files datastore and one valid postgres rule; tests append or replace
// lines and then assert exact positions, so keep the line numbers in the comments true.
const std::string k_base = R"(version: 1
datastores:
  dora:
    kind: postgres
    dsn: ${DSN}
  exports:
    kind: files
    root: exports
rules:
  - name: dora-accounts
    datastore: dora
    category: "Comptes"
    table: public.users_user
    key: id
    clock: [last_login, date_joined]
    retain: 12 months
    action: delete
)"; // rule "dora-accounts" starts at line 10, column 5; `action` is line 17.

class ConfigTest : public ::testing::Test {
protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "retentiond-config-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        m_dir = tmpl;
    }
    void TearDown() override { fs::remove_all(m_dir); }

    std::string write(const std::string& relative, const std::string& text) {
        const fs::path path = m_dir / relative;
        fs::create_directories(path.parent_path());
        std::ofstream(path) << text;
        return path.string();
    }

    EnvLookup env() const {
        return [vars = m_env](const std::string& name) -> std::optional<std::string> {
            if (auto it = vars.find(name); it != vars.end()) {
                return it->second;
            }
            return std::nullopt;
        };
    }

    Config load(const std::string& path) { return load_config(path, env()); }

    // Every diagnostic of a config that must be rejected, formatted.
    std::vector<std::string> errors(const std::string& path) {
        try {
            load_config(path, env());
        } catch (const ConfigError& e) {
            std::vector<std::string> out;
            for (const auto& d : e.diagnostics()) {
                out.push_back(d.to_string());
            }
            return out;
        }
        ADD_FAILURE() << path << " was accepted";
        return {};
    }

    std::string what(const std::string& path) {
        try {
            load_config(path, env());
        } catch (const ConfigError& e) {
            return e.what();
        }
        ADD_FAILURE() << path << " was accepted";
        return {};
    }

    fs::path m_dir;
    std::map<std::string, std::string> m_env{{"DSN", "postgres://app@db.internal/dora"}};
};

TEST_F(ConfigTest, BaseConfigLoads) {
    const auto path = write("retentiond.yaml", k_base);
    const Config config = load(path);
    ASSERT_EQ(config.rules.size(), 1U);
    const Rule& rule = config.rules[0];
    EXPECT_EQ(rule.name, "dora-accounts");
    EXPECT_EQ(rule.kind, &postgres_kind());
    EXPECT_EQ(spec_of<PostgresRule>(rule).table, "public.users_user");
    EXPECT_THAT(spec_of<PostgresRule>(rule).clock, ElementsAre("last_login", "date_joined"));
    EXPECT_THAT(spec_of<PostgresRule>(rule).key, ElementsAre("id"));
    EXPECT_EQ(rule.retain.months, 12);
    EXPECT_EQ(rule.action, Action::remove);
    EXPECT_EQ(rule.batch_size, 5000);
    EXPECT_DOUBLE_EQ(rule.limits.max_fraction, 0.5);
    EXPECT_EQ(rule.schedule.text, "daily 03:00");
    EXPECT_EQ(rule.pos.line, 10);
    EXPECT_EQ(rule.pos.column, 5);
    EXPECT_EQ(spec_of<PostgresStore>(config.datastores.at("dora")).dsn.reveal(),
              "postgres://app@db.internal/dora");
    EXPECT_FALSE(spec_of<PostgresStore>(config.datastores.at("dora")).dsn_has_inline_password);
    // A relative root is read from the main file's directory.
    EXPECT_EQ(spec_of<FilesStore>(config.datastores.at("exports")).root,
              (m_dir / "exports").string());
    EXPECT_THAT(config.files, ElementsAre(path));
    EXPECT_EQ(config.sha256, sha256_hex(k_base));
    EXPECT_TRUE(config.warnings.empty());
    EXPECT_EQ(config.find_rule("dora-accounts"), &config.rules[0]);
    EXPECT_EQ(config.find_rule("nope"), nullptr);
}

// The message of the contract, policy-format.md "Files".
TEST_F(ConfigTest, TypoedKeyGetsAHintAtItsPosition) {
    const auto main = write("retentiond.yaml", "version: 1\ninclude: [policies.d/*.yaml]\n");
    const auto dora = write("policies.d/dora.yaml", R"(version: 1
datastores:
  dora:
    kind: postgres
    dsn: ${DSN}
rules:
  - name: dora-accounts
    datastore: dora
    category: "Comptes"
    table: public.users_user
    key: id
    clock: [last_login, date_joined]
    action: delete
    retian: 12 months
)");
    EXPECT_THAT(
        errors(main),
        ElementsAre(
            dora +
            R"(:14:5: rule "dora-accounts": unknown key "retian" (did you mean "retain"?))"));
}

// The same, from tests/fixtures (used by the CLI tests too): the file is named as the include
// glob produced it from the main file's path.
TEST_F(ConfigTest, TypoFixtureGivesTheContractMessage) {
    const std::string dir = k_source_dir + "/tests/fixtures/config/typo";
    EXPECT_THAT(
        errors(dir + "/retentiond.yaml"),
        ElementsAre(
            dir +
            R"(/policies.d/dora.yaml:14:5: rule "dora-accounts": unknown key "retian" (did you mean "retain"?))"));
}

TEST_F(ConfigTest, DuplicateKeyIsAnError) {
    const auto path = write("retentiond.yaml", k_base + "    retain: 6 months\n");
    EXPECT_THAT(
        errors(path),
        ElementsAre(path +
                    R"(:18:5: rule "dora-accounts": duplicate key "retain" (first at line 16))"));
}

TEST_F(ConfigTest, WrongTypesNameWhatWasExpected) {
    const auto path = write("retentiond.yaml", k_base + "    batch_size: [1, 2]\n"
                                                        "    limits: 10\n"
                                                        "    category: x\n");
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path + R"(:18:17: rule "dora-accounts": batch_size: expected an integer, got a list)",
            path + R"(:19:13: rule "dora-accounts": limits: expected a map, got "10")",
            path + R"(:20:5: rule "dora-accounts": duplicate key "category" (first at line 12))"));
}

TEST_F(ConfigTest, BadDurationQuotesTheParserMessage) {
    std::string yaml = k_base;
    yaml.replace(yaml.find("12 months"), 9, "12 moths");
    const auto path = write("retentiond.yaml", yaml);
    std::string parser_message;
    try {
        parse_duration("12 moths");
    } catch (const ParseError& e) {
        parser_message = e.what();
    }
    ASSERT_THAT(parser_message, HasSubstr("12 moths"));
    EXPECT_THAT(errors(path),
                ElementsAre(path + ":16:13: rule \"dora-accounts\": retain: " + parser_message));
}

TEST_F(ConfigTest, BadScheduleIsReportedAtTheValue) {
    const auto path = write("retentiond.yaml", k_base + "    schedule: daily 25:00\n");
    std::string parser_message;
    try {
        parse_schedule("daily 25:00");
    } catch (const ParseError& e) {
        parser_message = e.what();
    }
    ASSERT_FALSE(parser_message.empty());
    EXPECT_THAT(errors(path),
                ElementsAre(path + ":18:15: rule \"dora-accounts\": schedule: " + parser_message));
}

TEST_F(ConfigTest, UnknownDatastoreGetsAHint) {
    std::string yaml = k_base;
    yaml.replace(yaml.find("datastore: dora"), 15, "datastore: dorra");
    const auto path = write("retentiond.yaml", yaml);
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path +
            R"(:11:16: rule "dora-accounts": unknown datastore "dorra" (did you mean "dora"?))"));
}

TEST_F(ConfigTest, DuplicateRuleNameAcrossIncludedFiles) {
    const auto main = write("retentiond.yaml", k_base + "include: [policies.d/*.yaml]\n");
    const auto other = write("policies.d/other.yaml", R"(version: 1
rules:
  - name: dora-accounts
    datastore: dora
    category: "Comptes"
    table: public.users_user
    key: id
    clock: date_joined
    retain: 2 years
    action: delete
)");
    EXPECT_THAT(errors(main),
                ElementsAre(other +
                            ":3:11: rule \"dora-accounts\": duplicate rule name (first "
                            "defined at " +
                            main + ":10:11)"));
}

TEST_F(ConfigTest, DependentsOnAFilesRuleAreRejected) {
    const auto path = write("retentiond.yaml", k_base + R"(  - name: tally
    datastore: exports
    category: "Formulaires"
    files: "*.csv"
    clock: { field: "Submitted at" }
    retain: 2 years
    action: delete
    dependents:
      - { table: x, column: y, action: delete }
)");
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path +
            R"(:25:5: rule "tally": key "dependents" is only valid in postgres rules, and datastore "exports" is files)"));
}

TEST_F(ConfigTest, AnonymizeWithoutStrategies) {
    std::string yaml = k_base;
    yaml.replace(yaml.find("action: delete"), 14, "action: anonymize\n    anonymize: {}");
    const auto path = write("retentiond.yaml", yaml);
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path +
            R"(:18:16: rule "dora-accounts": anonymize: no field listed; give at least one field: strategy)"));

    // An empty value is reported at its key, not at the next line where yaml-cpp places it.
    std::string empty = k_base;
    empty.replace(empty.find("action: delete"), 14, "action: anonymize\n    anonymize:");
    const auto path3 = write("empty.yaml", empty);
    EXPECT_THAT(
        errors(path3),
        ElementsAre(
            path3 +
            R"(:18:5: rule "dora-accounts": anonymize: no field listed; give at least one field: strategy)"));

    std::string missing = k_base;
    missing.replace(missing.find("action: delete"), 14, "action: anonymize");
    const auto path2 = write("missing.yaml", missing);
    EXPECT_THAT(
        errors(path2),
        ElementsAre(
            path2 +
            R"(:17:13: rule "dora-accounts": action: anonymize needs an "anonymize" map of field: strategy)"));
}

TEST_F(ConfigTest, UnsetVariableIsAnErrorThatNamesItAndNoSecretLeaks) {
    m_env["DSN"] = "postgres://app:hunter2@db.internal/dora";
    m_env["RETAIN"] = "12 moths-hunter3";
    std::string yaml = k_base;
    yaml.replace(yaml.find("12 months"), 9, "${RETAIN}");
    yaml += R"(  - name: other
    datastore: dora
    category: "Comptes"
    table: t
    key: id
    clock: c
    retain: 1 year
    action: delete
    description: "owner ${OWNER_NAME}"
)";
    const auto path = write("retentiond.yaml", yaml);
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path + R"(:16:13: rule "dora-accounts": retain: invalid duration "${RETAIN}")",
            path +
                R"(:26:18: rule "other": description: environment variable "OWNER_NAME" is not set)"));
    const std::string message = what(path);
    EXPECT_THAT(message, Not(HasSubstr("hunter2")));
    EXPECT_THAT(message, Not(HasSubstr("hunter3")));
}

TEST_F(ConfigTest, FileExpansionNestsAndTrims) {
    write("credentials/audit-key", "  s3cr3t-key\n\n");
    m_env["CREDENTIALS_DIRECTORY"] = (m_dir / "credentials").string();
    const auto path = write("retentiond.yaml", R"(version: 1
daemon:
  audit_key: ${file:${CREDENTIALS_DIRECTORY}/audit-key}
  timezone: Europe/Paris
)");
    const Config config = load(path);
    EXPECT_EQ(config.daemon.audit_key.reveal(), "s3cr3t-key");
    EXPECT_EQ(config.daemon.audit_key.redacted(), "<redacted>");
    EXPECT_EQ(config.daemon.timezone, "Europe/Paris");
    EXPECT_NE(config.zone(), nullptr);

    const auto missing = write("missing.yaml", R"(version: 1
daemon:
  audit_key: ${file:${CREDENTIALS_DIRECTORY}/nope}
)");
    EXPECT_THAT(
        errors(missing),
        ElementsAre(
            missing +
            R"(:3:14: audit_key: cannot read the file of "${file:${CREDENTIALS_DIRECTORY}/nope}")"));
}

TEST_F(ConfigTest, EveryErrorOfAFileIsReported) {
    const auto path = write("retentiond.yaml", R"(version: 1
daemon:
  timezone: Europe/Pariss
  metrics: everywhere
datastores:
  dora:
    kind: postgress
    dsn: x
rules:
  - name: Bad_Name
    datastore: nowhere
    category: c
    table: t
    key: id
    clock: c
    retain: 1 year
    action: purge
    batch_size: 0
    limits: { max_fraction: 1.5, max_rows: -1 }
)");
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path + R"(:3:13: timezone: unknown time zone "Europe/Pariss")",
            path + R"(:4:12: metrics: expected HOST:PORT or "off", got "everywhere")",
            path +
                R"(:7:11: datastore "dora": kind: unknown value "postgress" (did you mean "postgres"?))",
            path +
                R"(:10:11: rule "Bad_Name": name: "Bad_Name" is not a valid rule name ([a-z0-9][a-z0-9-]*))",
            path + R"(:11:16: rule "Bad_Name": unknown datastore "nowhere")",
            path +
                R"(:17:13: rule "Bad_Name": action: unknown value "purge" (expected delete or anonymize))",
            path + R"(:18:17: rule "Bad_Name": batch_size: expected a positive integer, got "0")",
            path +
                R"(:19:29: rule "Bad_Name": limits.max_fraction: expected a number in (0, 1], got "1.5")",
            path +
                R"(:19:44: rule "Bad_Name": limits.max_rows: expected a positive integer, got "-1")"));
}

TEST_F(ConfigTest, GlobEscapingTheRootIsRejected) {
    const auto path = write("retentiond.yaml", k_base + R"(  - name: tally
    datastore: exports
    category: "Formulaires"
    files: "../etc/*.csv"
    clock: { field: "Submitted at" }
    retain: 2 years
    action: delete
  - name: tally-abs
    datastore: exports
    category: "Formulaires"
    files: "/etc/**/*.csv"
    clock: { field: "Submitted at" }
    retain: 2 years
    action: delete
  - name: tally-bad
    datastore: exports
    category: "Formulaires"
    files: "data/[x.csv"
    clock: { field: "Submitted at" }
    retain: 2 years
    action: delete
)");
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path +
                R"(:21:12: rule "tally": files: the glob "../etc/*.csv" escapes the datastore root (no leading "/", no ".."))",
            path +
                R"(:28:12: rule "tally-abs": files: the glob "/etc/**/*.csv" escapes the datastore root (no leading "/", no ".."))",
            path + R"(:35:12: rule "tally-bad": files: unclosed "[" in glob)"));
}

TEST_F(ConfigTest, VersionIsRequiredAndDaemonOnlyInTheMainFile) {
    const auto main = write("retentiond.yaml", "include: inc/*.yaml\n");
    const auto inc = write("inc/a.yaml", "version: 2\ndaemon: {}\ninclude: []\n");
    EXPECT_THAT(
        errors(main),
        ElementsAre(
            main + R"(:1:1: missing key "version" (write "version: 1"))",
            inc + R"(:1:10: version: unsupported version 2 (this retentiond reads version 1))",
            inc + R"(:2:1: "daemon" is only allowed in the main file)",
            inc + R"(:3:1: "include" is only allowed in the main file)"));
}

TEST_F(ConfigTest, DaemonSchedulingKeys) {
    const Config defaults = load(write("defaults.yaml", k_base));
    EXPECT_EQ(defaults.daemon.splay, std::chrono::seconds{30});
    EXPECT_EQ(defaults.daemon.retry_backoff_initial, std::chrono::seconds{30});
    EXPECT_EQ(defaults.daemon.retry_backoff_max, std::chrono::seconds{900});
    EXPECT_EQ(defaults.daemon.coordination, "");

    const Config config = load(write("retentiond.yaml", k_base + R"(daemon:
  splay: 0 seconds
  retry_backoff: { initial: 5 seconds, max: 1 hour }
  coordination: dora
)"));
    EXPECT_EQ(config.daemon.splay, std::chrono::seconds{0});
    EXPECT_EQ(config.daemon.retry_backoff_initial, std::chrono::seconds{5});
    EXPECT_EQ(config.daemon.retry_backoff_max, std::chrono::seconds{3600});
    EXPECT_EQ(config.daemon.coordination, "dora");

    // An initial delay longer than the default cap raises the cap rather than being cut.
    const Config long_initial = load(write("long.yaml", k_base + R"(daemon:
  retry_backoff: { initial: 1 hour }
)"));
    EXPECT_EQ(long_initial.daemon.retry_backoff_max, std::chrono::seconds{3600});
}

// A kind that reads like another but coordinates runs: what a fourth kind able to hold the
// daemon's cross-host lock would say.
class CoordinatingKind final : public Kind {
public:
    CoordinatingKind(const Kind& like, std::string_view name) : m_like(like), m_name(name) {}
    std::string_view name() const override { return m_name; }
    const Keys& datastore_keys() const override { return m_like.datastore_keys(); }
    const Keys& rule_keys() const override { return m_like.rule_keys(); }
    std::shared_ptr<const DatastoreSpec> read_datastore(ConfigReader& in,
                                                        const ConfigMap& section) const override {
        return m_like.read_datastore(in, section);
    }
    std::shared_ptr<const RuleSpec> read_rule(ConfigReader& in, const ConfigMap& section,
                                              const Rule& rule) const override {
        return m_like.read_rule(in, section, rule);
    }
    std::unique_ptr<Engine> make_engine(const Datastore& store,
                                        const Config& config) const override {
        return m_like.make_engine(store, config);
    }
    bool coordinates_runs() const override { return true; }

private:
    const Kind& m_like;
    std::string_view m_name;
};

// The loader names the kinds that coordinate runs by asking them, not a kind written in its text.
TEST_F(ConfigTest, CoordinationNamesTheKindsThatCoordinateRuns) {
    const auto path = write("retentiond.yaml", k_base + R"(daemon:
  coordination: exports
)");
    const CoordinatingKind mongo(redis_kind(), "mongo");
    const std::vector<const Kind*> with_mongo = {&postgres_kind(), &files_kind(), &mongo};
    try {
        load_config(path, with_mongo, env());
        FAIL() << "coordination through a files datastore was accepted";
    } catch (const ConfigError& e) {
        ASSERT_EQ(e.diagnostics().size(), 1U);
        EXPECT_EQ(e.diagnostics()[0].to_string(),
                  path + ":19:17: coordination: datastore \"exports\" is files; coordination needs "
                         "a postgres or mongo datastore");
    }
}

TEST_F(ConfigTest, DaemonSchedulingKeysAreValidatedWithPositions) {
    // The daemon block starts at line 18.
    const auto path = write("retentiond.yaml", k_base + R"(daemon:
  splay: 1 month
  retry_backoff: { initial: 0 seconds, max: 1 hour, jitter: 1 }
  coordination: exports
)");
    EXPECT_THAT(
        errors(path),
        ElementsAre(path + ":19:10: splay: months and years have no fixed length here; use "
                           "ms, seconds, minutes, hours, days or weeks",
                    path + ":20:29: retry_backoff.initial: must be at least 1 second",
                    path + ":20:53: unknown key \"jitter\"",
                    path + ":21:17: coordination: datastore \"exports\" is files; coordination "
                           "needs a postgres datastore"));

    const auto shorter = write("shorter.yaml", k_base + R"(daemon:
  retry_backoff: { initial: 10 minutes, max: 1 minute }
  coordination: dorra
)");
    EXPECT_THAT(errors(shorter),
                ElementsAre(shorter + ":19:46: retry_backoff.max: must not be shorter than "
                                      "retry_backoff.initial",
                            shorter + ":20:17: coordination: unknown datastore \"dorra\" (did "
                                      "you mean \"dora\"?)"));
}

TEST_F(ConfigTest, KindSpecificRulesAreChecked) {
    m_env["REDIS_URL"] = "redis://127.0.0.1:6379/0";
    const auto path = write("retentiond.yaml", R"(version: 1
datastores:
  cache: { kind: redis, url: "${REDIS_URL}" }
  files: { kind: files, root: /srv/x, dsn: nope }
rules:
  - name: r
    datastore: cache
    category: c
    keys: "session:*"
    clock: { hash_field: seen }
    retain: 1 day
    action: anonymize
    anonymize: { name: hmac }
  - name: w
    datastore: files
    category: c
    files: "*.csv"
    format: whole
    clock: { field: at }
    retain: 1 day
    action: delete
    table: nope
  - name: re
    datastore: files
    category: c
    files: "*"
    format: whole
    clock: { filename: "([0-9]+", format: "%Y" }
    retain: 1 day
    action: delete
)");
    const auto list = errors(path);
    ASSERT_EQ(list.size(), 5U) << what(path);
    EXPECT_EQ(
        list[0],
        path +
            R"(:4:39: datastore "files": key "dsn" is not valid for a files datastore (use "root"))");
    EXPECT_EQ(list[1],
              path + R"(:12:13: rule "r": action: redis rules support action: delete only)");
    EXPECT_EQ(
        list[2],
        path + R"(:19:12: rule "w": clock: format: whole needs clock: mtime or { filename: ... })");
    EXPECT_EQ(
        list[3],
        path +
            R"(:22:5: rule "w": key "table" is only valid in postgres rules, and datastore "files" is files)");
    EXPECT_THAT(
        list[4],
        HasSubstr(path + R"(:28:24: rule "re": clock.filename: invalid regex "([0-9]+": )"));
}

TEST_F(ConfigTest, SubjectsAreReadAndCheckedWithPositions) {
    m_env["REDIS_URL"] = "redis://127.0.0.1:6379/0";
    const auto text = k_base + R"(    subject: { email: email, user_id: id }
  - name: sessions
    datastore: cache
    category: c
    keys: "session:*"
    clock: idle
    retain: 1 day
    action: delete
    subject: { user_id: { hash_field: uid } }
)";
    auto with_cache = text;
    with_cache.replace(with_cache.find("rules:"), 6,
                       "  cache: { kind: redis, url: \"${REDIS_URL}\" }\nrules:");
    const auto config =
        load(write("good.yaml", with_cache + "daemon:\n  erasure_deadline: 30 days\n"
                                             "  erasure_resume: 10 minutes\n"
                                             "  erasure_reapply: 0\n"));
    ASSERT_EQ(config.rules.size(), 2U);
    const auto& accounts = config.rules[0].subjects;
    ASSERT_EQ(accounts.size(), 2U);
    EXPECT_EQ(accounts.at("email").field, "email");
    EXPECT_FALSE(accounts.at("email").hash_field);
    EXPECT_EQ(accounts.at("user_id").field, "id");
    EXPECT_EQ(config.rules[1].subjects.at("user_id").field, "uid");
    EXPECT_TRUE(config.rules[1].subjects.at("user_id").hash_field);
    EXPECT_EQ(config.daemon.erasure_deadline.days, 30);
    EXPECT_EQ(config.daemon.erasure_resume, std::chrono::minutes(10));
    EXPECT_EQ(config.daemon.erasure_reapply, std::chrono::seconds(0)); // off
    // The daemon's passes have fixed periods: a month is refused at the key.
    const auto monthly =
        write("monthly.yaml", with_cache + "daemon:\n  erasure_reapply: 1 month\n");
    EXPECT_THAT(what(monthly), HasSubstr("erasure_reapply: months and years have no fixed length"));

    auto bad = with_cache;
    bad.replace(bad.find("subject: { email: email, user_id: id }"), 38,
                "subject: { Email: email, phone: { hash_field: tel } }");
    bad.replace(bad.find("{ user_id: { hash_field: uid } }"), 32, "{ user_id: uid }");
    const auto path = write("bad.yaml", bad);
    const auto list = errors(path);
    ASSERT_EQ(list.size(), 3U) << what(path);
    EXPECT_EQ(list[0], path + R"(:19:16: rule "dora-accounts": subject.Email: an identifier kind )"
                              R"(is [a-z][a-z0-9_]* (email, user_id, phone))");
    EXPECT_EQ(list[1],
              path + R"(:19:37: rule "dora-accounts": subject.phone: { hash_field: ... } is for )"
                     R"(redis rules; give the column, CSV column or JSON path)");
    EXPECT_EQ(list[2], path + R"(:27:25: rule "sessions": subject.user_id: redis rules name the )"
                              R"(field as { hash_field: NAME })");

    const auto whole = write("whole.yaml", R"(version: 1
datastores:
  files: { kind: files, root: /srv/x }
rules:
  - name: w
    datastore: files
    category: c
    files: "*.pdf"
    format: whole
    clock: mtime
    retain: 1 day
    action: delete
    subject: { email: Email }
)");
    EXPECT_THAT(errors(whole), ElementsAre(whole + R"(:13:14: rule "w": subject: format: whole )"
                                                   R"(files have no fields to find a person in)"));
}

TEST_F(ConfigTest, FixedDurationsTakeMillisecondsAndDecimals) {
    // The throttle operations.md recommends, written the ways people write it.
    for (const std::string text :
         {"40 ms", "40 milliseconds", "0.04 seconds", "0.04 s", "PT0.04S"}) {
        const auto path = write("ms.yaml", k_base + "    sleep_between_batches: " + text + "\n" +
                                               "    lock_timeout: 0.5 s\n" +
                                               "    notice: { before: 30 days, fields: [email], "
                                               "command: /bin/true, timeout: 1500 ms }\n" +
                                               "daemon:\n  splay: 250 ms\n" +
                                               "  retry_backoff: { initial: 1.5 seconds }\n");
        Config config;
        try {
            config = load(path);
        } catch (const ConfigError& e) {
            FAIL() << text << ": " << e.what();
        }
        const auto& pg = spec_of<PostgresRule>(config.rules.at(0));
        EXPECT_EQ(pg.sleep_between_batches, std::chrono::milliseconds(40)) << text;
        EXPECT_EQ(pg.lock_timeout, std::chrono::milliseconds(500));
        EXPECT_EQ(pg.notice->timeout, std::chrono::milliseconds(1500));
        EXPECT_EQ(config.daemon.splay, std::chrono::milliseconds(250));
        EXPECT_EQ(config.daemon.retry_backoff_initial, std::chrono::milliseconds(1500));
    }
    // Calendar durations keep their rules; a value finer than a setting keeps is an error, not a
    // silent rounding; positions as for any other key (retain on line 16, col 13).
    const auto bad =
        write("bad.yaml", std::string(k_base).replace(k_base.find("12 months"), 9, "40 ms") +
                              "    sleep_between_batches: 0.5 ms\n"
                              "daemon:\n  max_clock_skew: 1500 ms\n");
    EXPECT_THAT(
        errors(bad),
        ElementsAre(
            HasSubstr(bad +
                      ":16:13: rule \"dora-accounts\": retain: invalid duration \"40 ms\": unknown "
                      "unit \"ms\""),
            bad + ":18:28: rule \"dora-accounts\": sleep_between_batches: \"0.5 ms\" is finer than "
                  "this setting keeps (whole milliseconds)",
            bad + ":20:19: max_clock_skew: \"1500 ms\" is finer than this "
                  "setting keeps (whole seconds)"));
}

TEST_F(ConfigTest, ExtensionsAndStrategiesAreParsed) {
    const auto path = write(
        "retentiond.yaml",
        k_base +
            R"(    clock_label: { fr: "après la dernière connexion", en: "after the last login" }
    clock_null: due
    lock_timeout: 5 seconds
    statement_timeout: 2 minutes
    sleep_between_batches: 2 seconds
    hold: { column: legal_hold_until, after_now: true }
    notice: { before: 30 days, fields: [email], command: /usr/bin/notify, timeout: 10 seconds }
    dependents:
      - table: a
        column: user_id
        action: anonymize
        anonymize:
          a: null
          b: { fixed: "x" }
          c: hmac
          d: email_domain
          e: truncate_ip
          f: strip_query
          g: { round: 2 }
          h: { drop_keys: [k, l.m] }
          i: { date_trunc: month }
        dependents:
          - { table: b, column: a_id, action: set_null }
)");
    Config config;
    try {
        config = load(path);
    } catch (const ConfigError& e) {
        FAIL() << e.what();
    }
    const Rule& rule = config.rules.at(0);
    EXPECT_EQ(rule.clock_label.get("fr"), "après la dernière connexion");
    EXPECT_EQ(rule.clock_label.get("en"), "after the last login");
    EXPECT_TRUE(rule.clock_null_due);
    const auto& pg = spec_of<PostgresRule>(rule);
    EXPECT_EQ(pg.lock_timeout, std::chrono::milliseconds(5000));
    EXPECT_EQ(pg.statement_timeout, std::chrono::milliseconds(120000));
    EXPECT_EQ(pg.sleep_between_batches, std::chrono::milliseconds(2000));
    ASSERT_TRUE(pg.hold);
    EXPECT_EQ(pg.hold->kind, PgHold::Kind::after_now);
    ASSERT_TRUE(pg.notice);
    EXPECT_EQ(pg.notice->before.days, 30);
    EXPECT_EQ(pg.notice->timeout, std::chrono::seconds(10));
    ASSERT_EQ(pg.dependents.size(), 1U);
    const Dependent& dep = pg.dependents[0];
    EXPECT_EQ(dep.action, Dependent::Action::anonymize);
    ASSERT_EQ(dep.anonymize.size(), 9U);
    using K = Strategy::Kind;
    const K kinds[] = {K::null_value,  K::fixed, K::hmac,      K::email_domain, K::truncate_ip,
                       K::strip_query, K::round, K::drop_keys, K::date_trunc};
    for (std::size_t i = 0; i < 9; ++i) {
        EXPECT_EQ(dep.anonymize[i].strategy.kind, kinds[i]) << dep.anonymize[i].field;
    }
    EXPECT_EQ(dep.anonymize[1].strategy.fixed_value, "x");
    EXPECT_EQ(dep.anonymize[6].strategy.round_digits, 2);
    EXPECT_THAT(dep.anonymize[7].strategy.drop_keys, ElementsAre("k", "l.m"));
    EXPECT_EQ(dep.anonymize[8].strategy.trunc_unit, "month");
    ASSERT_EQ(dep.dependents.size(), 1U);
    EXPECT_EQ(dep.dependents[0].action, Dependent::Action::set_null);
}

// `parallel` (an extension): concurrent batch streams, only where they cannot meet each other.
TEST_F(ConfigTest, ParallelStreamsOnlyForDeletesWithoutDependents) {
    const auto ok = write("ok.yaml", k_base + "    parallel: 2\n");
    EXPECT_EQ(spec_of<PostgresRule>(load(ok).rules.at(0)).parallel, 2);
    EXPECT_EQ(spec_of<PostgresRule>(load(write("default.yaml", k_base)).rules.at(0)).parallel, 1);

    const auto path = write("retentiond.yaml", k_base + R"(    parallel: 9
  - name: anon
    datastore: dora
    category: "Comptes"
    table: t
    key: id
    clock: c
    retain: 1 year
    action: anonymize
    anonymize: { email: null }
    parallel: 2
  - name: deps
    datastore: dora
    category: "Comptes"
    table: t
    key: id
    clock: c
    retain: 1 year
    action: delete
    dependents: [{ table: d, column: t_id, action: delete }]
    parallel: 3
)");
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path +
                R"(:18:15: rule "dora-accounts": parallel: expected an integer from 1 to 8, got "9")",
            path +
                R"(:28:15: rule "anon": parallel: only with action: delete (an anonymized row may move to pages another stream reads))",
            path +
                R"(:38:15: rule "deps": parallel: not with dependents (two streams could wait on each other's row locks))"));
}

// `partition_rows` (an extension): a dropped partition's row count, estimated unless exact.
TEST_F(ConfigTest, PartitionRowsIsEstimateOrExact) {
    const auto plain = load(write("default.yaml", k_base)); // the config outlives its spec
    EXPECT_FALSE(spec_of<PostgresRule>(plain.rules.at(0)).partition_rows_exact);
    const auto exact = write("exact.yaml", k_base + "    partition_rows: exact\n");
    EXPECT_TRUE(spec_of<PostgresRule>(load(exact).rules.at(0)).partition_rows_exact);
    const auto path = write("retentiond.yaml", k_base + "    partition_rows: counted\n");
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path +
            R"(:18:21: rule "dora-accounts": partition_rows: unknown value "counted" (expected estimate or exact))"));
    const auto typo = write("typo.yaml", k_base + "    partitions: dropp\n");
    EXPECT_THAT(
        errors(typo),
        ElementsAre(HasSubstr(
            R"(:18:17: rule "dora-accounts": partitions: unknown value "dropp" (did you mean "drop"?))")));
}

TEST_F(ConfigTest, UnknownStrategyGetsAHint) {
    std::string yaml = k_base;
    yaml.replace(yaml.find("action: delete"), 14,
                 "action: anonymize\n    anonymize: { email: hmca, x: { round: two } }");
    const auto path = write("retentiond.yaml", yaml);
    EXPECT_THAT(
        errors(path),
        ElementsAre(
            path +
                R"(:18:25: rule "dora-accounts": anonymize.email: unknown strategy "hmca" (did you mean "hmac"?))",
            path +
                R"(:18:43: rule "dora-accounts": anonymize.x.round: expected an integer, got "two")"));
}

TEST_F(ConfigTest, InlinePasswordIsWarnedAboutWithoutPrintingIt) {
    m_env["DSN"] = "postgresql://app:hunter2@db.internal:5432/dora";
    const auto path = write("retentiond.yaml", k_base);
    const Config config = load(path);
    EXPECT_TRUE(spec_of<PostgresStore>(config.datastores.at("dora")).dsn_has_inline_password);
    ASSERT_EQ(config.warnings.size(), 1U);
    EXPECT_EQ(config.warnings[0].pos.line, 5);
    EXPECT_THAT(config.warnings[0].to_string(), HasSubstr("inline password"));
    EXPECT_THAT(config.warnings[0].to_string(), Not(HasSubstr("hunter2")));

    m_env["DSN"] = "host=db user=app password=hunter2 dbname=dora";
    EXPECT_TRUE(spec_of<PostgresStore>(load(path).datastores.at("dora")).dsn_has_inline_password);
}

TEST_F(ConfigTest, InvalidYamlNamesThePosition) {
    const auto path = write("retentiond.yaml", "version: 1\nrules: [\n");
    const auto list = errors(path);
    ASSERT_EQ(list.size(), 1U);
    EXPECT_THAT(list[0], HasSubstr(path + ":"));
    EXPECT_THAT(list[0], HasSubstr("invalid YAML"));
}

TEST_F(ConfigTest, DefaultConfigPath) {
    EXPECT_EQ(default_config_path(env()), "/etc/retentiond/retentiond.yaml");
    m_env["RETENTIOND_CONFIG"] = "/tmp/x.yaml";
    EXPECT_EQ(default_config_path(env()), "/tmp/x.yaml");
}

TEST(ConfigNames, ToString) {
    ASSERT_NE(find_kind("postgres"), nullptr);
    EXPECT_EQ(find_kind("postgres")->name(), "postgres");
    EXPECT_EQ(find_kind("files"), &files_kind());
    EXPECT_EQ(files_kind().name(), "files");
    EXPECT_EQ(redis_kind().name(), "redis");
    EXPECT_EQ(find_kind("mysql"), nullptr);
    EXPECT_EQ(to_string(Action::remove), "delete");
    EXPECT_EQ(to_string(Action::anonymize), "anonymize");
    const LocalizedText fr_only{"à compter de", ""};
    EXPECT_EQ(fr_only.get("en"), "à compter de");
    const LocalizedText both{"fr", "en"};
    EXPECT_EQ(both.get("en"), "en");
    EXPECT_EQ(both.get("fr"), "fr");
}

// The shipped policies load with their variables set, alone and included from a main file.
class ShippedPolicies : public ConfigTest {
protected:
    void SetUp() override {
        ConfigTest::SetUp();
        write("credentials/audit-key", "k3y\n");
        m_env = {{"SCALINGO_POSTGRESQL_URL", "postgres://dora@127.0.0.1/dora"},
                 {"DATABASE_URL", "postgres://cqlp@127.0.0.1/cqlp"},
                 {"REDIS_URL", "redis://127.0.0.1:6379/0"},
                 {"CREDENTIALS_DIRECTORY", (m_dir / "credentials").string()}};
    }
};

TEST_F(ShippedPolicies, EveryShippedPolicyLoads) {
    std::vector<std::string> paths = {k_source_dir + "/policies/retentiond.yaml",
                                      k_source_dir + "/policies/dora.yaml",
                                      k_source_dir + "/policies/cest-qui-le-pro.yaml"};
    for (const auto& entry : fs::directory_iterator(k_source_dir + "/policies/examples")) {
        paths.push_back(entry.path().string());
    }
    for (const auto& path : paths) {
        try {
            const Config config = load(path);
            EXPECT_TRUE(config.warnings.empty() || path.ends_with("retentiond.yaml")) << path;
        } catch (const ConfigError& e) {
            ADD_FAILURE() << e.what();
        }
    }
}

TEST_F(ShippedPolicies, DoraCoversEveryForeignKeyOfUsers) {
    const Config config = load(k_source_dir + "/policies/dora.yaml");
    const Rule* accounts = config.find_rule("dora-accounts");
    ASSERT_NE(accounts, nullptr);
    std::vector<std::string> covered;
    for (const auto& d : spec_of<PostgresRule>(*accounts).dependents) {
        covered.push_back(d.table + "." + d.column);
    }
    // The 28 foreign keys into users_user of DORA's schema (tests/fixtures/dora_schema.sql).
    EXPECT_THAT(
        covered,
        ::testing::UnorderedElementsAre(
            "public.structures_structuremember.user_id",
            "public.structures_structureputativemember.user_id",
            "public.notifications_notification.owner_user_id", "public.services_bookmark.user_id",
            "public.services_savedsearch.user_id", "public.oidc_usersession.user_id",
            "public.authtoken_token.user_id", "public.core_importjob.user_id",
            "public.django_admin_log.user_id", "public.users_consentrecord.user_id",
            "public.structures_structure.creator_id", "public.structures_structure.last_editor_id",
            "public.services_service.creator_id", "public.services_service.last_editor_id",
            "public.services_servicestatushistoryitem.user_id",
            "public.services_servicemodificationhistoryitem.user_id",
            "public.orientations_orientation.prescriber_id", "public.core_logitem.user_id",
            "public.stats_pageview.user_id", "public.stats_searchview.user_id",
            "public.stats_structureview.user_id", "public.stats_structureinfosview.user_id",
            "public.stats_serviceview.user_id", "public.stats_diserviceview.user_id",
            "public.stats_orientationview.user_id", "public.stats_mobilisationevent.user_id",
            "public.stats_dimobilisationevent.user_id", "public.stats_serviceshare.user_id"));
    ASSERT_TRUE(spec_of<PostgresRule>(*accounts).notice);
    EXPECT_EQ(spec_of<PostgresRule>(*accounts).notice->command, "/usr/lib/retentiond/notify");
}

// The reverse-proxy access-log rule, commented out at the end of cest-qui-le-pro.yaml, is a
// valid files rule once uncommented with its datastore.
TEST_F(ShippedPolicies, CqlpAccessLogExampleLoadsUncommented) {
    std::ifstream in(k_source_dir + "/policies/cest-qui-le-pro.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto at = text.find("  # - name: cqlp-proxy-access-logs");
    ASSERT_NE(at, std::string::npos);
    std::string example;
    std::istringstream lines(text.substr(at));
    for (std::string line; std::getline(lines, line);) {
        example += (line.rfind("  # ", 0) == 0 ? "  " + line.substr(4) : line) + "\n";
    }
    const auto path = write("cqlp.yaml", "version: 1\ndatastores:\n  proxy-logs: { kind: files, "
                                         "root: /var/log/nginx }\nrules:\n" +
                                             example);
    const Config config = load(path);
    const Rule* rule = config.find_rule("cqlp-proxy-access-logs");
    ASSERT_NE(rule, nullptr);
    EXPECT_EQ(rule->kind, &files_kind());
    EXPECT_EQ(rule->action, Action::remove);
}

TEST_F(ShippedPolicies, BothServicesIncludedFromOneMainFile) {
    const auto main = write("retentiond.yaml", "version: 1\ninclude:\n  - " + k_source_dir +
                                                   "/policies/dora.yaml\n  - " + k_source_dir +
                                                   "/policies/cest-qui-le-pro.yaml\n");
    const Config config = load(main);
    EXPECT_EQ(config.files.size(), 3U);
    EXPECT_EQ(config.datastores.size(), 3U);
    EXPECT_EQ(config.rules.size(), 10U);
}

} // namespace
} // namespace retentiond
