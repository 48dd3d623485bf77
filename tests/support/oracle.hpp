#pragma once
// The property tests' own calendar arithmetic, written apart from daemon/duration.cpp so that the
// oracles do not share the engines' code.

#include "retentiond/duration.hpp"

#include <cstdint>
#include <optional>

namespace retentiond::test {

// An unsigned integer from the environment (seeds, case counts), or fallback when unset/empty.
std::uint64_t env_u64(const char* name, std::uint64_t fallback);

// now - (months, days, micros) in zone tz, as PostgreSQL computes timestamptz - interval: months
// on the local date (day clamped to the month's end), then days on the local date at the same wall
// time, then exact microseconds. Negative values give timestamptz + interval. nullopt when a
// local result falls in a DST gap or overlap: such cases are regenerated rather than guessed.
std::optional<TimePoint> oracle_cutoff(TimePoint now, int months, int days, std::int64_t micros,
                                       const date::time_zone* tz);

} // namespace retentiond::test
