// Connecting without hanging (pg_connect.hpp, issue 23 item 6): the default connect_timeout in
// both DSN forms, and a connection attempt made on its own thread while a stop predicate is
// polled. The silent endpoint itself is tested through the binary (tests/cli/
// test_hostile_stores.cpp).
#include "pg_connect.hpp"
#include "support/pg_cluster.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace retentiond::test {
namespace {

using pg::with_connect_timeout;
using pg::with_connection_defaults;

class PgConnectTest : public ::testing::Test {
protected:
    void SetUp() override { ::unsetenv("PGCONNECT_TIMEOUT"); }
};

TEST_F(PgConnectTest, DefaultConnectTimeoutInBothDsnForms) {
    EXPECT_EQ(with_connect_timeout("host=db dbname=app"), "host=db dbname=app connect_timeout=10");
    EXPECT_EQ(with_connect_timeout(""), "connect_timeout=10");
    EXPECT_EQ(with_connect_timeout("postgres://app@db/app"),
              "postgres://app@db/app?connect_timeout=10");
    EXPECT_EQ(with_connect_timeout("postgresql://db/app?sslmode=require"),
              "postgresql://db/app?sslmode=require&connect_timeout=10");
    EXPECT_EQ(with_connection_defaults("host=db"),
              "host=db application_name=retentiond connect_timeout=10");
}

TEST_F(PgConnectTest, TheOperatorsTimeoutIsKept) {
    EXPECT_EQ(with_connect_timeout("host=db connect_timeout=3"), "host=db connect_timeout=3");
    EXPECT_EQ(with_connect_timeout("postgres://db/app?connect_timeout=0"),
              "postgres://db/app?connect_timeout=0");
    ::setenv("PGCONNECT_TIMEOUT", "4", 1);
    EXPECT_EQ(with_connect_timeout("host=db"), "host=db");
    ::unsetenv("PGCONNECT_TIMEOUT");
}

TEST_F(PgConnectTest, ConnectsThroughTheStoppableAttempt) {
    const auto dsn = with_connection_defaults(PgCluster::shared().dsn());
    int polled = 0;
    auto conn = pg::open_connection(dsn, [&] {
        ++polled;
        return false;
    });
    ASSERT_TRUE(conn);
    pqxx::nontransaction tx(*conn);
    EXPECT_EQ(tx.exec1("SELECT 1")[0].as<int>(), 1);
}

TEST_F(PgConnectTest, ConnectionErrorsComeThroughTheAttempt) {
    EXPECT_THROW(pg::open_connection("host=/nonexistent-socket-dir dbname=x connect_timeout=2",
                                     [] { return false; }),
                 pqxx::broken_connection);
}

} // namespace
} // namespace retentiond::test
