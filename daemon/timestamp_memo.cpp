#include "retentiond/timestamp_memo.hpp"

#include "localtime.hpp"
#include "retentiond/timeutil.hpp"

#include <cstring>

namespace retentiond {

namespace {

bool digit(char c) {
    return c >= '0' && c <= '9';
}

int two(const char* p) {
    return (p[0] - '0') * 10 + (p[1] - '0');
}

// "YYYY-MM-DD HH:MM:SS", exactly.
bool tally_shape(std::string_view t) {
    if (t.size() != 19 || t[4] != '-' || t[7] != '-' || t[10] != ' ' || t[13] != ':' ||
        t[16] != ':') {
        return false;
    }
    for (const int i : {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18}) {
        if (!digit(t[static_cast<std::size_t>(i)])) {
            return false;
        }
    }
    return true;
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
    const date::year_month_day ymd{date::year{two(p) * 100 + two(p + 2)},
                                   date::month{static_cast<unsigned>(two(p + 5))},
                                   date::day{static_cast<unsigned>(two(p + 8))}};
    if (!ymd.ok()) {
        return parse_timestamp(text, m_format, m_tz);
    }
    const date::local_seconds local{date::local_days{ymd} + std::chrono::hours{hour} +
                                    std::chrono::minutes{minute} + std::chrono::seconds{second}};
    const std::int64_t l = local.time_since_epoch().count();
    if (m_tz == nullptr) {
        return TimePoint{std::chrono::seconds{l}};
    }
    for (const auto& period : m_periods) {
        if (l >= period.safe_begin && l < period.safe_end) {
            return TimePoint{std::chrono::seconds{l - period.offset}};
        }
    }
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
