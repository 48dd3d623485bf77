// Connecting without hanging: see pg_connect.hpp.
#include "pg_connect.hpp"

#include "pg_plan.hpp"

#include <sys/socket.h>

#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

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

using Clock = std::chrono::steady_clock;

// Asks the server, from a connection of its own, to cancel what these backends are running. On a
// thread of its own: a server that does not answer holds nothing but this thread (the cut that
// follows ends the run's wait).
void cancel_backends(const std::string& conninfo, const std::vector<int>& pids) {
    std::thread([conninfo, pids] {
        try {
            pqxx::connection conn(conninfo);
            pqxx::nontransaction tx(conn);
            std::string list;
            for (const int pid : pids) {
                list += (list.empty() ? "" : ",") + std::to_string(pid);
            }
            tx.exec("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid IN (" + list +
                    ")");
        } catch (const std::exception&) {
            // Nothing more to do: the socket is cut k_cut_after_stop after the stop request.
        }
    }).detach();
}

// The connections watched for a stop request, and the thread that watches them every 200 ms.
// Leaked on purpose: it must outlive every connection, including those of static objects.
class StopWatch {
public:
    static StopWatch& instance() {
        static auto* watch = new StopWatch;
        return *watch;
    }
    void add(pqxx::connection* conn, std::string conninfo, std::function<bool()> stop) {
        const std::lock_guard lock(m_mutex);
        Watched w;
        w.conninfo = std::move(conninfo);
        w.stop = std::move(stop);
        w.pid = conn->backendpid();
        w.sock = conn->sock();
        m_watched[conn] = std::move(w);
        m_wake.notify_all();
    }
    void remove(pqxx::connection* conn) {
        const std::lock_guard lock(m_mutex);
        m_watched.erase(conn);
    }

private:
    struct Watched {
        std::string conninfo;
        std::function<bool()> stop;
        int pid = 0;
        int sock = -1;
        std::optional<Clock::time_point> stop_seen;
        bool cancelled = false;
        bool cut = false;
    };
    StopWatch() {
        std::thread([this] { loop(); }).detach();
    }
    [[noreturn]] void loop() {
        std::unique_lock lock(m_mutex);
        for (;;) {
            m_wake.wait(lock, [this] { return !m_watched.empty(); });
            m_wake.wait_for(lock, std::chrono::milliseconds(200));
            const auto now = Clock::now();
            std::map<std::string, std::vector<int>> to_cancel;
            for (auto& [conn, w] : m_watched) {
                visit(w, now, to_cancel);
            }
            for (const auto& [conninfo, pids] : to_cancel) {
                cancel_backends(conninfo, pids);
            }
        }
    }
    // Under m_mutex: the connection is alive, so is its socket.
    static void visit(Watched& w, Clock::time_point now,
                      std::map<std::string, std::vector<int>>& to_cancel) {
        if (!w.stop_seen && w.stop()) {
            w.stop_seen = now;
        }
        if (!w.stop_seen) {
            return;
        }
        if (!w.cancelled && now - *w.stop_seen >= k_cancel_after_stop) {
            w.cancelled = true;
            to_cancel[w.conninfo].push_back(w.pid);
        }
        if (!w.cut && now - *w.stop_seen >= k_cut_after_stop && w.sock >= 0) {
            w.cut = true;
            ::shutdown(w.sock, SHUT_RDWR); // the wait in libpq ends: the connection is lost
        }
    }
    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::map<pqxx::connection*, Watched> m_watched;
};

} // namespace

void Unwatch::operator()(pqxx::connection* conn) const noexcept {
    if (conn == nullptr) {
        return;
    }
    StopWatch::instance().remove(conn);
    delete conn;
}

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

namespace {

std::unique_ptr<pqxx::connection> connect_until_stop(const std::string& conninfo,
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

} // namespace

Connection open_connection(const std::string& conninfo, const std::function<bool()>& stop,
                           Watch watch) {
    Connection conn(connect_until_stop(conninfo, stop).release());
    if (watch == Watch::yes && stop) {
        StopWatch::instance().add(conn.get(), conninfo, stop);
    }
    return conn;
}

} // namespace retentiond::pg
