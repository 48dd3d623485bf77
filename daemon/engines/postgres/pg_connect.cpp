// Connecting without hanging: see pg_connect.hpp.
#include "pg_connect.hpp"

#include "pg_plan.hpp"

#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

namespace retentiond::pg {

namespace {

bool is_uri(const std::string& dsn) {
    return dsn.rfind("postgres://", 0) == 0 || dsn.rfind("postgresql://", 0) == 0;
}

// One connection attempt, shared by the thread that makes it and the one that waits for it: the
// waiter may leave first (a stop), the attempt then ends alone and drops what it got.
struct Attempt {
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    std::unique_ptr<pqxx::connection> conn;
    std::exception_ptr error;
};

void attempt(const std::shared_ptr<Attempt>& a, const std::string& conninfo) {
    std::unique_ptr<pqxx::connection> conn;
    std::exception_ptr error;
    try {
        conn = std::make_unique<pqxx::connection>(conninfo);
    } catch (...) {
        error = std::current_exception();
    }
    const std::lock_guard lock(a->mutex);
    a->conn = std::move(conn);
    a->error = error;
    a->done = true;
    a->done_cv.notify_all();
}

} // namespace

std::string with_connect_timeout(const std::string& dsn) {
    const char* env = std::getenv("PGCONNECT_TIMEOUT");
    if (dsn.find("connect_timeout") != std::string::npos || (env != nullptr && *env != '\0')) {
        return dsn; // the operator chose one
    }
    const auto value = std::to_string(k_default_connect_timeout_s);
    if (is_uri(dsn)) {
        return dsn + (dsn.find('?') == std::string::npos ? "?" : "&") + "connect_timeout=" + value;
    }
    return dsn + (dsn.empty() ? "" : " ") + "connect_timeout=" + value;
}

std::string with_connection_defaults(const std::string& dsn) {
    return with_connect_timeout(with_application_name(dsn));
}

std::unique_ptr<pqxx::connection> open_connection(const std::string& conninfo,
                                                  const std::function<bool()>& stop) {
    if (!stop) {
        return std::make_unique<pqxx::connection>(conninfo);
    }
    auto a = std::make_shared<Attempt>();
    std::thread([a, conninfo] { attempt(a, conninfo); }).detach();
    std::optional<std::chrono::steady_clock::time_point> give_up;
    std::unique_lock lock(a->mutex);
    while (!a->done_cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return a->done; })) {
        const auto now = std::chrono::steady_clock::now();
        if (!give_up && stop()) {
            give_up = now + k_connect_stop_grace;
        }
        if (give_up && now >= *give_up) {
            throw pqxx::broken_connection("stop requested while connecting: no answer from the "
                                          "server yet");
        }
    }
    if (a->error) {
        std::rethrow_exception(a->error);
    }
    return std::move(a->conn);
}

} // namespace retentiond::pg
