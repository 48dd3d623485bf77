#pragma once

#include "retentiond/duration.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
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
    // UnavailableError when the database cannot be reached. A `stop` request (thread-safe: it is
    // also polled from another thread) abandons the connection attempt, and cuts the connection
    // short when the server stops answering (the postgres engine's watch, pg_connect.hpp).
    static std::unique_ptr<RunLock> try_acquire(const std::string& dsn, std::string_view rule,
                                                const std::function<bool()>& stop = {});
    ~RunLock();

    // Exactly once per slot across hosts, checked and recorded under the lock in
    // retentiond.rule_runs (created on first use). A slot is taken when it, or a later slot of the
    // rule, finished somewhere: a later run covers an earlier one. Returns the row that covers it
    // ("host at slot"), or nullopt. Throws UnavailableError when the connection is lost, another
    // std::exception when the table cannot be created or read (e.g. no CREATE privilege).
    std::optional<std::string> slot_taken(std::string_view rule, TimePoint slot);
    // Records a finished slot (keeps the last 1000 per rule). Throws like slot_taken().
    void record_slot(std::string_view rule, TimePoint slot, std::string_view host,
                     TimePoint started, std::string_view status);
    RunLock(const RunLock&) = delete;
    RunLock& operator=(const RunLock&) = delete;

private:
    struct Impl; // the libpqxx connection (pqxx::connection is a typedef: not forward-declarable)
    explicit RunLock(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

} // namespace retentiond
