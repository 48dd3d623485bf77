#include "retentiond/metrics.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <iomanip>
#include <list>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace retentiond {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string number(double v) {
    if (std::isnan(v)) {
        return "NaN";
    }
    std::ostringstream s;
    s << std::setprecision(15) << v;
    return s.str();
}

class Family {
public:
    Family(std::ostringstream& out, const char* name, const char* type, const char* help)
        : m_out(out), m_name(name) {
        m_out << "# HELP " << name << ' ' << help << '\n'
              << "# TYPE " << name << ' ' << type << '\n';
    }
    void sample(std::initializer_list<std::pair<const char*, std::string_view>> labels, double v) {
        m_out << m_name << '{';
        bool first = true;
        for (const auto& [key, value] : labels) {
            m_out << (first ? "" : ",") << key << "=\"" << escape_label_value(value) << '"';
            first = false;
        }
        m_out << "} " << number(v) << '\n';
    }

private:
    std::ostringstream& m_out;
    const char* m_name;
};

} // namespace

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (const char c : value) {
        switch (c) {
        case '\\':
            out += "\\\\";
            break;
        case '"':
            out += "\\\"";
            break;
        case '\n':
            out += "\\n";
            break;
        default:
            out += c;
        }
    }
    return out;
}

std::string render_prometheus(const MetricsSnapshot& m) {
    std::ostringstream out;
    {
        Family f(out, "retentiond_records_total", "counter",
                 "Records processed (deleted or anonymized) since the daemon started.");
        for (const auto& [rule, r] : m.rules) {
            for (const auto& [action, count] : r.records) {
                f.sample({{"rule", rule}, {"action", action}}, static_cast<double>(count));
            }
        }
    }
    {
        Family f(out, "retentiond_run_duration_seconds", "gauge",
                 "Duration of the last run of the rule.");
        for (const auto& [rule, r] : m.rules) {
            if (r.run_duration_seconds) {
                f.sample({{"rule", rule}}, *r.run_duration_seconds);
            }
        }
    }
    {
        Family f(out, "retentiond_last_success_timestamp_seconds", "gauge",
                 "Unix time of the last successful run of the rule.");
        for (const auto& [rule, r] : m.rules) {
            if (r.last_success_timestamp) {
                f.sample({{"rule", rule}}, *r.last_success_timestamp);
            }
        }
    }
    {
        Family f(out, "retentiond_due_records", "gauge",
                 "Records due when the last run of the rule started.");
        for (const auto& [rule, r] : m.rules) {
            if (r.due_records) {
                f.sample({{"rule", rule}}, static_cast<double>(*r.due_records));
            }
        }
    }
    {
        Family f(out, "retentiond_rule_failures_total", "counter",
                 "Failed runs of the rule since the daemon started.");
        for (const auto& [rule, r] : m.rules) {
            f.sample({{"rule", rule}}, static_cast<double>(r.failures));
        }
    }
    {
        Family f(out, "retentiond_rule_overdue", "gauge",
                 "1 when the rule has not succeeded within twice its schedule period.");
        for (const auto& [rule, r] : m.rules) {
            f.sample({{"rule", rule}}, r.overdue ? 1.0 : 0.0);
        }
    }
    {
        Family f(out, "retentiond_datastore_up", "gauge",
                 "0 when the last attempt to use the datastore found it unavailable.");
        for (const auto& [store, d] : m.datastores) {
            f.sample({{"datastore", store}}, d.up ? 1.0 : 0.0);
        }
    }
    if (m.erasures) {
        Family open(
            out, "retentiond_erasure_requests_open", "gauge",
            "Erasure requests not yet done (records deferred by a hold, or a rule failed).");
        open.sample({}, static_cast<double>(m.erasures->open_deadlines.size()));
        Family overdue(out, "retentiond_erasure_requests_overdue", "gauge",
                       "Open erasure requests past their deadline (daemon.erasure_deadline).");
        overdue.sample({}, static_cast<double>(m.erasures->overdue));
    }
    return out.str();
}

void erasure_gauges(MetricsSnapshot& metrics, TimePoint now) {
    if (!metrics.erasures) {
        return;
    }
    metrics.erasures->overdue = static_cast<std::int64_t>(std::count_if(
        metrics.erasures->open_deadlines.begin(), metrics.erasures->open_deadlines.end(),
        [now](TimePoint deadline) { return now > deadline; }));
}

bool is_healthy(const MetricsSnapshot& metrics, TimePoint now,
                std::chrono::seconds unhealthy_after) {
    for (const auto& [name, d] : metrics.datastores) {
        if (!d.up && d.down_since && now - *d.down_since > unhealthy_after) {
            return false;
        }
    }
    return true;
}

ListenAddress parse_listen_address(std::string_view text) {
    ListenAddress a;
    std::size_t colon = std::string_view::npos;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            throw std::invalid_argument("metrics address \"" + std::string(text) +
                                        "\": expected [v6-address]:port");
        }
        a.host = std::string(text.substr(1, close - 1));
        colon = close + 1;
    } else {
        colon = text.rfind(':');
        if (colon == std::string_view::npos || colon == 0) {
            throw std::invalid_argument("metrics address \"" + std::string(text) +
                                        "\": expected host:port");
        }
        a.host = std::string(text.substr(0, colon));
    }
    const auto port = text.substr(colon + 1);
    unsigned long value = 0;
    for (const char c : port) {
        if (c < '0' || c > '9' || value > 65535) {
            value = 65536;
            break;
        }
        value = value * 10 + static_cast<unsigned long>(c - '0');
    }
    if (port.empty() || value > 65535) {
        throw std::invalid_argument("metrics address \"" + std::string(text) +
                                    "\": port must be 0-65535");
    }
    a.port = static_cast<std::uint16_t>(value);
    return a;
}

namespace metrics_detail {
class Session;
}
using metrics_detail::Session;

// The server's state, touched only from its thread (after the constructor returns).
struct MetricsServer::Impl {
    Impl(std::shared_ptr<HttpHandler> h, MetricsServerLimits l)
        : handler(std::move(h)), limits(l) {}

    void accept();
    void on_accept_error(const beast::error_code& ec);
    void admit(tcp::socket socket);
    void stop_here();

    // Destroyed after io (declared first): the sessions io still owns leave this list as io's
    // destructor drops their handlers.
    std::shared_ptr<HttpHandler> handler;
    MetricsServerLimits limits;
    std::list<Session*> sessions; // oldest first
    std::chrono::milliseconds backoff{0};
    std::optional<std::chrono::steady_clock::time_point> last_cap_warning;
    asio::io_context io;
    tcp::acceptor acceptor{io};
    asio::steady_timer retry{io};
    std::thread thread;
};

namespace {

bool out_of_resources(const beast::error_code& ec) {
    return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
           ec == asio::error::no_memory || ec.value() == ENFILE;
}

} // namespace

namespace metrics_detail {

// One connection: read one request (bounded in time and size), answer it, close.
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, MetricsServer::Impl& server)
        : m_stream(std::move(socket)), m_server(server) {}
    ~Session() { forget(); }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    void start() {
        m_server.sessions.push_back(this);
        m_pos = std::prev(m_server.sessions.end());
        m_listed = true;
        m_parser.header_limit(m_server.limits.header_limit);
        m_parser.body_limit(m_server.limits.body_limit);
        m_stream.expires_after(m_server.limits.request_timeout);
        http::async_read(
            m_stream, m_buffer, m_parser,
            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    }

    bool waiting_for_request() const { return m_reading; }

    // Closed to make room: its pending read completes with an error and the session ends.
    void evict() {
        forget();
        beast::error_code ignored;
        m_stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        m_stream.socket().close(ignored);
    }

private:
    void forget() {
        if (m_listed) {
            m_server.sessions.erase(m_pos);
            m_listed = false;
        }
    }

    void on_read(beast::error_code ec) {
        m_reading = false;
        if (ec == http::error::body_limit) {
            answer({413, "text/plain; charset=utf-8", "request body too large\n"}, false);
            return;
        }
        if (ec == http::error::header_limit) {
            answer({431, "text/plain; charset=utf-8", "request header too large\n"}, false);
            return;
        }
        if (ec) {
            return; // client went away, too slow, or sent garbage: nothing to answer
        }
        const auto& request = m_parser.get();
        const bool head = request.method() == http::verb::head;
        if (request.method() != http::verb::get && !head) {
            answer({405, "text/plain; charset=utf-8", "method not allowed\n"}, false);
            return;
        }
        const auto target = request.target();
        answer((*m_server.handler)(std::string_view(target.data(), target.size())), head);
    }

    void answer(HttpResponse a, bool head) {
        m_response.version(11);
        m_response.result(a.status);
        m_response.set(http::field::content_type, a.content_type);
        m_response.set(http::field::server, "retentiond");
        m_response.keep_alive(false);
        if (!head) {
            m_response.body() = std::move(a.body);
        }
        m_response.prepare_payload();
        m_stream.expires_after(m_server.limits.write_timeout);
        http::async_write(m_stream, m_response,
                          [self = shared_from_this()](beast::error_code, std::size_t) {
                              beast::error_code ignored;
                              self->m_stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          });
    }

    beast::tcp_stream m_stream;
    MetricsServer::Impl& m_server;
    std::list<Session*>::iterator m_pos;
    bool m_listed = false;
    bool m_reading = true;
    beast::flat_buffer m_buffer{16 * 1024};
    http::request_parser<http::string_body> m_parser;
    http::response<http::string_body> m_response;
};

} // namespace metrics_detail

void MetricsServer::Impl::accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket s) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) {
            return;
        }
        if (ec) {
            on_accept_error(ec);
            return;
        }
        backoff = std::chrono::milliseconds{0};
        admit(std::move(s));
        accept();
    });
}

void MetricsServer::Impl::on_accept_error(const beast::error_code& ec) {
    if (!out_of_resources(ec)) {
        accept(); // ECONNABORTED and the like: the next connection is fine
        return;
    }
    // Retrying at once would spin: the error stays until a descriptor is freed. Free one of ours
    // (the oldest connection still waiting for its request) and wait a little.
    for (auto* s : sessions) {
        if (s->waiting_for_request()) {
            s->evict();
            break;
        }
    }
    if (backoff.count() == 0) {
        spdlog::warn("metrics: cannot accept connections ({}): backing off", ec.message());
    }
    backoff = std::min(std::chrono::milliseconds{1000},
                       std::max(std::chrono::milliseconds{50}, backoff * 2));
    retry.expires_after(backoff);
    retry.async_wait([this](const beast::error_code& e) {
        if (!e && acceptor.is_open()) {
            accept();
        }
    });
}

void MetricsServer::Impl::admit(tcp::socket socket) {
    if (sessions.size() >= limits.max_connections) {
        Session* oldest = nullptr;
        for (auto* s : sessions) {
            if (s->waiting_for_request()) {
                oldest = s;
                break;
            }
        }
        const auto now = std::chrono::steady_clock::now();
        if (!last_cap_warning || now - *last_cap_warning > std::chrono::minutes(1)) {
            last_cap_warning = now;
            spdlog::warn("metrics: {} connections open (the cap): closing the oldest idle one",
                         sessions.size());
        }
        if (oldest == nullptr) {
            return; // every slot is answering: the new connection is closed unanswered
        }
        oldest->evict();
    }
    std::make_shared<Session>(std::move(socket), *this)->start();
}

void MetricsServer::Impl::stop_here() {
    beast::error_code ignored;
    acceptor.close(ignored);
    retry.cancel();
    while (!sessions.empty()) {
        sessions.front()->evict();
    }
}

MetricsServer::MetricsServer(const ListenAddress& address, HttpHandler handler,
                             MetricsServerLimits limits)
    : m_impl(std::make_unique<Impl>(std::make_shared<HttpHandler>(std::move(handler)), limits)) {
    auto& io = m_impl->io;
    tcp::resolver resolver(io);
    const auto results = resolver.resolve(address.host, std::to_string(address.port));
    if (results.empty()) {
        throw std::system_error(std::make_error_code(std::errc::address_not_available));
    }
    const tcp::endpoint endpoint = results.begin()->endpoint();
    auto& acc = m_impl->acceptor;
    acc.open(endpoint.protocol());
    acc.set_option(tcp::acceptor::reuse_address(true));
    acc.bind(endpoint);
    acc.listen();
    m_port = acc.local_endpoint().port();
    m_impl->accept();
    m_impl->thread = std::thread([impl = m_impl.get()] { impl->io.run(); });
}

MetricsServer::~MetricsServer() {
    stop();
}

std::uint16_t MetricsServer::port() const {
    return m_port;
}

void MetricsServer::stop() {
    if (!m_impl->thread.joinable()) {
        return;
    }
    asio::post(m_impl->io, [impl = m_impl.get()] {
        impl->stop_here();
        impl->io.stop();
    });
    m_impl->thread.join();
}

} // namespace retentiond
