#pragma once

#include "retentiond/duration.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>

namespace retentiond {

// Pure timer planning for the daemon: every function takes "now" as an argument, so the unit tests
// drive it with an injected clock and the daemon with the system clock.

// The next slot of a rule's schedule strictly after a time (next_run() bound to a schedule and a
// time zone; a lambda in tests).
using NextSlot = std::function<TimePoint(TimePoint after)>;

// Retry delays after consecutive store outages: initial, doubled each time, capped.
struct Backoff {
    std::chrono::seconds initial{30};
    std::chrono::seconds max{900};
    // failures >= 1: initial * 2^(failures-1), capped at max.
    std::chrono::seconds delay(int failures) const;
};

// Knobs the daemon reads from the environment until they become config keys.
struct SchedulerSettings {
    std::chrono::seconds max_splay{30}; // RETENTIOND_SPLAY_SECONDS
    Backoff backoff;                    // RETENTIOND_BACKOFF_INITIAL_SECONDS / _MAX_SECONDS
};
SchedulerSettings scheduler_settings_from_env();

// A random delay in [0, max_splay], so that many rules scheduled at 03:00 do not start together.
std::chrono::milliseconds random_splay(std::chrono::seconds max_splay, std::mt19937_64& rng);

// Missed runs: a rule runs once at start when its last success is unknown or when a slot fell due
// since it (however many slots were missed); otherwise at its next slot.
TimePoint first_due(const NextSlot& next, TimePoint now, std::optional<TimePoint> last_success);

// How a run ended, as far as planning cares.
enum class RunOutcome {
    success,     // the rule ran (possibly processing nothing)
    unavailable, // its store was down: retry with backoff
    failed,      // refused by a limit, a data error...: a retry would fail the same way
    skipped,     // another host holds the rule's advisory lock: it runs the slot
    stopped,     // SIGTERM: no next run in this process
};

// Per-rule planning state, owned by the daemon's io thread.
struct RuleSchedule {
    std::optional<TimePoint> last_success;
    TimePoint watch_since{}; // overdue is measured from here (daemon start or last success)
    int consecutive_unavailable = 0;
};

// The due time after a run that ended at `now`. An outage retries after the backoff delay, but
// never later than the next regular slot.
TimePoint after_run(RuleSchedule& state, RunOutcome outcome, const NextSlot& next, TimePoint now,
                    const Backoff& backoff);

// No success within 2x the schedule's period since the daemon started or the last success: the
// silent failure ops must see.
bool is_overdue(const RuleSchedule& state, std::chrono::seconds period, TimePoint now);

} // namespace retentiond
