// The postgres engine's pure steps, without a server: how the page span of a batch follows the
// density of due rows, and what a failed batch means (retry / fail / unavailable).
#include "pg_errors.hpp"
#include "pg_span.hpp"

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include <stdexcept>

namespace retentiond::pg {
namespace {

TEST(PgSpan, InitialSpanAimsAtNinetyPercentOfABatch) {
    // 10,000 due rows over 100 pages: 100 per page; 1,000 per batch at 90% = 9 pages.
    EXPECT_EQ(initial_span(1000, 100, 10000), 9);
    // Sparse due rows: the whole table in one range, never more.
    EXPECT_EQ(initial_span(1000, 100, 10), 100);
    EXPECT_EQ(initial_span(1000, 100, 0), 100);
    // Denser than a batch per page: at least one page.
    EXPECT_EQ(initial_span(10, 100, 1'000'000), 1);
}

TEST(PgSpan, NextSpanFollowsTheDensityByAtMostAFactorOfTwo) {
    // On target (90% of 1000): unchanged.
    EXPECT_EQ(next_span(10, 900, 1000, 1000), 10);
    // Half the target: twice the span; a tenth of it: still only twice.
    EXPECT_EQ(next_span(10, 450, 1000, 1000), 20);
    EXPECT_EQ(next_span(10, 90, 1000, 1000), 20);
    // An empty range: twice the span.
    EXPECT_EQ(next_span(10, 0, 1000, 1000), 20);
    // Over the target: shrinks in proportion, by at most half.
    EXPECT_EQ(next_span(10, 1000, 1000, 1000), 9);
    EXPECT_EQ(next_span(10, 1000, 100, 1000), 5);
    // Within [1, pages].
    EXPECT_EQ(next_span(60, 0, 1000, 100), 100);
    EXPECT_EQ(next_span(1, 1000, 1000, 100), 1);
    // batch_size 1: the target is one row, not zero.
    EXPECT_EQ(next_span(4, 1, 1, 100), 4);
}

TEST(PgSpan, OverflowHalvesTheSpanThenSelectsRowsOfTheSinglePage) {
    const auto halved = span_after_overflow(9);
    EXPECT_EQ(halved.span, 4);
    EXPECT_FALSE(halved.force_select);
    const auto two = span_after_overflow(2);
    EXPECT_EQ(two.span, 1);
    EXPECT_FALSE(two.force_select);
    const auto single = span_after_overflow(1);
    EXPECT_EQ(single.span, 1);
    EXPECT_TRUE(single.force_select);
}

TEST(PgErrors, TimeoutsDeadlocksAndSerializationFailuresAreRetried) {
    for (const char* state : {"55P03", "57014", "40P01", "40001"}) {
        EXPECT_EQ(classify_sqlstate(state), ErrorClass::retry) << state;
    }
    for (const char* state : {"", "23505", "42P01", "42501", "25006", "40002", "53100"}) {
        EXPECT_EQ(classify_sqlstate(state), ErrorClass::fail) << state;
    }
}

TEST(PgErrors, SqlErrorsAreClassifiedByTheirSqlstate) {
    const auto lock = classify(pqxx::sql_error("lock timeout", "DELETE", "55P03"));
    EXPECT_EQ(lock.kind, ErrorClass::retry);
    EXPECT_EQ(lock.sqlstate, "55P03");
    const auto refused = classify(pqxx::sql_error("permission denied", "DELETE", "42501"));
    EXPECT_EQ(refused.kind, ErrorClass::fail);
    EXPECT_EQ(refused.sqlstate, "42501");
    const auto none = classify(pqxx::sql_error("no state"));
    EXPECT_EQ(none.kind, ErrorClass::fail);
    EXPECT_EQ(none.sqlstate, "");
}

TEST(PgErrors, RollbacksWithoutSqlstateAreRetriedWithOneDerivedFromTheirType) {
    const auto serialization = classify(pqxx::serialization_failure("could not serialize"));
    EXPECT_EQ(serialization.kind, ErrorClass::retry);
    EXPECT_EQ(serialization.sqlstate, "40001");
    const auto deadlock = classify(pqxx::deadlock_detected("deadlock"));
    EXPECT_EQ(deadlock.kind, ErrorClass::retry);
    EXPECT_EQ(deadlock.sqlstate, "40P01");
    const auto other = classify(pqxx::transaction_rollback("rolled back"));
    EXPECT_EQ(other.kind, ErrorClass::retry);
    EXPECT_EQ(other.sqlstate, "40000");
}

TEST(PgErrors, LostConnectionsAndUnknownCommitsMakeTheStoreUnavailable) {
    EXPECT_EQ(classify(pqxx::broken_connection("server closed the connection")).kind,
              ErrorClass::unavailable);
    EXPECT_EQ(classify(pqxx::too_many_connections("too many clients")).kind,
              ErrorClass::unavailable);
    EXPECT_EQ(classify(pqxx::in_doubt_error("commit outcome unknown")).kind,
              ErrorClass::unavailable);
}

TEST(PgErrors, OtherExceptionsFailTheRuleWithoutSqlstate) {
    const auto other = classify(std::runtime_error("strategy hmac/email_domain needs a key"));
    EXPECT_EQ(other.kind, ErrorClass::fail);
    EXPECT_EQ(other.sqlstate, "");
}

} // namespace
} // namespace retentiond::pg
