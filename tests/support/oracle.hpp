#pragma once
// The property tests' own calendar arithmetic, written apart from daemon/util/duration.cpp so that
// the oracles do not share the engines' code.

#include "retentiond/duration.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace retentiond::test {

// An unsigned integer from the environment (seeds, case counts), or fallback when unset/empty.
std::uint64_t env_u64(const char* name, std::uint64_t fallback);

// now - (months, days, micros) in zone tz, as PostgreSQL computes timestamptz - interval: months
// on the local date (day clamped to the month's end), then days on the local date at the same wall
// time, then exact microseconds. Negative values give timestamptz + interval. nullopt when a
// local result falls in a DST gap or overlap: such cases are regenerated rather than guessed.
std::optional<TimePoint> oracle_cutoff(TimePoint now, int months, int days, std::int64_t micros,
                                       const date::time_zone* tz);

// t + (months, days, micros) as PostgreSQL computes timestamptz + interval (months, then days,
// then time): the policy's definition of due is `clock + retain <= now`.
std::optional<TimePoint> oracle_add(TimePoint t, int months, int days, std::int64_t micros,
                                    const date::time_zone* tz);

// Whether `cutoff` is the exact cutoff (the latest c with c + retain <= now) for some now between
// before and after: cutoff + retain <= after, and (cutoff + 1 us) + retain > before. Subtracting
// the retain from now (oracle_cutoff) is not that: calendar arithmetic has no exact inverse, e.g.
// 2026-12-01 minus (1 month 2 days) is 2026-10-30, yet 2026-10-30 + 1 month 2 days = 2026-12-02.
// Empty when exact (or undecidable at a DST edge), else what is wrong.
std::string exact_cutoff_error(TimePoint cutoff, TimePoint before, TimePoint after, int months,
                               int days, std::int64_t micros, const date::time_zone* tz);

} // namespace retentiond::test
