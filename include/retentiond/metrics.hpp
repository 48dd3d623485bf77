#pragma once

#include "retentiond/duration.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

// The daemon's metrics. Owned and updated by the io thread only (the worker posts its results
// there), so they need no lock.
struct RuleMetrics {
    std::map<std::string, std::uint64_t> records; // action -> records processed since start
    std::optional<double> run_duration_seconds;   // of the last run
    std::optional<double> last_success_timestamp; // Unix seconds
    std::optional<std::int64_t> due_records;      // counted by the last run before its batches
    std::uint64_t failures = 0;
    bool overdue = false;
};

struct DatastoreMetrics {
    bool up = true;
    std::optional<TimePoint> down_since;
};

// Erasure requests (ledger.hpp): the deadlines of the open ones, as last read from the audit log;
// overdue is decided at each scrape (erasure_gauges).
struct ErasureMetrics {
    std::vector<TimePoint> open_deadlines;
    std::int64_t overdue = 0; // set by erasure_gauges(now)
};

struct MetricsSnapshot {
    std::map<std::string, RuleMetrics> rules;
    std::map<std::string, DatastoreMetrics> datastores;
    std::optional<ErasureMetrics> erasures; // absent until the ledger was first read
};

// Counts the open requests whose deadline has passed at `now`.
void erasure_gauges(MetricsSnapshot& metrics, TimePoint now);

// Prometheus text exposition format 0.0.4, with HELP and TYPE lines.
std::string render_prometheus(const MetricsSnapshot& metrics);
// A label value with \, " and newline escaped as the format requires.
std::string escape_label_value(std::string_view value);

// /healthz: false when a datastore has been down longer than unhealthy_after.
bool is_healthy(const MetricsSnapshot& metrics, TimePoint now,
                std::chrono::seconds unhealthy_after);

// "127.0.0.1:9467", "[::1]:9467", "localhost:9467". Throws std::invalid_argument.
struct ListenAddress {
    std::string host;
    std::uint16_t port = 0;
};
ListenAddress parse_listen_address(std::string_view text);

// A tiny HTTP/1.1 server (Boost.Beast) on a thread of its own: one GET per connection. A client
// cannot delay the daemon's timers, watchdog or workers, nor take more than `max_connections`
// descriptors: the request must arrive whole within `request_timeout` (a slow client is closed),
// a request with a body larger than `body_limit` is refused (413) without reading it, and at the
// cap the oldest connection still waiting for its request is closed to admit the new one. When
// accept() fails for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), accepting
// backs off (50 ms doubling to 1 s) instead of retrying at once.
struct HttpResponse {
    unsigned status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};
// Called on the server's thread: it must be thread-safe.
using HttpHandler = std::function<HttpResponse(std::string_view target)>;

struct MetricsServerLimits {
    std::size_t max_connections = 64;
    std::chrono::milliseconds request_timeout{5000}; // the whole request line, headers and body
    std::chrono::milliseconds write_timeout{5000};   // the whole answer
    std::uint32_t header_limit = 8 * 1024;
    std::uint64_t body_limit = 1024; // GET and HEAD carry none
};

class MetricsServer {
public:
    // Binds now: throws boost::system::system_error (a std::runtime_error) when the address
    // is taken. Serves from a thread started here until stop() or destruction.
    MetricsServer(const ListenAddress& address, HttpHandler handler,
                  MetricsServerLimits limits = {});
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;
    std::uint16_t port() const; // the bound port (useful with port 0)
    // Closes the listener and every connection, and joins the thread. Idempotent.
    void stop();

    struct Impl; // metrics.cpp: the io_context, the acceptor and the connections

private:
    std::unique_ptr<Impl> m_impl;
    std::uint16_t m_port = 0;
};

} // namespace retentiond
