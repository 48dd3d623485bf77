#include "retentiond/scheduler.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace retentiond {
namespace {

std::optional<long> env_seconds(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') {
        return std::nullopt;
    }
    char* end = nullptr;
    const long parsed = std::strtol(value, &end, 10);
    if (*end != '\0' || parsed < 0) {
        return std::nullopt; // a typo falls back to the default rather than to zero
    }
    return parsed;
}

} // namespace

std::chrono::seconds Backoff::delay(int failures) const {
    if (failures <= 0) {
        return std::chrono::seconds{0};
    }
    auto d = initial;
    for (int i = 1; i < failures && d < max; ++i) {
        d *= 2;
    }
    return std::min(d, max);
}

SchedulerSettings scheduler_settings_from_env() {
    SchedulerSettings s;
    if (auto v = env_seconds("RETENTIOND_SPLAY_SECONDS")) {
        s.max_splay = std::chrono::seconds{*v};
    }
    if (auto v = env_seconds("RETENTIOND_BACKOFF_INITIAL_SECONDS")) {
        s.backoff.initial = std::chrono::seconds{std::max(1L, *v)};
    }
    if (auto v = env_seconds("RETENTIOND_BACKOFF_MAX_SECONDS")) {
        s.backoff.max = std::chrono::seconds{std::max(1L, *v)};
    }
    s.backoff.max = std::max(s.backoff.max, s.backoff.initial);
    return s;
}

std::chrono::milliseconds random_splay(std::chrono::seconds max_splay, std::mt19937_64& rng) {
    const auto max_ms = std::chrono::duration_cast<std::chrono::milliseconds>(max_splay).count();
    if (max_ms <= 0) {
        return std::chrono::milliseconds{0};
    }
    std::uniform_int_distribution<std::int64_t> dist(0, max_ms);
    return std::chrono::milliseconds{dist(rng)};
}

TimePoint first_due(const NextSlot& next, TimePoint now, std::optional<TimePoint> last_success) {
    if (!last_success || next(*last_success) <= now) {
        return now;
    }
    return next(now);
}

TimePoint after_run(RuleSchedule& state, RunOutcome outcome, const NextSlot& next, TimePoint now,
                    const Backoff& backoff) {
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
        return std::min(retry, next(now));
    }
    case RunOutcome::failed:
    case RunOutcome::stopped:
        state.consecutive_unavailable = 0;
        break;
    }
    return next(now);
}

bool is_overdue(const RuleSchedule& state, std::chrono::seconds period, TimePoint now) {
    if (period <= std::chrono::seconds{0}) {
        return false;
    }
    return now - state.watch_since > 2 * period;
}

} // namespace retentiond
