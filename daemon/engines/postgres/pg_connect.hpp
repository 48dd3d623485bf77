#pragma once
// Connecting to PostgreSQL without hanging: a default connect_timeout, a connection attempt a stop
// request (SIGTERM) can abandon, and connections whose statements a stop request can cancel and,
// when the server does not answer, cut. Internal to the postgres engine (and run_lock.cpp).

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

// A watched connection (see Watch below) after a stop request: the statement in flight is cancelled
// (pg_cancel_backend, from a connection of its own: the batch rolls back) after
// k_cancel_after_stop, and the socket is shut down after k_cut_after_stop, so a server that no
// longer answers cannot hold a stopping run; the batch in flight is then left to crash recovery,
// like a lost connection.
constexpr std::chrono::seconds k_cancel_after_stop{2};
constexpr std::chrono::seconds k_cut_after_stop{5};

// Deletes a connection, after taking it off the watch list (the watch never touches a connection
// once its deleter has begun).
struct Unwatch {
    void operator()(pqxx::connection* conn) const noexcept;
};
using Connection = std::unique_ptr<pqxx::connection, Unwatch>;

enum class Watch { no, yes };

// The DSN (key=value or postgres:// URI) with connect_timeout=10 unless it, or the environment
// (PGCONNECT_TIMEOUT), sets one.
std::string with_connect_timeout(const std::string& dsn);
// The DSN the engine connects with: application_name and connect_timeout defaults.
std::string with_connection_defaults(const std::string& dsn);

// Opens a connection. With a `stop` predicate, the attempt runs on a thread of its own while this
// one polls `stop`: once it answers true, the attempt gets k_connect_stop_grace more, then is
// abandoned (left to end by itself within connect_timeout) and broken_connection is thrown.
// With Watch::yes and a `stop`, the connection is watched as said above until it is deleted:
// `stop` is then also called from the watch's own thread, so it must be thread-safe.
Connection open_connection(const std::string& conninfo, const std::function<bool()>& stop,
                           Watch watch = Watch::no);

} // namespace retentiond::pg
