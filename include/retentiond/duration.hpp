#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace date {
class time_zone;
}

namespace retentiond {

using TimePoint = std::chrono::sys_time<std::chrono::microseconds>;

// A retention period with PostgreSQL interval semantics: months, days and microseconds are kept
// apart, because "1 month" and "1 day" are calendar quantities whose length depends on the date
// and on the time zone (DST days last 23 or 25 hours).
struct Duration {
    std::int32_t months = 0;
    std::int32_t days = 0;
    std::int64_t micros = 0;
    bool session = false; // `retain: session`: zero, the clock marks the end of the session
    std::string text;     // as written, for messages and reports

    bool is_zero() const { return months == 0 && days == 0 && micros == 0; }
    // Rough length, for ordering and for estimates only (month = 30 days, like PostgreSQL's
    // interval comparison).
    std::chrono::microseconds approx() const;
    // A literal PostgreSQL understands: "12 mons 0 days 0.000000 secs" style; used as a $n
    // parameter cast to interval, never spliced into SQL.
    std::string to_pg_interval() const;
};

// "12 months", "1 year", "30 days", "90 minutes", "P2Y", "P1Y6M", "PT12H", "P2W", "session", "0".
// Throws ParseError with a message that quotes the text.
Duration parse_duration(std::string_view text);

// A duration that is not calendar-based (throttle, timeouts, backoff, splay): everything
// parse_duration() takes, plus milliseconds ("40 ms", "40 milliseconds") and decimals of the
// fixed units ("0.04 seconds", "0.5 s", "1.5 hours"), rounded down to the microsecond. Months and
// years still parse (the caller refuses them where they have no fixed length).
Duration parse_fixed_duration(std::string_view text);

// t + d as PostgreSQL computes timestamptz + interval in time zone tz: months first (day clamped
// to the month's end: 2025-01-31 + 1 month = 2025-02-28), then days (same local wall time), then
// the exact microseconds.
TimePoint add(TimePoint t, const Duration& d, const date::time_zone* tz);
// The exact cutoff of a rule: the latest instant c with add(c, d, tz) <= t, so that a record is due
// (clock <= c) exactly when clock + retain <= now.
TimePoint subtract(TimePoint t, const Duration& d, const date::time_zone* tz);

// Words for reports: "12 mois", "2 ans", "12 months", "session". lang is "fr" or "en".
std::string describe_duration(const Duration& d, std::string_view lang);

} // namespace retentiond
