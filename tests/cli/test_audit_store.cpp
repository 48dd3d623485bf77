// The audit chain in PostgreSQL (issue 19, `daemon.audit_store`), through the real binary on a
// throwaway cluster: two processes appending at once keep one chain; an edited, deleted or
// reordered row is caught by `audit verify`; a chain rewritten whole is caught by `--head`;
// export, import, prove and the report read the store; a rule on the store's own database writes
// each batch's intent and outcome in the batch's transaction (a SIGKILL leaves both and the
// deletion, or none, and no key in flight); a rule on another database keeps its raw keys only in
// the in-flight table after a SIGKILL, and the next run settles them; so do files and redis rules.
#include "retentiond/crypto.hpp"
#include "support/pg_cluster.hpp"
#include "support/process.hpp"
#include "support/redis_server.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <csignal>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <regex>
#include <thread>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

const std::string k_audit_key = "store-audit-key-0123456789";

class AuditStoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        static std::atomic<int> counter{0};
        m_dsn = PgCluster::shared().create_database("store_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(++counter));
        seed("items", 1, k_due);
        m_dir.write("audit-key", k_audit_key + "\n");
    }

    void seed(const std::string& table, int from, int to) {
        pg_exec(m_dsn, "CREATE TABLE IF NOT EXISTS " + table +
                           " (id bigint PRIMARY KEY, created_at timestamptz);"
                           "INSERT INTO " +
                           table + " SELECT g, now() - interval '400 days' FROM generate_series(" +
                           std::to_string(from) + ", " + std::to_string(to) + ") g;");
    }

    static std::string rule(const std::string& name, const std::string& table, int batch,
                            const std::string& datastore = "app") {
        return "  - name: " + name + "\n    datastore: " + datastore +
               "\n    category: items\n    table: " + table +
               "\n    key: id\n    clock: created_at\n    retain: 1 year\n    action: delete\n"
               "    batch_size: " +
               std::to_string(batch) + "\n    limits: { max_fraction: 1 }\n";
    }

    // A config on the store (audit_store: app) or on a file log; `dsn` overrides the store's;
    // `more` adds datastores after app.
    std::string write_config(const std::string& name, const std::string& rules, bool store = true,
                             const std::string& dsn = "", const std::string& more = "") const {
        const std::string audit =
            store ? "  audit_store: app\n" : "  audit_log: " + m_dir.file("audit.jsonl") + "\n";
        return m_dir.write(name, "version: 1\ndaemon:\n" + audit +
                                     "  audit_key: ${file:" + m_dir.file("audit-key") +
                                     "}\n  metrics: \"off\"\n  timezone: UTC\n"
                                     "datastores:\n  app:\n    kind: postgres\n    dsn: \"" +
                                     (dsn.empty() ? m_dsn : dsn) + "\"\n" + more + "rules:\n" +
                                     rules);
    }

    static std::vector<std::string> with(const std::string& config, std::vector<std::string> verb) {
        verb.insert(verb.begin(), {"--config", config});
        return verb;
    }

    std::vector<std::pair<std::int64_t, std::string>> rows() const {
        pqxx::connection c(m_dsn);
        pqxx::work tx(c);
        std::vector<std::pair<std::int64_t, std::string>> out;
        for (const auto& r : tx.exec("SELECT seq, line FROM retentiond.audit_log ORDER BY seq")) {
            out.emplace_back(r[0].as<std::int64_t>(), r[1].as<std::string>());
        }
        return out;
    }

    void set_line(std::int64_t seq, const std::string& line) const {
        pqxx::connection c(m_dsn);
        pqxx::work tx(c);
        tx.exec_params("UPDATE retentiond.audit_log SET line = $2 WHERE seq = $1", seq, line);
        tx.commit();
    }

    std::int64_t count(const std::string& sql) const { return std::stoll(pg_scalar(m_dsn, sql)); }

    // Whether a session of this database comes to wait on a lock (any, or those matching
    // `which`, a pg_stat_activity condition), polled every `step` 200 times.
    bool some_session_waits_on_a_lock(std::chrono::milliseconds step,
                                      const std::string& which = "wait_event_type = 'Lock'") const {
        for (int i = 0; i < 200; ++i) {
            std::this_thread::sleep_for(step);
            if (count("SELECT count(*) FROM pg_stat_activity WHERE " + which +
                      " AND datname = current_database()") > 0) {
                return true;
            }
        }
        return false;
    }

    // The chain's advisory lock (audit_pg_store.cpp: the first 15 hex digits of this hash).
    static std::string chain_lock_key() {
        return std::to_string(
            std::stoll(sha256_hex("retentiond audit chain retentiond").substr(0, 15), nullptr, 16));
    }

    static constexpr int k_due = 300;
    TempDir m_dir;
    std::string m_dsn;
};

// "audit head: seq=N sha256=H" as a run logs it.
std::pair<std::string, std::string> logged_head(const std::string& output) {
    std::smatch m;
    const std::regex re("audit head: seq=([0-9]+) sha256=([0-9a-f]{64})");
    std::string last_seq;
    std::string last_hash;
    for (auto it = output.cbegin(); std::regex_search(it, output.cend(), m, re);
         it = m.suffix().first) {
        last_seq = m[1];
        last_hash = m[2];
    }
    return {last_seq, last_hash};
}

TEST_F(AuditStoreTest, PurgeWritesTheChainToTheStoreAndEveryReaderReadsIt) {
    const auto config = write_config("retentiond.yaml", rule("old-items", "items", 50));
    const auto r = run_retentiond(with(config, {"purge", "--now"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(count("SELECT count(*) FROM items"), 0);
    EXPECT_FALSE(fs::exists(m_dir.file("audit.jsonl"))) << "a file log beside the store";
    const auto lines = rows();
    ASSERT_GE(lines.size(), 12U); // run_start, 6 intents and outcomes, rule_end, run_end
    EXPECT_EQ(count("SELECT count(*) FROM retentiond.in_flight"), 0);

    const auto verify = run_retentiond(with(config, {"audit", "verify"}));
    EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
    EXPECT_THAT(verify.out, HasSubstr("intact: " + std::to_string(lines.size()) + " lines"));
    EXPECT_THAT(verify.out, HasSubstr(std::to_string(k_due) + " records"));

    const auto proof =
        run_retentiond(with(config, {"audit", "prove", "--rule", "old-items", "--key", "7"}));
    EXPECT_EQ(proof.exit_code, 0) << proof.err;
    EXPECT_THAT(proof.out, HasSubstr("delete at "));

    const auto report = run_retentiond(with(config, {"report", "--format", "json"}));
    EXPECT_THAT(report.out, HasSubstr("retentiond.audit_log")) << report.err;
    EXPECT_THAT(report.out, HasSubstr("\"read\": true")) << report.out;
    EXPECT_THAT(report.out, Not(HasSubstr("retentiond.audit_log.line")))
        << "the audit chain's own table reported as personal data without a rule";

    const auto [seq, hash] = logged_head(r.out + r.err);
    EXPECT_EQ(seq, std::to_string(lines.back().first)) << r.err;
    EXPECT_EQ(hash, sha256_hex(lines.back().second));
}

// An erasure request (#20) with the chain in the store: its lines go to the store, its ledger is
// read back from it (erase --status, audit prove --subject), and no file log appears.
TEST_F(AuditStoreTest, AnErasureRequestIsWrittenToAndReadFromTheStore) {
    pg_exec(m_dsn,
            "CREATE TABLE people (id bigint PRIMARY KEY, email text, created_at timestamptz);"
            "INSERT INTO people SELECT g, 'user' || g || '@example.org', now()"
            " FROM generate_series(1, 20) g;");
    const auto config = write_config("retentiond.yaml",
                                     "  - name: people\n    datastore: app\n    category: people\n"
                                     "    table: people\n    key: id\n    clock: created_at\n"
                                     "    retain: 1 year\n    action: delete\n"
                                     "    subject: { email: email }\n");
    const auto erase =
        run_retentiond(with(config, {"erase", "--subject", "email=User7@Example.org"}));
    ASSERT_EQ(erase.exit_code, 0) << erase.out << erase.err;
    EXPECT_THAT(erase.out, HasSubstr("audit log: audit store app (retentiond.audit_log)"));
    EXPECT_EQ(count("SELECT count(*) FROM people WHERE email = 'user7@example.org'"), 0);
    EXPECT_EQ(count("SELECT count(*) FROM people"), 19);
    EXPECT_FALSE(fs::exists(m_dir.file("audit.jsonl")));
    EXPECT_EQ(count("SELECT count(*) FROM retentiond.audit_log WHERE line LIKE '%erasure_request%'"
                    " AND line NOT LIKE '%example.org%'"),
              1);
    const auto proof =
        run_retentiond(with(config, {"audit", "prove", "--subject", "email=user7@example.org"}));
    EXPECT_EQ(proof.exit_code, 0) << proof.err;
    EXPECT_THAT(proof.out, HasSubstr("erased, done at"));
    const auto status = run_retentiond(with(config, {"erase", "--status"}));
    EXPECT_EQ(status.exit_code, 0) << status.err;
    EXPECT_THAT(status.out, HasSubstr("0 open request(s)"));
}

TEST_F(AuditStoreTest, TwoProcessesAppendingAtOnceKeepOneChain) {
    seed("others", 1, k_due);
    const auto a = write_config("a.yaml", rule("old-items", "items", 5));
    const auto b = write_config("b.yaml", rule("old-others", "others", 5));
    ChildProcess first(with(a, {"purge", "--now"}), m_dir.file("a.out"));
    ChildProcess second(with(b, {"purge", "--now"}), m_dir.file("b.out"));
    EXPECT_EQ(first.wait(), 0) << first.output();
    EXPECT_EQ(second.wait(), 0) << second.output();

    const auto lines = rows();
    // Interleaved: the two runs' lines alternate somewhere in the chain.
    int switches = 0;
    std::map<std::string, int> types;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto j = nlohmann::json::parse(lines[i].second);
        ++types[j["type"].get<std::string>()];
        // Recovery by one process must leave the other's batches in flight alone.
        EXPECT_FALSE(j.contains("recovered"))
            << "a live writer's batch settled as a leftover: " << lines[i].second;
        if (i > 0) {
            switches += j["run"] != nlohmann::json::parse(lines[i - 1].second)["run"] ? 1 : 0;
        }
    }
    EXPECT_EQ(types["run_start"], 2);
    EXPECT_EQ(types["intent"], 2 * k_due / 5);
    EXPECT_EQ(types["outcome"], 2 * k_due / 5);
    EXPECT_EQ(types["run_end"], 2);
    EXPECT_GT(switches, 2) << "the two writers did not run at once";
    const auto verify = run_retentiond(with(a, {"audit", "verify"}));
    EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
    EXPECT_THAT(verify.out, HasSubstr(std::to_string(2 * k_due) + " records"));
}

TEST_F(AuditStoreTest, EditedDeletedOrReorderedRowsAreCaught) {
    const auto config = write_config("retentiond.yaml", rule("old-items", "items", 100));
    ASSERT_EQ(run_retentiond(with(config, {"purge", "--now"})).exit_code, 0);
    const auto lines = rows();
    ASSERT_GE(lines.size(), 6U);
    const auto verify = [&] { return run_retentiond(with(config, {"audit", "verify"})); };

    // Edited: an outcome's count.
    auto edited = lines[3].second;
    const auto at = edited.find("\"count\":");
    ASSERT_NE(at, std::string::npos);
    edited.replace(at, 9, "\"count\":9");
    set_line(lines[3].first, edited);
    auto r = verify();
    EXPECT_EQ(r.exit_code, 65) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("altered"));
    set_line(lines[3].first, lines[3].second);
    ASSERT_EQ(verify().exit_code, 0);

    // Reordered: two rows' lines swapped.
    set_line(lines[2].first, lines[3].second);
    set_line(lines[3].first, lines[2].second);
    r = verify();
    EXPECT_EQ(r.exit_code, 65) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("seq"));
    set_line(lines[2].first, lines[2].second);
    set_line(lines[3].first, lines[3].second);

    // Deleted: a row in the middle.
    pg_exec(m_dsn,
            "DELETE FROM retentiond.audit_log WHERE seq = " + std::to_string(lines[2].first));
    r = verify();
    EXPECT_EQ(r.exit_code, 65) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("a line was removed, inserted or moved"));
}

// Every line's prev recomputed after an edit: the chain is consistent again, only an anchor kept
// outside the store can tell.
void rewrite_chain(AuditStoreTest& t, std::vector<std::pair<std::int64_t, std::string>> lines,
                   const std::function<void(std::int64_t, const std::string&)>& set) {
    std::string prev(64, '0');
    for (auto& [seq, line] : lines) {
        auto j = nlohmann::json::parse(line);
        j["prev"] = prev;
        if (j["type"] == "outcome") {
            j["count"] = 1; // the forger's edit
        }
        line = j.dump();
        set(seq, line);
        prev = sha256_hex(line);
    }
    (void)t;
}

TEST_F(AuditStoreTest, AChainRewrittenWholeIsCaughtByTheLoggedHead) {
    const auto config = write_config("retentiond.yaml", rule("old-items", "items", 100));
    const auto run = run_retentiond(with(config, {"purge", "--now"}));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const auto [seq, hash] = logged_head(run.out + run.err);
    ASSERT_FALSE(seq.empty()) << "no `audit head:` line in the run's log output: " << run.err;
    const std::string head = seq + ":" + hash;
    auto r = run_retentiond(with(config, {"audit", "verify", "--head", head}));
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("1 head matched"));

    rewrite_chain(*this, rows(), [&](std::int64_t s, const std::string& l) { set_line(s, l); });
    r = run_retentiond(with(config, {"audit", "verify"}));
    EXPECT_EQ(r.exit_code, 0) << "the rewrite is consistent: " << r.out << r.err;
    r = run_retentiond(with(config, {"audit", "verify", "--head", head}));
    EXPECT_EQ(r.exit_code, 65) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("the chain was rewritten"));

    // A head past the end: lines cut off.
    r = run_retentiond(with(config, {"audit", "verify", "--head", "9999:" + hash}));
    EXPECT_EQ(r.exit_code, 65) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("cut off"));
}

TEST_F(AuditStoreTest, ExportRoundTripsThroughVerifyAndASliceSaysWhereItStarts) {
    const auto config = write_config("retentiond.yaml", rule("old-items", "items", 100));
    ASSERT_EQ(run_retentiond(with(config, {"purge", "--now"})).exit_code, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    const auto middle = std::chrono::system_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    seed("items", 1000, 1099);
    ASSERT_EQ(run_retentiond(with(config, {"purge", "--now"})).exit_code, 0);
    const auto lines = rows();

    const auto whole = m_dir.file("export.jsonl");
    auto r = run_retentiond(with(config, {"audit", "export", "--output", whole}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    std::string expected;
    for (const auto& [seq, line] : lines) {
        expected += line + "\n";
    }
    EXPECT_EQ(read_file(whole), expected);
    r = run_retentiond({"audit", "verify", "--log", whole});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("400 records"));

    const auto since = std::chrono::duration_cast<std::chrono::seconds>(middle.time_since_epoch());
    const auto slice = m_dir.file("slice.jsonl");
    const std::time_t t = since.count();
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    r = run_retentiond(with(config, {"audit", "export", "--output", slice, "--since", text}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    const auto sliced = read_file(slice);
    EXPECT_LT(sliced.size(), expected.size());
    EXPECT_TRUE(expected.ends_with(sliced)) << "not the chain's contiguous end";
    r = run_retentiond({"audit", "verify", "--log", slice});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("100 records"));
    EXPECT_THAT(r.out, HasSubstr("lines before it"));
}

TEST_F(AuditStoreTest, ImportMovesAFileLogInAndTheChainContinuesFromIt) {
    const auto file_config = write_config("file.yaml", rule("old-items", "items", 100), false);
    ASSERT_EQ(run_retentiond(with(file_config, {"purge", "--now"})).exit_code, 0);
    const auto file_lines = read_file(m_dir.file("audit.jsonl"));
    const auto config = write_config("retentiond.yaml", rule("old-items", "items", 100));
    auto r = run_retentiond(with(config, {"audit", "import", "--log", m_dir.file("audit.jsonl")}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("imported"));

    seed("items", 1000, 1049);
    ASSERT_EQ(run_retentiond(with(config, {"purge", "--now"})).exit_code, 0);
    const auto lines = rows();
    std::string head;
    for (std::size_t i = 0; i < lines.size() && head.size() < file_lines.size(); ++i) {
        head += lines[i].second + "\n";
    }
    EXPECT_EQ(head, file_lines) << "the imported lines do not come first, unchanged";
    r = run_retentiond(with(config, {"audit", "verify"}));
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("350 records"));
    r = run_retentiond(with(config, {"audit", "prove", "--rule", "old-items", "--key", "7"}));
    EXPECT_THAT(r.out, HasSubstr("delete at ")) << "a record purged before the import";

    // A second import would fork the chain: refused.
    r = run_retentiond(with(config, {"audit", "import", "--log", m_dir.file("audit.jsonl")}));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_THAT(r.err, HasSubstr("already holds"));
}

TEST_F(AuditStoreTest, ConfigErrorsNameTheKey) {
    auto path = m_dir.write("both.yaml", "version: 1\ndaemon:\n  audit_log: /tmp/x.jsonl\n"
                                         "  audit_store: app\n  audit_key: k\n"
                                         "datastores:\n  app: { kind: postgres, dsn: \"x\" }\n");
    auto r = run_retentiond({"--config", path, "check"});
    EXPECT_EQ(r.exit_code, 78) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("both.yaml:4"));
    EXPECT_THAT(r.err, HasSubstr("not both"));

    path = m_dir.write("files.yaml", "version: 1\ndaemon:\n  audit_store: exports\n"
                                     "  audit_key: k\n"
                                     "datastores:\n  exports: { kind: files, root: /tmp }\n");
    r = run_retentiond({"--config", path, "check"});
    EXPECT_EQ(r.exit_code, 78) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("needs a postgres datastore"));

    path = m_dir.write("unknown.yaml", "version: 1\ndaemon:\n  audit_store: ap\n  audit_key: k\n"
                                       "  audit_schema: \"Bad-Name\"\n"
                                       "datastores:\n  app: { kind: postgres, dsn: \"x\" }\n");
    r = run_retentiond({"--config", path, "check"});
    EXPECT_EQ(r.exit_code, 78) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("unknown datastore \"ap\""));
    EXPECT_THAT(r.err, HasSubstr("not a plain schema name"));
}

TEST_F(AuditStoreTest, MissingPrivilegesAreRefusedNamingThem) {
    const std::string role = "auditless_" + std::to_string(::getpid());
    pg_exec(m_dsn, "CREATE ROLE " + role + " LOGIN; GRANT ALL ON items TO " + role +
                       "; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
                       "REVOKE CREATE ON DATABASE \"" +
                       pg_scalar(m_dsn, "SELECT current_database()") + "\" FROM PUBLIC;");
    const auto dsn = m_dsn.substr(0, m_dsn.find(" user=")) + " user=" + role;
    const auto config = write_config("retentiond.yaml", rule("old-items", "items", 100), true, dsn);
    auto r = run_retentiond(with(config, {"purge", "--now"}));
    EXPECT_EQ(r.exit_code, 74) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("CREATE on the database"));
    EXPECT_EQ(count("SELECT count(*) FROM items"), k_due) << "rows deleted without an audit";

    // Created by an administrator's run (nothing due), then granted all but DELETE on in_flight.
    pg_exec(m_dsn, "CREATE TABLE nothing (id bigint PRIMARY KEY, created_at timestamptz)");
    const auto admin = write_config("admin.yaml", rule("none-due", "nothing", 100));
    r = run_retentiond(with(admin, {"purge", "--now"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    pg_exec(m_dsn, "GRANT USAGE ON SCHEMA retentiond TO " + role +
                       "; GRANT SELECT, INSERT ON retentiond.audit_log TO " + role +
                       "; GRANT SELECT, INSERT ON retentiond.in_flight TO " + role + ";");
    r = run_retentiond(with(config, {"purge", "--now"}));
    EXPECT_EQ(r.exit_code, 74) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("DELETE on in_flight"));
    EXPECT_EQ(count("SELECT count(*) FROM items"), k_due);
}

// Creates the store's tables (a purge with nothing due) and records, from then on, every row ever
// committed into in_flight (in_flight_seen, beside the rule's tables).
void watch_in_flight(const std::string& config, const std::string& store_dsn) {
    const auto r = run_retentiond({"--config", config, "purge", "--now", "--rule", "empty"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    pg_exec(store_dsn, "CREATE TABLE public.in_flight_seen (batch text);"
                       "CREATE FUNCTION public.note_in_flight() RETURNS trigger LANGUAGE plpgsql AS"
                       " $$BEGIN INSERT INTO public.in_flight_seen VALUES (NEW.batch);"
                       " RETURN NEW; END$$;"
                       "CREATE TRIGGER note AFTER INSERT OR UPDATE ON retentiond.in_flight"
                       " FOR EACH ROW EXECUTE FUNCTION public.note_in_flight();");
}

// Each intent line of the chain is followed by its outcome line, and the batches' digests.
struct BatchLines {
    bool paired = true;        // every intent at seq n has its outcome at seq n + 1
    std::set<std::string> ids; // the batches
    std::set<std::string> digests;
    std::int64_t committed = 0; // the outcomes' counts
};
BatchLines batch_lines(const std::vector<std::pair<std::int64_t, std::string>>& lines) {
    BatchLines out;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto j = nlohmann::json::parse(lines[i].second);
        if (j["type"] != "intent") {
            continue;
        }
        out.ids.insert(j["batch"].get<std::string>());
        for (const auto& d : j["digests"]) {
            out.digests.insert(d.get<std::string>());
        }
        const auto next = i + 1 < lines.size() ? nlohmann::json::parse(lines[i + 1].second)
                                               : nlohmann::json::object();
        if (next.value("type", "") != "outcome" || next["batch"] != j["batch"] ||
            lines[i + 1].first != lines[i].first + 1) {
            out.paired = false;
            continue;
        }
        out.committed += next["count"].get<std::int64_t>();
    }
    return out;
}

// A rule on the store's own database (#19 item 2): each batch's intent and outcome lines are
// written in the batch's transaction, one after the other, and no raw key is ever kept in
// in_flight (the trigger would have seen it) or on disk.
TEST_F(AuditStoreTest, ARuleOnTheStoresDatabaseWritesItsLinesInTheBatchTransaction) {
    seed("empty", 1, 0);
    const auto config =
        write_config("retentiond.yaml", rule("old-items", "items", 50) +
                                            rule("empty", "empty", 50) + "    parallel: 2\n");
    watch_in_flight(config, m_dsn);
    const auto r = run_retentiond(with(config, {"purge", "--now", "--rule", "old-items"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(count("SELECT count(*) FROM items"), 0);
    EXPECT_EQ(count("SELECT count(*) FROM public.in_flight_seen"), 0) << "raw keys in in_flight";
    EXPECT_FALSE(fs::exists(m_dir.file("audit.jsonl.pending")));
    const auto lines = batch_lines(rows());
    EXPECT_TRUE(lines.paired) << "an intent not followed by its outcome";
    EXPECT_GE(lines.ids.size(), 6U);
    EXPECT_EQ(lines.committed, k_due);
    EXPECT_EQ(lines.digests.size(), static_cast<std::size_t>(k_due));
    const auto verify = run_retentiond(with(config, {"audit", "verify"}));
    EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
    EXPECT_THAT(verify.out, HasSubstr(std::to_string(k_due) + " records"));
    const auto proof =
        run_retentiond(with(config, {"audit", "prove", "--rule", "old-items", "--key", "123"}));
    EXPECT_THAT(proof.out, HasSubstr("delete at ")) << proof.err;
}

// A datastore of its own name with exactly the store's connection string (a policy naming the
// app's database as Scalingo's config names it `audit`) is the same database: its batches' lines
// go in their transactions too, nothing in in_flight.
TEST_F(AuditStoreTest, ADatastoreWithTheStoresConnectionStringIsTheSameDatabase) {
    seed("empty", 1, 0);
    const auto config = write_config(
        "retentiond.yaml", rule("old-items", "items", 50, "alias") + rule("empty", "empty", 50),
        true, "", "  alias:\n    kind: postgres\n    dsn: \"" + m_dsn + "\"\n");
    watch_in_flight(config, m_dsn);
    const auto r = run_retentiond(with(config, {"purge", "--now", "--rule", "old-items"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(count("SELECT count(*) FROM items"), 0);
    EXPECT_EQ(count("SELECT count(*) FROM public.in_flight_seen"), 0) << "raw keys in in_flight";
    const auto lines = batch_lines(rows());
    EXPECT_TRUE(lines.paired);
    EXPECT_EQ(lines.committed, k_due);
    EXPECT_EQ(run_retentiond(with(config, {"audit", "verify"})).exit_code, 0);
}

// Anonymize on the store's own database: the same batches, the lines in their transactions.
TEST_F(AuditStoreTest, AnAnonymizeRuleOnTheStoresDatabaseWritesItsLinesInTheBatchTransaction) {
    seed("empty", 1, 0);
    pg_exec(m_dsn, "CREATE TABLE people (id bigint PRIMARY KEY, email text, created_at"
                   " timestamptz); INSERT INTO people SELECT g, 'u' || g || '@example.org',"
                   " now() - interval '400 days' * (g % 2) FROM generate_series(1, 100) g;");
    const auto config = write_config(
        "retentiond.yaml", "  - name: people\n    datastore: app\n    category: people\n"
                           "    table: people\n    key: id\n    clock: created_at\n"
                           "    retain: 1 year\n    action: anonymize\n    batch_size: 7\n"
                           "    anonymize: { email: null }\n    limits: { max_fraction: 1 }\n" +
                               rule("empty", "empty", 10));
    watch_in_flight(config, m_dsn);
    const auto r = run_retentiond(with(config, {"purge", "--now", "--rule", "people"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(count("SELECT count(*) FROM people WHERE email IS NULL"), 50);
    EXPECT_EQ(count("SELECT count(*) FROM people WHERE email IS NULL AND id % 2 = 0"), 0);
    const auto lines = batch_lines(rows());
    EXPECT_TRUE(lines.paired);
    EXPECT_EQ(lines.committed, 50);
    EXPECT_EQ(count("SELECT count(*) FROM public.in_flight_seen"), 0);
    EXPECT_EQ(run_retentiond(with(config, {"audit", "verify"})).exit_code, 0);
}

// A partition emptied whole on the store's own database: its intent (the partition and its row
// count) and its outcome are written in the transaction that drops it.
TEST_F(AuditStoreTest, APartitionDroppedOnTheStoresDatabaseHasItsLinesInTheSameTransaction) {
    seed("empty", 1, 0);
    pg_exec(m_dsn,
            "CREATE TABLE ev (id bigint, time timestamptz NOT NULL, PRIMARY KEY (id, time))"
            " PARTITION BY RANGE (time);"
            "CREATE TABLE ev_old PARTITION OF ev FOR VALUES FROM (MINVALUE) TO"
            " (date_trunc('day', now()) - interval '500 days');"
            "CREATE TABLE ev_new PARTITION OF ev FOR VALUES FROM"
            " (date_trunc('day', now()) - interval '500 days') TO (MAXVALUE);"
            "INSERT INTO ev SELECT g, now() - interval '600 days' FROM generate_series(1, 40)"
            " g; INSERT INTO ev SELECT g, now() FROM generate_series(41, 50) g; ANALYZE ev;");
    const auto config = write_config("retentiond.yaml",
                                     "  - name: events\n    datastore: app\n    category: items\n"
                                     "    table: ev\n    key: [id, time]\n    clock: time\n"
                                     "    retain: 1 year\n    action: delete\n"
                                     "    limits: { max_fraction: 1 }\n" +
                                         rule("empty", "empty", 10));
    watch_in_flight(config, m_dsn);
    const auto r = run_retentiond(with(config, {"purge", "--now", "--rule", "events"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(count("SELECT count(*) FROM ev"), 10);
    EXPECT_EQ(count("SELECT count(*) FROM pg_class WHERE relname = 'ev_old'"), 0);
    const auto all = rows();
    const auto lines = batch_lines(all);
    EXPECT_TRUE(lines.paired);
    EXPECT_EQ(lines.committed, 40);
    EXPECT_EQ(count("SELECT count(*) FROM retentiond.audit_log WHERE line LIKE"
                    " '%\"type\":\"intent\"%' AND line LIKE '%\"partition\":{%'"),
              1);
    EXPECT_EQ(count("SELECT count(*) FROM public.in_flight_seen"), 0);
    EXPECT_EQ(run_retentiond(with(config, {"audit", "verify"})).exit_code, 0);
}

// SIGKILL while a batch waits on a row lock the test holds: every batch has both its lines and
// its rows deleted, or neither (the one in flight, and the one committing behind it); in_flight
// stays empty all along, and the next run finishes with the chain intact.
TEST_F(AuditStoreTest, SigkillMidPurgeOnTheStoresDatabaseLeavesBothLinesOrNeither) {
    seed("empty", 1, 0);
    const auto config =
        write_config("retentiond.yaml", rule("old-items", "items", 20) + "    lock_timeout: 60s\n" +
                                            rule("empty", "empty", 20));
    watch_in_flight(config, m_dsn);
    pqxx::connection holder(m_dsn);
    pqxx::work held(holder);
    held.exec("SELECT id FROM items WHERE id = 200 FOR UPDATE");
    ChildProcess child(with(config, {"purge", "--now", "--rule", "old-items"}),
                       m_dir.file("child.out"));
    ASSERT_TRUE(some_session_waits_on_a_lock(std::chrono::milliseconds(50))) << child.output();
    EXPECT_EQ(count("SELECT count(*) FROM retentiond.in_flight"), 0) << "keys of a batch in flight";
    child.kill();
    child.wait();
    held.abort();

    const auto lines = batch_lines(rows());
    EXPECT_TRUE(lines.paired);
    const auto left = count("SELECT count(*) FROM items");
    EXPECT_GT(left, 0);
    EXPECT_LT(left, k_due) << "no batch committed before the kill";
    EXPECT_EQ(lines.committed, k_due - left);
    pqxx::connection c(m_dsn);
    pqxx::work tx(c);
    for (const auto& row : tx.exec("SELECT g::text, EXISTS (SELECT 1 FROM items WHERE id = g)"
                                   " FROM generate_series(1, " +
                                   std::to_string(k_due) + ") g")) {
        const auto id = row[0].as<std::string>();
        const bool in_lines =
            lines.digests.count(hmac_sha256_hex(k_audit_key, "old-items\n" + id)) > 0;
        EXPECT_NE(in_lines, row[1].as<bool>()) << "record " << id;
    }
    tx.commit();
    EXPECT_EQ(count("SELECT count(*) FROM public.in_flight_seen"), 0);
    const auto verify = run_retentiond(with(config, {"audit", "verify"}));
    EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;

    const auto r = run_retentiond(with(config, {"purge", "--now", "--rule", "old-items"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(count("SELECT count(*) FROM items"), 0);
    const auto after = batch_lines(rows());
    EXPECT_TRUE(after.paired);
    EXPECT_EQ(after.committed, k_due);
    EXPECT_EQ(count("SELECT count(*) FROM public.in_flight_seen"), 0);
    EXPECT_EQ(run_retentiond(with(config, {"audit", "verify"})).exit_code, 0);
}

// SIGTERM while a batch of a rule on the store's own database waits on a row lock: the watch
// cancels the statement, the run ends stopped (exit 75); the batches before it have their lines,
// the cancelled one has neither lines nor deletions, and the chain verifies.
TEST_F(AuditStoreTest, SigtermMidPurgeOnTheStoresDatabaseStopsWithEveryBatchWholeInTheChain) {
    seed("empty", 1, 0);
    const auto config =
        write_config("retentiond.yaml", rule("old-items", "items", 20) + "    lock_timeout: 60s\n" +
                                            rule("empty", "empty", 20));
    watch_in_flight(config, m_dsn);
    pqxx::connection holder(m_dsn);
    pqxx::work held(holder);
    held.exec("SELECT id FROM items WHERE id = 200 FOR UPDATE");
    ChildProcess child(with(config, {"purge", "--now", "--rule", "old-items"}),
                       m_dir.file("child.out"));
    ASSERT_TRUE(some_session_waits_on_a_lock(std::chrono::milliseconds(50))) << child.output();
    child.term();
    EXPECT_EQ(child.wait(), 75) << child.output();
    held.abort();
    EXPECT_THAT(child.output(), HasSubstr("stopped"));
    const auto lines = batch_lines(rows());
    EXPECT_TRUE(lines.paired);
    const auto left = count("SELECT count(*) FROM items");
    EXPECT_GT(left, 0);
    EXPECT_EQ(lines.committed, k_due - left);
    EXPECT_EQ(count("SELECT count(*) FROM items WHERE id = 200"), 1);
    EXPECT_EQ(count("SELECT count(*) FROM public.in_flight_seen"), 0);
    const auto verify = run_retentiond(with(config, {"audit", "verify"}));
    EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

// The chain's lock held elsewhere longer than the rule's lock_timeout when a batch on the store's
// own database comes to write its lines: the batch rolls back with them and the rule fails saying
// so (never a silent skip); the chain stays whole and every record gone is in it.
TEST_F(AuditStoreTest, LinesThatCannotBeWrittenFailTheRuleAndRollTheBatchBack) {
    seed("empty", 1, 0);
    const auto config =
        write_config("retentiond.yaml", rule("old-items", "items", 20) + "    lock_timeout: 1s\n" +
                                            rule("empty", "empty", 20));
    watch_in_flight(config, m_dsn);
    pqxx::connection holder(m_dsn);
    auto held = std::make_unique<pqxx::work>(holder);
    held->exec("SELECT id FROM items WHERE id = 200 FOR UPDATE");
    ChildProcess child(with(config, {"purge", "--now", "--rule", "old-items"}),
                       m_dir.file("child.out"));
    ASSERT_TRUE(some_session_waits_on_a_lock(std::chrono::milliseconds(20))) << child.output();
    // The chain's lock, then the row.
    const auto key = chain_lock_key();
    pqxx::connection chain(m_dsn);
    pqxx::nontransaction lock(chain);
    lock.exec("SELECT pg_advisory_lock(" + key + ")");
    held->abort();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    lock.exec("SELECT pg_advisory_unlock(" + key + ")");
    const int code = child.wait();
    EXPECT_EQ(code, 75) << child.output(); // a rule failed partway
    EXPECT_THAT(child.output(), HasSubstr("its audit lines could not be written"));
    const auto lines = batch_lines(rows());
    EXPECT_TRUE(lines.paired);
    EXPECT_EQ(lines.committed, k_due - count("SELECT count(*) FROM items"));
    EXPECT_GT(count("SELECT count(*) FROM items"), 0);
    EXPECT_EQ(count("SELECT count(*) FROM public.in_flight_seen"), 0);
    EXPECT_EQ(run_retentiond(with(config, {"audit", "verify"})).exit_code, 0);
}

// SIGTERM while a batch on the store's own database waits for the chain's lock to write its
// lines: the watch cancels that statement, and the run says it stopped (the batch in flight
// cancelled, nothing of it applied), not that the lines could not be written.
TEST_F(AuditStoreTest, SigtermWhileABatchWaitsToWriteItsLinesEndsStopped) {
    seed("empty", 1, 0);
    const auto config =
        write_config("retentiond.yaml", rule("old-items", "items", 20) + "    lock_timeout: 60s\n");
    pqxx::connection holder(m_dsn);
    auto held = std::make_unique<pqxx::work>(holder);
    held->exec("SELECT id FROM items WHERE id = 200 FOR UPDATE");
    ChildProcess child(with(config, {"purge", "--now", "--rule", "old-items"}),
                       m_dir.file("child.out"));
    ASSERT_TRUE(some_session_waits_on_a_lock(std::chrono::milliseconds(20))) << child.output();
    const auto key = chain_lock_key();
    pqxx::connection chain(m_dsn);
    pqxx::nontransaction lock(chain);
    lock.exec("SELECT pg_advisory_lock(" + key + ")");
    held->abort(); // the batch deletes its rows, then waits for the chain's lock
    ASSERT_TRUE(
        some_session_waits_on_a_lock(std::chrono::milliseconds(20), "wait_event = 'advisory'"))
        << child.output();
    child.term();
    std::this_thread::sleep_for(std::chrono::seconds(3)); // the watch cancels 2 s after the stop
    lock.exec("SELECT pg_advisory_unlock(" + key + ")");
    EXPECT_EQ(child.wait(), 75) << child.output();
    EXPECT_THAT(child.output(), HasSubstr("the batch in flight was cancelled (SQLSTATE 57014)"));
    EXPECT_THAT(child.output(), Not(HasSubstr("could not be written")));
    const auto lines = batch_lines(rows());
    EXPECT_TRUE(lines.paired);
    EXPECT_EQ(lines.committed, k_due - count("SELECT count(*) FROM items"));
    EXPECT_GT(count("SELECT count(*) FROM items"), 0);
    EXPECT_EQ(run_retentiond(with(config, {"audit", "verify"})).exit_code, 0);
}

// A rule on another database than the store's keeps the intent / outcome protocol: its raw keys
// are in in_flight while its batch is, and only there.
TEST_F(AuditStoreTest, SigkillMidPurgeLeavesKeysOnlyInTheStoreAndRecoverySettlesThem) {
    pqxx::connection admin(PgCluster::shared().dsn());
    {
        pqxx::nontransaction tx(admin);
        tx.exec0("ALTER SYSTEM SET synchronous_commit = on");
        tx.exec("SELECT pg_reload_conf()");
    }
    static std::atomic<int> counter{0};
    const auto data = PgCluster::shared().create_database("data_" + std::to_string(::getpid()) +
                                                          "_" + std::to_string(++counter));
    pg_exec(data, "CREATE TABLE items (id bigint PRIMARY KEY, created_at timestamptz);"
                  "CREATE TABLE empty (id bigint PRIMARY KEY, created_at timestamptz);"
                  "INSERT INTO items SELECT g, now() - interval '400 days'"
                  " FROM generate_series(1, " +
                      std::to_string(k_due) + ") g;");
    const auto items_left = [&] {
        return std::stoll(pg_scalar(data, "SELECT count(*) FROM items"));
    };
    const auto config =
        write_config("retentiond.yaml",
                     rule("old-items", "items", 10, "data") + "    sleep_between_batches: 20ms\n" +
                         rule("empty", "empty", 10, "data"),
                     true, "", "  data:\n    kind: postgres\n    dsn: \"" + data + "\"\n");
    watch_in_flight(config, m_dsn);
    std::mt19937 rng(20261206);
    for (int i = 0; i < 4; ++i) {
        ChildProcess child(with(config, {"purge", "--now", "--rule", "old-items"}),
                           m_dir.file("child.out"));
        std::this_thread::sleep_for(
            std::chrono::milliseconds(std::uniform_int_distribution<int>(150, 400)(rng)));
        child.kill();
        child.wait();
        // Nothing on disk: no file log, no pending-keys directory.
        EXPECT_TRUE(fs::is_empty(m_dir.path()) || !fs::exists(m_dir.file("audit.jsonl.pending")))
            << "raw keys on disk";
        const auto verify = run_retentiond(with(config, {"audit", "verify"}));
        EXPECT_EQ(verify.exit_code, 0) << "kill " << i << ": " << verify.out << verify.err;
    }
    const auto gone_before = k_due - items_left();
    ASSERT_GT(gone_before, 0) << "no batch ran before the kills";
    const auto r = run_retentiond(with(config, {"purge", "--now"}));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(items_left(), 0);
    EXPECT_EQ(count("SELECT count(*) FROM retentiond.in_flight"), 0) << "keys left in flight";
    EXPECT_GT(count("SELECT count(*) FROM public.in_flight_seen"), 0)
        << "a rule on another database wrote no keys in flight";
    // Every intent has its outcome, and the committed ones prove every deleted record.
    std::set<std::string> intents;
    std::set<std::string> outcomes;
    for (const auto& [seq, line] : rows()) {
        const auto j = nlohmann::json::parse(line);
        if (j["type"] == "intent") {
            intents.insert(j["batch"].get<std::string>());
        } else if (j["type"] == "outcome") {
            outcomes.insert(j["batch"].get<std::string>());
        }
    }
    EXPECT_EQ(intents, outcomes);
    for (const int id : {1, 150, k_due}) {
        const auto proof = run_retentiond(
            with(config, {"audit", "prove", "--rule", "old-items", "--key", std::to_string(id)}));
        EXPECT_THAT(proof.out, HasSubstr("delete at ")) << "record " << id;
    }
}

// Files and redis rules with the chain in the store (#19 item 4): `purge --now` SIGKILLed at
// random moments; after each kill no raw key is on disk (no pending file anywhere) and the chain
// verifies; the keys went through in_flight only, and the next run's recovery settles every batch.
class StoreCrashTest : public AuditStoreTest {
protected:
    // `kills` SIGKILLs 5-150 ms after the start, `check` after each, then a run to completion.
    void kill_then_complete(const std::string& config, int kills,
                            const std::function<void(const std::string&)>& check) {
        std::mt19937 rng(20261207);
        for (int i = 0; i < kills; ++i) {
            const auto where = "kill " + std::to_string(i);
            ChildProcess child(with(config, {"purge", "--now", "--rule", "target"}),
                               m_dir.file("child.out"));
            std::this_thread::sleep_for(
                std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 150)(rng)));
            child.kill();
            child.wait();
            EXPECT_EQ(pending_files(), "") << where << ": raw keys on disk";
            const auto verify = run_retentiond(with(config, {"audit", "verify"}));
            EXPECT_EQ(verify.exit_code, 0) << where << ": " << verify.out << verify.err;
            check(where);
        }
        const auto r = run_retentiond(with(config, {"purge", "--now", "--rule", "target"}));
        ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
        EXPECT_EQ(pending_files(), "");
        EXPECT_EQ(count("SELECT count(*) FROM retentiond.in_flight"), 0) << "keys left in flight";
        EXPECT_GT(count("SELECT count(*) FROM public.in_flight_seen"), 0)
            << "the batches' keys never went through in_flight";
        std::set<std::string> intents;
        std::set<std::string> outcomes;
        for (const auto& [seq, line] : rows()) {
            const auto j = nlohmann::json::parse(line);
            if (j["type"] == "intent") {
                intents.insert(j["batch"].get<std::string>());
            } else if (j["type"] == "outcome") {
                outcomes.insert(j["batch"].get<std::string>());
            }
        }
        EXPECT_EQ(intents, outcomes) << "a batch left without its outcome";
        const auto verify = run_retentiond(with(config, {"audit", "verify"}));
        EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
        check("after the next run");
    }
    // Any pending-keys file or directory under the test's directory.
    std::string pending_files() const {
        std::string found;
        for (const auto& e : fs::recursive_directory_iterator(m_dir.path())) {
            if (e.path().string().find(".pending") != std::string::npos) {
                found += e.path().string() + " ";
            }
        }
        return found;
    }
    std::string with_empty_rule(const std::string& rules, const std::string& datastores) {
        seed("empty", 1, 0);
        return write_config("retentiond.yaml", rules + rule("empty", "empty", 10), true, "",
                            datastores);
    }
};

TEST_F(StoreCrashTest, SigkillMidPurgeOfAFilesRuleKeepsItsKeysOnlyInTheStore) {
    constexpr int k_files = 4;
    constexpr int k_rows = 3000;
    std::map<std::string, std::pair<std::string, std::string>> files; // original, rewritten
    for (int f = 0; f < k_files; ++f) {
        std::string text = "id,at,name\n";
        std::string kept = text;
        for (int r = 0; r < k_rows; ++r) {
            const bool due = r % 2 == 0;
            const auto row = "f" + std::to_string(f) + "-" + std::to_string(r) + "," +
                             (due ? "2001-02-03 04:05:06" : "2099-02-03 04:05:06") +
                             ",Dupont Elodie\n";
            text += row;
            if (!due) {
                kept += row;
            }
        }
        const auto name = "exports/f" + std::to_string(f) + ".csv";
        m_dir.write(name, text);
        files[name] = {text, kept};
    }
    const auto config = with_empty_rule(
        "  - name: target\n    datastore: exports\n    category: forms\n    files: \"*.csv\"\n"
        "    format: csv\n    clock: { field: at, format: \"%Y-%m-%d %H:%M:%S\" }\n"
        "    retain: 2 years\n    action: delete\n    batch_size: 100\n"
        "    limits: { max_fraction: 1 }\n",
        "  exports: { kind: files, root: " + m_dir.file("exports") + " }\n");
    watch_in_flight(config, m_dsn);
    kill_then_complete(config, 6, [&](const std::string& where) {
        const bool done = where == "after the next run";
        for (const auto& [name, texts] : files) {
            const auto now = read_file(m_dir.file(name));
            if (done) {
                EXPECT_EQ(now, texts.second) << where << ": " << name;
            } else {
                EXPECT_TRUE(now == texts.first || now == texts.second)
                    << where << ": " << name << " is half-applied";
            }
        }
    });
    const auto proof =
        run_retentiond(with(config, {"audit", "prove", "--rule", "target", "--key", "f2-100"}));
    EXPECT_THAT(proof.out, HasSubstr("delete at ")) << proof.err;
}

TEST_F(StoreCrashTest, SigkillMidPurgeOfARedisRuleKeepsItsKeysOnlyInTheStore) {
    constexpr int k_keys = 4000;
    constexpr int db = 3;
    auto& server = RedisServer::shared();
    redis_cmd(server, {"FLUSHDB"}, db);
    const auto time = redis_cmd(server, {"TIME"}, db);
    const auto now = std::stoll(time.substr(0, time.find('\n')));
    redis_cmd(server,
              {"EVAL",
               "for i = 1, tonumber(ARGV[1]) do "
               "  local seen = (i % 2 == 0) and ARGV[2] or ARGV[3] "
               "  redis.call('HSET', 'sess:' .. i, 'user', 'u' .. i, 'last_seen', seen) "
               "end return 1",
               "0", std::to_string(k_keys), std::to_string(now - 86400 * 30), std::to_string(now)},
              db);
    const auto config =
        with_empty_rule("  - name: target\n    datastore: cache\n    category: sessions\n"
                        "    keys: \"sess:*\"\n    clock: { hash_field: last_seen }\n"
                        "    retain: 1 day\n    action: delete\n    batch_size: 10\n"
                        "    limits: { max_fraction: 1 }\n",
                        "  cache: { kind: redis, url: \"" + server.url(db) + "\" }\n");
    watch_in_flight(config, m_dsn);
    const auto left = [&] {
        return std::stoll(
            redis_cmd(server, {"EVAL", "return #redis.call('KEYS', 'sess:*')", "0"}, db));
    };
    kill_then_complete(config, 6, [&](const std::string& where) {
        EXPECT_GE(left(), k_keys / 2) << where << ": a record not due was deleted";
        if (where == "after the next run") {
            EXPECT_EQ(left(), k_keys / 2) << where;
        }
    });
    const auto proof =
        run_retentiond(with(config, {"audit", "prove", "--rule", "target", "--key", "sess:2"}));
    EXPECT_THAT(proof.out, HasSubstr("delete at ")) << proof.err;
}

} // namespace
} // namespace retentiond::test
