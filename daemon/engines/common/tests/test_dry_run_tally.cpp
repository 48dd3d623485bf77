// The dry run's counters, one definition for every kind (engine_common.hpp: DryRunTally).
#include "retentiond/engine_common.hpp"

#include "retentiond/timeutil.hpp"

#include <gtest/gtest.h>

#include <date/date.h>

#include <chrono>
#include <vector>

namespace retentiond {
namespace {

using std::chrono::hours;

constexpr hours k_day{24};

class DryRunTallyTest : public ::testing::Test {
protected:
    DryRunTallyTest()
        : m_now(TimePoint{date::sys_days{date::year{2026} / 3 / 10}}),
          m_retain(parse_duration("8 days")), m_tz(find_zone("Europe/Paris")),
          m_cutoff(subtract(m_now, m_retain, m_tz)), m_tally(m_now, m_cutoff, m_retain, m_tz) {}

    TimePoint days_ago(int n) const { return m_now - n * k_day; }

    TimePoint m_now;
    Duration m_retain;
    const date::time_zone* m_tz;
    TimePoint m_cutoff;
    DryRunTally m_tally;
    DryRun m_dry;
};

TEST_F(DryRunTallyTest, CountsEachVerdictInScope) {
    m_tally.add(m_dry, DryVerdict::due, days_ago(9));
    m_tally.add(m_dry, DryVerdict::held, days_ago(9));
    m_tally.add(m_dry, DryVerdict::not_due, days_ago(1));
    m_tally.add(m_dry, DryVerdict::unparseable, std::nullopt);
    m_tally.add(m_dry, DryVerdict::no_clock, std::nullopt);
    EXPECT_EQ(m_dry.in_scope, 5);
    EXPECT_EQ(m_dry.due, 1);
    EXPECT_EQ(m_dry.held, 1);
    EXPECT_EQ(m_dry.unparseable, 1);
    EXPECT_EQ(m_dry.no_clock, 1) << "an unparseable clock is not a missing one";
}

// As PostgreSQL's count of `clock IS NULL`: with `clock_null: due` the record is due and still
// without a clock (the files engine did not count it before the tally was shared).
TEST_F(DryRunTallyTest, ARecordWithoutClockCountsAsSuchWhateverItsVerdict) {
    m_tally.add(m_dry, DryVerdict::due, std::nullopt);
    m_tally.add(m_dry, DryVerdict::held, std::nullopt);
    EXPECT_EQ(m_dry.due, 1);
    EXPECT_EQ(m_dry.held, 1);
    EXPECT_EQ(m_dry.no_clock, 2);
    EXPECT_FALSE(m_dry.oldest_clock.has_value());
    EXPECT_TRUE(m_dry.age_buckets.empty()) << "no clock, no age";
}

TEST_F(DryRunTallyTest, AgeBucketsAreEighthsOfRetainUpToTwiceIt) {
    const std::vector<std::pair<int, std::size_t>> cases = {{0, 0},   {1, 1},   {4, 4},    {8, 8},
                                                            {15, 15}, {16, 16}, {400, 16}, {-3, 0}};
    for (const auto& [days, bucket] : cases) {
        DryRun dry;
        m_tally.add_age(dry, days_ago(days));
        ASSERT_EQ(dry.age_buckets.size(), k_age_buckets);
        EXPECT_EQ(dry.age_buckets[bucket], 1) << days << " days old";
    }
    m_tally.add_age(m_dry, days_ago(2));
    m_tally.add_age(m_dry, days_ago(30));
    m_tally.add_age(m_dry, days_ago(5));
    EXPECT_EQ(m_dry.oldest_clock, days_ago(30));
}

TEST_F(DryRunTallyTest, WithoutARetentionEveryPastClockIsInTheLastBucket) {
    const DryRunTally no_retain(m_now, m_now, Duration{}, m_tz);
    no_retain.add_age(m_dry, days_ago(1));
    no_retain.add_age(m_dry, m_now + k_day);
    EXPECT_EQ(m_dry.age_buckets[16], 1);
    EXPECT_EQ(m_dry.age_buckets[0], 1);
}

TEST_F(DryRunTallyTest, ForecastCountsOnlyRecordsNotDueYet) {
    m_tally.add(m_dry, DryVerdict::not_due, days_ago(5)); // due in 3 days
    m_tally.add(m_dry, DryVerdict::not_due, m_now);       // due in 8 days
    // Kept although past the cutoff (already anonymized): not "falling due".
    m_tally.add(m_dry, DryVerdict::not_due, days_ago(20));
    m_tally.add(m_dry, DryVerdict::due, days_ago(20));
    EXPECT_EQ(m_dry.due_7d, 1);
    EXPECT_EQ(m_dry.due_30d, 2);
    EXPECT_EQ(m_dry.due_90d, 2);
}

TEST_F(DryRunTallyTest, MergeSumsEveryCounterAndTheHistogram) {
    DryRun a;
    m_tally.add(a, DryVerdict::due, days_ago(12));
    m_tally.add(a, DryVerdict::not_due, days_ago(1));
    DryRun b;
    m_tally.add(b, DryVerdict::held, days_ago(40));
    m_tally.add(b, DryVerdict::no_clock, std::nullopt);
    DryRun total;
    merge_dry_run(total, a);
    merge_dry_run(total, b);
    merge_dry_run(total, DryRun{});
    EXPECT_EQ(total.in_scope, 4);
    EXPECT_EQ(total.due, 1);
    EXPECT_EQ(total.held, 1);
    EXPECT_EQ(total.no_clock, 1);
    EXPECT_EQ(total.due_7d, 1);
    EXPECT_EQ(total.oldest_clock, days_ago(40));
    ASSERT_EQ(total.age_buckets.size(), k_age_buckets);
    EXPECT_EQ(total.age_buckets[12], 1);
    EXPECT_EQ(total.age_buckets[1], 1);
    EXPECT_EQ(total.age_buckets[16], 1);
}

} // namespace
} // namespace retentiond
