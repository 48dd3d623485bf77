#pragma once

#include "retentiond/duration.hpp"

#include <array>
#include <bitset>
#include <chrono>
#include <string>
#include <string_view>

namespace retentiond {

// A 5-field cron expression, expanded into sets. Day-of-month and day-of-week combine as in Vixie
// cron: when both are restricted, a day matches if either matches.
struct CronSpec {
    std::bitset<60> minutes;
    std::bitset<24> hours;
    std::bitset<32> days_of_month; // 1..31
    std::bitset<13> months;        // 1..12
    std::bitset<7> days_of_week;   // 0 = Sunday
    bool dom_restricted = false;
    bool dow_restricted = false;
};

struct Schedule {
    enum class Kind { every, daily, weekly, cron };
    Kind kind = Kind::daily;
    std::chrono::seconds every{0}; // Kind::every
    int hour = 3;                  // daily, weekly
    int minute = 0;
    int weekday = 1; // weekly: 0 = Sunday .. 6 = Saturday
    CronSpec cron;
    std::string text;

    // Nominal period, used for "overdue" (one period late) and "failing silently" (2 periods).
    std::chrono::seconds period() const;
};

// "every 1h", "every 15 minutes", "daily 03:00", "weekly mon 03:00", "0 3 * * *".
// Throws ParseError.
Schedule parse_schedule(std::string_view text);

// The first run time strictly after `after`, with wall-clock times read in tz. A local time that
// does not exist (spring-forward gap) runs at the first instant after the gap; one that exists
// twice (fall-back) runs once, at its first occurrence. `every` schedules are aligned to the epoch.
TimePoint next_run(const Schedule& s, TimePoint after, const date::time_zone* tz);

} // namespace retentiond
