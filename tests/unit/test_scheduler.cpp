#include "retentiond/audit.hpp"
#include "retentiond/run_lock.hpp"
#include "retentiond/scheduler.hpp"
#include "retentiond/timeutil.hpp"
#include "support/process.hpp"

#include <gtest/gtest.h>

#include <cstdio>
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

TEST(Splay, IsCappedAtATenthOfTheRulesPeriod) {
    EXPECT_EQ(rule_splay(30s, 2s), 200ms);    // "every 2 seconds": not 27 s late
    EXPECT_EQ(rule_splay(30s, 1min), 6000ms); // "every 1 minute"
    EXPECT_EQ(rule_splay(30s, 24h), 30000ms); // daily: daemon.splay as configured
    EXPECT_EQ(rule_splay(0ms, 2s), 0ms);      // splay disabled stays disabled
    EXPECT_EQ(rule_splay(30s, 0s), 30000ms);  // unknown period: daemon.splay
    std::mt19937_64 rng(7);
    for (int i = 0; i < 1000; ++i) {
        ASSERT_LE(random_splay(rule_splay(30s, 2s), rng), 200ms);
    }
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

// "daily 03:00" in UTC, as a bare function of the injected time.
TimePoint daily_3am(TimePoint after) {
    const auto day = std::chrono::floor<std::chrono::days>(after);
    const TimePoint today = TimePoint{day + 3h};
    return today > after ? today : today + std::chrono::days{1};
}

TEST(LatestSlot, IsTheLastSlotAtOrBeforeNow) {
    EXPECT_EQ(latest_slot(every_hour, k_t0 + 5h + 10min, 3600s), k_t0 + 5h);
    EXPECT_EQ(latest_slot(every_hour, k_t0 + 5h, 3600s), k_t0 + 5h); // a slot exactly now
    EXPECT_EQ(latest_slot(daily_3am, k_t0 + 2h, 86400s), k_t0 - 21h);
    EXPECT_EQ(latest_slot(daily_3am, k_t0 + 4h, 86400s), k_t0 + 3h);
    // A nominal period far shorter than the real gap (a cron with weekend gaps, say): found by
    // looking further back.
    EXPECT_EQ(latest_slot(daily_3am, k_t0 + 2h, 60s), k_t0 - 21h);
}

TEST(PlanAtStart, NeverRunRunsNowForTheLatestSlot) {
    RuleSchedule state;
    const TimePoint now = k_t0 + 5h + 10min;
    EXPECT_EQ(plan_at_start(state, every_hour, 3600s, now, std::nullopt), now);
    EXPECT_EQ(state.slot, k_t0 + 5h);
    EXPECT_FALSE(state.last_success);
}

TEST(PlanAtStart, MissedSlotsRunOnceNow) {
    // Daemon stopped (or host asleep) from 00:01 to 05:10: five slots missed, one run now.
    RuleSchedule state;
    const TimePoint now = k_t0 + 5h + 10min;
    EXPECT_EQ(plan_at_start(state, every_hour, 3600s, now, k_t0 + 1min), now);
    EXPECT_EQ(state.slot, k_t0 + 5h);
    ASSERT_TRUE(state.last_success);
    EXPECT_EQ(*state.last_success, k_t0 + 1min);
    // Then the regular slots, not a catch-up per missed slot.
    EXPECT_EQ(after_run(state, RunOutcome::success, every_hour, now + 3s, Backoff{}), k_t0 + 6h);
    EXPECT_EQ(state.slot, k_t0 + 6h);
}

TEST(PlanAtStart, NoMissedSlotWaitsForTheNext) {
    // A daily rule that succeeded at 03:00:40 and a restart at 14:00: nothing missed.
    RuleSchedule state;
    const TimePoint now = k_t0 + 14h;
    EXPECT_EQ(plan_at_start(state, daily_3am, 86400s, now, k_t0 + 3h + 40s),
              k_t0 + std::chrono::days{1} + 3h);
    EXPECT_EQ(state.slot, k_t0 + std::chrono::days{1} + 3h);
    // The slot fell while the daemon was down (success the day before): one run now.
    RuleSchedule late;
    EXPECT_EQ(plan_at_start(late, daily_3am, 86400s, now, k_t0 - 21h + 40s), now);
    EXPECT_EQ(late.slot, k_t0 + 3h);
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
    EXPECT_EQ(state.slot, TimePoint{}); // retries stand for the slot that failed
    EXPECT_EQ(state.consecutive_unavailable, 7);
    EXPECT_FALSE(state.last_success);

    // Close to the next slot the regular run comes first.
    const TimePoint late = k_t0 + 59min;
    EXPECT_EQ(after_run(state, RunOutcome::unavailable, every_hour, late, b), k_t0 + 1h);
    EXPECT_EQ(state.slot, k_t0 + 1h);

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

// The last successes the daemon plans from, read back from a real audit log.
class LastSuccesses : public ::testing::Test {
protected:
    const Secret m_key{"0123456789abcdef0123456789abcdef"};
    test::TempDir m_dir;
    std::string m_path = m_dir.file("audit.jsonl");

    void rule_end(AuditLog& log, const std::string& rule, bool ok) {
        log.event("rule_end", {{"rule", rule}, {"ok", ok}, {"status", ok ? "ok" : "failed"}});
    }
};

TEST_F(LastSuccesses, NewestSuccessPerRuleFailuresIgnored) {
    TimePoint before_b;
    TimePoint after_b;
    {
        AuditLog log(m_path, m_key, "run-1");
        rule_end(log, "a", true);
        before_b = now_utc();
        rule_end(log, "b", true);
        after_b = now_utc();
        rule_end(log, "a", true);
        rule_end(log, "b", false); // a failure is no success
        log.event("skipped", {{"rule", "c"}, {"ok", true}});
    }
    const auto found = last_successes(m_path, {"a", "b", "c", "never"});
    ASSERT_EQ(found.count("a"), 1u);
    ASSERT_EQ(found.count("b"), 1u);
    EXPECT_EQ(found.count("c"), 0u); // only rule_end lines count
    EXPECT_EQ(found.count("never"), 0u);
    // The newer of a's two successes (each line is fsynced: far more than a microsecond apart).
    EXPECT_GE(found.at("a"), std::chrono::floor<std::chrono::microseconds>(after_b));
    EXPECT_GE(found.at("b"), std::chrono::floor<std::chrono::microseconds>(before_b));
    EXPECT_LE(found.at("b"), after_b);
}

TEST_F(LastSuccesses, ReadsTheRotatedFileForRulesNotInTheCurrentOne) {
    {
        AuditLog log(m_path, m_key, "run-1");
        rule_end(log, "old", true);
        rule_end(log, "both", true);
    }
    ASSERT_EQ(std::rename(m_path.c_str(), (m_path + ".1").c_str()), 0); // logrotate, create mode
    const TimePoint rotated = now_utc();
    {
        AuditLog log(m_path, m_key, "run-2");
        rule_end(log, "both", true);
    }
    const auto found = last_successes(m_path, {"old", "both"});
    ASSERT_EQ(found.size(), 2u);
    EXPECT_LT(found.at("old"), rotated);
    EXPECT_GE(found.at("both"), std::chrono::floor<std::chrono::microseconds>(rotated));
    EXPECT_TRUE(last_successes(m_dir.file("absent.jsonl"), {"old"}).empty());
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
