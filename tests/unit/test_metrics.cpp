#include "../cli/prometheus_text.hpp"
#include "retentiond/metrics.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

#include <thread>

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
TEST(MetricsServer, AnswersGetRequests) {
    namespace asio = boost::asio;
    namespace http = boost::beast::http;
    asio::io_context io;
    MetricsServer server(io, {"127.0.0.1", 0}, [](std::string_view target) {
        if (target == "/metrics") {
            return HttpResponse{200, "text/plain; version=0.0.4", "# TYPE up gauge\nup 1\n"};
        }
        return HttpResponse{404, "text/plain", "not found\n"};
    });
    const auto port = server.port();
    ASSERT_NE(port, 0);
    std::thread loop([&io] { io.run(); });
    const auto get = [port](const std::string& target) {
        asio::io_context client;
        asio::ip::tcp::socket socket(client);
        socket.connect({asio::ip::make_address("127.0.0.1"), port});
        http::request<http::empty_body> req{http::verb::get, target, 11};
        req.set(http::field::host, "localhost");
        http::write(socket, req);
        boost::beast::flat_buffer buffer;
        http::response<http::string_body> res;
        http::read(socket, buffer, res);
        return res;
    };
    const auto ok = get("/metrics");
    EXPECT_EQ(ok.result_int(), 200u);
    EXPECT_EQ(ok.body(), "# TYPE up gauge\nup 1\n");
    EXPECT_EQ(get("/nope").result_int(), 404u);
    asio::post(io, [&server] { server.stop(); });
    loop.join(); // returns once the acceptor is closed: no work left
}

} // namespace
} // namespace retentiond
