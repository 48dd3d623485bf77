#include "../cli/prometheus_text.hpp"
#include "retentiond/metrics.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <iostream>
#include <thread>
#include <vector>

namespace retentiond {
namespace {

using namespace std::chrono_literals;
using test::parse_prometheus;

const TimePoint k_t0 = TimePoint{std::chrono::sys_days{std::chrono::year{2026} / 11 / 26}};

MetricsSnapshot sample_metrics() {
    MetricsSnapshot m;
    auto& r = m.rules["dora-inactive-accounts"];
    r.records["delete"] = 12000;
    r.run_duration_seconds = 42.5;
    r.last_success_timestamp = 1795000000.0;
    r.due_records = 40000;
    r.failures = 3;
    r.overdue = true;
    m.rules["cqlp-exports"].records["anonymize"] = 7;
    m.datastores["dora"].up = true;
    m.datastores["exports"].up = false;
    m.datastores["exports"].down_since = k_t0;
    return m;
}

TEST(Metrics, RendersEveryFamilyAndParsesBack) {
    const auto text = render_prometheus(sample_metrics());
    const auto parsed = parse_prometheus(text);
    EXPECT_EQ(parsed.families.at("retentiond_records_total").type, "counter");
    EXPECT_EQ(parsed.families.at("retentiond_rule_failures_total").type, "counter");
    for (const char* gauge :
         {"retentiond_run_duration_seconds", "retentiond_last_success_timestamp_seconds",
          "retentiond_due_records", "retentiond_rule_overdue", "retentiond_datastore_up"}) {
        EXPECT_EQ(parsed.families.at(gauge).type, "gauge") << gauge;
        EXPECT_FALSE(parsed.families.at(gauge).help.empty()) << gauge;
    }
    const std::string rule = "dora-inactive-accounts";
    EXPECT_EQ(parsed.value("retentiond_records_total", {{"rule", rule}, {"action", "delete"}}),
              12000);
    EXPECT_EQ(parsed.value("retentiond_records_total",
                           {{"rule", "cqlp-exports"}, {"action", "anonymize"}}),
              7);
    EXPECT_DOUBLE_EQ(parsed.value("retentiond_run_duration_seconds", {{"rule", rule}}), 42.5);
    EXPECT_DOUBLE_EQ(parsed.value("retentiond_last_success_timestamp_seconds", {{"rule", rule}}),
                     1795000000.0);
    EXPECT_EQ(parsed.value("retentiond_due_records", {{"rule", rule}}), 40000);
    EXPECT_EQ(parsed.value("retentiond_rule_failures_total", {{"rule", rule}}), 3);
    EXPECT_EQ(parsed.value("retentiond_rule_overdue", {{"rule", rule}}), 1);
    EXPECT_EQ(parsed.value("retentiond_rule_overdue", {{"rule", "cqlp-exports"}}), 0);
    EXPECT_EQ(parsed.value("retentiond_datastore_up", {{"datastore", "dora"}}), 1);
    EXPECT_EQ(parsed.value("retentiond_datastore_up", {{"datastore", "exports"}}), 0);
    // A rule that never ran has no duration or success time rather than a misleading 0.
    EXPECT_FALSE(
        parsed.has("retentiond_last_success_timestamp_seconds", {{"rule", "cqlp-exports"}}));
}

TEST(Metrics, ErasureRequestGaugesCountOpenAndOverdueAtTheScrape) {
    MetricsSnapshot m = sample_metrics();
    EXPECT_EQ(
        parse_prometheus(render_prometheus(m)).families.count("retentiond_erasure_requests_open"),
        0U); // the ledger not read yet: no figure rather than a false zero
    m.erasures = ErasureMetrics{{k_t0 - 24h, k_t0 + 24h, k_t0 + 48h}, 0};
    erasure_gauges(m, k_t0);
    const auto parsed = parse_prometheus(render_prometheus(m));
    EXPECT_EQ(parsed.families.at("retentiond_erasure_requests_open").type, "gauge");
    EXPECT_EQ(parsed.value("retentiond_erasure_requests_open", {}), 3);
    EXPECT_EQ(parsed.value("retentiond_erasure_requests_overdue", {}), 1);
    erasure_gauges(m, k_t0 + 25h);
    EXPECT_EQ(
        parse_prometheus(render_prometheus(m)).value("retentiond_erasure_requests_overdue", {}), 2);
}

TEST(Metrics, EscapesLabelValues) {
    EXPECT_EQ(escape_label_value(R"(a"b\c)"), R"(a\"b\\c)");
    EXPECT_EQ(escape_label_value("x\ny"), R"(x\ny)");
    EXPECT_EQ(escape_label_value("données-2026"), "données-2026");
    MetricsSnapshot m;
    const std::string nasty = "rule \"q\"\\back\nslash";
    m.rules[nasty].failures = 1;
    const auto parsed = parse_prometheus(render_prometheus(m));
    EXPECT_EQ(parsed.value("retentiond_rule_failures_total", {{"rule", nasty}}), 1);
}

TEST(Metrics, ParserRejectsMalformedText) {
    // The parser must be able to fail, or the tests above prove nothing.
    EXPECT_THROW(parse_prometheus("x 1\n"), std::runtime_error); // no TYPE
    EXPECT_THROW(parse_prometheus("# TYPE x gauge\nx{a=\"b} 1\n"), std::runtime_error);
    EXPECT_THROW(parse_prometheus("# TYPE x gauge\nx{a=\"\\q\"} 1\n"), std::runtime_error);
    EXPECT_THROW(parse_prometheus("# TYPE x gauge\nx 1\nx 2\n"), std::runtime_error);
    EXPECT_THROW(parse_prometheus("# TYPE x gauge\nx one\n"), std::runtime_error);
    EXPECT_THROW(parse_prometheus("# TYPE 1x gauge\n"), std::runtime_error);
}

TEST(Health, UnhealthyOnlyAfterTheThreshold) {
    auto m = sample_metrics(); // exports down since k_t0
    EXPECT_TRUE(is_healthy(m, k_t0 + 899s, 900s));
    EXPECT_FALSE(is_healthy(m, k_t0 + 901s, 900s));
    m.datastores["exports"].up = true;
    m.datastores["exports"].down_since.reset();
    EXPECT_TRUE(is_healthy(m, k_t0 + 10h, 900s));
}

TEST(ListenAddress, Parses) {
    auto a = parse_listen_address("127.0.0.1:9467");
    EXPECT_EQ(a.host, "127.0.0.1");
    EXPECT_EQ(a.port, 9467);
    a = parse_listen_address("[::1]:80");
    EXPECT_EQ(a.host, "::1");
    EXPECT_EQ(a.port, 80);
    EXPECT_THROW(parse_listen_address("9467"), std::invalid_argument);
    EXPECT_THROW(parse_listen_address("host:"), std::invalid_argument);
    EXPECT_THROW(parse_listen_address("host:70000"), std::invalid_argument);
    EXPECT_THROW(parse_listen_address("[::1]9467"), std::invalid_argument);
}

// The real server on a real socket: one GET per connection.
namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

HttpResponse fixed_handler(std::string_view target) {
    if (target == "/metrics") {
        return HttpResponse{200, "text/plain; version=0.0.4", "# TYPE up gauge\nup 1\n"};
    }
    return HttpResponse{404, "text/plain", "not found\n"};
}

// One GET, with a deadline (asynchronous: a tcp_stream's deadline does not bound synchronous
// operations): a server that does not answer fails the test, not hangs it.
http::response<http::string_body> get(std::uint16_t port, const std::string& target) {
    asio::io_context client;
    boost::beast::tcp_stream stream(client);
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "localhost");
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> res;
    bool done = false;
    stream.expires_after(3s);
    stream.async_connect(
        tcp::endpoint{asio::ip::make_address("127.0.0.1"), port},
        [&](boost::system::error_code ec) {
            if (ec) {
                return;
            }
            http::async_write(stream, req, [&](boost::system::error_code wec, std::size_t) {
                if (wec) {
                    return;
                }
                http::async_read(stream, buffer, res,
                                 [&](boost::system::error_code rec, std::size_t) { done = !rec; });
            });
        });
    client.run();
    if (!done) {
        throw std::runtime_error("GET " + target + ": no answer within 3 s");
    }
    return res;
}

// Raw bytes to the server, then everything it answers until it closes (or `wait` passes).
std::string exchange(tcp::socket& socket, const std::string& send, std::chrono::milliseconds wait) {
    asio::write(socket, asio::buffer(send));
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + wait;
    socket.non_blocking(true);
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
        boost::system::error_code ec;
        const auto n = socket.read_some(asio::buffer(buf), ec);
        if (ec == asio::error::would_block) {
            std::this_thread::sleep_for(10ms);
            continue;
        }
        if (ec) {
            return got + "<closed>";
        }
        got.append(buf, n);
    }
    return got;
}

TEST(MetricsServer, AnswersGetRequests) {
    MetricsServer server({"127.0.0.1", 0}, fixed_handler);
    const auto port = server.port();
    ASSERT_NE(port, 0);
    const auto ok = get(port, "/metrics");
    EXPECT_EQ(ok.result_int(), 200u);
    EXPECT_EQ(ok.body(), "# TYPE up gauge\nup 1\n");
    EXPECT_EQ(get(port, "/nope").result_int(), 404u);
    server.stop();
    server.stop(); // idempotent
    asio::io_context io;
    tcp::socket socket(io);
    boost::system::error_code ec;
    socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
    EXPECT_TRUE(ec) << "still listening after stop()";
}

TEST(MetricsServer, ClosesAClientThatSendsItsRequestTooSlowly) {
    MetricsServerLimits limits;
    limits.request_timeout = 300ms;
    MetricsServer server({"127.0.0.1", 0}, fixed_handler, limits);
    asio::io_context io;
    tcp::socket slow(io);
    slow.connect({asio::ip::make_address("127.0.0.1"), server.port()});
    // Slowloris: a header line now and then, never the end of the request.
    const auto start = std::chrono::steady_clock::now();
    std::string got = exchange(slow, "GET /metrics HTTP/1.1\r\n", 100ms);
    for (int i = 0; i < 20 && got.find("<closed>") == std::string::npos; ++i) {
        boost::system::error_code ec;
        asio::write(slow, asio::buffer(std::string("X-A: b\r\n")), ec);
        got += ec ? "<closed>" : exchange(slow, "", 100ms);
    }
    EXPECT_NE(got.find("<closed>"), std::string::npos) << "a slow client is never closed";
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
    EXPECT_EQ(get(server.port(), "/metrics").result_int(), 200u);
}

TEST(MetricsServer, RefusesARequestBodyWithoutReadingIt) {
    MetricsServer server({"127.0.0.1", 0}, fixed_handler);
    asio::io_context io;
    tcp::socket socket(io);
    socket.connect({asio::ip::make_address("127.0.0.1"), server.port()});
    // The headers announce 1 MB; none of it is sent: the answer must come from the headers.
    const auto got = exchange(socket,
                              "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n"
                              "\r\n",
                              1s);
    EXPECT_EQ(got.rfind("HTTP/1.1 413", 0), 0u) << got;
    tcp::socket small(io);
    small.connect({asio::ip::make_address("127.0.0.1"), server.port()});
    const auto post = exchange(small, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 1s);
    EXPECT_EQ(post.rfind("HTTP/1.1 405", 0), 0u) << post;
}

TEST(MetricsServer, AtTheCapTheOldestIdleConnectionMakesRoom) {
    MetricsServerLimits limits;
    limits.max_connections = 4;
    MetricsServer server({"127.0.0.1", 0}, fixed_handler, limits);
    asio::io_context io;
    std::vector<tcp::socket> idle;
    for (int i = 0; i < 50; ++i) {
        idle.emplace_back(io).connect({asio::ip::make_address("127.0.0.1"), server.port()});
    }
    // 50 idle connections against a cap of 4: a scraper still gets its answer at once.
    for (int i = 0; i < 5; ++i) {
        EXPECT_EQ(get(server.port(), "/metrics").result_int(), 200u);
    }
    // And the server holds at most 4: the first 46 idle ones were closed.
    int closed = 0;
    for (auto& s : idle) {
        closed += exchange(s, "", 20ms).find("<closed>") != std::string::npos ? 1 : 0;
    }
    EXPECT_GE(closed, 46);
}

double cpu_seconds_of_this_process() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const auto s = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return s(u.ru_utime) + s(u.ru_stime);
}

TEST(MetricsServer, OutOfDescriptorsBacksOffInsteadOfSpinning) {
    MetricsServer server({"127.0.0.1", 0}, fixed_handler);
    rlimit saved{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
    // Every descriptor taken but one, which the client's socket takes: accept() gets EMFILE.
    std::vector<int> filler;
    const rlimit low{256, saved.rlim_max};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    for (int fd = open("/dev/null", O_RDONLY); fd >= 0; fd = open("/dev/null", O_RDONLY)) {
        filler.push_back(fd);
    }
    ASSERT_FALSE(filler.empty());
    close(filler.back());
    filler.pop_back();
    const int client = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(client, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server.port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    const double before = cpu_seconds_of_this_process();
    std::this_thread::sleep_for(1s);
    const double used = cpu_seconds_of_this_process() - before;
    for (const int fd : filler) {
        close(fd);
    }
    close(client);
    setrlimit(RLIMIT_NOFILE, &saved);
    EXPECT_LT(used, 0.1) << "accept() retried at once on EMFILE";
    std::cout << "CPU while out of descriptors: " << used << " s in 1 s\n";
    // Descriptors back: accepting resumes (the back-off is at most 1 s).
    EXPECT_EQ(get(server.port(), "/metrics").result_int(), 200u);
}

} // namespace
} // namespace retentiond
