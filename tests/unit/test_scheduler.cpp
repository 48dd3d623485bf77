#include "retentiond/run_lock.hpp"
#include "retentiond/scheduler.hpp"

#include <gtest/gtest.h>

#include <set>

namespace retentiond {
namespace {

using namespace std::chrono_literals;

// A fixed origin: 2026-11-26T00:00:00Z. The clock is injected: no test sleeps.
const TimePoint k_t0 = TimePoint{std::chrono::sys_days{std::chrono::year{2026} / 11 / 26}};

// "every 1h", aligned to the epoch like next_run().
TimePoint every_hour(TimePoint after) {
    const auto h = std::chrono::floor<std::chrono::hours>(after);
    return TimePoint{h + 1h};
}

TEST(Backoff, DoublesFromInitialAndCaps) {
    const Backoff b{30s, 900s};
    EXPECT_EQ(b.delay(0), 0s);
    EXPECT_EQ(b.delay(1), 30s);
    EXPECT_EQ(b.delay(2), 60s);
    EXPECT_EQ(b.delay(3), 120s);
    EXPECT_EQ(b.delay(4), 240s);
    EXPECT_EQ(b.delay(5), 480s);
    EXPECT_EQ(b.delay(6), 900s);
    EXPECT_EQ(b.delay(60), 900s); // no overflow after many failures
}

TEST(Splay, StaysWithinBoundsAndVaries) {
    std::mt19937_64 rng(42);
    std::set<std::int64_t> seen;
    for (int i = 0; i < 1000; ++i) {
        const auto s = random_splay(30s, rng);
        ASSERT_GE(s, 0ms);
        ASSERT_LE(s, 30000ms);
        seen.insert(s.count());
    }
    EXPECT_GT(seen.size(), 100u); // spread out, not a constant
    EXPECT_EQ(random_splay(0s, rng), 0ms);
}

TEST(FirstDue, UnknownLastSuccessRunsAtStart) {
    const TimePoint now = k_t0 + 10min;
    EXPECT_EQ(first_due(every_hour, now, std::nullopt), now);
}

TEST(FirstDue, MissedSlotsRunOnceNow) {
    // Last success 5 hours ago: five slots were missed; one run now, then the regular slot.
    const TimePoint now = k_t0 + 5h + 10min;
    EXPECT_EQ(first_due(every_hour, now, k_t0 + 1min), now);
    RuleSchedule state;
    state.watch_since = now;
    const TimePoint next = after_run(state, RunOutcome::success, every_hour, now, Backoff{});
    EXPECT_EQ(next, k_t0 + 6h);
}

TEST(FirstDue, NoMissedSlotWaitsForTheNext) {
    const TimePoint now = k_t0 + 10min;
    EXPECT_EQ(first_due(every_hour, now, k_t0 + 1min), k_t0 + 1h);
}

TEST(AfterRun, SuccessPlansTheNextSlotAndRecordsIt) {
    RuleSchedule state;
    const TimePoint now = k_t0 + 3h + 2s;
    EXPECT_EQ(after_run(state, RunOutcome::success, every_hour, now, Backoff{}), k_t0 + 4h);
    ASSERT_TRUE(state.last_success);
    EXPECT_EQ(*state.last_success, now);
    EXPECT_EQ(state.watch_since, now);
}

TEST(AfterRun, OutagesBackOffButNeverPastTheNextSlot) {
    RuleSchedule state;
    const Backoff b{30s, 900s};
    TimePoint now = k_t0 + 1s;
    std::vector<std::chrono::seconds> delays;
    for (int i = 0; i < 7; ++i) {
        const TimePoint due = after_run(state, RunOutcome::unavailable, every_hour, now, b);
        delays.push_back(std::chrono::duration_cast<std::chrono::seconds>(due - now));
        now = due;
    }
    const std::vector<std::chrono::seconds> expected{30s, 60s, 120s, 240s, 480s, 900s, 900s};
    EXPECT_EQ(delays, expected);
    EXPECT_EQ(state.consecutive_unavailable, 7);
    EXPECT_FALSE(state.last_success);

    // Close to the next slot the regular run comes first.
    const TimePoint late = k_t0 + 59min;
    EXPECT_EQ(after_run(state, RunOutcome::unavailable, every_hour, late, b), k_t0 + 1h);

    // Recovery resets the sequence.
    after_run(state, RunOutcome::success, every_hour, late, b);
    EXPECT_EQ(state.consecutive_unavailable, 0);
    EXPECT_EQ(after_run(state, RunOutcome::unavailable, every_hour, k_t0 + 2h, b), k_t0 + 2h + 30s);
}

TEST(AfterRun, FailuresAndSkipsWaitForTheNextSlot) {
    RuleSchedule state;
    state.watch_since = k_t0;
    EXPECT_EQ(after_run(state, RunOutcome::failed, every_hour, k_t0 + 5min, Backoff{}), k_t0 + 1h);
    EXPECT_EQ(state.watch_since, k_t0); // a failure is no success
    EXPECT_EQ(after_run(state, RunOutcome::skipped, every_hour, k_t0 + 6min, Backoff{}), k_t0 + 1h);
    EXPECT_FALSE(state.last_success);
    EXPECT_EQ(state.watch_since, k_t0 + 6min); // another host enforces it
}

TEST(Overdue, AfterTwicePeriodWithoutSuccess) {
    RuleSchedule state;
    state.watch_since = k_t0;
    EXPECT_FALSE(is_overdue(state, 1h, k_t0 + 1h));
    EXPECT_FALSE(is_overdue(state, 1h, k_t0 + 2h));
    EXPECT_TRUE(is_overdue(state, 1h, k_t0 + 2h + 1s));
    after_run(state, RunOutcome::success, every_hour, k_t0 + 2h + 5s, Backoff{});
    EXPECT_FALSE(is_overdue(state, 1h, k_t0 + 3h));
    // Failures do not reset the watch.
    after_run(state, RunOutcome::failed, every_hour, k_t0 + 3h, Backoff{});
    after_run(state, RunOutcome::unavailable, every_hour, k_t0 + 4h, Backoff{});
    EXPECT_TRUE(is_overdue(state, 1h, k_t0 + 4h + 6s));
}

TEST(AdvisoryLockKey, IsStableAndDistinct) {
    // Pinned: every host sharing a database must compute the same key, release after release.
    // FNV-1a 64 of "retentiond:dora-inactive-accounts", as a signed bigint.
    EXPECT_EQ(advisory_lock_key("dora-inactive-accounts"), 8655722933164916374LL);
    EXPECT_EQ(advisory_lock_key("a"), advisory_lock_key("a"));
    EXPECT_NE(advisory_lock_key("a"), advisory_lock_key("b"));
    EXPECT_NE(advisory_lock_key(""), 0);
}

} // namespace
} // namespace retentiond
