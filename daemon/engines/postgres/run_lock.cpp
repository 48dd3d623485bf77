#include "retentiond/run_lock.hpp"

#include "pg_connect.hpp"

#include "retentiond/errors.hpp"
#include "retentiond/timeutil.hpp"

#include <pqxx/pqxx>

namespace retentiond {

std::int64_t advisory_lock_key(std::string_view rule) {
    // FNV-1a 64: tiny, specified, and identical on every host and build.
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    const auto mix = [&](std::string_view s) {
        for (const unsigned char c : s) {
            hash ^= c;
            hash *= 0x100000001b3ULL;
        }
    };
    mix("retentiond:");
    mix(rule);
    return static_cast<std::int64_t>(hash);
}

struct RunLock::Impl {
    explicit Impl(pg::Connection c) : conn(std::move(c)) {}
    pg::Connection conn;
};

RunLock::RunLock(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

RunLock::~RunLock() {
    try {
        // Closing the session frees the lock too; unlocking first is just tidier in pg_locks.
        pqxx::nontransaction tx(*m_impl->conn);
        tx.exec("SELECT pg_advisory_unlock_all()");
    } catch (const std::exception&) {
        // The connection is going away anyway, and with it the lock.
    }
}

namespace {

// The same key pg_notice.cpp takes to create its table: one lock serializes every CREATE in the
// retentiond schema across daemons starting together.
constexpr std::int64_t k_schema_lock = 7477696371302211373LL;

void ensure_rule_runs(pqxx::connection& conn) {
    pqxx::work tx(conn);
    if (tx.exec1("SELECT to_regclass('retentiond.rule_runs') IS NOT NULL")[0].as<bool>()) {
        return;
    }
    tx.exec_params("SELECT pg_advisory_xact_lock($1)", k_schema_lock);
    tx.exec("CREATE SCHEMA IF NOT EXISTS retentiond");
    tx.exec("CREATE TABLE IF NOT EXISTS retentiond.rule_runs ("
            " rule text NOT NULL,"
            " slot_start timestamptz NOT NULL,"
            " host text NOT NULL,"
            " started_at timestamptz NOT NULL,"
            " finished_at timestamptz NOT NULL DEFAULT now(),"
            " status text NOT NULL,"
            " PRIMARY KEY (rule, slot_start))");
    tx.commit();
}

template <class F> auto unavailable_on_broken(F&& f) {
    try {
        return f();
    } catch (const pqxx::broken_connection& e) {
        throw UnavailableError(std::string("rule_runs: ") + e.what());
    }
}

} // namespace

std::optional<std::string> RunLock::slot_taken(std::string_view rule, TimePoint slot) {
    return unavailable_on_broken([&]() -> std::optional<std::string> {
        ensure_rule_runs(*m_impl->conn);
        pqxx::nontransaction tx(*m_impl->conn);
        const auto r = tx.exec_params(
            "SELECT host, to_char(slot_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            " FROM retentiond.rule_runs WHERE rule = $1 AND slot_start >= $2::timestamptz"
            " ORDER BY slot_start DESC LIMIT 1",
            std::string(rule), format_utc(slot));
        if (r.empty()) {
            return std::nullopt;
        }
        return r[0][0].as<std::string>() + " (slot " + r[0][1].as<std::string>() + ")";
    });
}

void RunLock::record_slot(std::string_view rule, TimePoint slot, std::string_view host,
                          TimePoint started, std::string_view status) {
    unavailable_on_broken([&] {
        ensure_rule_runs(*m_impl->conn);
        pqxx::work tx(*m_impl->conn);
        const std::string name(rule);
        tx.exec_params(
            "INSERT INTO retentiond.rule_runs (rule, slot_start, host, started_at, status)"
            " VALUES ($1, $2::timestamptz, $3, $4::timestamptz, $5)"
            " ON CONFLICT (rule, slot_start) DO UPDATE SET host = EXCLUDED.host,"
            " started_at = EXCLUDED.started_at, finished_at = now(),"
            " status = EXCLUDED.status",
            name, format_utc(slot), std::string(host), format_utc(started), std::string(status));
        // A history for ops, bounded: an `every 1s` rule must not grow the table forever.
        tx.exec_params("DELETE FROM retentiond.rule_runs WHERE rule = $1 AND slot_start < ("
                       " SELECT slot_start FROM retentiond.rule_runs WHERE rule = $1"
                       " ORDER BY slot_start DESC OFFSET 999 LIMIT 1)",
                       name);
        tx.commit();
        return 0;
    });
}

std::unique_ptr<RunLock> RunLock::try_acquire(const std::string& dsn, std::string_view rule,
                                              const std::function<bool()>& stop) {
    pg::Connection conn;
    try {
        conn = pg::open_connection(pg::with_connect_timeout(dsn), stop, pg::Watch::yes);
    } catch (const pqxx::broken_connection& e) {
        // libpq's message names host and socket, never the password.
        throw UnavailableError(std::string("cannot connect for the advisory lock: ") + e.what());
    }
    bool locked = false;
    try {
        pqxx::nontransaction tx(*conn);
        const auto row =
            tx.exec_params1("SELECT pg_try_advisory_lock($1)", advisory_lock_key(rule));
        locked = row[0].as<bool>();
    } catch (const pqxx::broken_connection& e) {
        throw UnavailableError(std::string("advisory lock: ") + e.what());
    }
    if (!locked) {
        return nullptr;
    }
    return std::unique_ptr<RunLock>(new RunLock(std::make_unique<Impl>(std::move(conn))));
}

} // namespace retentiond
