#pragma once
// Connecting to PostgreSQL without hanging: a default connect_timeout, and a connection attempt a
// stop request (SIGTERM) can abandon. Internal to the postgres engine (and run_lock.cpp).

#include <pqxx/pqxx>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace retentiond::pg {

// libpq waits forever for a server that accepts and never answers unless connect_timeout is set:
// the default the daemon adds when neither the DSN nor PGCONNECT_TIMEOUT sets one.
constexpr int k_default_connect_timeout_s = 10;
// How long a connection attempt may go on after a stop request before it is abandoned.
constexpr std::chrono::seconds k_connect_stop_grace{2};

// The DSN (key=value or postgres:// URI) with connect_timeout=10 unless it, or the environment
// (PGCONNECT_TIMEOUT), sets one.
std::string with_connect_timeout(const std::string& dsn);
// The DSN the engine connects with: application_name and connect_timeout defaults.
std::string with_connection_defaults(const std::string& dsn);

// Opens a connection. With a `stop` predicate, the attempt runs on a thread of its own while this
// one polls `stop`: once it answers true, the attempt gets k_connect_stop_grace more, then is
// abandoned (left to end by itself within connect_timeout) and broken_connection is thrown.
std::unique_ptr<pqxx::connection> open_connection(const std::string& conninfo,
                                                  const std::function<bool()>& stop);

} // namespace retentiond::pg
