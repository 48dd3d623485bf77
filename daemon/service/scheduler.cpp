#include "retentiond/scheduler.hpp"

#include <algorithm>

namespace retentiond {

std::chrono::milliseconds Backoff::delay(int failures) const {
    if (failures <= 0) {
        return std::chrono::milliseconds{0};
    }
    auto d = initial;
    for (int i = 1; i < failures && d < max; ++i) {
        d *= 2;
    }
    return std::min(d, max);
}

std::chrono::milliseconds random_splay(std::chrono::milliseconds max_splay, std::mt19937_64& rng) {
    const auto max_ms = max_splay.count();
    if (max_ms <= 0) {
        return std::chrono::milliseconds{0};
    }
    std::uniform_int_distribution<std::int64_t> dist(0, max_ms);
    return std::chrono::milliseconds{dist(rng)};
}

std::chrono::milliseconds rule_splay(std::chrono::milliseconds max_splay,
                                     std::chrono::seconds period) {
    if (period <= std::chrono::seconds{0}) {
        return max_splay;
    }
    return std::min(max_splay, std::chrono::duration_cast<std::chrono::milliseconds>(period) / 10);
}

TimePoint first_due(const NextSlot& next, TimePoint now, std::optional<TimePoint> last_success) {
    if (!last_success || next(*last_success) <= now) {
        return now;
    }
    return next(now);
}

TimePoint latest_slot(const NextSlot& next, TimePoint now, std::chrono::seconds period) {
    // Step back a period, then twice as far each time, until a slot lies at or before now; then
    // walk forward to the last one. Irregular schedules (cron with gaps) cost a few more steps.
    auto back =
        std::chrono::duration_cast<TimePoint::duration>(std::max(period, std::chrono::seconds{1}));
    constexpr auto k_max_lookback = std::chrono::hours{24 * 366 * 100};
    for (; back <= k_max_lookback; back *= 2) {
        TimePoint slot = next(now - back);
        if (slot > now) {
            continue;
        }
        for (TimePoint later = next(slot); later <= now; later = next(slot)) {
            slot = later;
        }
        return slot;
    }
    return now;
}

TimePoint plan_at_start(RuleSchedule& state, const NextSlot& next, std::chrono::seconds period,
                        TimePoint now, std::optional<TimePoint> last_success) {
    state.last_success = last_success;
    const TimePoint due = first_due(next, now, last_success);
    state.slot = due <= now ? latest_slot(next, now, period) : due;
    return due;
}

TimePoint after_run(RuleSchedule& state, RunOutcome outcome, const NextSlot& next, TimePoint now,
                    const Backoff& backoff) {
    const TimePoint next_slot = next(now);
    switch (outcome) {
    case RunOutcome::success:
        state.last_success = now;
        state.watch_since = now;
        state.consecutive_unavailable = 0;
        break;
    case RunOutcome::skipped:
        // Another host holds the rule: it is being enforced, just not here.
        state.watch_since = now;
        state.consecutive_unavailable = 0;
        break;
    case RunOutcome::unavailable: {
        ++state.consecutive_unavailable;
        const TimePoint retry = now + backoff.delay(state.consecutive_unavailable);
        if (retry < next_slot) {
            return retry; // the same slot, again
        }
        state.slot = next_slot;
        return next_slot;
    }
    case RunOutcome::failed:
    case RunOutcome::stopped:
        state.consecutive_unavailable = 0;
        break;
    }
    state.slot = next_slot;
    return next_slot;
}

bool is_overdue(const RuleSchedule& state, std::chrono::seconds period, TimePoint now) {
    if (period <= std::chrono::seconds{0}) {
        return false;
    }
    return now - state.watch_since > 2 * period;
}

} // namespace retentiond
