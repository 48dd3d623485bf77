#pragma once

#include "retentiond/duration.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

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

struct MetricsSnapshot {
    std::map<std::string, RuleMetrics> rules;
    std::map<std::string, DatastoreMetrics> datastores;
};

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

// A tiny HTTP/1.1 server (Boost.Beast) on the daemon's io_context: one request per connection.
struct HttpResponse {
    unsigned status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};
using HttpHandler = std::function<HttpResponse(std::string_view target)>;

class MetricsServer {
public:
    // Binds now: throws boost::system::system_error (a std::runtime_error) when the address
    // is taken.
    MetricsServer(boost::asio::io_context& io, const ListenAddress& address, HttpHandler handler);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;
    std::uint16_t port() const; // the bound port (useful with port 0)
    void stop();

private:
    struct Impl;
    std::shared_ptr<Impl> m_impl;
};

} // namespace retentiond
