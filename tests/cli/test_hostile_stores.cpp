// Issue 23, items 5 and 6, through the real binary: datastores that answer badly or not at all.
// - Redis clocks the daemon used to misjudge: epoch milliseconds (never due, "compliant"), and
//   sentinels (0, -1, " 123 ") read as 1970 and deleted. Milliseconds are purged, sentinels
//   kept, and a clock that does not parse fails the rule (exit 65, counted, not "compliant").
// - Endpoints that accept a connection and never answer (a socket of the test's own): a
//   PostgreSQL DSN without connect_timeout hung for good and ignored SIGTERM; a silent Redis held
//   a run for 60 s. Now `purge --now` exits 69 within the default timeouts, and SIGTERM ends it
//   within a few seconds.
#include "support/pg_cluster.hpp"
#include "support/process.hpp"
#include "support/redis_server.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

namespace retentiond::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

const std::string k_audit_key = "hostile-audit-key-0123456789";

std::string daemon_block(const TempDir& dir) {
    dir.write("audit-key", k_audit_key + "\n");
    return "daemon:\n  audit_log: " + dir.file("audit.jsonl") +
           "\n  audit_key: ${file:" + dir.file("audit-key") +
           "}\n  metrics: \"off\"\n  timezone: UTC\n";
}

// A TCP endpoint on 127.0.0.1 that accepts every connection and never sends a byte.
class SilentListener {
public:
    SilentListener() {
        m_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        if (m_fd < 0 || ::bind(m_fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
            ::listen(m_fd, 64) != 0 ||
            ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
            throw std::runtime_error("silent listener: cannot listen");
        }
        m_port = ntohs(addr.sin_port);
        m_thread = std::thread([this] { accept_loop(); });
    }
    ~SilentListener() {
        m_stop = true;
        m_thread.join();
        for (const int fd : m_accepted) {
            ::close(fd);
        }
        ::close(m_fd);
    }
    SilentListener(const SilentListener&) = delete;
    SilentListener& operator=(const SilentListener&) = delete;
    int port() const { return m_port; }

private:
    void accept_loop() {
        while (!m_stop) {
            pollfd p{m_fd, POLLIN, 0};
            if (::poll(&p, 1, 50) > 0) {
                const int fd = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd >= 0) {
                    m_accepted.push_back(fd); // held open, never read or written
                }
            }
        }
    }

    int m_fd = -1;
    int m_port = 0;
    std::atomic<bool> m_stop{false};
    std::vector<int> m_accepted;
    std::thread m_thread;
};

// --- item 5: Redis clocks --------------------------------------------------------------------

class RedisClocks : public ::testing::Test {
protected:
    static constexpr int k_db = 12;
    void SetUp() override { cmd({"FLUSHDB"}); }
    void TearDown() override { cmd({"FLUSHDB"}); }
    std::string cmd(const std::vector<std::string>& a) {
        return redis_cmd(RedisServer::shared(), a, k_db);
    }
    long long now() {
        const auto t = cmd({"TIME"});
        return std::stoll(t.substr(0, t.find('\n')));
    }
    void session(const std::string& key, const std::string& last_seen) {
        cmd({"HSET", key, "user", "u", "last_seen", last_seen});
    }
    bool exists(const std::string& key) { return cmd({"EXISTS", key}) == "1"; }
    std::string config(const std::string& extra = "") const {
        return m_dir.write("retentiond.yaml", "version: 1\n" + daemon_block(m_dir) +
                                                  "datastores:\n  cache: { kind: redis, url: \"" +
                                                  RedisServer::shared().url(k_db) +
                                                  "\" }\nrules:\n"
                                                  "  - name: sessions\n"
                                                  "    datastore: cache\n"
                                                  "    category: sessions\n"
                                                  "    keys: \"sess:*\"\n"
                                                  "    clock: { hash_field: last_seen }\n"
                                                  "    retain: 30 days\n"
                                                  "    action: delete\n"
                                                  "    limits: { max_fraction: 1 }\n" +
                                                  extra);
    }
    TempDir m_dir;
};

TEST_F(RedisClocks, MillisecondsArePurgedAndSentinelsKept) {
    const auto t = now();
    session("sess:ms-old", std::to_string((t - 40 * 86400) * 1000)); // Date.now(), 40 days ago
    session("sess:ms-new", std::to_string((t - 2 * 86400) * 1000));
    session("sess:s-old", std::to_string(t - 40 * 86400));
    session("sess:zero", "0");
    session("sess:minus-one", "-1");
    const auto path = config();

    const auto r = run_retentiond({"--config", path, "purge", "--now"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_FALSE(exists("sess:ms-old")) << "a clock in milliseconds is a clock";
    EXPECT_FALSE(exists("sess:s-old"));
    EXPECT_TRUE(exists("sess:ms-new"));
    EXPECT_TRUE(exists("sess:zero")) << "0 is a sentinel, not 1970";
    EXPECT_TRUE(exists("sess:minus-one")) << "-1 is a sentinel, not 1969";

    // The contract's clock_null: due takes the sentinels as "no clock, due".
    const auto due = config("    clock_null: due\n");
    const auto again = run_retentiond({"--config", due, "purge", "--now"});
    EXPECT_EQ(again.exit_code, 0) << again.out << again.err;
    EXPECT_FALSE(exists("sess:zero"));
    EXPECT_FALSE(exists("sess:minus-one"));
    EXPECT_TRUE(exists("sess:ms-new"));
}

TEST_F(RedisClocks, UnparseableClockFailsTheRuleCountedAndNotCompliant) {
    const auto t = now();
    session("sess:old", std::to_string(t - 40 * 86400));
    session("sess:padded-tiny", " 123 ");
    session("sess:words", "yesterday");
    const auto path = config();

    const auto dry = run_retentiond({"--config", path, "purge", "--now", "--dry-run"});
    EXPECT_EQ(dry.exit_code, 0) << dry.out << dry.err;
    EXPECT_THAT(dry.out, HasSubstr("does not parse"));

    const auto r = run_retentiond({"--config", path, "purge", "--now"});
    EXPECT_EQ(r.exit_code, 65) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("unparseable: 2"));
    EXPECT_THAT(r.out, HasSubstr("whose clock field \"last_seen\" does not parse"));
    EXPECT_FALSE(exists("sess:old")) << "the due keys are purged all the same";
    EXPECT_TRUE(exists("sess:padded-tiny")) << "\" 123 \" is not a clock of 1970";
    EXPECT_TRUE(exists("sess:words"));

    // Counted in the audit log, and the rule's run is not ok.
    bool event = false;
    bool failed_end = false;
    std::istringstream audit(read_file(m_dir.file("audit.jsonl")));
    for (std::string line; std::getline(audit, line);) {
        const auto j = nlohmann::json::parse(line);
        if (j.value("type", "") == "clock_unparseable") {
            event = j.value("keys", 0) == 2;
        }
        if (j.value("type", "") == "rule_end") {
            failed_end = j.value("ok", true) == false;
        }
    }
    EXPECT_TRUE(event);
    EXPECT_TRUE(failed_end);

    const auto report = run_retentiond({"--config", path, "report", "--format", "json"});
    ASSERT_EQ(report.exit_code, 0) << report.err;
    const auto j = nlohmann::json::parse(report.out);
    ASSERT_FALSE(j.at("rules").empty());
    EXPECT_NE(j.at("rules").at(0).at("status"), "compliant") << report.out;
}

// --- item 6: endpoints that never answer -----------------------------------------------------

class SilentStores : public ::testing::Test {
protected:
    std::string postgres_config() const {
        // No connect_timeout: the daemon's default bounds the wait.
        return m_dir.write("retentiond.yaml",
                           "version: 1\n" + daemon_block(m_dir) +
                               "datastores:\n  app:\n    kind: postgres\n    dsn: \"host=127.0.0.1 "
                               "port=" +
                               std::to_string(m_silent.port()) +
                               " dbname=app user=app sslmode=disable\"\nrules:\n"
                               "  - name: old-items\n"
                               "    datastore: app\n"
                               "    category: items\n"
                               "    table: items\n"
                               "    key: id\n"
                               "    clock: created_at\n"
                               "    retain: 1 year\n"
                               "    action: delete\n");
    }
    std::string redis_config() const {
        return m_dir.write("retentiond.yaml", "version: 1\n" + daemon_block(m_dir) +
                                                  "datastores:\n  cache: { kind: redis, url: "
                                                  "\"redis://127.0.0.1:" +
                                                  std::to_string(m_silent.port()) +
                                                  "/0\" }\nrules:\n"
                                                  "  - name: sessions\n"
                                                  "    datastore: cache\n"
                                                  "    category: sessions\n"
                                                  "    keys: \"sess:*\"\n"
                                                  "    clock: idle\n"
                                                  "    retain: 1 day\n"
                                                  "    action: delete\n");
    }
    // Runs `purge --now`; with `term_after`, sends SIGTERM then. Returns the exit code, or
    // nullopt when it did not end within `limit` (then killed).
    std::optional<int> purge(const std::string& config, std::chrono::milliseconds limit,
                             std::optional<std::chrono::milliseconds> term_after = {}) {
        m_child.emplace(std::vector<std::string>{"--config", config, "purge", "--now"}, m_dir);
        if (term_after) {
            std::this_thread::sleep_for(*term_after);
            m_child->signal(SIGTERM);
        }
        return m_child->wait_for(limit);
    }

    TempDir m_dir;
    SilentListener m_silent;
    std::optional<ChildProcess> m_child;
};

TEST_F(SilentStores, PostgresWithoutConnectTimeoutIsUnavailableWithinTheDefault) {
    const auto code = purge(postgres_config(), 25s);
    ASSERT_TRUE(code.has_value()) << "still connecting after 25 s";
    EXPECT_EQ(*code, 69) << m_child->output();
    EXPECT_GE(m_child->seconds(), 9.0) << "the default connect_timeout is 10 s";
    EXPECT_LE(m_child->seconds(), 20.0);
}

TEST_F(SilentStores, SigtermEndsAPostgresConnectWithinSeconds) {
    const auto code = purge(postgres_config(), 6s, 1s);
    ASSERT_TRUE(code.has_value()) << "SIGTERM did not end the connection attempt";
    EXPECT_EQ(*code, 69) << m_child->output();
    EXPECT_THAT(m_child->output(), HasSubstr("stop requested while connecting"));
}

TEST_F(SilentStores, RedisThatNeverAnswersIsUnavailableWithinTheReplyTimeout) {
    const auto code = purge(redis_config(), 30s);
    ASSERT_TRUE(code.has_value()) << "still waiting after 30 s";
    EXPECT_EQ(*code, 69) << m_child->output();
    EXPECT_THAT(m_child->output(), HasSubstr("no reply within 15 s"));
    EXPECT_LE(m_child->seconds(), 22.0);
}

TEST_F(SilentStores, SigtermEndsARedisWaitWithinSeconds) {
    const auto code = purge(redis_config(), 6s, 1s);
    ASSERT_TRUE(code.has_value()) << "SIGTERM did not end the wait for Redis";
    EXPECT_EQ(*code, 69) << m_child->output();
    EXPECT_THAT(m_child->output(), HasSubstr("stop requested while waiting for a reply"));
}

TEST_F(SilentStores, SigtermEndsTheDaemonsWaitForItsRunLockWithinSeconds) {
    // The rule's run lock is taken on its own datastore, which accepts and never answers: the
    // lock's connection attempt would take the whole 10 s connect_timeout.
    const auto config = postgres_config();
    std::string text = read_file(config) + "    schedule: every 1s\n";
    const auto cfg = m_dir.write("retentiond.yaml", text);
    m_child.emplace(std::vector<std::string>{"--config", cfg, "run"}, m_dir);
    std::this_thread::sleep_for(2500ms); // the first slot is due after 1 s
    const auto signalled = Clock::now();
    m_child->signal(SIGTERM);
    const auto code = m_child->wait_for(15s);
    ASSERT_TRUE(code.has_value()) << m_child->output();
    EXPECT_EQ(*code, 0) << m_child->output();
    EXPECT_LE(std::chrono::duration<double>(Clock::now() - signalled).count(), 5.0)
        << "the daemon waited for the run lock's connection attempt: " << m_child->output();
}

// A PostgreSQL that answers, then stalls in the middle of a batch: a statement trigger sleeps in
// the DELETE (a statement that runs long), and its backend can be frozen (SIGSTOP: a server that
// stopped answering mid-statement). SIGTERM waited for the statement (up to statement_timeout,
// 60 s by default), and for ever for the frozen one.
class StalledPostgres : public ::testing::Test {
protected:
    void SetUp() override {
        const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
        m_db = std::string("stalled_") + test->name();
        for (auto& c : m_db) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        m_dsn = PgCluster::shared().create_database(m_db);
        pg_exec(m_dsn, "CREATE TABLE items (id int PRIMARY KEY, created_at timestamptz NOT NULL);"
                       "INSERT INTO items SELECT g, now() - interval '3 years'"
                       " FROM generate_series(1, 2000) g;"
                       "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS"
                       " $$ BEGIN PERFORM pg_sleep(45); RETURN NULL; END $$;"
                       "CREATE TRIGGER stall BEFORE DELETE ON items"
                       " FOR EACH STATEMENT EXECUTE FUNCTION stall();");
        m_config = m_dir.write("retentiond.yaml", "version: 1\n" + daemon_block(m_dir) +
                                                      "datastores:\n  app:\n    kind: postgres\n"
                                                      "    dsn: \"" +
                                                      m_dsn +
                                                      "\"\nrules:\n"
                                                      "  - name: old-items\n"
                                                      "    datastore: app\n"
                                                      "    category: items\n"
                                                      "    table: items\n"
                                                      "    key: id\n"
                                                      "    clock: created_at\n"
                                                      "    retain: 1 year\n"
                                                      "    action: delete\n"
                                                      "    limits: { max_fraction: 1 }\n");
    }
    void TearDown() override {
        if (m_frozen > 0) {
            ::kill(m_frozen, SIGCONT);
        }
    }
    // The backend running the DELETE, once it sleeps in the trigger (0 if not within 10 s).
    int sleeping_backend() const {
        for (int i = 0; i < 100; ++i) {
            const auto pid = pg_scalar(
                m_dsn, "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE datname = '" +
                           m_db + "' AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()");
            if (pid != "0") {
                return std::stoi(pid);
            }
            std::this_thread::sleep_for(100ms);
        }
        return 0;
    }
    std::string rows() const { return pg_scalar(m_dsn, "SELECT count(*) FROM items"); }

    TempDir m_dir;
    std::string m_db;
    std::string m_dsn;
    std::string m_config;
    int m_frozen = 0;
    std::optional<ChildProcess> m_child;
};

TEST_F(StalledPostgres, SigtermCancelsAStatementThatRunsLong) {
    m_child.emplace(std::vector<std::string>{"--config", m_config, "purge", "--now"}, m_dir);
    ASSERT_GT(sleeping_backend(), 0) << m_child->output();
    const auto signalled = Clock::now();
    m_child->signal(SIGTERM);
    const auto code = m_child->wait_for(20s);
    ASSERT_TRUE(code.has_value()) << "SIGTERM waited for the statement";
    EXPECT_LE(std::chrono::duration<double>(Clock::now() - signalled).count(), 6.0);
    EXPECT_EQ(*code, 75) << m_child->output();
    EXPECT_THAT(m_child->output(), HasSubstr("the batch in flight was cancelled"));
    EXPECT_EQ(rows(), "2000") << "nothing of the cancelled batch applied";
}

TEST_F(StalledPostgres, SigtermCutsAConnectionWhoseServerStoppedAnswering) {
    m_child.emplace(std::vector<std::string>{"--config", m_config, "purge", "--now"}, m_dir);
    m_frozen = sleeping_backend();
    ASSERT_GT(m_frozen, 0) << m_child->output();
    ASSERT_EQ(::kill(m_frozen, SIGSTOP), 0);
    const auto signalled = Clock::now();
    m_child->signal(SIGTERM);
    const auto code = m_child->wait_for(20s);
    ASSERT_TRUE(code.has_value()) << "SIGTERM waited for a server that no longer answers";
    EXPECT_LE(std::chrono::duration<double>(Clock::now() - signalled).count(), 9.0);
    EXPECT_EQ(*code, 69) << m_child->output();
    ::kill(m_frozen, SIGCONT);
    m_frozen = 0;
    EXPECT_EQ(rows(), "2000");
}

} // namespace
} // namespace retentiond::test
