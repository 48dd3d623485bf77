#pragma once

#include "retentiond/duration.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace retentiond {

// Looks up an IANA zone ("Europe/Paris", "UTC"). Throws ParseError for an unknown name.
const date::time_zone* find_zone(std::string_view name);
// The zone named, or UTC when the name is unknown (the report: a config that loaded is valid, but
// a report never fails on its time zone).
const date::time_zone* zone_or_utc(std::string_view name);
// tz, or UTC when it is nullptr (a run context without a time zone).
const date::time_zone* zone_or_utc(const date::time_zone* tz);

// Parses a timestamp read from data (CSV field, JSON value, Redis hash field, file name match).
// With a strptime-style `format` (%Y %m %d %H %M %S %z %Z %b %e %j %T %F ...) it follows it;
// without one it accepts ISO 8601 / RFC 3339 ("2026-08-14T13:22:05Z", "...+02:00", fractional
// seconds), "2026-08-14 13:22:05", and a date alone ("2026-08-14", midnight). A text with an offset
// or Z is taken as is; one without is local time in tz. Returns nullopt when the text does not
// parse.
std::optional<TimePoint> parse_timestamp(std::string_view text, std::string_view format,
                                         const date::time_zone* tz);

// Epoch seconds (integer or decimal) or ISO 8601, for Redis `hash_field` clocks.
std::optional<TimePoint> parse_epoch_or_iso(std::string_view text, const date::time_zone* tz);

// "2026-08-14T11:22:05.000000Z": RFC 3339 in UTC, microseconds, for logs and reports.
std::string format_utc(TimePoint t);
// "2026-08-14T11:22:05Z": whole seconds.
std::string format_utc_seconds(TimePoint t);

TimePoint now_utc();

} // namespace retentiond
