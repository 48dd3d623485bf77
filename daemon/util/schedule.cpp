#include "retentiond/schedule.hpp"

#include "localtime.hpp"
#include "retentiond/errors.hpp"

#include <array>
#include <optional>
#include <stdexcept>
#include <vector>

namespace retentiond {

namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr std::string_view k_accepted =
    "expected \"every N unit\" (unit: second, minute, hour, day or week; e.g. \"every 1h\", "
    "\"every 15 minutes\"), \"daily HH:MM\", \"weekly DAY HH:MM\" or a 5-field cron expression "
    "(\"0 3 * * *\")";

class ScheduleError : public ParseError {
public:
    ScheduleError(std::string_view text, std::string_view reason)
        : ParseError("invalid schedule \"" + std::string(text) +
                     "\": " + (reason.empty() ? std::string() : std::string(reason) + "; ") +
                     std::string(k_accepted)) {}
};

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::vector<std::string> split_words(std::string_view text) {
    std::vector<std::string> words;
    std::string current;
    for (const char c : text) {
        if (is_space(c)) {
            if (!current.empty()) {
                words.push_back(std::move(current));
                current.clear();
            }
        } else {
            current += c;
        }
    }
    if (!current.empty()) {
        words.push_back(std::move(current));
    }
    return words;
}

std::string lowered(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        c = lower(c);
    }
    return out;
}

std::optional<int> small_number(std::string_view s) {
    if (s.empty() || s.size() > 9) {
        return std::nullopt;
    }
    int value = 0;
    for (const char c : s) {
        if (!is_digit(c)) {
            return std::nullopt;
        }
        value = value * 10 + (c - '0');
    }
    return value;
}

// "03:00", "3:00".
bool parse_hh_mm(std::string_view s, int& hour, int& minute) {
    const auto colon = s.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon > 2 || s.size() - colon != 3) {
        return false;
    }
    const auto h = small_number(s.substr(0, colon));
    const auto m = small_number(s.substr(colon + 1));
    if (!h || !m || *h > 23 || *m > 59) {
        return false;
    }
    hour = *h;
    minute = *m;
    return true;
}

constexpr std::array<std::string_view, 7> k_day_short = {"sun", "mon", "tue", "wed",
                                                         "thu", "fri", "sat"};
constexpr std::array<std::string_view, 7> k_day_long = {
    "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"};
constexpr std::array<std::string_view, 12> k_month_short = {
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};

std::optional<int> weekday_from_name(std::string_view name) {
    const std::string l = lowered(name);
    for (int i = 0; i < 7; ++i) {
        if (l == k_day_short[static_cast<std::size_t>(i)] ||
            l == k_day_long[static_cast<std::size_t>(i)]) {
            return i;
        }
    }
    return std::nullopt;
}

// "every 1h", "every 15m", "every 30 minutes", "every hour".
Schedule parse_every(std::string_view text, const std::vector<std::string>& words) {
    std::string spec;
    for (std::size_t i = 1; i < words.size(); ++i) {
        spec += words[i];
        if (i + 1 < words.size()) {
            spec += ' ';
        }
    }
    std::size_t pos = 0;
    std::int64_t n = 0;
    std::size_t digits = 0;
    while (pos < spec.size() && is_digit(spec[pos])) {
        if (++digits > 9) {
            throw ScheduleError(text, "interval too large");
        }
        n = n * 10 + (spec[pos] - '0');
        ++pos;
    }
    if (digits == 0) {
        n = 1; // "every hour"
    }
    while (pos < spec.size() && is_space(spec[pos])) {
        ++pos;
    }
    const std::string unit = lowered(spec.substr(pos));
    std::int64_t unit_seconds = 0;
    if (unit == "s" || unit == "sec" || unit == "secs" || unit == "second" || unit == "seconds") {
        unit_seconds = 1;
    } else if (unit == "m" || unit == "min" || unit == "mins" || unit == "minute" ||
               unit == "minutes") {
        unit_seconds = 60; // no months here: "m" can only mean minutes
    } else if (unit == "h" || unit == "hr" || unit == "hrs" || unit == "hour" || unit == "hours") {
        unit_seconds = 3600;
    } else if (unit == "d" || unit == "day" || unit == "days") {
        unit_seconds = 86400;
    } else if (unit == "w" || unit == "week" || unit == "weeks") {
        unit_seconds = 7 * 86400;
    } else if (unit.empty()) {
        throw ScheduleError(text, "missing unit");
    } else {
        throw ScheduleError(text, "unknown unit \"" + unit + "\"");
    }
    if (n == 0) {
        throw ScheduleError(text, "the interval must be positive");
    }
    if (n * unit_seconds > std::int64_t{366} * 86400) {
        throw ScheduleError(text, "interval too large (at most one year)");
    }
    Schedule s;
    s.kind = Schedule::Kind::every;
    s.every = seconds{n * unit_seconds};
    return s;
}

// One cron field: "*", "*/15", "1-5", "1,15", "mon-fri", "jan", "10-50/10", "5/10".
template <std::size_t N>
void parse_cron_field(std::string_view text, std::string_view field, std::string_view what, int lo,
                      int hi, const std::array<std::string_view, 12>* names, int name_base,
                      bool is_dow, std::bitset<N>& out) {
    const auto value_of = [&](std::string_view token) -> int {
        if (const auto v = small_number(token)) {
            return *v;
        }
        if (names != nullptr) {
            const std::string l = lowered(token);
            for (std::size_t i = 0; i < names->size(); ++i) {
                if (!(*names)[i].empty() && l == (*names)[i]) {
                    return static_cast<int>(i) + name_base;
                }
            }
        }
        throw ScheduleError(text, std::string(what) + " field: \"" + std::string(token) +
                                      "\" is not a number or a name");
    };
    const auto in_range = [&](int v) {
        // Day of week 7 is Sunday, as in Vixie cron.
        if (v < lo || v > (is_dow ? 7 : hi)) {
            throw ScheduleError(text, std::string(what) + " field: " + std::to_string(v) +
                                          " is out of range " + std::to_string(lo) + "-" +
                                          std::to_string(hi));
        }
        return v;
    };
    std::size_t start = 0;
    while (start <= field.size()) {
        auto comma = field.find(',', start);
        if (comma == std::string_view::npos) {
            comma = field.size();
        }
        const std::string_view item = field.substr(start, comma - start);
        if (item.empty()) {
            throw ScheduleError(text, std::string(what) + " field: empty list item");
        }
        std::string_view range = item;
        int step = 1;
        if (const auto slash = item.find('/'); slash != std::string_view::npos) {
            range = item.substr(0, slash);
            const auto s = small_number(item.substr(slash + 1));
            if (!s || *s == 0) {
                throw ScheduleError(text, std::string(what) + " field: bad step in \"" +
                                              std::string(item) + "\"");
            }
            step = *s;
        }
        int first = lo;
        int last = is_dow ? 6 : hi;
        if (range != "*") {
            if (const auto dash = range.find('-'); dash != std::string_view::npos) {
                first = in_range(value_of(range.substr(0, dash)));
                last = in_range(value_of(range.substr(dash + 1)));
                if (first > last) {
                    throw ScheduleError(text, std::string(what) + " field: range \"" +
                                                  std::string(range) + "\" is reversed");
                }
            } else {
                first = in_range(value_of(range));
                // "5/10" means from 5 to the end, every 10.
                last = item.find('/') != std::string_view::npos ? (is_dow ? 6 : hi) : first;
            }
        }
        for (int v = first; v <= last; v += step) {
            out.set(static_cast<std::size_t>(is_dow ? v % 7 : v));
        }
        start = comma + 1;
    }
}

constexpr std::array<std::string_view, 12> k_dow_names = {"sun", "mon", "tue", "wed", "thu", "fri",
                                                          "sat", "",    "",    "",    "",    ""};

CronSpec parse_cron(std::string_view text, const std::vector<std::string>& fields) {
    CronSpec c;
    parse_cron_field(text, fields[0], "minute", 0, 59, nullptr, 0, false, c.minutes);
    parse_cron_field(text, fields[1], "hour", 0, 23, nullptr, 0, false, c.hours);
    parse_cron_field(text, fields[2], "day-of-month", 1, 31, nullptr, 0, false, c.days_of_month);
    parse_cron_field(text, fields[3], "month", 1, 12, &k_month_short, 1, false, c.months);
    parse_cron_field(text, fields[4], "day-of-week", 0, 6, &k_dow_names, 0, true, c.days_of_week);
    // Vixie cron: a field starting with '*' (even "*/2") does not restrict the day.
    c.dom_restricted = fields[2].front() != '*';
    c.dow_restricted = fields[4].front() != '*';
    if (c.dom_restricted && !c.dow_restricted) {
        // "0 0 30 2 *" is valid cron that never runs: refuse it rather than never purge.
        constexpr std::array<int, 13> k_longest = {0,  31, 29, 31, 30, 31, 30,
                                                   31, 31, 30, 31, 30, 31};
        bool possible = false;
        for (int m = 1; m <= 12 && !possible; ++m) {
            for (int d = 1; d <= k_longest[static_cast<std::size_t>(m)] && !possible; ++d) {
                possible = c.months.test(static_cast<std::size_t>(m)) &&
                           c.days_of_month.test(static_cast<std::size_t>(d));
            }
        }
        if (!possible) {
            throw ScheduleError(text, "no such day: it would never run");
        }
    }
    return c;
}

std::optional<std::string_view> cron_macro(std::string_view word) {
    if (word == "@hourly") {
        return "0 * * * *";
    }
    if (word == "@daily" || word == "@midnight") {
        return "0 0 * * *";
    }
    if (word == "@weekly") {
        return "0 0 * * 0";
    }
    if (word == "@monthly") {
        return "0 0 1 * *";
    }
    if (word == "@yearly" || word == "@annually") {
        return "0 0 1 1 *";
    }
    return std::nullopt;
}

bool day_matches(const CronSpec& c, date::local_days day) {
    const date::year_month_day ymd{day};
    if (!c.months.test(static_cast<unsigned>(ymd.month()))) {
        return false;
    }
    const bool dom = c.days_of_month.test(static_cast<unsigned>(ymd.day()));
    const bool dow = c.days_of_week.test(date::weekday{day}.c_encoding());
    if (c.dom_restricted && c.dow_restricted) {
        return dom || dow; // Vixie cron's OR rule
    }
    return dom && dow;
}

CronSpec as_cron(const Schedule& s) {
    if (s.kind == Schedule::Kind::cron) {
        return s.cron;
    }
    CronSpec c;
    c.minutes.set(static_cast<std::size_t>(s.minute));
    c.hours.set(static_cast<std::size_t>(s.hour));
    c.days_of_month.set();
    c.months.set();
    if (s.kind == Schedule::Kind::weekly) {
        c.days_of_week.set(static_cast<std::size_t>(s.weekday));
        c.dow_restricted = true;
    } else {
        c.days_of_week.set();
    }
    return c;
}

TimePoint next_cron(const CronSpec& c, TimePoint after, const date::time_zone* tz) {
    const auto local_after = detail::to_local(after, tz);
    // Away from any transition (more than a day from one), a wall-clock time maps to an instant
    // with the current offset alone; only candidates near a transition need the zone's rules.
    TimePoint fast_lo = TimePoint::max();
    TimePoint fast_hi = TimePoint::min();
    std::chrono::seconds fast_offset{0};
    if (tz != nullptr) {
        const auto info = tz->get_info(after);
        fast_lo = TimePoint{info.begin} + hours{26};
        fast_hi = TimePoint{info.end} - hours{26};
        fast_offset = info.offset;
    }
    // Wall-clock candidates earlier than this cannot land after `after`: no zone moves its clock
    // by more than a day at once (Samoa skipped 2011-12-30).
    const auto horizon = local_after - hours{26};
    const auto first_day = date::floor<date::days>(horizon);
    // dom-only specs were checked at parse time to hit a real day at least every 8 years.
    constexpr int k_max_days = 366 * 9;
    for (int offset = 0; offset < k_max_days; ++offset) {
        const date::local_days day = first_day + date::days{offset};
        if (!day_matches(c, day)) {
            continue;
        }
        for (int h = 0; h < 24; ++h) {
            if (!c.hours.test(static_cast<std::size_t>(h))) {
                continue;
            }
            const auto hour_start = day + hours{h};
            if (hour_start + hours{1} <= horizon) {
                continue;
            }
            for (int m = 0; m < 60; ++m) {
                if (!c.minutes.test(static_cast<std::size_t>(m))) {
                    continue;
                }
                const detail::LocalTime local{hour_start + minutes{m}};
                if (local < horizon) {
                    continue;
                }
                TimePoint at = TimePoint{local.time_since_epoch()} - fast_offset;
                if (tz != nullptr && (at < fast_lo || at >= fast_hi)) {
                    at = detail::from_local_schedule(local, tz);
                }
                if (at > after) {
                    return at;
                }
            }
        }
    }
    throw std::logic_error("cron schedule never fires");
}

} // namespace

std::chrono::seconds Schedule::period() const {
    switch (kind) {
    case Kind::every:
        return every;
    case Kind::daily:
        return hours{24};
    case Kind::weekly:
        return hours{24 * 7};
    case Kind::cron:
    default:
        break;
    }
    // The shortest gap between consecutive fires, in UTC from a fixed Monday: long enough to see
    // weekly and monthly patterns, bounded so a minutely spec stays cheap.
    const TimePoint reference{date::sys_days{date::year{2001} / 1 / 1}};
    const TimePoint end = reference + date::days{366 * 9};
    TimePoint previous = next_cron(cron, reference, nullptr);
    auto shortest = microseconds::max();
    for (int i = 0; i < 400 && previous < end; ++i) {
        const TimePoint next = next_cron(cron, previous, nullptr);
        shortest = std::min(shortest, next - previous);
        previous = next;
    }
    return std::chrono::duration_cast<seconds>(shortest);
}

Schedule parse_schedule(std::string_view text) {
    std::vector<std::string> words = split_words(text);
    std::string trimmed;
    for (const auto& w : words) {
        trimmed += trimmed.empty() ? w : " " + w;
    }
    if (words.empty()) {
        throw ScheduleError(trimmed, "");
    }
    const std::string head = lowered(words.front());
    Schedule s;
    if (head == "every") {
        if (words.size() < 2) {
            throw ScheduleError(trimmed, "missing interval");
        }
        s = parse_every(trimmed, words);
    } else if (head == "daily") {
        if (words.size() != 2 || !parse_hh_mm(words[1], s.hour, s.minute)) {
            throw ScheduleError(trimmed, "\"daily\" takes a time of day HH:MM");
        }
        s.kind = Schedule::Kind::daily;
    } else if (head == "weekly") {
        std::optional<int> day;
        if (words.size() == 3) {
            day = weekday_from_name(words[1]);
        }
        if (!day || !parse_hh_mm(words[2], s.hour, s.minute)) {
            throw ScheduleError(trimmed, "\"weekly\" takes a day (mon..sun) and a time HH:MM");
        }
        s.kind = Schedule::Kind::weekly;
        s.weekday = *day;
    } else if (const auto macro = cron_macro(head); macro && words.size() == 1) {
        s.kind = Schedule::Kind::cron;
        s.cron = parse_cron(trimmed, split_words(*macro));
    } else if (words.size() == 5) {
        s.kind = Schedule::Kind::cron;
        s.cron = parse_cron(trimmed, words);
    } else {
        throw ScheduleError(trimmed, "");
    }
    s.text = trimmed;
    return s;
}

TimePoint next_run(const Schedule& s, TimePoint after, const date::time_zone* tz) {
    if (s.kind == Schedule::Kind::every) {
        // Epoch-aligned, independent of the zone: "every 1h" fires on the hour, UTC.
        const auto step = std::chrono::duration_cast<microseconds>(s.every).count();
        if (step <= 0) {
            throw std::logic_error("schedule with a non-positive interval");
        }
        const auto since = after.time_since_epoch().count();
        auto slots = since / step;
        if (since % step != 0 && since < 0) {
            --slots; // floor division
        }
        return TimePoint{microseconds{(slots + 1) * step}};
    }
    return next_cron(as_cron(s), after, tz);
}

} // namespace retentiond
