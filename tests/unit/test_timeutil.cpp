#include "retentiond/errors.hpp"
#include "retentiond/timeutil.hpp"

#include <gtest/gtest.h>

#include <date/tz.h>

#include <string>

namespace retentiond {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::minutes;
using std::chrono::seconds;

TimePoint utc(int y, unsigned m, unsigned d, int hh = 0, int mm = 0, int ss = 0) {
    return TimePoint{date::sys_days{date::year{y} / m / d}} + hours{hh} + minutes{mm} + seconds{ss};
}

// The parsed instant in RFC 3339 UTC, or "nullopt".
std::string parsed(std::string_view text, std::string_view format = "",
                   const date::time_zone* tz = find_zone("Europe/Paris")) {
    const auto t = parse_timestamp(text, format, tz);
    return t ? format_utc(*t) : "nullopt";
}

TEST(FindZone, KnownAndUnknownNames) {
    EXPECT_EQ(find_zone("Europe/Paris")->name(), "Europe/Paris");
    EXPECT_NE(find_zone("UTC"), nullptr);
    try {
        find_zone("Europe/Pariss");
        FAIL() << "no exception";
    } catch (const ParseError& e) {
        EXPECT_STREQ(e.what(), "unknown time zone \"Europe/Pariss\": expected an IANA name such as "
                               "\"Europe/Paris\" or \"UTC\"");
    }
}

TEST(ZoneOrUtc, UnknownNameOrNoZoneIsUtc) {
    EXPECT_EQ(zone_or_utc("Europe/Paris")->name(), "Europe/Paris");
    EXPECT_EQ(zone_or_utc(std::string("Mars/Olympus"))->name(), "UTC");
    EXPECT_EQ(zone_or_utc("")->name(), "UTC");
    const date::time_zone* none = nullptr;
    EXPECT_EQ(zone_or_utc(none)->name(), "UTC");
    EXPECT_EQ(zone_or_utc(find_zone("Asia/Tokyo"))->name(), "Asia/Tokyo");
}

TEST(FormatUtc, MicrosAndSeconds) {
    const TimePoint t = utc(2026, 8, 14, 11, 22, 5) + microseconds{42};
    EXPECT_EQ(format_utc(t), "2026-08-14T11:22:05.000042Z");
    EXPECT_EQ(format_utc_seconds(t), "2026-08-14T11:22:05Z");
    EXPECT_EQ(format_utc(TimePoint{} - microseconds{1}), "1969-12-31T23:59:59.999999Z");
    EXPECT_EQ(format_utc_seconds(TimePoint{} - microseconds{1}), "1969-12-31T23:59:59Z");
}

TEST(NowUtc, IsAPlausibleTime) {
    EXPECT_GT(now_utc(), utc(2024, 1, 1));
    EXPECT_LT(now_utc(), utc(2200, 1, 1));
}

TEST(ParseTimestamp, Iso8601WithOffsetIsTakenAsIs) {
    EXPECT_EQ(parsed("2026-08-14T13:22:05Z"), "2026-08-14T13:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05+02:00"), "2026-08-14T11:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05-05:30"), "2026-08-14T18:52:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05+0200"), "2026-08-14T11:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05+02"), "2026-08-14T11:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14t13:22:05z"), "2026-08-14T13:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14 13:22:05 UTC"), "2026-08-14T13:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14 13:22:05+00:00", "", nullptr), "2026-08-14T13:22:05.000000Z");
}

TEST(ParseTimestamp, FractionalSeconds) {
    EXPECT_EQ(parsed("2026-08-14T13:22:05.123456Z"), "2026-08-14T13:22:05.123456Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05.5Z"), "2026-08-14T13:22:05.500000Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05,25Z"), "2026-08-14T13:22:05.250000Z");
    // Nanoseconds are rounded to the microsecond, as PostgreSQL does.
    EXPECT_EQ(parsed("2026-08-14T13:22:05.123456789Z"), "2026-08-14T13:22:05.123457Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05.9999995Z"), "2026-08-14T13:22:06.000000Z");
}

TEST(ParseTimestamp, WithoutOffsetIsLocalTimeInTheZone) {
    EXPECT_EQ(parsed("2026-08-14 13:22:05"), "2026-08-14T11:22:05.000000Z"); // CEST
    EXPECT_EQ(parsed("2026-01-14 13:22:05"), "2026-01-14T12:22:05.000000Z"); // CET
    EXPECT_EQ(parsed("2026-08-14T13:22"), "2026-08-14T11:22:00.000000Z");
    EXPECT_EQ(parsed("2026-08-14"), "2026-08-13T22:00:00.000000Z"); // local midnight
    EXPECT_EQ(parsed("2026-08-14 13:22:05", "", nullptr), "2026-08-14T13:22:05.000000Z");
    EXPECT_EQ(parsed("  2026-08-14 13:22:05\r\n"), "2026-08-14T11:22:05.000000Z");
}

TEST(ParseTimestamp, LocalTimesInTheDstGapAndOverlapResolveLikePostgres) {
    // SELECT '2026-03-29 02:30'::timestamptz under Europe/Paris gives 03:30 CEST.
    EXPECT_EQ(parsed("2026-03-29 02:30:00"), "2026-03-29T01:30:00.000000Z");
    // SELECT '2026-10-25 02:30'::timestamptz gives 02:30 CET, the later of the two.
    EXPECT_EQ(parsed("2026-10-25 02:30:00"), "2026-10-25T01:30:00.000000Z");
    // Just around the transitions.
    EXPECT_EQ(parsed("2026-03-29 01:59:59"), "2026-03-29T00:59:59.000000Z");
    EXPECT_EQ(parsed("2026-03-29 03:00:00"), "2026-03-29T01:00:00.000000Z");
    EXPECT_EQ(parsed("2026-10-25 01:59:59"), "2026-10-24T23:59:59.000000Z");
    EXPECT_EQ(parsed("2026-10-25 03:00:00"), "2026-10-25T02:00:00.000000Z");
}

TEST(ParseTimestamp, CalendarValidation) {
    EXPECT_EQ(parsed("2024-02-29", "", nullptr), "2024-02-29T00:00:00.000000Z");
    EXPECT_EQ(parsed("2026-02-29", "", nullptr), "nullopt");
    EXPECT_EQ(parsed("2026-04-31", "", nullptr), "nullopt");
    EXPECT_EQ(parsed("2026-13-01", "", nullptr), "nullopt");
    EXPECT_EQ(parsed("2026-00-10", "", nullptr), "nullopt");
    EXPECT_EQ(parsed("2026-08-14T24:00:00", "", nullptr), "nullopt");
    EXPECT_EQ(parsed("2026-08-14T23:60:00", "", nullptr), "nullopt");
    EXPECT_EQ(parsed("2026-08-14T23:59:60", "", nullptr), "nullopt");
}

TEST(ParseTimestamp, GarbageGivesNullopt) {
    for (const char* text : {"",
                             "   ",
                             "garbage",
                             "null",
                             "20260814",
                             "2026-8-14",
                             "2026-08-14T",
                             "2026-08-14T13",
                             "2026-08-14T13:22:05.",
                             "2026-08-14T13:22:05Zjunk",
                             "2026-08-14T13:22:05+25:00",
                             "2026-08-14T13:22:05+02:0",
                             "2026-08-14 13:22:05 CEST",
                             "2026-08-14x13:22:05",
                             "2026-08-14T13:22:05.1234567890Z",
                             "-2026-08-14",
                             "2026/08/14",
                             "\xc3\xa9t\xc3\xa9",
                             "2026-08-14T13:22:05++02:00",
                             "99999-01-01"}) {
        EXPECT_EQ(parsed(text), "nullopt") << text;
    }
    const std::string huge(100000, '9');
    EXPECT_EQ(parsed(huge), "nullopt");
    EXPECT_EQ(parsed(huge, "%Y"), "nullopt");
    EXPECT_EQ(parsed(std::string_view("2026-08-14\0", 11)), "nullopt");
}

TEST(ParseTimestamp, StrptimeFormats) {
    EXPECT_EQ(parsed("2026-08-14 13:22:05", "%Y-%m-%d %H:%M:%S"), "2026-08-14T11:22:05.000000Z");
    EXPECT_EQ(parsed("14/08/2026 13:22", "%d/%m/%Y %H:%M"), "2026-08-14T11:22:00.000000Z");
    EXPECT_EQ(parsed(" 4 Aug 2026", "%e %b %Y", nullptr), "2026-08-04T00:00:00.000000Z");
    EXPECT_EQ(parsed("4 august 2026", "%d %B %Y", nullptr), "2026-08-04T00:00:00.000000Z");
    EXPECT_EQ(parsed("2026-08-14 13:22:05+0200", "%F %T%z"), "2026-08-14T11:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05Z", "%Y-%m-%dT%H:%M:%S%z"), "2026-08-14T13:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14T13:22:05.250Z", "%Y-%m-%dT%H:%M:%S%z"),
              "2026-08-14T13:22:05.250000Z");
    EXPECT_EQ(parsed("2026-08-14 13:22:05 UTC", "%Y-%m-%d %H:%M:%S %Z"),
              "2026-08-14T13:22:05.000000Z");
    EXPECT_EQ(parsed("2026-08-14 13:22:05 Europe/Paris", "%Y-%m-%d %H:%M:%S %Z", nullptr),
              "2026-08-14T11:22:05.000000Z");
    EXPECT_EQ(parsed("1786714925", "%s"), "2026-08-14T13:42:05.000000Z");
    EXPECT_EQ(parsed("14.08.26", "%d.%m.%y", nullptr), "2026-08-14T00:00:00.000000Z");
    EXPECT_EQ(parsed("2024 060", "%Y %j", nullptr), "2024-02-29T00:00:00.000000Z");
    EXPECT_EQ(parsed("08/14/2026 01:22 PM", "%m/%d/%Y %I:%M %p", nullptr),
              "2026-08-14T13:22:00.000000Z");
    EXPECT_EQ(parsed("08/14/2026 12:05 AM", "%m/%d/%Y %I:%M %p", nullptr),
              "2026-08-14T00:05:00.000000Z");
    EXPECT_EQ(parsed("Fri, 14 Aug 2026 13:22:05 +0000", "%a, %d %b %Y %T %z"),
              "2026-08-14T13:22:05.000000Z");
    EXPECT_EQ(parsed("100%", "100%%", nullptr), "1970-01-01T00:00:00.000000Z");
}

TEST(ParseTimestamp, FormatMismatchGivesNullopt) {
    EXPECT_EQ(parsed("2026-08-14", "%Y-%m-%d %H:%M:%S"), "nullopt");
    EXPECT_EQ(parsed("2026-08-14 13:22:05 extra", "%Y-%m-%d %H:%M:%S"), "nullopt");
    EXPECT_EQ(parsed("2026-02-30", "%Y-%m-%d"), "nullopt");
    EXPECT_EQ(parsed("2026-08-14", "%Y-%m-%d %Q"), "nullopt"); // unsupported directive
    EXPECT_EQ(parsed("2026-08-14", "%Y-%m-%"), "nullopt");
    EXPECT_EQ(parsed("13 Augustus 2026", "%d %b %Y"), "nullopt");
    EXPECT_EQ(parsed("2026-08-14 13:22:05 Mars/Olympus", "%Y-%m-%d %H:%M:%S %Z"), "nullopt");
}

TEST(ParseEpochOrIso, EpochSecondsOrIso) {
    const auto fmt = [](std::string_view text) {
        const auto t = parse_epoch_or_iso(text, find_zone("Europe/Paris"));
        return t ? format_utc(*t) : "nullopt";
    };
    EXPECT_EQ(fmt("1786714925"), "2026-08-14T13:42:05.000000Z");
    EXPECT_EQ(fmt("1786714925.25"), "2026-08-14T13:42:05.250000Z");
    EXPECT_EQ(fmt("0"), "1970-01-01T00:00:00.000000Z");
    EXPECT_EQ(fmt("-1"), "1969-12-31T23:59:59.000000Z");
    EXPECT_EQ(fmt("2026-08-14T13:22:05+02:00"), "2026-08-14T11:22:05.000000Z");
    EXPECT_EQ(fmt("2026-08-14 13:22:05"), "2026-08-14T11:22:05.000000Z");
    EXPECT_EQ(fmt(""), "nullopt");
    EXPECT_EQ(fmt("12abc"), "nullopt");
    EXPECT_EQ(fmt("1.2.3"), "nullopt");
    EXPECT_EQ(fmt("-"), "nullopt");
    EXPECT_EQ(fmt("99999999999999999999"), "nullopt");
}

} // namespace
} // namespace retentiond
