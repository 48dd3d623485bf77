#include "retentiond/run_lock.hpp"

#include "retentiond/errors.hpp"

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
    explicit Impl(std::unique_ptr<pqxx::connection> c) : conn(std::move(c)) {}
    std::unique_ptr<pqxx::connection> conn;
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

std::unique_ptr<RunLock> RunLock::try_acquire(const std::string& dsn, std::string_view rule) {
    std::unique_ptr<pqxx::connection> conn;
    try {
        conn = std::make_unique<pqxx::connection>(dsn);
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
