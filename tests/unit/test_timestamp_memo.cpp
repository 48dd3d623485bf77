// TimestampMemo must give exactly what parse_timestamp() gives, transition days included.
#include "retentiond/timestamp_memo.hpp"

#include "retentiond/timeutil.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <date/tz.h>
#include <string>
#include <vector>

namespace retentiond {
namespace {

std::string stamp(date::sys_days day, int h, int m, int s) {
    const date::year_month_day ymd{day};
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02d:%02d:%02d", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()), h, m, s);
    return buf;
}

TEST(TimestampMemo, SameResultsAsParseTimestampOnEveryDayAndTransition) {
    const std::vector<const date::time_zone*> zones = {
        nullptr,
        find_zone("UTC"),
        find_zone("Europe/Paris"),
        find_zone("America/Sao_Paulo"), // transitions at local midnight
        find_zone("Australia/Lord_Howe"),
        find_zone("America/St_Johns")};
    const std::vector<std::array<int, 3>> times = {{0, 0, 0},  {0, 30, 0},  {1, 59, 59},
                                                   {2, 0, 0},  {2, 30, 0},  {3, 0, 0},
                                                   {12, 0, 1}, {23, 30, 0}, {23, 59, 59}};
    const date::sys_days first = date::year{2016} / 1 / 1;
    const date::sys_days last = date::year{2020} / 12 / 31;
    std::size_t checked = 0;
    for (const auto* tz : zones) {
        for (const std::string format : {"", "%Y-%m-%d %H:%M:%S", "%F %T"}) {
            TimestampMemo memo(format, tz);
            for (auto day = first; day <= last; day += date::days{1}) {
                for (const auto& [h, m, s] : times) {
                    const auto text = stamp(day, h, m, s);
                    ASSERT_EQ(memo.parse(text), parse_timestamp(text, format, tz))
                        << text << " in " << (tz != nullptr ? tz->name() : "null") << " format \""
                        << format << "\"";
                    ++checked;
                }
            }
        }
    }
    EXPECT_GT(checked, 200000U);
}

TEST(TimestampMemo, OtherShapesAndInvalidTextsFollowParseTimestamp) {
    const auto* tz = find_zone("Europe/Paris");
    const std::vector<std::string> texts = {"2023-02-29 10:00:00",
                                            "2024-02-29 10:00:00",
                                            "2024-13-01 10:00:00",
                                            "2024-00-10 10:00:00",
                                            "2024-01-00 10:00:00",
                                            "2024-01-01 24:00:00",
                                            "2024-01-01 23:60:00",
                                            "2024-01-01 23:59:60",
                                            "0000-01-01 00:00:00",
                                            "9999-12-31 23:59:59",
                                            " 2024-01-01 10:00:00",
                                            "2024-01-01T10:00:00",
                                            "2024-01-01 10:00:00Z",
                                            "2024-01-01 10:00:00+05:00",
                                            "2024-01-01",
                                            "2024-1-01 10:00:00",
                                            "2024-01-01 10:00:00.5",
                                            "2024-01-01  10:00:0",
                                            "2024/01/01 10:00:00",
                                            "",
                                            "2024-01-01 1a:00:00",
                                            "2024-03-31 02:30:00",
                                            "2024-10-27 02:30:00"};
    for (const std::string format : {"", "%Y-%m-%d %H:%M:%S", "%F %T", "%d/%m/%Y %H:%M"}) {
        TimestampMemo memo(format, tz);
        for (int round = 0; round < 2; ++round) { // with and without a remembered day
            for (const auto& t : texts) {
                EXPECT_EQ(memo.parse(t), parse_timestamp(t, format, tz))
                    << "\"" << t << "\" format \"" << format << "\"";
            }
        }
    }
}

// The date arithmetic of the fast path against the library's over all of 0001-9999 (leap rules
// of 1900, 2000, 2100 included), day after day and out of order, in UTC and in a zone.
TEST(TimestampMemo, CivilDaysMatchAcrossTheWholeYearRange) {
    std::vector<std::string> texts = {
        "1900-02-28 12:00:00", "1900-02-29 12:00:00", "1900-03-01 12:00:00", "2000-02-29 12:00:00",
        "2100-02-29 12:00:00", "2100-03-01 00:00:00", "0001-01-01 00:00:00", "0400-02-29 00:00:00"};
    std::uint32_t seed = 7;
    for (int i = 0; i < 20000; ++i) {
        seed = seed * 1664525U + 1013904223U;
        const int y = 1 + static_cast<int>((seed >> 4) % 9999);
        const auto m = 1 + (seed >> 20) % 12;
        const auto d = 1 + (seed >> 12) % 31;
        char buf[32];
        std::snprintf(buf, sizeof buf, "%04d-%02u-%02u 06:07:08", y, m, d);
        texts.emplace_back(buf);
        texts.emplace_back(buf); // the same day again: the remembered one
    }
    for (const auto* tz : {find_zone("UTC"), find_zone("Europe/Paris")}) {
        TimestampMemo memo("", tz);
        for (const auto& t : texts) {
            ASSERT_EQ(memo.parse(t), parse_timestamp(t, "", tz)) << t << " in " << tz->name();
        }
    }
}

} // namespace
} // namespace retentiond
