// The postgres engine against a DORA-shaped schema on a real PostgreSQL (one database per test).
#include "contract/contract.hpp"
#include "postgres_kind.hpp"
#include "retentiond/anonymize.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/config.hpp"
#include "retentiond/registry.hpp"
#include "retentiond/subject.hpp"
#include "retentiond/timeutil.hpp"
#include "support/pg_cluster.hpp"
#include "support/process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace retentiond::test {
namespace {

using namespace std::chrono_literals;

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream out;
    out << in.rdbuf();
    return out.str();
}

// The shipped DORA policy, read as the daemon reads it.
Config shipped_dora_policy() {
    return load_config(std::string(RETENTIOND_SOURCE_DIR) + "/policies/dora.yaml",
                       [](const std::string&) -> std::optional<std::string> {
                           return "postgres://dora@127.0.0.1/dora";
                       });
}

// A rule of the shipped DORA policy, run here without its notice (no notifier in unit tests)
// and without its limits.
Rule shipped_dora_rule(const std::string& name) {
    for (auto rule : shipped_dora_policy().rules) {
        if (rule.name == name) {
            edit_spec<PostgresRule>(rule).notice.reset();
            rule.limits = Limits{std::nullopt, 1.0};
            return rule;
        }
    }
    throw std::runtime_error("no rule " + name + " in policies/dora.yaml");
}

class PostgresEngineTest : public ::testing::Test {
protected:
    void SetUp() override {
        static std::atomic<int> counter{0};
        m_dsn = PgCluster::shared().create_database("unit_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        pg_exec(m_dsn,
                read_text(std::string(RETENTIOND_SOURCE_DIR) + "/tests/fixtures/dora_schema.sql"));
        m_store.name = "dora";
        m_store.kind = &postgres_kind();
        m_store.spec = spec_ptr(PostgresStore(Secret(m_dsn)));
        m_engine = make_postgres_engine(m_store, m_config);
    }

    RunResult purge(const Rule& rule, bool force = false) {
        RunContext ctx;
        ctx.run_id = "unit";
        ctx.force = force;
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        ctx.journal = &m_journal;
        return m_engine->purge(rule, ctx);
    }
    DryRun dry_run(const Rule& rule) {
        RunContext ctx;
        ctx.run_id = "unit-dry";
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        return m_engine->dry_run(rule, ctx);
    }
    std::string scalar(const std::string& sql) { return pg_scalar(m_dsn, sql); }
    std::int64_t count(const std::string& sql) { return std::stoll(scalar(sql)); }
    void exec(const std::string& sql) { pg_exec(m_dsn, sql); }

    // Inserts one row into `table`: `values` (SQL expressions) for the columns they name, and a
    // neutral value for every other NOT NULL column without a default (Django sets no database
    // defaults). Returns the first column of RETURNING `returning`.
    std::string insert_row(const std::string& table, std::map<std::string, std::string> values,
                           const std::string& returning = "") {
        pqxx::connection conn(m_dsn);
        pqxx::work tx(conn);
        const auto cols =
            tx.exec("SELECT column_name, data_type, udt_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = " +
                    tx.quote(table) +
                    " AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'");
        for (const auto& c : cols) {
            const std::string name = c[0].c_str();
            const std::string type = c[1].c_str();
            if (values.count(name) != 0) {
                continue;
            }
            values[name] = type == "ARRAY"                         ? "'{}'"
                           : type == "boolean"                     ? "false"
                           : type == "uuid"                        ? "gen_random_uuid()"
                           : type == "jsonb"                       ? "'{}'"
                           : type == "date"                        ? "current_date"
                           : type.find("timestamp") == 0           ? "now()"
                           : type.find("int") != std::string::npos ? "0"
                                                                   : "''";
        }
        std::string names;
        std::string exprs;
        for (const auto& [k, v] : values) {
            names += (names.empty() ? "" : ", ") + k;
            exprs += (exprs.empty() ? "" : ", ") + v;
        }
        const auto r = tx.exec("INSERT INTO " + table + " (" + names + ") VALUES (" + exprs + ")" +
                               (returning.empty() ? "" : " RETURNING " + returning));
        tx.commit();
        return returning.empty() ? "" : r[0][0].c_str();
    }

    // A user whose last login is `login_days` ago (nullopt: never), joined `joined_days` ago.
    std::int64_t user(const std::string& email, std::optional<int> login_days, int joined_days,
                      bool staff = false) {
        return std::stoll(insert_row(
            "users_user",
            {{"email", "'" + email + "'"},
             {"last_login",
              login_days ? "now() - interval '" + std::to_string(*login_days) + " days'" : "NULL"},
             {"date_joined", "now() - interval '" + std::to_string(joined_days) + " days'"},
             {"is_staff", staff ? "true" : "false"}},
            "id"));
    }

    // One row in every table referencing the user (28 foreign keys, and the rows hanging from
    // them), several holding the user's e-mail as DORA writes it; see
    // tests/fixtures/dora_schema.sql.
    void attach_everything(std::int64_t id) {
        const auto u = std::to_string(id);
        const auto email = "(SELECT email FROM users_user WHERE id = " + u + ")";
        const auto uuid = [&](const std::string& what) { return "md5('" + what + u + "')::uuid"; };
        insert_row("structures_structure", {{"id", uuid("s")},
                                            {"name", "'s" + u + "'"},
                                            {"creator_id", u},
                                            {"last_editor_id", u}});
        insert_row("structures_structuremember", {{"structure_id", uuid("s")}, {"user_id", u}});
        insert_row("structures_structureputativemember",
                   {{"id", uuid("pm")}, {"structure_id", uuid("s")}, {"user_id", u}});
        insert_row("services_service", {{"id", uuid("sv")},
                                        {"name", "'svc'"},
                                        {"structure_id", uuid("s")},
                                        {"creator_id", u},
                                        {"last_editor_id", u}});
        insert_row("services_servicestatushistoryitem",
                   {{"service_id", uuid("sv")}, {"user_id", u}, {"new_status", "'PUBLISHED'"}});
        insert_row("services_servicemodificationhistoryitem",
                   {{"service_id", uuid("sv")}, {"user_id", u}, {"fields", "'{name}'"}});
        insert_row("services_bookmark", {{"service_id", uuid("sv")}, {"user_id", u}});
        const auto search = insert_row("services_savedsearch", {{"user_id", u}}, "id");
        for (const auto& [m2m, other] : std::vector<std::pair<std::string, std::string>>{
                 {"subcategories", "servicesubcategory"},
                 {"fees", "servicefee"},
                 {"location_kinds", "locationkind"},
                 {"funding_labels", "fundinglabel"}}) {
            const auto other_id =
                insert_row("services_" + other, {{"value", "'" + other + u + "'"}}, "id");
            insert_row("services_savedsearch_" + m2m,
                       {{"savedsearch_id", search}, {other + "_id", other_id}});
        }
        // The 30-day notice of DORA's own deletion task, and an invitation's reminder: their
        // history lines hold str(owner), the e-mail.
        insert_row(
            "notifications_notification",
            {{"id", uuid("n1")}, {"task_type", "'user_account_deletion'"}, {"owner_user_id", u}});
        insert_row("notifications_notification",
                   {{"id", uuid("n2")},
                    {"task_type", "'invited_users'"},
                    {"owner_structureputativemember_id", uuid("pm")}});
        insert_row("notifications_notificationlog",
                   {{"notification_id", uuid("n1")}, {"owner", email}});
        insert_row("notifications_notificationlog",
                   {{"notification_id", uuid("n2")}, {"owner", email}});
        insert_row("django_session", {{"session_key", "'sess" + u + "'"},
                                      {"expire_date", "now() + interval '1 day'"}});
        insert_row("oidc_usersession", {{"user_id", u}, {"session_id", "'sess" + u + "'"}});
        insert_row("authtoken_token", {{"key", "'tok" + u + "'"}, {"user_id", u}});
        insert_row("core_importjob", {{"user_id", u}});
        insert_row("core_logitem", {{"user_id", u}, {"message", "'Service modifié'"}});
        insert_row("django_admin_log", {{"user_id", u},
                                        {"object_id", "'" + u + "'"},
                                        {"object_repr", email},
                                        {"action_flag", "2"}});
        insert_row("users_consentrecord", {{"user_id", u}});
        insert_row("orientations_orientation", {{"prescriber_id", u},
                                                {"beneficiary_last_name", "'Martin'"},
                                                {"beneficiary_first_name", "'Jeanne'"},
                                                {"di_service_id", "'di-1'"}});
        for (const auto* t :
             {"stats_pageview", "stats_searchview", "stats_structureview",
              "stats_structureinfosview", "stats_serviceview", "stats_diserviceview",
              "stats_orientationview", "stats_mobilisationevent", "stats_dimobilisationevent"}) {
            insert_row(t, {{"user_id", u}});
        }
        insert_row("stats_serviceshare",
                   {{"user_id", u}, {"recipient_email", "'ami" + u + "@example.net'"}});
    }

    // Where DORA writes the e-mail of `old` besides the account, dated as DORA dates it: action
    // log lines of the last login of `old` and `recent`, a notification history line, a change
    // by `staff` in the admin, an orientation with Les Emplois' data on it, a self-share.
    // Returns the orientation's id.
    std::string write_email_copies(std::int64_t old, std::int64_t recent, std::int64_t staff) {
        const auto o = std::to_string(old);
        // Action log lines of the last login (auth link, ProConnect), 400 days ago.
        for (const auto& [who, days] :
             std::vector<std::pair<std::int64_t, int>>{{old, 400}, {recent, 10}}) {
            insert_row("logs_actionlog",
                       {{"created_at", "now() - interval '" + std::to_string(days) + " days'"},
                        {"msg", "'Connexion par lien direct'"},
                        {"payload", "jsonb_build_object('userId', " + std::to_string(who) +
                                        ", 'userEmail', (SELECT email FROM users_user WHERE id = " +
                                        std::to_string(who) + "), 'legal', true)"}});
        }
        // A notification history line whose notification was deleted long ago (SET_NULL).
        insert_row(
            "notifications_notificationlog",
            {{"triggered_at", "now() - interval '500 days'"}, {"owner", "'old@example.org'"}});
        // A staff member's change to the account, in the admin, 400 days ago.
        insert_row("django_admin_log", {{"user_id", std::to_string(staff)},
                                        {"object_id", "'" + o + "'"},
                                        {"object_repr", "'old@example.org'"},
                                        {"action_flag", "2"},
                                        {"action_time", "now() - interval '400 days'"}});
        // An orientation the user sent as prescriber and referent.
        const auto orientation = insert_row("orientations_orientation",
                                            {{"prescriber_id", o},
                                             {"referent_email", "'old@example.org'"},
                                             {"referent_last_name", "'Old'"},
                                             {"beneficiary_email", "'benef@example.net'"},
                                             {"di_service_id", "'di-2'"},
                                             {"di_contact_email", "'contact@example.net'"},
                                             {"creation_date", "now() - interval '420 days'"},
                                             {"processing_date", "now() - interval '410 days'"}},
                                            "id");
        insert_row("orientations_emploisorientationdata",
                   {{"orientation_id", orientation}, {"prescriber_email", "'old@example.org'"}});
        // A service the user shared with themself.
        insert_row("stats_serviceshare",
                   {{"user_id", o}, {"recipient_email", "'old@example.org'"}});
        return orientation;
    }

    Rule accounts_rule() { return shipped_dora_rule("dora-accounts"); }

    // A plain table with no foreign keys: accounts(id, last_login).
    Rule plain_rule(const std::string& table, int rows_due, int rows_recent) {
        exec("CREATE TABLE " + quote(table) +
             " (id bigint PRIMARY KEY, last_login timestamptz, note text);"
             "INSERT INTO " +
             quote(table) + " SELECT g, now() - interval '400 days', 'n' FROM generate_series(1, " +
             std::to_string(rows_due) +
             ") g;"
             "INSERT INTO " +
             quote(table) +
             " SELECT g, now() - interval '10 days', 'n' FROM "
             "generate_series(" +
             std::to_string(rows_due + 1) + ", " + std::to_string(rows_due + rows_recent) + ") g;");
        Rule rule;
        rule.name = "plain";
        rule.datastore = "dora";
        rule.retain = parse_duration("12 months");
        rule.limits = Limits{std::nullopt, 1.0};
        PostgresRule pg;
        pg.table = table;
        pg.key = {"id"};
        pg.clock = {"last_login"};
        rule.spec = spec_ptr(pg);
        return rule;
    }

    // 5000 due rows, batches of 300, `streams` streams.
    Rule parallel_rule(int streams, std::chrono::milliseconds lock_timeout) {
        auto rule = plain_rule("accounts", 5000, 0);
        rule.batch_size = 300;
        edit_spec<PostgresRule>(rule).parallel = streams;
        edit_spec<PostgresRule>(rule).lock_timeout = lock_timeout;
        return rule;
    }
    static std::string quote(const std::string& name) {
        std::string out = "\"";
        for (const char c : name) {
            out += c;
            if (c == '"') {
                out += '"';
            }
        }
        return out + "\"";
    }

    std::string m_dsn;
    Datastore m_store;
    Config m_config;
    std::unique_ptr<Engine> m_engine;
    RecordingJournal m_journal;
    Secret m_key{"unit-audit-key"};
};

PostgresRule& pg_of(Rule& rule) {
    return edit_spec<PostgresRule>(rule);
}

TEST_F(PostgresEngineTest, PurgesInactiveAccountsWithEveryDependentKind) {
    const auto old = user("old@example.org", 400, 900);
    const auto recent = user("recent@example.org", 10, 900);
    const auto staff = user("staff@example.org", 400, 900, true);
    const auto never_old = user("never-old@example.org", std::nullopt, 500); // COALESCE: joined
    const auto never_new = user("never-new@example.org", std::nullopt, 10);
    for (const auto id : {old, recent, staff, never_old, never_new}) {
        attach_everything(id);
    }
    auto rule = accounts_rule();
    rule.batch_size = 1; // one user per transaction: dependents go with their own batch
    const auto result = purge(rule);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    EXPECT_EQ(result.batches, 2);
    const auto ids = [&](const std::string& sql) {
        return scalar("SELECT coalesce(string_agg(x::text, ',' ORDER BY x), '') FROM (" + sql +
                      ") s(x)");
    };
    const auto kept =
        std::to_string(recent) + "," + std::to_string(staff) + "," + std::to_string(never_new);
    EXPECT_EQ(ids("SELECT id FROM users_user"), kept);
    EXPECT_EQ(ids("SELECT user_id FROM structures_structuremember"), kept);
    EXPECT_EQ(ids("SELECT user_id FROM services_bookmark"), kept);
    EXPECT_EQ(ids("SELECT owner_user_id FROM notifications_notification WHERE owner_user_id IS "
                  "NOT NULL"),
              kept);
    EXPECT_EQ(ids("SELECT user_id FROM structures_structureputativemember"), kept);
    EXPECT_EQ(count("SELECT count(*) FROM notifications_notification"), 6);
    // Django's SET_NULL on the history lines, and their owner (the e-mail) blanked.
    EXPECT_EQ(count("SELECT count(*) FROM notifications_notificationlog"), 10);
    EXPECT_EQ(count("SELECT count(*) FROM notifications_notificationlog WHERE notification_id "
                    "IS NULL AND owner = ''"),
              4);
    EXPECT_EQ(ids("SELECT user_id FROM services_savedsearch"), kept);
    EXPECT_EQ(count("SELECT count(*) FROM services_savedsearch_fees"), 3);
    EXPECT_EQ(count("SELECT count(*) FROM services_savedsearch_funding_labels"), 3);
    EXPECT_EQ(ids("SELECT user_id FROM core_importjob"), kept);
    EXPECT_EQ(ids("SELECT user_id FROM django_admin_log"), kept);
    EXPECT_EQ(ids("SELECT user_id FROM authtoken_token"), kept);
    EXPECT_EQ(ids("SELECT user_id FROM oidc_usersession"), kept);
    // set_null: the rows stay, without the user.
    EXPECT_EQ(count("SELECT count(*) FROM stats_searchview"), 5);
    EXPECT_EQ(ids("SELECT user_id FROM stats_searchview WHERE user_id IS NOT NULL"), kept);
    EXPECT_EQ(count("SELECT count(*) FROM structures_structure WHERE creator_id IS NULL AND "
                    "last_editor_id IS NULL"),
              2);
    EXPECT_EQ(count("SELECT count(*) FROM orientations_orientation WHERE prescriber_id IS NULL"),
              2);
    EXPECT_EQ(result.counters.at("dependents.public.structures_structuremember.delete"), 2);
    EXPECT_EQ(result.counters.at("dependents.public.notifications_notificationlog.anonymize"), 4);
    EXPECT_EQ(result.counters.at("dependents.public.services_savedsearch_subcategories.delete"), 2);
    EXPECT_EQ(result.counters.at("dependents.public.stats_searchview.set_null"), 2);
    EXPECT_EQ(result.counters.at("dependents.public.stats_serviceshare.anonymize"), 2);

    // The journal saw each user once, as a parent "delete" on the table.
    std::multiset<std::string> journaled;
    for (const auto& intent : m_journal.m_intents) {
        EXPECT_EQ(intent.target, "public.users_user");
        EXPECT_EQ(intent.action, "delete");
        journaled.insert(intent.keys.begin(), intent.keys.end());
    }
    EXPECT_EQ(journaled,
              (std::multiset<std::string>{std::to_string(old), std::to_string(never_old)}));
    ASSERT_EQ(m_journal.m_outcomes.size(), 2U);
    EXPECT_TRUE(m_journal.m_outcomes[0].committed);
}

TEST_F(PostgresEngineTest, NullClockIsDueOnlyWithClockNullDue) {
    exec("ALTER TABLE users_user ALTER COLUMN date_joined DROP NOT NULL");
    user("a@example.org", std::nullopt, 10);
    exec("UPDATE users_user SET date_joined = NULL");
    auto rule = accounts_rule();
    EXPECT_EQ(purge(rule).processed, 0);
    EXPECT_EQ(dry_run(rule).no_clock, 1);
    rule.clock_null_due = true;
    EXPECT_EQ(purge(rule).processed, 1);
    EXPECT_EQ(count("SELECT count(*) FROM users_user"), 0);
}

// Erasure requests (pg_erase.cpp): the subject's account goes with every dependent whatever its
// clock, matched as the e-mail normalizes (blanks, case); a held account is counted, never
// touched; the other accounts keep every row.
TEST_F(PostgresEngineTest, EraseSubjectTakesTheAccountWithEveryDependentWhateverItsClock) {
    const auto jane = user(" Jane@Example.ORG", 1, 10);
    const auto other = user("other@example.org", 1, 10);
    const auto staff = user("staff@example.org", 1, 10, true);
    for (const auto id : {jane, other, staff}) {
        attach_everything(id);
    }
    auto rule = accounts_rule();
    rule.subjects["email"] = SubjectField{"email", false, {}};
    SubjectQuery q;
    q.kind = "email";
    q.field = rule.subjects["email"];
    q.values = {"jane@example.org", "staff@example.org"};
    RunContext ctx;
    ctx.run_id = "erase";
    ctx.tz = find_zone("Europe/Paris");
    ctx.audit_key = &m_key;
    ctx.journal = &m_journal;
    ctx.request = "digest";
    const auto r = m_engine->erase_subject(rule, q, ctx, false);
    ASSERT_EQ(r.status, RunResult::Status::ok) << r.message;
    EXPECT_EQ(r.processed, 1);
    EXPECT_EQ(r.counters.at("held"), 1);
    EXPECT_EQ(r.counters.at("dependents.public.structures_structuremember.delete"), 1);
    EXPECT_EQ(r.counters.at("dependents.public.orientations_orientation.set_null"), 1);
    const auto ids = [&](const std::string& sql) {
        return scalar("SELECT coalesce(string_agg(x::text, ',' ORDER BY x), '') FROM (" + sql +
                      ") s(x)");
    };
    const auto kept = std::to_string(other) + "," + std::to_string(staff);
    EXPECT_EQ(ids("SELECT id FROM users_user"), kept);
    EXPECT_EQ(ids("SELECT user_id FROM structures_structuremember"), kept);
    EXPECT_EQ(ids("SELECT user_id FROM services_bookmark"), kept);
    EXPECT_EQ(ids("SELECT DISTINCT prescriber_id FROM orientations_orientation WHERE "
                  "prescriber_id IS NOT NULL"),
              kept);
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].keys, std::vector<std::string>{std::to_string(jane)});
    EXPECT_EQ(m_journal.m_intents[0].request, "digest");
}

TEST_F(PostgresEngineTest, CheckNamesAMissingSubjectColumn) {
    auto rule = accounts_rule();
    rule.subjects["email"] = SubjectField{"e_mail", false, {}};
    const auto diagnostics = m_engine->check(rule);
    ASSERT_EQ(diagnostics.size(), 1U);
    EXPECT_NE(diagnostics.front().message.find("subject (email) column e_mail not found"),
              std::string::npos)
        << diagnostics.front().message;
}

TEST_F(PostgresEngineTest, DryRunCountsDependentsAndTouchesNothing) {
    const auto old = user("old@example.org", 400, 900);
    attach_everything(old);
    attach_everything(user("recent@example.org", 10, 900));
    attach_everything(user("staff@example.org", 400, 900, true));
    const auto dry = dry_run(accounts_rule());
    EXPECT_EQ(dry.in_scope, 3);
    EXPECT_EQ(dry.due, 1);
    EXPECT_EQ(dry.held, 1);
    EXPECT_EQ(dry.counters.at("dependents.public.structures_structuremember.delete"), 1);
    EXPECT_EQ(dry.counters.at("dependents.public.notifications_notificationlog.anonymize"), 2);
    EXPECT_EQ(dry.counters.at("dependents.public.orientations_orientation.set_null"), 1);
    ASSERT_EQ(dry.age_buckets.size(), 17U);
    EXPECT_EQ(dry.age_buckets[0], 1); // 10 days of 12 months
    EXPECT_EQ(dry.age_buckets[8], 2); // 400 days: just over one period
    EXPECT_EQ(count("SELECT count(*) FROM users_user"), 3);
    EXPECT_EQ(count("SELECT count(*) FROM structures_structuremember"), 3);
}

TEST_F(PostgresEngineTest, CheckPassesWhenEveryForeignKeyIsCovered) {
    const auto diagnostics = m_engine->check(accounts_rule());
    for (const auto& d : diagnostics) {
        ADD_FAILURE() << d.to_string();
    }
}

TEST_F(PostgresEngineTest, CheckNamesTheUncoveredForeignKey) {
    auto rule = accounts_rule();
    auto& deps = pg_of(rule).dependents;
    deps.erase(
        std::remove_if(deps.begin(), deps.end(),
                       [](const Dependent& d) { return d.table == "public.services_bookmark"; }),
        deps.end());
    const auto diagnostics = m_engine->check(rule);
    ASSERT_EQ(diagnostics.size(), 1U);
    const auto& message = diagnostics.front().message;
    EXPECT_NE(message.find("services_bookmark_user_id_dfc241ac_fk_users_user_id"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("services_bookmark"), std::string::npos) << message;
    EXPECT_NE(message.find("user_id"), std::string::npos) << message;
    EXPECT_EQ(diagnostics.front().rule, "dora-accounts");
}

TEST_F(PostgresEngineTest, CheckFollowsNestedDependentsAndAcceptsOnDeleteCascade) {
    auto rule = accounts_rule();
    for (auto& d : pg_of(rule).dependents) {
        if (d.table == "public.notifications_notification") {
            d.dependents.clear();
        }
    }
    auto diagnostics = m_engine->check(rule);
    ASSERT_EQ(diagnostics.size(), 1U);
    EXPECT_NE(diagnostics.front().message.find(
                  "notifications_notifi_notification_id_084417a8_fk_notificat"),
              std::string::npos)
        << diagnostics.front().message;

    // The same foreign key with ON DELETE CASCADE needs no dependent.
    exec("ALTER TABLE notifications_notificationlog DROP CONSTRAINT "
         "notifications_notifi_notification_id_084417a8_fk_notificat, ADD CONSTRAINT "
         "notificationlog_cascade FOREIGN KEY (notification_id) "
         "REFERENCES notifications_notification (id) ON DELETE CASCADE");
    diagnostics = m_engine->check(rule);
    EXPECT_TRUE(diagnostics.empty()) << diagnostics.front().to_string();
}

TEST_F(PostgresEngineTest, CheckRefusesAClockThatIsNotATimestamp) {
    auto rule = accounts_rule();
    pg_of(rule).clock = {"email"};
    const auto diagnostics = m_engine->check(rule);
    ASSERT_FALSE(diagnostics.empty());
    EXPECT_NE(diagnostics.front().message.find("not a timestamp"), std::string::npos)
        << diagnostics.front().message;
    EXPECT_NE(diagnostics.front().message.find("email"), std::string::npos);
}

TEST_F(PostgresEngineTest, CheckReportsMissingTableAndColumns) {
    auto rule = accounts_rule();
    pg_of(rule).table = "public.no_such_table";
    auto diagnostics = m_engine->check(rule);
    ASSERT_EQ(diagnostics.size(), 1U);
    EXPECT_NE(diagnostics.front().message.find("does not exist"), std::string::npos);
    rule = accounts_rule();
    pg_of(rule).hold->column = "is_stuff";
    diagnostics = m_engine->check(rule);
    ASSERT_EQ(diagnostics.size(), 1U);
    EXPECT_NE(diagnostics.front().message.find("is_stuff"), std::string::npos);
}

TEST_F(PostgresEngineTest, AnUncoveredForeignKeyFailsTheBatchAndLeavesItWhole) {
    const auto old = user("old@example.org", 400, 900);
    attach_everything(old);
    auto rule = accounts_rule();
    auto& deps = pg_of(rule).dependents;
    deps.erase(
        std::remove_if(deps.begin(), deps.end(),
                       [](const Dependent& d) { return d.table == "public.authtoken_token"; }),
        deps.end());
    const auto result = purge(rule);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_NE(result.message.find("23503"), std::string::npos) << result.message;
    // Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: checked at the statement all the
    // same (SET CONSTRAINTS ALL IMMEDIATE), the failure names the constraint.
    EXPECT_NE(result.message.find("authtoken_token_user_id_35299eff_fk_users_user_id"),
              std::string::npos)
        << result.message;
    EXPECT_EQ(result.message.find("old@example.org"), std::string::npos);
    // Atomic: the dependents deleted before the failure came back.
    EXPECT_EQ(count("SELECT count(*) FROM users_user"), 1);
    EXPECT_EQ(count("SELECT count(*) FROM structures_structuremember"), 1);
    EXPECT_EQ(count("SELECT count(*) FROM stats_searchview WHERE user_id IS NOT NULL"), 1);
    ASSERT_TRUE(m_journal.m_intents.empty());
}

// The pipelined path (a delete without dependents, batch i commits while batch i+1 runs) on a
// table a DEFERRABLE INITIALLY DEFERRED foreign key references: the first batch fails at its
// statement, naming the constraint; nothing is deleted, nothing journaled.
TEST_F(PostgresEngineTest, ADeferredForeignKeyFailsThePipelinedBatchWhole) {
    const auto u = user("u@example.org", 1, 10);
    for (int i = 0; i < 6; ++i) {
        insert_row("django_session", {{"session_key", "'old" + std::to_string(i) + "'"},
                                      {"expire_date", "now() - interval '1 day'"}});
    }
    insert_row("oidc_usersession", {{"user_id", std::to_string(u)}, {"session_id", "'old4'"}});
    auto rule = shipped_dora_rule("dora-django-sessions");
    pg_of(rule).dependents.clear();
    rule.batch_size = 2;
    const auto result = purge(rule);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_NE(result.message.find("oidc_usersession_session_id_b45c8c33_fk_django_se"),
              std::string::npos)
        << result.message;
    // Batches before the failing one committed whole (their intent and outcome are in the
    // journal); the failing one left nothing half-done: its session and its OIDC row are there.
    EXPECT_EQ(count("SELECT count(*) FROM django_session WHERE session_key = 'old4'"), 1);
    EXPECT_EQ(count("SELECT count(*) FROM oidc_usersession"), 1);
    std::int64_t journaled = 0;
    for (const auto& intent : m_journal.m_intents) {
        journaled += static_cast<std::int64_t>(intent.keys.size());
    }
    EXPECT_EQ(count("SELECT count(*) FROM django_session"), 6 - journaled);
    for (const auto& o : m_journal.m_outcomes) {
        EXPECT_TRUE(o.committed);
    }
}

// Every dependent of the shipped accounts rule is needed: without any one of them (at any
// depth), `check` fails and names the foreign key it leaves uncovered.
TEST_F(PostgresEngineTest, ShippedAccountsRuleNeedsEveryOneOfItsDependents) {
    const auto full = accounts_rule();
    EXPECT_TRUE(problems(m_engine->check(full)).empty())
        << problems(m_engine->check(full)).front().to_string();
    std::vector<std::vector<std::size_t>> paths;
    const std::function<void(const std::vector<Dependent>&, std::vector<std::size_t>)> walk =
        [&](const std::vector<Dependent>& deps, std::vector<std::size_t> path) {
            for (std::size_t i = 0; i < deps.size(); ++i) {
                auto p = path;
                p.push_back(i);
                paths.push_back(p);
                walk(deps[i].dependents, p);
            }
        };
    walk(spec_of<PostgresRule>(full).dependents, {});
    EXPECT_EQ(paths.size(), 35U); // 28 references to users_user, 7 below them
    for (const auto& path : paths) {
        auto rule = full;
        auto* deps = &pg_of(rule).dependents;
        for (std::size_t k = 0; k + 1 < path.size(); ++k) {
            deps = &(*deps)[path[k]].dependents;
        }
        const Dependent removed = (*deps)[path.back()];
        deps->erase(deps->begin() + static_cast<std::ptrdiff_t>(path.back()));
        const auto table = removed.table.substr(removed.table.find('.') + 1);
        const auto constraint = scalar(
            "SELECT c.conname FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = "
            "c.conrelid AND a.attnum = c.conkey[1] WHERE c.contype = 'f' AND c.conrelid = '" +
            table + "'::regclass AND a.attname = '" + removed.column + "'");
        const auto diagnostics = m_engine->check(rule);
        ASSERT_FALSE(diagnostics.empty()) << removed.table << "." << removed.column;
        bool named = false;
        for (const auto& d : diagnostics) {
            named = named || d.message.find("\"" + constraint + "\"") != std::string::npos;
        }
        EXPECT_TRUE(named) << removed.table << "." << removed.column << ": "
                           << diagnostics.front().to_string();
    }
}

// Per foreign key into users_user, how many rows reference account `id`: "table.column=n ...".
std::string references_of(const std::string& dsn, std::int64_t id) {
    const auto fk_sql =
        "SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint c JOIN pg_attribute a "
        "ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] WHERE c.contype = 'f' AND "
        "c.confrelid = 'users_user'::regclass ORDER BY 1, 2";
    std::string out;
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    for (const auto& fk : tx.exec(fk_sql)) {
        out += std::string(fk[0].c_str()) + "." + fk[1].c_str() + "=" +
               tx.exec("SELECT count(*) FROM " + std::string(fk[0].c_str()) + " WHERE " +
                       fk[1].c_str() + " = " + std::to_string(id))[0][0]
                   .c_str() +
               " ";
    }
    return out;
}

// No text-like column of any table holds the deleted users' e-mails; the kept ones' stay.
void expect_no_email_of_deleted_users(const std::string& dsn) {
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    const auto columns = tx.exec(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND (data_type IN ('text', 'character varying', 'jsonb', 'ARRAY'))");
    EXPECT_GT(columns.size(), 100U);
    for (const auto& c : columns) {
        const std::string where = std::string(c[0].c_str()) + "." + c[1].c_str();
        const auto hits =
            tx.exec("SELECT count(*) FROM " + std::string(c[0].c_str()) + " WHERE " +
                    tx.quote_name(c[1].c_str()) + "::text ~ '(old|never)@example\\.org'")[0][0]
                .as<std::int64_t>();
        EXPECT_EQ(hits, 0) << where;
    }
    // What stays: the kept accounts' own e-mails (the grep above would see them).
    EXPECT_EQ(tx.exec("SELECT count(*) FROM logs_actionlog WHERE payload->>'userEmail' = "
                      "'recent@example.org'")[0][0]
                  .as<int>(),
              1);
}

// Every rule of the shipped DORA policy, run once on the real schema: the due accounts go with
// every row that references them, every other account keeps all of its rows, and no e-mail of a
// deleted user is left in any text, varchar, array or jsonb column of the schema.
TEST_F(PostgresEngineTest, ShippedDoraPolicyLeavesNoEmailOfADeletedUser) {
    const auto old = user("old@example.org", 400, 900);
    const auto never = user("never@example.org", std::nullopt, 500);
    const auto recent = user("recent@example.org", 10, 900);
    const auto staff = user("staff@example.org", 400, 900, true);
    for (const auto id : {old, never, recent, staff}) {
        attach_everything(id);
    }
    const auto recent_rows = references_of(m_dsn, recent);
    const auto staff_rows = references_of(m_dsn, staff);
    EXPECT_EQ(recent_rows.find("=0 "), std::string::npos) << recent_rows;
    const auto orientation = write_email_copies(old, recent, staff);

    for (auto rule : shipped_dora_policy().rules) {
        edit_spec<PostgresRule>(rule).notice.reset();
        rule.limits = Limits{std::nullopt, 1.0};
        const auto result = purge(rule);
        ASSERT_EQ(result.status, RunResult::Status::ok) << rule.name << ": " << result.message;
    }

    EXPECT_EQ(scalar("SELECT string_agg(email, ',' ORDER BY email) FROM users_user"),
              "recent@example.org,staff@example.org");
    EXPECT_EQ(references_of(m_dsn, recent), recent_rows);
    EXPECT_EQ(references_of(m_dsn, staff), staff_rows);
    for (const auto id : {old, never}) {
        const auto rows = references_of(m_dsn, id);
        for (std::size_t at = rows.find('='); at != std::string::npos;
             at = rows.find('=', at + 1)) {
            EXPECT_EQ(rows[at + 1], '0') << rows;
        }
    }
    // The orientation: identities blanked, the row kept for statistics.
    EXPECT_EQ(scalar("SELECT concat_ws('|', referent_email, referent_last_name, beneficiary_email, "
                     "di_contact_email, is_anonymized, prescriber_id IS NULL) FROM "
                     "orientations_orientation WHERE id = " +
                     orientation),
              "||||t|t");
    expect_no_email_of_deleted_users(m_dsn);
}

// The shipped C'est qui le pro rules on the tables as the service's migration creates them, with
// records as its logger and metrics middleware write them.
TEST_F(PostgresEngineTest, ShippedCqlpRulesStripTheRealRecords) {
    const auto dsn = PgCluster::shared().create_database("cqlp_" + std::to_string(::getpid()));
    pg_exec(dsn, read_text(std::string(RETENTIOND_SOURCE_DIR) + "/tests/fixtures/cqlp_schema.sql"));
    pg_exec(dsn, R"SQL(
INSERT INTO metric (time, "createdAt", consumer, url) VALUES
  (now() - interval '2 hours', now() - interval '2 hours', '::ffff:10.20.30.40',
   '/api/formations?latitude=48.8566&longitude=2.3522&distance=10000'),
  (now() - interval '2 hours', now() - interval '2 hours', '203.0.113.7', '/api/etablissements/0750001A'),
  (now() - interval '2 hours', now() - interval '2 hours', 'www.example-partner.fr', '/api/formations?uais=0750001A'),
  (now() + interval '1 hour', now() + interval '1 hour', '::ffff:10.20.30.41', '/api/formations?latitude=1&longitude=2');
INSERT INTO log (data, "createdAt") VALUES
  ('{"name": "accompagnateur", "hostname": "api-1", "pid": 7, "level": 30, "msg": "Http Request OK",
     "time": "2025-01-01T10:00:00Z", "v": 0, "type": "http", "elapsedTime": 12, "user": null,
     "request": {"requestId": "r1", "method": "GET",
                 "headers": {"host": "api", "user-agent": "Mozilla/5.0", "x-forwarded-for": "198.51.100.9",
                             "referer": "https://www.cestquilepro.fr/formations?address=12+rue+des+Lilas"},
                 "url": {"relative": "/api/formations?latitude=48.8566&longitude=2.3522",
                         "path": "/api/formations",
                         "parameters": {"latitude": "48.8566", "longitude": "2.3522"}},
                 "body": {}},
     "response": {"status": 200, "headers": {"content-type": "application/json"}}}',
   now() - interval '2 hours');
)SQL");
    Datastore store;
    store.name = "cqlp";
    store.kind = &postgres_kind();
    store.spec = spec_ptr(PostgresStore(Secret(dsn)));
    const auto engine = make_postgres_engine(store, m_config);
    const Config config =
        load_config(std::string(RETENTIOND_SOURCE_DIR) + "/policies/cest-qui-le-pro.yaml",
                    [](const std::string&) -> std::optional<std::string> { return "x"; });
    int ran = 0;
    for (const auto& rule : config.rules) {
        if (rule.kind != &postgres_kind()) {
            continue;
        }
        EXPECT_TRUE(problems(engine->check(rule)).empty()) << rule.name;
        RunContext ctx;
        ctx.run_id = "cqlp";
        ctx.tz = find_zone("Europe/Paris");
        ctx.audit_key = &m_key;
        ctx.journal = &m_journal;
        const auto result = engine->purge(rule, ctx);
        ASSERT_EQ(result.status, RunResult::Status::ok) << rule.name << ": " << result.message;
        ++ran;
    }
    EXPECT_EQ(ran, 2);
    EXPECT_EQ(pg_scalar(dsn, "SELECT string_agg(consumer || ' ' || url, ', ' ORDER BY "
                             "\"createdAt\", consumer COLLATE \"C\") FROM metric"),
              "203.0.113.0 /api/etablissements/0750001A, ::ffff:10.20.30.0 /api/formations, "
              "www.example-partner.fr /api/formations, "
              "::ffff:10.20.30.41 /api/formations?latitude=1&longitude=2");
    const auto data = nlohmann::json::parse(pg_scalar(dsn, "SELECT data::text FROM log"));
    const auto& request = data.at("request");
    EXPECT_FALSE(request.contains("headers")) << data.dump();
    EXPECT_FALSE(request.contains("body"));
    EXPECT_EQ(request.at("url"), (nlohmann::json{{"path", "/api/formations"}}));
    EXPECT_EQ(request.at("method"), "GET");
    EXPECT_FALSE(data.contains("user"));
    EXPECT_EQ(data.at("response").at("status"), 200);
    EXPECT_EQ(data.at("msg"), "Http Request OK");
    const auto text = data.dump();
    for (const auto* gone : {"48.8566", "198.51.100.9", "Lilas", "Mozilla"}) {
        EXPECT_EQ(text.find(gone), std::string::npos) << gone << " in " << text;
    }
}

TEST_F(PostgresEngineTest, HoldAfterNowKeepsRowsUnderLegalHold) {
    exec("ALTER TABLE users_user ADD COLUMN legal_hold_until timestamptz");
    const auto held = user("held@example.org", 400, 900);
    const auto expired = user("expired@example.org", 400, 900);
    const auto none = user("none@example.org", 400, 900);
    exec("UPDATE users_user SET legal_hold_until = now() + interval '1 year' WHERE id = " +
         std::to_string(held) +
         "; UPDATE users_user SET legal_hold_until = now() - interval '1 "
         "day' WHERE id = " +
         std::to_string(expired));
    auto rule = accounts_rule();
    pg_of(rule).hold = PgHold{"legal_hold_until", PgHold::Kind::after_now, ""};
    EXPECT_EQ(dry_run(rule).held, 1);
    const auto result = purge(rule);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(scalar("SELECT string_agg(id::text, ',') FROM users_user"), std::to_string(held));
    (void)none;
}

TEST_F(PostgresEngineTest, CompositeKeysAreJournaledAsJsonArrays) {
    exec("CREATE TABLE memberships (org int, member text, seen timestamptz, PRIMARY KEY (org, "
         "member)); INSERT INTO memberships VALUES (1, 'x', now() - interval '2 years'), (1, 'y', "
         "now()), (2, 'x', now() - interval '2 years')");
    Rule rule;
    rule.name = "memberships";
    rule.retain = parse_duration("1 year");
    rule.limits = Limits{std::nullopt, 1.0};
    PostgresRule pg;
    pg.table = "memberships";
    pg.key = {"org", "member"};
    pg.clock = {"seen"};
    rule.spec = spec_ptr(pg);
    ASSERT_EQ(purge(rule).processed, 2);
    std::set<std::string> keys;
    for (const auto& i : m_journal.m_intents) {
        keys.insert(i.keys.begin(), i.keys.end());
    }
    EXPECT_EQ(keys, (std::set<std::string>{R"(["1","x"])", R"(["2","x"])"}));
    EXPECT_EQ(m_engine->records_present(rule, "memberships", {R"(["1","x"])"}), Presence::absent);
    EXPECT_EQ(m_engine->records_present(rule, "memberships", {R"(["1","y"])"}), Presence::present);
}

TEST_F(PostgresEngineTest, HostileTableNameIsOnlyEverAName) {
    exec("CREATE TABLE x (id int); INSERT INTO x VALUES (1)");
    const std::string hostile = "users\"; DROP TABLE x; --";
    auto rule = plain_rule(hostile, 3, 2);
    const auto result = purge(rule);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 3);
    EXPECT_EQ(count("SELECT count(*) FROM " + quote(hostile)), 2);
    EXPECT_EQ(count("SELECT count(*) FROM x"), 1);
    EXPECT_TRUE(problems(m_engine->check(rule)).empty());
    EXPECT_EQ(dry_run(rule).due, 0);
}

TEST_F(PostgresEngineTest, MaxRowsRefusalGivesTheNumbersAndIsJournaled) {
    for (int i = 0; i < 4; ++i) {
        user("u" + std::to_string(i) + "@example.org", 400, 900);
    }
    auto rule = accounts_rule();
    rule.limits = Limits{3, 1.0};
    const auto result = purge(rule);
    EXPECT_EQ(result.status, RunResult::Status::refused);
    EXPECT_NE(result.message.find("4 rows due exceed max_rows 3"), std::string::npos)
        << result.message;
    ASSERT_EQ(m_journal.m_events.size(), 1U);
    EXPECT_EQ(m_journal.m_events[0].first, "refusal");
    EXPECT_EQ(m_journal.m_events[0].second.at("due"), 4);
    EXPECT_EQ(count("SELECT count(*) FROM users_user"), 4);
}

// Waits until a retentiond backend is blocked on a lock.
// Another session holding one row of `table` FOR UPDATE until tx ends.
struct RowLock {
    RowLock(const std::string& dsn, const std::string& table, std::int64_t id)
        : conn(dsn), tx(conn) {
        tx.exec("SELECT * FROM " + table + " WHERE id = " + std::to_string(id) + " FOR UPDATE");
    }
    pqxx::connection conn;
    pqxx::work tx;
};

void wait_for_lock_wait(const std::string& dsn) {
    for (int i = 0; i < 2000; ++i) {
        if (pg_scalar(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                           "'retentiond' AND wait_event_type = 'Lock'") != "0") {
            return;
        }
        std::this_thread::sleep_for(5ms);
    }
    FAIL() << "retentiond never waited for the lock";
}

// Every intent has exactly one committed outcome counting its keys, and the journaled keys are
// exactly `expected` (no key twice).
void expect_each_key_journaled_once(const RecordingJournal& journal, std::int64_t expected) {
    std::map<std::size_t, int> outcomes;
    for (const auto& o : journal.m_outcomes) {
        ++outcomes[o.intent];
        EXPECT_TRUE(o.committed);
        ASSERT_LT(o.intent, journal.m_intents.size());
        EXPECT_EQ(o.count, static_cast<std::int64_t>(journal.m_intents[o.intent].keys.size()));
    }
    EXPECT_EQ(outcomes.size(), journal.m_intents.size());
    for (const auto& [intent, n] : outcomes) {
        EXPECT_EQ(n, 1) << "intent " << intent;
    }
    std::set<std::string> keys;
    std::size_t journaled = 0;
    for (const auto& intent : journal.m_intents) {
        keys.insert(intent.keys.begin(), intent.keys.end());
        journaled += intent.keys.size();
    }
    EXPECT_EQ(journaled, keys.size()) << "a key journaled twice";
    EXPECT_EQ(static_cast<std::int64_t>(keys.size()), expected);
}

// A login between the selection of a batch and its deletion: the user is kept.
void login_during_purge(PostgresEngineTest& t, const std::string& dsn, const Rule& rule,
                        std::int64_t id, RunResult& result,
                        const std::function<RunResult(const Rule&)>& run) {
    pqxx::connection other(dsn);
    pqxx::work tx(other);
    tx.exec0(
        "UPDATE " +
        std::string(spec_of<PostgresRule>(rule).table == "accounts" ? "accounts" : "users_user") +
        " SET last_login = now() WHERE id = " + std::to_string(id));
    std::thread purge_thread([&] { result = run(rule); });
    wait_for_lock_wait(dsn);
    tx.commit();
    purge_thread.join();
    (void)t;
}

TEST_F(PostgresEngineTest, LoginBetweenSelectionAndDeletionKeepsTheUser) {
    auto rule = plain_rule("accounts", 5, 0);
    RunResult result;
    login_during_purge(*this, m_dsn, rule, 3, result, [&](const Rule& r) { return purge(r); });
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 4);
    EXPECT_EQ(scalar("SELECT string_agg(id::text, ',') FROM accounts"), "3");
    for (const auto& i : m_journal.m_intents) {
        EXPECT_EQ(std::count(i.keys.begin(), i.keys.end(), "3"), 0) << "journaled a kept user";
    }
}

// A due row the application keeps updating (not its clock) while the purge runs: the REPEATABLE
// READ batch fails with 40001 every time, so the retry deletes in READ COMMITTED, which waits for
// the update and judges the row again (still due): the rule does not run out of attempts.
TEST_F(PostgresEngineTest, RowUpdatedOverAndOverIsStillPurged) {
    auto rule = plain_rule("accounts", 5, 0);
    std::atomic<bool> stop{false};
    std::atomic<int> updates{0};
    std::thread app([&] {
        pqxx::connection c(m_dsn);
        while (!stop) {
            pqxx::work tx(c);
            tx.exec0("UPDATE accounts SET note = note || 'x' WHERE id = 3");
            ++updates;
            std::this_thread::sleep_for(40ms);
            tx.commit();
        }
    });
    while (updates == 0) {
        std::this_thread::sleep_for(5ms);
    }
    const auto result = purge(rule);
    stop = true;
    app.join();
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 5);
    EXPECT_EQ(count("SELECT count(*) FROM accounts"), 0);
    expect_each_key_journaled_once(m_journal, 5);
}

TEST_F(PostgresEngineTest, LoginDuringPurgeWithDependentsKeepsTheUserAndItsRows) {
    const auto a = user("a@example.org", 400, 900);
    const auto b = user("b@example.org", 400, 900);
    attach_everything(a);
    attach_everything(b);
    RunResult result;
    login_during_purge(*this, m_dsn, accounts_rule(), b, result,
                       [&](const Rule& r) { return purge(r); });
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(scalar("SELECT string_agg(id::text, ',') FROM users_user"), std::to_string(b));
    EXPECT_EQ(scalar("SELECT string_agg(user_id::text, ',') FROM structures_structuremember"),
              std::to_string(b));
    EXPECT_EQ(scalar("SELECT string_agg(user_id::text, ',') FROM stats_searchview WHERE user_id "
                     "IS NOT NULL"),
              std::to_string(b));
}

TEST_F(PostgresEngineTest, LockTimeoutIsRetriedWithBackoff) {
    auto rule = plain_rule("accounts", 5, 0);
    pg_of(rule).lock_timeout = 50ms;
    RowLock lock(m_dsn, "accounts", 2);
    auto& tx = lock.tx;
    // Released while the engine backs off: the batch is retried and goes through.
    std::thread release([&] {
        std::this_thread::sleep_for(300ms);
        tx.commit();
    });
    const auto result = purge(rule);
    release.join();
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 5);
    EXPECT_EQ(count("SELECT count(*) FROM accounts"), 0);
}

TEST_F(PostgresEngineTest, LockHeldTooLongFailsTheRuleWithNothingHalfDone) {
    auto rule = plain_rule("accounts", 5, 0);
    pg_of(rule).lock_timeout = 20ms;
    RowLock lock(m_dsn, "accounts", 4);
    const auto result = purge(rule);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_NE(result.message.find("timed out 5 times"), std::string::npos) << result.message;
    EXPECT_NE(result.message.find("lock_timeout 20ms"), std::string::npos) << result.message;
    EXPECT_EQ(count("SELECT count(*) FROM accounts"), 5) << "the batch is atomic";
    ASSERT_FALSE(m_journal.m_events.empty());
    EXPECT_EQ(m_journal.m_events.back().first, "error");
}

TEST_F(PostgresEngineTest, SleepBetweenBatchesAndProgress) {
    auto rule = plain_rule("accounts", 7, 3);
    rule.batch_size = 2;
    pg_of(rule).sleep_between_batches = 1ms;
    std::vector<std::int64_t> progress;
    RunContext ctx;
    ctx.tz = find_zone("UTC");
    ctx.on_progress = [&](std::int64_t done, std::int64_t total) {
        EXPECT_EQ(total, 7);
        progress.push_back(done);
    };
    const auto result = m_engine->purge(rule, ctx);
    EXPECT_EQ(result.processed, 7);
    EXPECT_EQ(result.batches, 4);
    EXPECT_EQ(progress, (std::vector<std::int64_t>{2, 4, 6, 7}));
}

// Batches commit asynchronously and are pipelined (batch i commits after batch i+1's statement
// ran). Every batch still gets exactly one committed outcome, in order, only for rows really gone,
// and a purge that returned is durable: an immediate shutdown right after loses nothing.
TEST_F(PostgresEngineTest, PipelinedBatchesAreDurableWhenThePurgeReturns) {
    auto rule = plain_rule("accounts", 5000, 1000);
    rule.batch_size = 300;
    const auto result = purge(rule);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 5000);
    PgCluster::shared().stop(); // immediate: WAL not yet written by the server is lost
    PgCluster::shared().start();
    EXPECT_EQ(count("SELECT count(*) FROM accounts WHERE id <= 5000"), 0);
    EXPECT_EQ(count("SELECT count(*) FROM accounts"), 1000);

    ASSERT_GT(m_journal.m_intents.size(), 10u);
    ASSERT_EQ(m_journal.m_outcomes.size(), m_journal.m_intents.size());
    std::int64_t keys = 0;
    for (std::size_t i = 0; i < m_journal.m_outcomes.size(); ++i) {
        const auto& o = m_journal.m_outcomes[i];
        EXPECT_EQ(o.intent, i) << "outcomes in batch order";
        EXPECT_TRUE(o.committed);
        EXPECT_EQ(o.count, static_cast<std::int64_t>(m_journal.m_intents[i].keys.size()));
        keys += o.count;
    }
    EXPECT_EQ(keys, 5000);
}

// Without pg_logical_emit_message (a role refused it), the purge waits for the WAL writer: still
// durable when it returns.
TEST_F(PostgresEngineTest, DurableWithoutLogicalMessagesToo) {
    auto rule = plain_rule("accounts", 2000, 100);
    rule.batch_size = 300;
    exec("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'restricted_app') THEN "
         "CREATE ROLE restricted_app LOGIN; END IF; END$$;"
         "GRANT SELECT, DELETE ON accounts TO restricted_app;"
         "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC;");
    Datastore store = m_store;
    store.spec = spec_ptr(PostgresStore(Secret(m_dsn + " user=restricted_app")));
    const auto engine = make_postgres_engine(store, m_config);
    RunContext ctx;
    ctx.tz = find_zone("UTC");
    ctx.journal = &m_journal;
    const auto result = engine->purge(rule, ctx);
    exec("GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO PUBLIC;");
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    PgCluster::shared().stop();
    PgCluster::shared().start();
    EXPECT_EQ(count("SELECT count(*) FROM accounts"), 100);
    ASSERT_EQ(m_journal.m_outcomes.size(), m_journal.m_intents.size());
}

// `parallel: 3`: three streams claim page ranges from one cursor. Every due row is deleted once,
// every batch gets one committed outcome (RecordingJournal is not thread-safe: the engine
// serializes the calls), progress never goes back, and the purge is durable when it returns.
TEST_F(PostgresEngineTest, ParallelStreamsDeleteEveryDueRowOnceAndDurably) {
    auto rule = plain_rule("accounts", 5000, 1000);
    rule.batch_size = 300;
    pg_of(rule).parallel = 3;
    RunContext ctx;
    ctx.tz = find_zone("UTC");
    ctx.journal = &m_journal;
    std::int64_t last_progress = 0;
    bool progress_ok = true;
    ctx.on_progress = [&](std::int64_t done, std::int64_t total) {
        progress_ok = progress_ok && total == 5000 && done >= last_progress;
        last_progress = done;
    };
    const auto result = m_engine->purge(rule, ctx);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 5000);
    EXPECT_GE(result.batches, 17); // 5000 / 300
    EXPECT_TRUE(progress_ok);
    EXPECT_EQ(last_progress, 5000);
    PgCluster::shared().stop(); // immediate: WAL not yet written by the server is lost
    PgCluster::shared().start();
    EXPECT_EQ(count("SELECT count(*) FROM accounts WHERE id <= 5000"), 0);
    EXPECT_EQ(count("SELECT count(*) FROM accounts"), 1000);
    expect_each_key_journaled_once(m_journal, 5000);
    for (const auto& intent : m_journal.m_intents) {
        for (const auto& key : intent.keys) {
            EXPECT_LE(std::stoll(key), 5000) << "journaled a row that was not due";
        }
    }
}

// The real audit log takes the streams' calls concurrently (it is thread-safe): its chain stays
// valid and it records every row once.
TEST_F(PostgresEngineTest, ParallelStreamsWriteAValidAuditLog) {
    auto rule = plain_rule("accounts", 4000, 500);
    rule.batch_size = 200;
    pg_of(rule).parallel = 2;
    TempDir dir;
    RunResult result;
    {
        AuditLog audit(dir.file("audit.jsonl"), m_key, new_run_id());
        RunContext ctx;
        ctx.tz = find_zone("UTC");
        ctx.journal = &audit;
        result = m_engine->purge(rule, ctx);
    }
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 4000);
    const auto verified = verify_audit_log(dir.file("audit.jsonl"));
    EXPECT_TRUE(verified.ok) << verified.reason;
    EXPECT_EQ(verified.records, 4000U);
    EXPECT_EQ(count("SELECT count(*) FROM accounts"), 500);
}

// While one stream waits on a locked row, the others go on through the rest of the table (one
// stream would wait there with everything behind it).
TEST_F(PostgresEngineTest, ParallelStreamsGoOnWhileOneWaitsOnALock) {
    auto rule = parallel_rule(2, 30s);
    RowLock lock(m_dsn, "accounts", 1);
    RunResult result;
    std::thread purge_thread([&] { result = purge(rule); });
    bool went_on = false; // every row beyond the locked row's pages deleted meanwhile
    for (int i = 0; i < 400 && !went_on; ++i) {
        went_on = count("SELECT count(*) FROM accounts WHERE id > 1000") == 0;
        if (!went_on) {
            std::this_thread::sleep_for(50ms);
        }
    }
    EXPECT_EQ(count("SELECT count(*) FROM accounts WHERE id = 1"), 1);
    lock.tx.commit();
    purge_thread.join();
    EXPECT_TRUE(went_on) << "the other stream waited too";
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 5000);
    EXPECT_EQ(count("SELECT count(*) FROM accounts"), 0);
    expect_each_key_journaled_once(m_journal, 5000);
}

// A stream that fails (a lock held past every retry) stops the others after their current batch:
// the rule fails, the failed batch is whole, and what is gone is exactly what was journaled.
TEST_F(PostgresEngineTest, ParallelStreamFailureStopsTheOthersAndLosesNothing) {
    auto rule = parallel_rule(2, 20ms);
    RowLock lock(m_dsn, "accounts", 2500);
    const auto result = purge(rule);
    lock.tx.commit();
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_NE(result.message.find("timed out 5 times"), std::string::npos) << result.message;
    EXPECT_EQ(count("SELECT count(*) FROM accounts WHERE id = 2500"), 1);
    const auto gone = 5000 - count("SELECT count(*) FROM accounts");
    EXPECT_EQ(result.processed, gone);
    expect_each_key_journaled_once(m_journal, gone);
    std::string list;
    for (const auto& intent : m_journal.m_intents) {
        for (const auto& key : intent.keys) {
            list += (list.empty() ? "" : ",") + key;
        }
    }
    EXPECT_EQ(count("SELECT count(*) FROM accounts WHERE id::text = ANY('{" + list + "}')"), 0);
}

// A journal that cannot make the Nth intent durable: that batch must not commit, the earlier ones
// must, and the purge stops there.
TEST_F(PostgresEngineTest, BatchWhoseIntentFailsIsNeverCommitted) {
    class FailingJournal : public RecordingJournal {
    public:
        std::string intent(const BatchIntent& batch) override {
            if (m_intents.size() == 3) {
                throw std::runtime_error("audit log: disk full");
            }
            return RecordingJournal::intent(batch);
        }
    };
    FailingJournal journal;
    auto rule = plain_rule("accounts", 3000, 0);
    rule.batch_size = 300;
    RunContext ctx;
    ctx.tz = find_zone("UTC");
    ctx.journal = &journal;
    RunResult result;
    try {
        result = m_engine->purge(rule, ctx);
    } catch (const std::exception&) {
        result.status = RunResult::Status::failed; // the journal failing may also throw out
    }
    EXPECT_NE(result.status, RunResult::Status::ok);
    ASSERT_EQ(journal.m_intents.size(), 3u);
    std::set<std::string> journaled;
    for (const auto& intent : journal.m_intents) {
        journaled.insert(intent.keys.begin(), intent.keys.end());
    }
    // Exactly the rows of the three journaled batches are gone; all others are still there.
    EXPECT_EQ(count("SELECT count(*) FROM accounts"),
              3000 - static_cast<std::int64_t>(journaled.size()));
    const auto present = scalar("SELECT count(*) FROM accounts WHERE id::text = ANY('{" + [&] {
        std::string list;
        for (const auto& k : journaled) {
            list += (list.empty() ? "" : ",") + k;
        }
        return list;
    }() + "}')");
    EXPECT_EQ(present, "0");
    for (const auto& o : journal.m_outcomes) {
        EXPECT_TRUE(o.committed);
    }
}

TEST_F(PostgresEngineTest, DjangoSessionsExpireWithTheirOidcSessions) {
    const auto u = user("u@example.org", 1, 10);
    exec("INSERT INTO django_session VALUES ('expired1', 'd', now() - interval '1 hour'), "
         "('expired2', 'd', now() - interval '3 days'), ('active', 'd', now() + interval '2 "
         "hours');"
         "INSERT INTO oidc_usersession (user_id, session_id) VALUES (" +
         std::to_string(u) + ", 'expired1'), (" + std::to_string(u) + ", 'active')");
    auto rule = shipped_dora_rule("dora-django-sessions");
    EXPECT_TRUE(problems(m_engine->check(rule)).empty());
    EXPECT_EQ(dry_run(rule).counters.at("dependents.public.oidc_usersession.delete"), 1);
    const auto result = purge(rule);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    EXPECT_EQ(scalar("SELECT string_agg(session_key, ',') FROM django_session"), "active");
    EXPECT_EQ(scalar("SELECT string_agg(session_id, ',') FROM oidc_usersession"), "active");

    edit_spec<PostgresRule>(rule).dependents.clear();
    const auto diagnostics = m_engine->check(rule);
    ASSERT_EQ(diagnostics.size(), 1U);
    EXPECT_NE(diagnostics.front().message.find("oidc_usersession_session_id_b45c8c33_fk_django_se"),
              std::string::npos)
        << diagnostics.front().message;
}

TEST_F(PostgresEngineTest, UnreachableServerIsUnavailable) {
    Datastore store;
    store.name = "down";
    store.spec = spec_ptr(PostgresStore(
        Secret("host=/nonexistent-dir port=1 dbname=x user=postgres password=hunter2")));
    const auto engine = make_postgres_engine(store, m_config);
    try {
        engine->check(accounts_rule());
        FAIL() << "no exception";
    } catch (const UnavailableError& e) {
        EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("down"), std::string::npos);
    }
}

} // namespace
} // namespace retentiond::test
