#include "retentiond/metrics.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <system_error>

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

// One connection: read a request, answer it, close.
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, std::shared_ptr<HttpHandler> handler)
        : m_socket(std::move(socket)), m_handler(std::move(handler)) {}

    void start() {
        http::async_read(
            m_socket, m_buffer, m_request,
            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
    }

private:
    void on_read(beast::error_code ec) {
        if (ec) {
            return; // client went away or sent garbage: nothing to answer
        }
        HttpResponse answer;
        if (m_request.method() != http::verb::get && m_request.method() != http::verb::head) {
            answer = {405, "text/plain; charset=utf-8", "method not allowed\n"};
        } else {
            const auto target = m_request.target();
            answer = (*m_handler)(std::string_view(target.data(), target.size()));
        }
        m_response.version(m_request.version());
        m_response.result(answer.status);
        m_response.set(http::field::content_type, answer.content_type);
        m_response.set(http::field::server, "retentiond");
        m_response.keep_alive(false);
        if (m_request.method() != http::verb::head) {
            m_response.body() = std::move(answer.body);
        }
        m_response.prepare_payload();
        http::async_write(m_socket, m_response,
                          [self = shared_from_this()](beast::error_code, std::size_t) {
                              beast::error_code ignored;
                              self->m_socket.shutdown(tcp::socket::shutdown_send, ignored);
                          });
    }

    tcp::socket m_socket;
    std::shared_ptr<HttpHandler> m_handler;
    beast::flat_buffer m_buffer;
    http::request<http::string_body> m_request;
    http::response<http::string_body> m_response;
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
    return out.str();
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

struct MetricsServer::Impl : std::enable_shared_from_this<MetricsServer::Impl> {
    Impl(asio::io_context& io, std::shared_ptr<HttpHandler> h)
        : acceptor(io), handler(std::move(h)) {}

    void accept() {
        acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket s) {
            if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) {
                return;
            }
            if (!ec) {
                std::make_shared<Session>(std::move(s), self->handler)->start();
            }
            self->accept();
        });
    }

    tcp::acceptor acceptor;
    std::shared_ptr<HttpHandler> handler;
};

MetricsServer::MetricsServer(asio::io_context& io, const ListenAddress& address,
                             HttpHandler handler)
    : m_impl(std::make_shared<Impl>(io, std::make_shared<HttpHandler>(std::move(handler)))) {
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
    m_impl->accept();
}

MetricsServer::~MetricsServer() {
    stop();
}

std::uint16_t MetricsServer::port() const {
    return m_impl->acceptor.local_endpoint().port();
}

void MetricsServer::stop() {
    beast::error_code ignored;
    m_impl->acceptor.close(ignored);
}

} // namespace retentiond
