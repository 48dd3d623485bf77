#pragma once

// Internal to retentiond_core: wall-clock <-> instant conversions shared by durations, schedules
// and timestamp parsing. Not a public contract.

#include "retentiond/duration.hpp"

#include <chrono>

#include <date/tz.h>

namespace retentiond::detail {

using LocalTime = date::local_time<std::chrono::microseconds>;

// Wall-clock time of t in tz (nullptr = UTC).
LocalTime to_local(TimePoint t, const date::time_zone* tz);

// A wall-clock time read as PostgreSQL reads a timestamptz without offset: a time in a
// spring-forward gap takes the offset in force before the gap (02:30 becomes 03:30 summer time),
// a time in a fall-back overlap takes the offset in force after it (the later instant). Both are
// "the later of the two candidate instants" (DetermineTimeZoneOffsetInternal in datetime.c).
TimePoint from_local_pg(LocalTime local, const date::time_zone* tz);

// A wall-clock time as a schedule reads it: in a gap, the first instant after the gap; in an
// overlap, the first occurrence.
TimePoint from_local_schedule(LocalTime local, const date::time_zone* tz);

} // namespace retentiond::detail
