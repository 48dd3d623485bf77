#include "support/oracle.hpp"

#include "retentiond/timeutil.hpp"

#include <date/date.h>
#include <date/tz.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace retentiond::test {

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? std::stoull(v) : fallback;
}

std::optional<TimePoint> oracle_cutoff(TimePoint now, int months, int days, std::int64_t micros,
                                       const date::time_zone* tz) {
    using std::chrono::microseconds;
    TimePoint t = now;
    if (months != 0 || days != 0) {
        const auto local = tz->to_local(now);
        const auto day = date::floor<date::days>(local);
        const auto tod = local - day;
        date::year_month_day ymd{day};
        if (months != 0) {
            const auto ym = date::year_month{ymd.year(), ymd.month()} - date::months{months};
            const date::year_month_day_last last{ym.year(), date::month_day_last{ym.month()}};
            const auto d =
                std::min(static_cast<unsigned>(ymd.day()), static_cast<unsigned>(last.day()));
            ymd = date::year_month_day{ym.year(), ym.month(), date::day{d}};
        }
        const auto shifted = date::local_days{ymd} - date::days{days} + tod;
        if (tz->get_info(date::floor<std::chrono::seconds>(shifted)).result !=
            date::local_info::unique) {
            return std::nullopt;
        }
        t = date::floor<microseconds>(tz->to_sys(shifted));
    }
    return t - microseconds(micros);
}

std::optional<TimePoint> oracle_add(TimePoint t, int months, int days, std::int64_t micros,
                                    const date::time_zone* tz) {
    return oracle_cutoff(t, -months, -days, -micros, tz);
}

std::string exact_cutoff_error(TimePoint cutoff, TimePoint before, TimePoint after, int months,
                               int days, std::int64_t micros, const date::time_zone* tz) {
    using std::chrono::microseconds;
    const auto at = oracle_add(cutoff, months, days, micros, tz);
    const auto next = oracle_add(cutoff + microseconds(1), months, days, micros, tz);
    if (!at || !next) {
        return {};
    }
    if (*at > after) {
        return "cutoff " + format_utc(cutoff) + " + retain = " + format_utc(*at) +
               " is after now " + format_utc(after) + " (records due early)";
    }
    if (*next <= before) {
        return "cutoff " + format_utc(cutoff) + " + 1us + retain = " + format_utc(*next) +
               " is not after now " + format_utc(before) + " (a later cutoff was due)";
    }
    return {};
}

} // namespace retentiond::test
