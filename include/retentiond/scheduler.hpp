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
    std::chrono::milliseconds initial{30000};
    std::chrono::milliseconds max{900000};
    // failures >= 1: initial * 2^(failures-1), capped at max.
    std::chrono::milliseconds delay(int failures) const;
};

// The daemon's knobs, from `daemon.splay` and `daemon.retry_backoff` (config.cpp).
struct SchedulerSettings {
    std::chrono::milliseconds max_splay{30000};
    Backoff backoff;
};

// A random delay in [0, max_splay], so that many rules scheduled at 03:00 do not start together.
std::chrono::milliseconds random_splay(std::chrono::milliseconds max_splay, std::mt19937_64& rng);

// The splay bound of one rule: daemon.splay, but at most a tenth of the rule's period, so that a
// rule on "every 2 seconds" is not started up to 30 s late (a period of 0, unknown, leaves
// daemon.splay as is).
std::chrono::milliseconds rule_splay(std::chrono::milliseconds max_splay,
                                     std::chrono::seconds period);

// Missed runs: a rule runs once at start when its last success is unknown or when a slot fell due
// since it (however many slots were missed); otherwise at its next slot.
TimePoint first_due(const NextSlot& next, TimePoint now, std::optional<TimePoint> last_success);

// The latest slot at or before `now` (the one a catch-up run at start stands for). `period` is
// the schedule's nominal period, a hint for how far back to look. Returns `now` when no slot is
// found within a century.
TimePoint latest_slot(const NextSlot& next, TimePoint now, std::chrono::seconds period);

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
    // The scheduled slot the next run stands for (without splay): what several daemons agree on
    // to run each slot once. A retry after an outage keeps the slot it failed.
    TimePoint slot{};
};

// Plans a rule at daemon start from its last success (read back from the audit log): returns
// its first due time (without splay) and sets state.slot (the latest slot for a catch-up run,
// else the next slot).
TimePoint plan_at_start(RuleSchedule& state, const NextSlot& next, std::chrono::seconds period,
                        TimePoint now, std::optional<TimePoint> last_success);

// The due time after a run that ended at `now`, and state.slot. An outage retries after the
// backoff delay (same slot), but never later than the next regular slot.
TimePoint after_run(RuleSchedule& state, RunOutcome outcome, const NextSlot& next, TimePoint now,
                    const Backoff& backoff);

// No success within 2x the schedule's period since the daemon started or the last success: the
// silent failure ops must see.
bool is_overdue(const RuleSchedule& state, std::chrono::seconds period, TimePoint now);

} // namespace retentiond
