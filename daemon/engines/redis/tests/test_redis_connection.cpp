// The redis connection's waits on the server, against a real redis-server frozen with SIGSTOP (a
// server that accepted a connection and stopped reading: its kernel buffers fill, then every
// write() blocks). Before: a write blocked up to the 15 s send timeout whatever a stop request
// said; now flush() waits for room in slices and a stop ends it within k_stop_grace.
#include "redis_connection.hpp"
#include "redis_url.hpp"

#include "support/redis_server.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <string>

namespace retentiond {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using redis_detail::Connection;
using ::testing::HasSubstr;

class FrozenRedis : public ::testing::Test {
protected:
    void TearDown() override {
        if (m_frozen) {
            ::kill(m_server.pid(), SIGCONT);
        }
    }
    // Freezes the server, queues a command far larger than the socket buffers and flushes it.
    // Returns the error message and how long flush() took.
    std::pair<std::string, double> flush_to_frozen_server(std::function<bool()> stop) {
        Connection c(parse_redis_url(m_server.url()), "cache", std::move(stop));
        m_frozen = ::kill(m_server.pid(), SIGSTOP) == 0;
        EXPECT_TRUE(m_frozen);
        const std::string big(64 << 20, 'x');
        c.append({"SET", "big", big});
        const auto start = Clock::now();
        std::string error;
        try {
            c.flush();
        } catch (const UnavailableError& e) {
            error = e.what();
        }
        return {error, std::chrono::duration<double>(Clock::now() - start).count()};
    }

    test::RedisServer m_server;
    bool m_frozen = false;
};

TEST_F(FrozenRedis, AStopRequestEndsAWriteTheServerDoesNotReadWithinTheGrace) {
    const auto start = Clock::now();
    const auto [error, seconds] =
        flush_to_frozen_server([start] { return Clock::now() - start > 1s; });
    EXPECT_THAT(error, HasSubstr("stop requested while sending"));
    EXPECT_LE(seconds, 1.0 + 2.0 + 1.5) << "stop after 1 s, then k_stop_grace (2 s)";
}

TEST_F(FrozenRedis, AWriteTheServerDoesNotReadIsUnavailableAfterTheReplyTimeout) {
    const auto [error, seconds] = flush_to_frozen_server({});
    EXPECT_THAT(error, HasSubstr("the server read nothing for 15 s"));
    EXPECT_GE(seconds, 14.0);
    EXPECT_LE(seconds, 20.0);
}

} // namespace
} // namespace retentiond
