#include "retentiond/timestamp_memo.hpp"

#include "localtime.hpp"
#include "retentiond/timeutil.hpp"

#include <cstring>

namespace retentiond {

namespace {

int two(const char* p) {
    return (p[0] - '0') * 10 + (p[1] - '0');
}

// "YYYY-MM-DD HH:MM:SS", exactly: separators in place, digits elsewhere (one test per byte,
// no branch per digit: this runs once per record of multi-gigabyte files).
bool tally_shape(std::string_view t) {
    if (t.size() != 19 || t[4] != '-' || t[7] != '-' || t[10] != ' ' || t[13] != ':' ||
        t[16] != ':') {
        return false;
    }
    auto nd = [&t](std::size_t i) {
        return static_cast<unsigned>(static_cast<unsigned char>(t[i] - '0') > 9);
    };
    return (nd(0) | nd(1) | nd(2) | nd(3) | nd(5) | nd(6) | nd(8) | nd(9) | nd(11) | nd(12) |
            nd(14) | nd(15) | nd(17) | nd(18)) == 0;
}

// Days since 1970-01-01 of a valid proleptic Gregorian date (H. Hinnant's days_from_civil, as
// date::local_days computes it), or nullopt when the day is not in the month.
std::optional<std::int64_t> civil_days(int y, unsigned m, unsigned d) {
    static constexpr unsigned char k_month_days[] = {31, 28, 31, 30, 31, 30,
                                                     31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12 || d < 1) {
        return std::nullopt;
    }
    const bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    if (d > k_month_days[m - 1] + (m == 2 && leap ? 1U : 0U)) {
        return std::nullopt;
    }
    y -= m <= 2 ? 1 : 0;
    const int era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return std::int64_t{era} * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

} // namespace

TimestampMemo::TimestampMemo(std::string format, const date::time_zone* tz)
    : m_format(std::move(format)), m_tz(tz),
      m_fast(m_format.empty() || m_format == "%Y-%m-%d %H:%M:%S" || m_format == "%F %T") {}

std::optional<TimePoint> TimestampMemo::parse(std::string_view text) {
    if (!m_fast || !tally_shape(text)) {
        return parse_timestamp(text, m_format, m_tz);
    }
    const char* p = text.data();
    const int hour = two(p + 11);
    const int minute = two(p + 14);
    const int second = two(p + 17);
    if (hour > 23 || minute > 59 || second > 59) {
        return parse_timestamp(text, m_format, m_tz); // says why it does not parse
    }
    // Exports are mostly in submission order: the previous record's date is often this one's.
    if (std::memcmp(m_last_date, p, sizeof m_last_date) != 0) {
        const auto days = civil_days(two(p) * 100 + two(p + 2), static_cast<unsigned>(two(p + 5)),
                                     static_cast<unsigned>(two(p + 8)));
        if (!days) {
            return parse_timestamp(text, m_format, m_tz);
        }
        std::memcpy(m_last_date, p, sizeof m_last_date);
        m_last_days = *days;
    }
    const std::int64_t l = m_last_days * 86400 + hour * 3600 + minute * 60 + second;
    if (m_tz == nullptr) {
        return TimePoint{std::chrono::seconds{l}};
    }
    for (const auto& period : m_periods) {
        if (l >= period.safe_begin && l < period.safe_end) {
            return TimePoint{std::chrono::seconds{l - period.offset}};
        }
    }
    return in_new_period(l);
}

// Out of line: the zone lookup's large frame stays off the path taken once per record.
std::optional<TimePoint> TimestampMemo::in_new_period(std::int64_t l) {
    const date::local_seconds local{std::chrono::seconds{l}};
    const auto info = m_tz->get_info(local);
    if (info.result == date::local_info::unique) {
        // Any other offset is less than 26 hours away: it would put the instant inside this
        // period, where it is not in force.
        constexpr std::int64_t k_margin = 26 * 3600;
        const std::int64_t off = info.first.offset.count();
        const Period fresh{info.first.begin.time_since_epoch().count() + off + k_margin,
                           info.first.end.time_since_epoch().count() + off - k_margin, off};
        if (fresh.safe_begin < fresh.safe_end) {
            if (m_periods.size() < k_max_periods) {
                m_periods.push_back(fresh);
            } else {
                m_periods[m_replace] = fresh;
                m_replace = (m_replace + 1) % k_max_periods;
            }
        }
    }
    return detail::from_local_pg(detail::LocalTime{local}, m_tz);
}

} // namespace retentiond
