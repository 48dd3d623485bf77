#include "retentiond/duration.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/timeutil.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <date/tz.h>

namespace retentiond {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::HasSubstr;

constexpr std::int64_t k_hour_us = 3'600'000'000;

// An instant given in UTC.
TimePoint utc(int y, unsigned m, unsigned d, int hh = 0, int mm = 0, int ss = 0) {
    return TimePoint{date::sys_days{date::year{y} / m / d}} + hours{hh} + minutes{mm} + seconds{ss};
}

const date::time_zone* paris() {
    return find_zone("Europe/Paris");
}

std::string parse_error(std::string_view text) {
    try {
        parse_duration(text);
    } catch (const ParseError& e) {
        return e.what();
    }
    return "(no error)";
}

constexpr std::string_view k_accepted =
    "expected \"N unit\" (unit: second, minute, hour, day, week, month or year, plural allowed), "
    "an ISO 8601 duration such as \"P2Y\", \"P1Y6M\" or \"PT12H\", \"session\" or \"0\"";

TEST(ParseDuration, WordsWithEveryUnitSingularAndPlural) {
    EXPECT_EQ(parse_duration("12 months").months, 12);
    EXPECT_EQ(parse_duration("1 month").months, 1);
    EXPECT_EQ(parse_duration("1 year").months, 12);
    EXPECT_EQ(parse_duration("2 years").months, 24);
    EXPECT_EQ(parse_duration("30 days").days, 30);
    EXPECT_EQ(parse_duration("1 day").days, 1);
    EXPECT_EQ(parse_duration("2 weeks").days, 14);
    EXPECT_EQ(parse_duration("12 hours").micros, 12 * k_hour_us);
    EXPECT_EQ(parse_duration("90 minutes").micros, 90 * 60'000'000LL);
    EXPECT_EQ(parse_duration("45 seconds").micros, 45'000'000LL);
    EXPECT_EQ(parse_duration("1 second").micros, 1'000'000LL);
}

TEST(ParseDuration, ShortFormsCaseAndCombinations) {
    EXPECT_EQ(parse_duration("12h").micros, 12 * k_hour_us);
    EXPECT_EQ(parse_duration("30d").days, 30);
    EXPECT_EQ(parse_duration("90min").micros, 90 * 60'000'000LL);
    EXPECT_EQ(parse_duration("2y").months, 24);
    EXPECT_EQ(parse_duration("13 Months").months, 13);
    const Duration d = parse_duration("1 year 6 months 2 days 3 hours");
    EXPECT_EQ(d.months, 18);
    EXPECT_EQ(d.days, 2);
    EXPECT_EQ(d.micros, 3 * k_hour_us);
    EXPECT_EQ(parse_duration("1 year, 6 months").months, 18);
}

TEST(ParseDuration, Iso8601) {
    EXPECT_EQ(parse_duration("P2Y").months, 24);
    EXPECT_EQ(parse_duration("P12M").months, 12);
    const Duration y1m6 = parse_duration("P1Y6M");
    EXPECT_EQ(y1m6.months, 18);
    EXPECT_EQ(y1m6.days, 0);
    EXPECT_EQ(parse_duration("PT12H").micros, 12 * k_hour_us);
    EXPECT_EQ(parse_duration("P2W").days, 14);
    const Duration mixed = parse_duration("P1DT2H30M");
    EXPECT_EQ(mixed.months, 0);
    EXPECT_EQ(mixed.days, 1);
    EXPECT_EQ(mixed.micros, 2 * k_hour_us + 30 * 60'000'000LL);
    EXPECT_EQ(parse_duration("PT1.5S").micros, 1'500'000);
    EXPECT_EQ(parse_duration("PT30M").micros, 30 * 60'000'000LL); // M after T is minutes
}

TEST(ParseDuration, SessionAndZero) {
    const Duration session = parse_duration("session");
    EXPECT_TRUE(session.session);
    EXPECT_TRUE(session.is_zero());

    const Duration zero = parse_duration("0");
    EXPECT_FALSE(zero.session);
    EXPECT_TRUE(zero.is_zero());

    const Duration pt0s = parse_duration("PT0S");
    EXPECT_FALSE(pt0s.session);
    EXPECT_TRUE(pt0s.is_zero());
}

TEST(ParseDuration, KeepsTheTextAsWritten) {
    EXPECT_EQ(parse_duration("  12 months ").text, "12 months");
    EXPECT_EQ(parse_duration("P1Y6M").text, "P1Y6M");
}

TEST(ParseDuration, BadInputsNameTheTextAndWhatIsAccepted) {
    EXPECT_EQ(parse_error(""), "invalid duration \"\": " + std::string(k_accepted));
    EXPECT_EQ(parse_error("forever"), "invalid duration \"forever\": " + std::string(k_accepted));
    EXPECT_EQ(parse_error("-1 day"),
              "invalid duration \"-1 day\": a duration cannot be negative; " +
                  std::string(k_accepted));
    EXPECT_EQ(parse_error("-P1D"), "invalid duration \"-P1D\": a duration cannot be negative; " +
                                       std::string(k_accepted));
    EXPECT_EQ(parse_error("12 fortnights"),
              "invalid duration \"12 fortnights\": unknown unit \"fortnights\"; " +
                  std::string(k_accepted));
    EXPECT_EQ(parse_error("12"),
              "invalid duration \"12\": missing unit after 12; " + std::string(k_accepted));
    EXPECT_EQ(parse_error("12 m"),
              "invalid duration \"12 m\": unit \"m\" is ambiguous (write \"min\" or \"months\"); " +
                  std::string(k_accepted));
    EXPECT_EQ(parse_error("1.5 hours"),
              "invalid duration \"1.5 hours\": only whole numbers are allowed (write \"90 "
              "minutes\", not \"1.5 hours\"); " +
                  std::string(k_accepted));
    EXPECT_EQ(parse_error("1 day 2 days"),
              "invalid duration \"1 day 2 days\": unit \"days\" given twice; " +
                  std::string(k_accepted));
    EXPECT_EQ(parse_error("20000 years"),
              "invalid duration \"20000 years\": too large (at most 10000 years); " +
                  std::string(k_accepted));
    EXPECT_EQ(parse_error("99999999999999 days"),
              "invalid duration \"99999999999999 days\": too large (at most 10000 years); " +
                  std::string(k_accepted));
}

TEST(ParseFixedDuration, MillisecondsAndDecimals) {
    EXPECT_EQ(parse_fixed_duration("40 ms").micros, 40'000);
    EXPECT_EQ(parse_fixed_duration("40ms").micros, 40'000);
    EXPECT_EQ(parse_fixed_duration("40 milliseconds").micros, 40'000);
    EXPECT_EQ(parse_fixed_duration("1 millisecond").micros, 1'000);
    EXPECT_EQ(parse_fixed_duration("0.04 seconds").micros, 40'000);
    EXPECT_EQ(parse_fixed_duration("0.5 s").micros, 500'000);
    EXPECT_EQ(parse_fixed_duration("1,5 s").micros, 1'500'000);
    EXPECT_EQ(parse_fixed_duration("1.5 hours").micros, 90 * 60'000'000LL);
    EXPECT_EQ(parse_fixed_duration("2.5 ms").micros, 2'500);
    EXPECT_EQ(parse_fixed_duration("1 second 500 ms").micros, 1'500'000);
    EXPECT_EQ(parse_fixed_duration("PT0.04S").micros, 40'000);
    EXPECT_EQ(parse_fixed_duration("30 seconds").micros, 30'000'000);
    EXPECT_EQ(parse_fixed_duration("0").micros, 0);
    EXPECT_EQ(parse_fixed_duration("40 ms").text, "40 ms");
    // Whole units parse as in calendar durations (the caller refuses months where it must).
    EXPECT_EQ(parse_fixed_duration("2 days").days, 2);
    EXPECT_EQ(parse_fixed_duration("1 month").months, 1);
    // Described from its values: "0.04 seconds".
    EXPECT_EQ(describe_duration(parse_fixed_duration("40 ms"), "en"), "0.04 seconds");
}

TEST(ParseFixedDuration, BadInputsSayWhatIsAccepted) {
    const auto error_of = [](const char* text) -> std::string {
        try {
            parse_fixed_duration(text);
        } catch (const ParseError& e) {
            return e.what();
        }
        return "(accepted)";
    };
    EXPECT_THAT(error_of("1.5 months"), HasSubstr("decimals are allowed with ms, seconds"));
    EXPECT_THAT(error_of("40 ms 2 ms"), HasSubstr("unit \"ms\" given twice"));
    EXPECT_THAT(error_of("40 mss"),
                HasSubstr("unknown unit \"mss\"; expected \"N unit\" (unit: ms,"));
    EXPECT_THAT(error_of("-40 ms"), HasSubstr("cannot be negative"));
    EXPECT_THAT(error_of("99999999999.5 weeks"), HasSubstr("too large"));
    // Calendar durations (retain) keep their rules.
    EXPECT_THROW(parse_duration("40 ms"), ParseError);
    EXPECT_THROW(parse_duration("0.04 seconds"), ParseError);
}

TEST(ParseDuration, MalformedIsoIsRejected) {
    for (const char* text : {"P", "PT", "P1H", "PT1Y", "P1M2Y", "P1YT", "P1.5Y", "PT1.S", "P1",
                             "p2y", "P2Y junk", "P1DT2H3H"}) {
        EXPECT_EQ(parse_error(text),
                  "invalid duration \"" + std::string(text) + "\": " + std::string(k_accepted))
            << text;
    }
}

TEST(Duration, ApproxCountsAMonthAsThirtyDays) {
    EXPECT_EQ(parse_duration("1 month").approx(), hours{24 * 30});
    EXPECT_EQ(parse_duration("P1Y1DT1H").approx(), hours{24 * 361 + 1});
    EXPECT_LT(parse_duration("30 days").approx(), parse_duration("P1M1D").approx());
}

TEST(Duration, PostgresIntervalLiteral) {
    EXPECT_EQ(parse_duration("12 months").to_pg_interval(), "12 mons 0 days 0:00:00.000000");
    EXPECT_EQ(parse_duration("P1DT2H30M").to_pg_interval(), "0 mons 1 days 2:30:00.000000");
    EXPECT_EQ(parse_duration("PT1.5S").to_pg_interval(), "0 mons 0 days 0:00:01.500000");
    EXPECT_EQ(parse_duration("1000 hours").to_pg_interval(), "0 mons 0 days 1000:00:00.000000");
    EXPECT_EQ(parse_duration("session").to_pg_interval(), "0 mons 0 days 0:00:00.000000");
}

TEST(DescribeDuration, FrenchAndEnglish) {
    const auto fr = [](std::string_view t) { return describe_duration(parse_duration(t), "fr"); };
    const auto en = [](std::string_view t) { return describe_duration(parse_duration(t), "en"); };
    EXPECT_EQ(fr("12 months"), "12 mois");
    EXPECT_EQ(en("12 months"), "12 months");
    EXPECT_EQ(fr("13 months"), "13 mois");
    EXPECT_EQ(fr("2 years"), "2 ans");
    EXPECT_EQ(en("2 years"), "2 years");
    EXPECT_EQ(fr("1 year"), "1 an");
    EXPECT_EQ(en("1 year"), "1 year");
    EXPECT_EQ(fr("P2Y"), "2 ans");
    EXPECT_EQ(fr("30 days"), "30 jours");
    EXPECT_EQ(en("30 days"), "30 days");
    EXPECT_EQ(fr("1 day"), "1 jour");
    EXPECT_EQ(fr("12 hours"), "12 heures");
    EXPECT_EQ(en("PT12H"), "12 hours");
    EXPECT_EQ(fr("30 minutes"), "30 minutes");
    EXPECT_EQ(fr("P1Y6M"), "1 an et 6 mois");
    EXPECT_EQ(en("P1Y6M"), "1 year and 6 months");
    EXPECT_EQ(fr("P1Y6M3D"), "1 an, 6 mois et 3 jours");
    EXPECT_EQ(fr("P2W"), "2 semaines");
    EXPECT_EQ(en("PT1.5S"), "1.5 seconds");
    EXPECT_EQ(fr("PT1.5S"), "1,5 seconde");
    EXPECT_EQ(fr("session"), "session");
    EXPECT_EQ(en("session"), "session");
    EXPECT_EQ(en("0"), "0 days");
    EXPECT_EQ(fr("0"), "0 jour");
}

TEST(DescribeDuration, ADurationBuiltInCodeIsDescribedFromItsValues) {
    Duration d;
    d.months = 18;
    d.days = 2;
    EXPECT_EQ(describe_duration(d, "fr"), "1 an, 6 mois et 2 jours");
    d.text = "12 months"; // stale text: the values win
    EXPECT_EQ(describe_duration(d, "en"), "1 year, 6 months and 2 days");
}

// Expected values below were checked against PostgreSQL 15 with SET timezone = 'Europe/Paris'.
TEST(AddDuration, LeapDayPlusOneYearClampsToFebruary28) {
    EXPECT_EQ(format_utc(add(utc(2024, 2, 29, 9), parse_duration("1 year"), paris())),
              format_utc(utc(2025, 2, 28, 9)));
    EXPECT_EQ(format_utc(add(utc(2024, 2, 29, 9), parse_duration("4 years"), paris())),
              format_utc(utc(2028, 2, 29, 9)));
    EXPECT_EQ(format_utc(add(utc(2024, 2, 29, 9), parse_duration("P1Y"), nullptr)),
              format_utc(utc(2025, 2, 28, 9)));
}

TEST(AddDuration, MonthEndClampsToTheShorterMonth) {
    EXPECT_EQ(format_utc(add(utc(2025, 1, 31, 9), parse_duration("1 month"), paris())),
              format_utc(utc(2025, 2, 28, 9)));
    EXPECT_EQ(format_utc(add(utc(2024, 1, 31, 9), parse_duration("1 month"), paris())),
              format_utc(utc(2024, 2, 29, 9)));
    EXPECT_EQ(format_utc(add(utc(2025, 3, 31, 8), parse_duration("1 month"), paris())),
              format_utc(utc(2025, 4, 30, 8)));
    EXPECT_EQ(format_utc(add(utc(2025, 12, 31, 9), parse_duration("2 months"), paris())),
              format_utc(utc(2026, 2, 28, 9)));
    // No carry-over: January 31 + 2 months is March 31, not March 28.
    EXPECT_EQ(format_utc(add(utc(2025, 1, 31, 9), parse_duration("2 months"), paris())),
              format_utc(utc(2025, 3, 31, 8)));
}

TEST(AddDuration, DaysKeepWallClockTimeAcrossParisDst) {
    // 2026-03-28 12:00 CET + 1 day = 2026-03-29 12:00 CEST (only 23 hours later).
    EXPECT_EQ(format_utc(add(utc(2026, 3, 28, 11), parse_duration("1 day"), paris())),
              "2026-03-29T10:00:00.000000Z");
    // 24 hours are exact: 13:00 CEST.
    EXPECT_EQ(format_utc(add(utc(2026, 3, 28, 11), parse_duration("24 hours"), paris())),
              "2026-03-29T11:00:00.000000Z");
    // 2026-10-24 12:00 CEST + 1 day = 2026-10-25 12:00 CET (25 hours later).
    EXPECT_EQ(format_utc(add(utc(2026, 10, 24, 10), parse_duration("1 day"), paris())),
              "2026-10-25T11:00:00.000000Z");
    // In UTC a day is 24 hours.
    EXPECT_EQ(format_utc(add(utc(2026, 3, 28, 11), parse_duration("1 day"), nullptr)),
              "2026-03-29T11:00:00.000000Z");
}

TEST(AddDuration, LandingInTheGapOrOverlapResolvesLikePostgres) {
    // 2026-03-28 02:30 CET + 1 day: 02:30 does not exist on the 29th; PostgreSQL gives 03:30 CEST.
    EXPECT_EQ(format_utc(add(utc(2026, 3, 28, 1, 30), parse_duration("1 day"), paris())),
              "2026-03-29T01:30:00.000000Z");
    // 2026-02-28 02:30 CET + 1 month 1 day: the same, through both steps.
    EXPECT_EQ(format_utc(add(utc(2026, 2, 28, 1, 30), parse_duration("P1M1D"), paris())),
              "2026-03-29T01:30:00.000000Z");
    // 2026-10-24 02:30 CEST + 1 day: 02:30 happens twice on the 25th; PostgreSQL takes the later
    // (02:30 CET = 01:30Z).
    EXPECT_EQ(format_utc(add(utc(2026, 10, 24, 0, 30), parse_duration("1 day"), paris())),
              "2026-10-25T01:30:00.000000Z");
}

TEST(AddDuration, SessionAndZeroLeaveTheTimeAlone) {
    const TimePoint t = utc(2026, 8, 14, 11, 22, 5);
    EXPECT_EQ(add(t, parse_duration("session"), paris()), t);
    EXPECT_EQ(add(t, parse_duration("0"), paris()), t);
    EXPECT_EQ(subtract(t, parse_duration("session"), paris()), t);
}

// subtract() is the exact cutoff: the latest c with add(c, d) <= t, so that "clock <= cutoff" is
// exactly "clock + retain <= now" (policy-format.md). It is not PostgreSQL's `t - interval`, which
// can be up to a day late (month ends) or an hour early (a DST gap).
TEST(SubtractDuration, ExactCutoffAcrossGapsAndMonthEnds) {
    // now = 2026-03-30 02:30 CEST. 2026-03-29 01:59:59.999999 CET + 1 day = 03-30 01:59:59 CEST,
    // due; 03:00 CEST (01:00Z) + 1 day = 03-30 03:00 CEST, not yet. PostgreSQL's 02:30 - 1 day
    // lands in the gap (03:30 CEST): a record there would be deleted an hour early.
    EXPECT_EQ(format_utc(subtract(utc(2026, 3, 30, 0, 30), parse_duration("1 day"), paris())),
              "2026-03-29T00:59:59.999999Z");
    // 2026-10-26 02:30 CET - 1 day lands in the overlap: the later 02:30 (CET).
    EXPECT_EQ(format_utc(subtract(utc(2026, 10, 26, 1, 30), parse_duration("1 day"), paris())),
              "2026-10-25T01:30:00.000000Z");
    // now = 2026-03-31 00:00 CEST: every clock up to the end of 02-28 is due after 1 month (02-28
    // 23:59 + 1 month = 03-28), 03-01 00:00 + 1 month = 04-01 is not.
    EXPECT_EQ(format_utc(subtract(utc(2026, 3, 30, 22), parse_duration("1 month"), paris())),
              "2026-02-28T22:59:59.999999Z");
    // 2024-02-29 10:00 + 1 year = 2025-02-28 10:00 (clamped) <= now: due.
    EXPECT_EQ(format_utc(subtract(utc(2025, 2, 28, 9), parse_duration("1 year"), paris())),
              "2024-02-29T09:00:00.000000Z");
    // Every instant up to the cutoff is due, the next is not.
    const TimePoint now = utc(2026, 3, 30, 0, 30);
    const auto day = parse_duration("1 day");
    const auto cut = subtract(now, day, paris());
    EXPECT_LE(add(cut, day, paris()), now);
    EXPECT_GT(add(cut + std::chrono::microseconds(1), day, paris()), now);
}

TEST(SubtractDuration, MixedUnits) {
    // 2026-03-31 00:00 CEST - (1 month 1 day): 02-28 23:59:59 + 1 month 1 day = 03-29 23:59:59,
    // due; 03-01 00:00 + P1M1D = 04-02, not.
    EXPECT_EQ(format_utc(subtract(utc(2026, 3, 30, 22), parse_duration("P1M1D"), paris())),
              "2026-02-28T22:59:59.999999Z");
    // Micros first: 2026-03-29 03:30 CEST - 2 hours = 00:30 CET on the 29th, then - 1 day.
    EXPECT_EQ(format_utc(subtract(utc(2026, 3, 29, 1, 30), parse_duration("P1DT2H"), paris())),
              "2026-03-27T23:30:00.000000Z");
}

TEST(SubtractDuration, CutoffNeverAdmitsARecordThatIsNotDue) {
    // For a rule's cutoff c = now - retain, a clock at c must satisfy clock + retain <= now.
    const Duration cases[] = {parse_duration("1 month"),  parse_duration("12 months"),
                              parse_duration("1 year"),   parse_duration("30 days"),
                              parse_duration("12 hours"), parse_duration("P1M1DT1H")};
    for (const auto& d : cases) {
        for (int day = 0; day < 3 * 366; ++day) {
            const TimePoint now = utc(2024, 1, 1, 11) + date::days{day};
            const TimePoint cutoff = subtract(now, d, paris());
            EXPECT_LE(add(cutoff, d, paris()), now) << d.text << " at " << format_utc(now);
        }
    }
}

} // namespace
} // namespace retentiond
