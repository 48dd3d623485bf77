#include "retentiond/errors.hpp"
#include "retentiond/schedule.hpp"
#include "retentiond/timeutil.hpp"

#include <gtest/gtest.h>

#include <date/tz.h>

namespace retentiond {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

TimePoint utc(int y, unsigned m, unsigned d, int hh = 0, int mm = 0, int ss = 0) {
    return TimePoint{date::sys_days{date::year{y} / m / d}} + hours{hh} + minutes{mm} + seconds{ss};
}

std::string next(std::string_view schedule, TimePoint after,
                 const date::time_zone* tz = find_zone("Europe/Paris")) {
    return format_utc_seconds(next_run(parse_schedule(schedule), after, tz));
}

std::string parse_error(std::string_view text) {
    try {
        parse_schedule(text);
    } catch (const ParseError& e) {
        return e.what();
    }
    return "(no error)";
}

constexpr std::string_view k_accepted =
    "expected \"every N unit\" (unit: second, minute, hour, day or week; e.g. \"every 1h\", "
    "\"every 15 minutes\"), \"daily HH:MM\", \"weekly DAY HH:MM\" or a 5-field cron expression "
    "(\"0 3 * * *\")";

TEST(ParseSchedule, Every) {
    EXPECT_EQ(parse_schedule("every 1h").every, hours{1});
    EXPECT_EQ(parse_schedule("every 15m").every, minutes{15});
    EXPECT_EQ(parse_schedule("every 30 minutes").every, minutes{30});
    EXPECT_EQ(parse_schedule("every hour").every, hours{1});
    EXPECT_EQ(parse_schedule("every 2 days").every, hours{48});
    EXPECT_EQ(parse_schedule("Every 90s").every, seconds{90});
    EXPECT_EQ(parse_schedule("every 1h").kind, Schedule::Kind::every);
    EXPECT_EQ(parse_schedule("  every   1h ").text, "every 1h");
}

TEST(ParseSchedule, DailyAndWeekly) {
    const Schedule daily = parse_schedule("daily 03:00");
    EXPECT_EQ(daily.kind, Schedule::Kind::daily);
    EXPECT_EQ(daily.hour, 3);
    EXPECT_EQ(daily.minute, 0);
    EXPECT_EQ(parse_schedule("daily 3:05").minute, 5);

    const Schedule weekly = parse_schedule("weekly mon 03:00");
    EXPECT_EQ(weekly.kind, Schedule::Kind::weekly);
    EXPECT_EQ(weekly.weekday, 1);
    EXPECT_EQ(weekly.hour, 3);
    EXPECT_EQ(parse_schedule("weekly Sunday 04:30").weekday, 0);
    EXPECT_EQ(parse_schedule("weekly sat 23:59").weekday, 6);
}

TEST(ParseSchedule, CronFields) {
    const Schedule s = parse_schedule("*/15 9-17 * * mon-fri");
    EXPECT_EQ(s.kind, Schedule::Kind::cron);
    EXPECT_EQ(s.cron.minutes.count(), 4U);
    EXPECT_TRUE(s.cron.minutes.test(45));
    EXPECT_EQ(s.cron.hours.count(), 9U);
    EXPECT_FALSE(s.cron.dom_restricted);
    EXPECT_TRUE(s.cron.dow_restricted);
    EXPECT_EQ(s.cron.days_of_week.to_string(), "0111110");

    const Schedule lists = parse_schedule("0,30 0 1,15 JAN,jul 7");
    EXPECT_EQ(lists.cron.minutes.count(), 2U);
    EXPECT_TRUE(lists.cron.days_of_month.test(15));
    EXPECT_TRUE(lists.cron.months.test(1));
    EXPECT_TRUE(lists.cron.months.test(7));
    EXPECT_EQ(lists.cron.months.count(), 2U);
    EXPECT_TRUE(lists.cron.days_of_week.test(0)); // 7 is Sunday
    EXPECT_TRUE(lists.cron.dom_restricted);

    const Schedule stepped = parse_schedule("5/20 */6 */2 * *");
    EXPECT_EQ(stepped.cron.minutes.count(), 3U); // 5, 25, 45
    EXPECT_TRUE(stepped.cron.minutes.test(25));
    EXPECT_EQ(stepped.cron.hours.count(), 4U);
    EXPECT_FALSE(stepped.cron.dom_restricted); // Vixie: "*/2" still counts as "*"

    EXPECT_EQ(parse_schedule("@daily").cron.hours.count(), 1U);
}

TEST(ParseSchedule, BadInputsAreExplained) {
    const std::string tail = std::string(k_accepted);
    EXPECT_EQ(parse_error(""), "invalid schedule \"\": " + tail);
    EXPECT_EQ(parse_error("sometimes"), "invalid schedule \"sometimes\": " + tail);
    EXPECT_EQ(parse_error("0 3 * * * *"), "invalid schedule \"0 3 * * * *\": " + tail);
    EXPECT_EQ(parse_error("every 0 minutes"),
              "invalid schedule \"every 0 minutes\": the interval must be positive; " + tail);
    EXPECT_EQ(parse_error("every 5 fortnights"),
              "invalid schedule \"every 5 fortnights\": unknown unit \"fortnights\"; " + tail);
    EXPECT_EQ(parse_error("every 2 years"),
              "invalid schedule \"every 2 years\": unknown unit \"years\"; " + tail);
    EXPECT_EQ(parse_error("every"), "invalid schedule \"every\": missing interval; " + tail);
    EXPECT_EQ(parse_error("daily 25:00"),
              "invalid schedule \"daily 25:00\": \"daily\" takes a time of day HH:MM; " + tail);
    EXPECT_EQ(parse_error("daily"),
              "invalid schedule \"daily\": \"daily\" takes a time of day HH:MM; " + tail);
    EXPECT_EQ(parse_error("weekly funday 03:00"),
              "invalid schedule \"weekly funday 03:00\": \"weekly\" takes a day (mon..sun) and a "
              "time HH:MM; " +
                  tail);
    EXPECT_EQ(parse_error("61 * * * *"),
              "invalid schedule \"61 * * * *\": minute field: 61 is out of range 0-59; " + tail);
    EXPECT_EQ(parse_error("0 0 * * 8"),
              "invalid schedule \"0 0 * * 8\": day-of-week field: 8 is out of range 0-6; " + tail);
    EXPECT_EQ(parse_error("5-1 * * * *"),
              "invalid schedule \"5-1 * * * *\": minute field: range \"5-1\" is reversed; " + tail);
    EXPECT_EQ(parse_error("*/0 * * * *"),
              "invalid schedule \"*/0 * * * *\": minute field: bad step in \"*/0\"; " + tail);
    EXPECT_EQ(parse_error("0 0 1,,2 * *"),
              "invalid schedule \"0 0 1,,2 * *\": day-of-month field: empty list item; " + tail);
    EXPECT_EQ(parse_error("0 0 * foo *"),
              "invalid schedule \"0 0 * foo *\": month field: \"foo\" is not a number or a name; " +
                  tail);
    EXPECT_EQ(parse_error("0 0 30 2 *"),
              "invalid schedule \"0 0 30 2 *\": no such day: it would never run; " + tail);
}

// Europe/Paris: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST -> 02:00 CET
// (01:00Z). Both are Sundays.
TEST(NextRun, DailyAcrossSpringForward) {
    EXPECT_EQ(next("daily 03:00", utc(2026, 3, 28, 2)), "2026-03-29T01:00:00Z"); // 03:00 CEST
    // 02:30 does not exist on the 29th: the run happens at the end of the gap, 03:00 CEST.
    EXPECT_EQ(next("daily 02:30", utc(2026, 3, 28, 1, 30)), "2026-03-29T01:00:00Z");
    EXPECT_EQ(next("daily 02:30", utc(2026, 3, 29, 1)), "2026-03-30T00:30:00Z");
    // Strictly after: a run time equal to `after` is not returned.
    EXPECT_EQ(next("daily 03:00", utc(2026, 3, 29, 1)), "2026-03-30T01:00:00Z");
}

TEST(NextRun, DailyAcrossFallBackRunsOnce) {
    // 02:30 happens twice on 2026-10-25: the run is at the first (CEST, 00:30Z) only.
    EXPECT_EQ(next("daily 02:30", utc(2026, 10, 24, 12)), "2026-10-25T00:30:00Z");
    EXPECT_EQ(next("daily 02:30", utc(2026, 10, 25, 0, 30)), "2026-10-26T01:30:00Z");
    EXPECT_EQ(next("daily 03:00", utc(2026, 10, 24, 12)), "2026-10-25T02:00:00Z");
}

TEST(NextRun, WeeklyAcrossBothTransitions) {
    EXPECT_EQ(next("weekly sun 02:30", utc(2026, 3, 22, 12)), "2026-03-29T01:00:00Z");
    EXPECT_EQ(next("weekly sun 02:30", utc(2026, 3, 29, 1)), "2026-04-05T00:30:00Z");
    EXPECT_EQ(next("weekly sun 02:30", utc(2026, 10, 19)), "2026-10-25T00:30:00Z");
    EXPECT_EQ(next("weekly sun 02:30", utc(2026, 10, 25, 0, 30)), "2026-11-01T01:30:00Z");
    EXPECT_EQ(next("weekly mon 03:00", utc(2026, 3, 27)), "2026-03-30T01:00:00Z");
    EXPECT_EQ(next("weekly mon 03:00", utc(2026, 10, 23)), "2026-10-26T02:00:00Z");
}

TEST(NextRun, CronAcrossBothTransitions) {
    EXPECT_EQ(next("30 2 * * *", utc(2026, 3, 28, 12)), "2026-03-29T01:00:00Z");
    // Every half hour: 01:30 CET, then 02:00 and 02:30 fall in the gap and collapse into one run at
    // 03:00 CEST, then 03:30 CEST.
    EXPECT_EQ(next("*/30 * * * *", utc(2026, 3, 29, 0, 15)), "2026-03-29T00:30:00Z");
    EXPECT_EQ(next("*/30 * * * *", utc(2026, 3, 29, 0, 30)), "2026-03-29T01:00:00Z");
    EXPECT_EQ(next("*/30 * * * *", utc(2026, 3, 29, 1)), "2026-03-29T01:30:00Z");
    // Fall back: 02:00 and 02:30 CEST run; their CET repeats do not; next is 03:00 CET.
    EXPECT_EQ(next("*/30 * * * *", utc(2026, 10, 24, 23, 45)), "2026-10-25T00:00:00Z");
    EXPECT_EQ(next("*/30 * * * *", utc(2026, 10, 25, 0)), "2026-10-25T00:30:00Z");
    EXPECT_EQ(next("*/30 * * * *", utc(2026, 10, 25, 0, 30)), "2026-10-25T02:00:00Z");
}

TEST(NextRun, EveryIsAlignedToTheEpochWhateverTheZone) {
    EXPECT_EQ(next("every 1h", utc(2026, 3, 29, 0, 59, 59)), "2026-03-29T01:00:00Z");
    EXPECT_EQ(next("every 1h", utc(2026, 3, 29, 1)), "2026-03-29T02:00:00Z");
    EXPECT_EQ(next("every 15m", utc(2026, 3, 29, 0, 50)), "2026-03-29T01:00:00Z");
    EXPECT_EQ(next("every 15m", utc(2026, 10, 25, 0, 50)), "2026-10-25T01:00:00Z");
    EXPECT_EQ(next("every 1h", utc(2026, 10, 25, 1), nullptr), "2026-10-25T02:00:00Z");
    EXPECT_EQ(next("every 1 day", utc(2026, 10, 25, 1)), "2026-10-26T00:00:00Z");
    // Before 1970 too (floor, not truncation).
    EXPECT_EQ(next("every 1h", utc(1969, 12, 31, 22, 30), nullptr), "1969-12-31T23:00:00Z");
}

TEST(NextRun, CronDayOfMonthOrDayOfWeek) {
    // Both restricted: the 15th OR any Monday. 2026-02-15 is a Sunday, 2026-02-16 a Monday.
    EXPECT_EQ(next("0 0 15 * 1", utc(2026, 2, 10, 12), nullptr), "2026-02-15T00:00:00Z");
    EXPECT_EQ(next("0 0 15 * 1", utc(2026, 2, 15), nullptr), "2026-02-16T00:00:00Z");
    // Only the day of month restricted: the 15th alone.
    EXPECT_EQ(next("0 0 15 * *", utc(2026, 2, 15), nullptr), "2026-03-15T00:00:00Z");
    // "*/2" leaves the day of month unrestricted, so the two combine with AND: odd-day Mondays.
    // 2026-02-02 is an even Monday; 2026-02-09 is odd.
    EXPECT_EQ(next("0 0 */2 * mon", utc(2026, 2, 1), nullptr), "2026-02-09T00:00:00Z");
}

TEST(NextRun, CronCalendarEdges) {
    EXPECT_EQ(next("0 0 29 2 *", utc(2026, 1, 1), nullptr), "2028-02-29T00:00:00Z");
    EXPECT_EQ(next("0 0 31 * *", utc(2026, 1, 31, 1), nullptr), "2026-03-31T00:00:00Z");
    EXPECT_EQ(next("0 12 * jun-aug sat", utc(2026, 1, 1), nullptr), "2026-06-06T12:00:00Z");
    EXPECT_EQ(next("59 23 31 12 *", utc(2026, 12, 31, 23, 59), nullptr), "2027-12-31T23:59:00Z");
    EXPECT_EQ(next("0 0 * * 7", utc(2026, 8, 14), nullptr), "2026-08-16T00:00:00Z");
    EXPECT_EQ(next("@hourly", utc(2026, 8, 14, 10, 1), nullptr), "2026-08-14T11:00:00Z");
    // Local wall-clock: 00:00 in Paris is 22:00Z in summer.
    EXPECT_EQ(next("0 0 * * *", utc(2026, 8, 14, 12)), "2026-08-14T22:00:00Z");
}

TEST(SchedulePeriod, NominalPeriods) {
    EXPECT_EQ(parse_schedule("every 15m").period(), minutes{15});
    EXPECT_EQ(parse_schedule("daily 03:00").period(), hours{24});
    EXPECT_EQ(parse_schedule("weekly mon 03:00").period(), hours{24 * 7});
    EXPECT_EQ(parse_schedule("*/15 * * * *").period(), minutes{15});
    EXPECT_EQ(parse_schedule("0 3 * * *").period(), hours{24});
    EXPECT_EQ(parse_schedule("0 3 * * 1-5").period(), hours{24});
    EXPECT_EQ(parse_schedule("0 0,12 * * *").period(), hours{12});
    EXPECT_EQ(parse_schedule("0 3 * * sun").period(), hours{24 * 7});
    EXPECT_EQ(parse_schedule("0 0 1 * *").period(), hours{24 * 28});
    EXPECT_EQ(parse_schedule("0 0 29 2 *").period(), hours{24 * 1461});
}

} // namespace
} // namespace retentiond
