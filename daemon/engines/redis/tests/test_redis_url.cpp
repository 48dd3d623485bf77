#include "redis_url.hpp"

#include <gtest/gtest.h>

namespace retentiond {
namespace {

TEST(RedisUrl, HostPortAndDb) {
    const auto u = parse_redis_url("redis://cache.internal:6380/4");
    EXPECT_EQ(u.host, "cache.internal");
    EXPECT_EQ(u.port, 6380);
    EXPECT_EQ(u.db, 4);
    EXPECT_TRUE(u.password.empty());
    EXPECT_TRUE(u.user.empty());
    EXPECT_TRUE(u.socket_path.empty());
    EXPECT_EQ(u.describe(), "cache.internal:6380 db 4");
}

TEST(RedisUrl, DefaultsToPort6379AndDb0) {
    const auto u = parse_redis_url("redis://localhost");
    EXPECT_EQ(u.port, 6379);
    EXPECT_EQ(u.db, 0);
    EXPECT_EQ(parse_redis_url("redis://localhost/").db, 0);
}

TEST(RedisUrl, PasswordOnlyAndUserPassword) {
    const auto a = parse_redis_url("redis://:s3cret@127.0.0.1:6379/1");
    EXPECT_EQ(a.password.reveal(), "s3cret");
    EXPECT_TRUE(a.user.empty());
    const auto b = parse_redis_url("redis://alice:p%40ss%3Aw@127.0.0.1:6379/2");
    EXPECT_EQ(b.user, "alice");
    EXPECT_EQ(b.password.reveal(), "p@ss:w");
    EXPECT_EQ(b.describe().find("p@ss"), std::string::npos);
}

TEST(RedisUrl, UnencodedAtInPasswordUsesTheLastAt) {
    const auto u = parse_redis_url("redis://:a@b@10.0.0.1:7000/0");
    EXPECT_EQ(u.password.reveal(), "a@b");
    EXPECT_EQ(u.host, "10.0.0.1");
    EXPECT_EQ(u.port, 7000);
}

TEST(RedisUrl, Ipv6Host) {
    const auto u = parse_redis_url("redis://[::1]:6390/3");
    EXPECT_EQ(u.host, "::1");
    EXPECT_EQ(u.port, 6390);
    EXPECT_EQ(u.describe(), "[::1]:6390 db 3");
}

TEST(RedisUrl, UnixSocketForms) {
    const auto a = parse_redis_url("unix:///run/redis/redis.sock?db=5");
    EXPECT_EQ(a.socket_path, "/run/redis/redis.sock");
    EXPECT_EQ(a.db, 5);
    EXPECT_TRUE(a.host.empty());
    const auto b = parse_redis_url("unix://:pw@/run/redis.sock");
    EXPECT_EQ(b.socket_path, "/run/redis.sock");
    EXPECT_EQ(b.password.reveal(), "pw");
    const auto c = parse_redis_url("unix:///run/redis.sock?db=2&user=bob&password=x%26y");
    EXPECT_EQ(c.user, "bob");
    EXPECT_EQ(c.password.reveal(), "x&y");
    EXPECT_EQ(c.db, 2);
    const auto d = parse_redis_url("/var/run/redis.sock");
    EXPECT_EQ(d.socket_path, "/var/run/redis.sock");
    EXPECT_EQ(d.db, 0);
}

TEST(RedisUrl, ErrorsNeverQuoteThePassword) {
    for (const char* bad :
         {"redis://:hunter2@host:99999/0", "redis://:hunter2@host:6379/x",
          "redis://hunter2@host:6379/0", "http://:hunter2@host", "rediss://:hunter2@host:6379",
          "unix://hunter2", "redis://:hunter2@/0", "redis://:hunter2@host/0?db=1",
          "unix:///s.sock?password=hunter2&x=1", "redis://:hunter2%zz@host"}) {
        try {
            parse_redis_url(bad);
            ADD_FAILURE() << "accepted a bad URL (#" << bad[0] << ")";
        } catch (const ParseError& e) {
            EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
        }
    }
}

} // namespace
} // namespace retentiond
