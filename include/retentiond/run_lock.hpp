#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace retentiond {

// The advisory lock key of a rule: FNV-1a 64 of "retentiond:" + name, as a signed bigint. Stable
// across hosts, builds and versions: every daemon sharing a database must compute the same key.
std::int64_t advisory_lock_key(std::string_view rule);

// A PostgreSQL session-level advisory lock on a rule, held by its own connection for the length
// of a run. When the holder dies (even kill -9) its session ends and PostgreSQL frees the lock.
class RunLock {
public:
    // Connects and tries the lock. Returns nullptr when another session holds it; throws
    // UnavailableError when the database cannot be reached.
    static std::unique_ptr<RunLock> try_acquire(const std::string& dsn, std::string_view rule);
    ~RunLock();
    RunLock(const RunLock&) = delete;
    RunLock& operator=(const RunLock&) = delete;

private:
    struct Impl; // the libpqxx connection (pqxx::connection is a typedef: not forward-declarable)
    explicit RunLock(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

} // namespace retentiond
