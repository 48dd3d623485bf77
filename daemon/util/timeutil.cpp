#include "retentiond/timeutil.hpp"

#include "localtime.hpp"
#include "retentiond/errors.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>

namespace retentiond {

namespace detail {

namespace {

// Per-thread memo of the last zone period seen: CSV files hold millions of timestamps in the same
// few months, and get_info() costs more than the whole parse. Only local times more than a day
// away from the period's ends are answered from it, where no other offset can apply.
struct OffsetCache {
    const date::time_zone* zone = nullptr;
    LocalTime safe_begin{};
    LocalTime safe_end{};
    std::chrono::seconds offset{0};
};

std::optional<std::chrono::seconds> cached_offset(LocalTime local, const date::time_zone* tz,
                                                  OffsetCache& cache) {
    if (cache.zone == tz && local >= cache.safe_begin && local < cache.safe_end) {
        return cache.offset;
    }
    return std::nullopt;
}

void remember(const date::local_info& info, const date::time_zone* tz, OffsetCache& cache) {
    if (info.result != date::local_info::unique) {
        return;
    }
    constexpr std::chrono::hours k_margin{26};
    const auto begin = info.first.begin;
    const auto end = info.first.end;
    // The first and last periods reach the far past/future; keep the arithmetic away from them.
    if (end - begin <= 2 * k_margin || begin < date::sys_days{date::year{1800} / 1 / 1} ||
        end > date::sys_days{date::year{2400} / 1 / 1}) {
        return;
    }
    cache.zone = tz;
    cache.safe_begin = LocalTime{(begin + info.first.offset + k_margin).time_since_epoch()};
    cache.safe_end = LocalTime{(end + info.first.offset - k_margin).time_since_epoch()};
    cache.offset = info.first.offset;
}

thread_local OffsetCache t_offset_cache;

} // namespace

LocalTime to_local(TimePoint t, const date::time_zone* tz) {
    if (tz == nullptr) {
        return LocalTime{t.time_since_epoch()};
    }
    const auto info = tz->get_info(t);
    return LocalTime{t.time_since_epoch() + info.offset};
}

TimePoint from_local_pg(LocalTime local, const date::time_zone* tz) {
    const TimePoint as_utc{local.time_since_epoch()};
    if (tz == nullptr) {
        return as_utc;
    }
    if (const auto offset = cached_offset(local, tz, t_offset_cache)) {
        return as_utc - *offset;
    }
    const auto info = tz->get_info(date::floor<std::chrono::seconds>(local));
    remember(info, tz, t_offset_cache);
    const TimePoint first = as_utc - info.first.offset;
    if (info.result == date::local_info::unique) {
        return first;
    }
    // PostgreSQL keeps the later candidate in both cases: in a gap that is the pre-transition
    // offset (the time moves forward by the gap), in an overlap the post-transition one.
    const TimePoint second = as_utc - info.second.offset;
    return first > second ? first : second;
}

TimePoint from_local_schedule(LocalTime local, const date::time_zone* tz) {
    const TimePoint as_utc{local.time_since_epoch()};
    if (tz == nullptr) {
        return as_utc;
    }
    const auto info = tz->get_info(date::floor<std::chrono::seconds>(local));
    switch (info.result) {
    case date::local_info::nonexistent:
        return TimePoint{info.second.begin};
    case date::local_info::unique:
    case date::local_info::ambiguous:
    default:
        return as_utc - info.first.offset;
    }
}

} // namespace detail

namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::minutes;
using std::chrono::seconds;

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_space(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

// What a timestamp text said, before it becomes an instant.
struct Fields {
    int year = 1970;
    int month = 1;
    int day = 1;
    int hour = 0;
    int minute = 0;
    int second = 0;
    std::int64_t micros = 0;
    int yday = 0;      // %j, 1-based; 0 = not given
    int hour12 = -1;   // %I
    int meridiem = -1; // %p: 0 = AM, 1 = PM
    bool has_offset = false;
    int offset_seconds = 0;
    const date::time_zone* zone = nullptr; // %Z naming an IANA zone
    bool has_epoch = false;
    std::int64_t epoch_seconds = 0;
};

class Cursor {
public:
    explicit Cursor(std::string_view text) : m_text(text) {}

    bool eof() const { return m_pos >= m_text.size(); }
    char peek() const { return eof() ? '\0' : m_text[m_pos]; }
    char peek_at(std::size_t ahead) const {
        return m_pos + ahead < m_text.size() ? m_text[m_pos + ahead] : '\0';
    }
    void advance() { ++m_pos; }
    bool eat(char c) {
        if (peek() == c && !eof()) {
            ++m_pos;
            return true;
        }
        return false;
    }
    void skip_spaces() {
        while (!eof() && is_space(m_text[m_pos])) {
            ++m_pos;
        }
    }
    // Between min_digits and max_digits decimal digits.
    bool number(int min_digits, int max_digits, int& out) {
        int value = 0;
        int count = 0;
        while (count < max_digits && !eof() && is_digit(m_text[m_pos])) {
            value = value * 10 + (m_text[m_pos] - '0');
            ++m_pos;
            ++count;
        }
        if (count < min_digits) {
            return false;
        }
        out = value;
        return true;
    }
    // 1 to 9 digits after a decimal separator, rounded to microseconds.
    bool fraction(std::int64_t& micros) {
        std::int64_t value = 0;
        int count = 0;
        int next_digit = -1;
        while (!eof() && is_digit(m_text[m_pos])) {
            if (count < 6) {
                value = value * 10 + (m_text[m_pos] - '0');
            } else if (count == 6) {
                next_digit = m_text[m_pos] - '0';
            }
            ++m_pos;
            ++count;
        }
        if (count == 0 || count > 9) {
            return false;
        }
        for (int i = count; i < 6; ++i) {
            value *= 10;
        }
        if (next_digit >= 5) {
            ++value; // PostgreSQL rounds to the microsecond
        }
        micros = value;
        return true;
    }
    // A case-insensitive word from `words`; returns its index or -1. Longest match wins.
    template <std::size_t N> int word(const std::array<std::string_view, N>& words) {
        int best = -1;
        std::size_t best_len = 0;
        for (std::size_t w = 0; w < N; ++w) {
            const auto candidate = words[w];
            if (candidate.size() <= best_len || m_pos + candidate.size() > m_text.size()) {
                continue;
            }
            bool match = true;
            for (std::size_t k = 0; k < candidate.size(); ++k) {
                if (lower(m_text[m_pos + k]) != candidate[k]) {
                    match = false;
                    break;
                }
            }
            if (match) {
                best = static_cast<int>(w);
                best_len = candidate.size();
            }
        }
        m_pos += best_len;
        return best;
    }
    std::string_view rest() const { return m_text.substr(std::min(m_pos, m_text.size())); }
    void skip(std::size_t n) { m_pos += n; }

private:
    std::string_view m_text;
    std::size_t m_pos = 0;
};

constexpr std::array<std::string_view, 24> k_month_names = {
    "jan", "feb",  "mar",  "apr",    "may",       "jun",      "jul",      "aug",
    "sep", "oct",  "nov",  "dec",    "january",   "february", "march",    "april",
    "may", "june", "july", "august", "september", "october",  "november", "december"};
constexpr std::array<std::string_view, 14> k_weekday_names = {
    "sun",    "mon",    "tue",     "wed",       "thu",      "fri",    "sat",
    "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"};

// "Z", "+02:00", "+0200", "+02", "-05:30".
bool parse_offset(Cursor& in, Fields& f) {
    if (in.eat('Z') || in.eat('z')) {
        f.has_offset = true;
        f.offset_seconds = 0;
        return true;
    }
    int sign = 0;
    if (in.eat('+')) {
        sign = 1;
    } else if (in.eat('-')) {
        sign = -1;
    } else {
        return false;
    }
    int hh = 0;
    int mm = 0;
    if (!in.number(2, 2, hh)) {
        return false;
    }
    if (in.eat(':')) {
        if (!in.number(2, 2, mm)) {
            return false;
        }
    } else if (is_digit(in.peek())) {
        if (!in.number(2, 2, mm)) {
            return false;
        }
    }
    if (hh > 23 || mm > 59) {
        return false;
    }
    f.has_offset = true;
    f.offset_seconds = sign * (hh * 3600 + mm * 60);
    return true;
}

// The default, allocation-free path: ISO 8601 / RFC 3339 and "YYYY-MM-DD[ HH:MM[:SS[.f]]]".
bool parse_default(std::string_view text, Fields& f) {
    Cursor in(text);
    if (!in.number(4, 4, f.year) || !in.eat('-') || !in.number(2, 2, f.month) || !in.eat('-') ||
        !in.number(2, 2, f.day)) {
        return false;
    }
    if (in.eof()) {
        return true;
    }
    if (!(in.eat('T') || in.eat('t') || in.eat(' '))) {
        return false;
    }
    if (!in.number(2, 2, f.hour) || !in.eat(':') || !in.number(2, 2, f.minute)) {
        return false;
    }
    if (in.eat(':')) {
        if (!in.number(2, 2, f.second)) {
            return false;
        }
        if ((in.peek() == '.' || in.peek() == ',') && is_digit(in.peek_at(1))) {
            in.advance();
            if (!in.fraction(f.micros)) {
                return false;
            }
        }
    }
    if (in.eof()) {
        return true;
    }
    in.eat(' '); // "2026-08-14 13:22:05 +02:00", "... UTC"
    if (in.rest() == "UTC" || in.rest() == "GMT") {
        f.has_offset = true;
        f.offset_seconds = 0;
        return true;
    }
    return parse_offset(in, f) && in.eof();
}

bool parse_format(Cursor& in, std::string_view format, Fields& f, int depth);

// One small reader per directive that needs more than a line; parse_directive is the table.

bool parse_year(Cursor& in, Fields& f) {
    const bool negative = in.eat('-');
    if (!in.number(1, 4, f.year)) {
        return false;
    }
    if (negative) {
        f.year = -f.year;
    }
    return true;
}

bool parse_two_digit_year(Cursor& in, Fields& f) {
    int yy = 0;
    if (!in.number(1, 2, yy)) {
        return false;
    }
    f.year = yy < 69 ? 2000 + yy : 1900 + yy; // POSIX pivot
    return true;
}

bool parse_seconds(Cursor& in, std::string_view format_rest, Fields& f) {
    if (!in.number(1, 2, f.second)) {
        return false;
    }
    // Fractional seconds ride along with %S unless the format spells the separator itself.
    if ((in.peek() == '.' || in.peek() == ',') && is_digit(in.peek_at(1)) &&
        (format_rest.empty() || format_rest.front() != in.peek())) {
        in.advance();
        return in.fraction(f.micros);
    }
    return true;
}

bool parse_meridiem(Cursor& in, Fields& f) {
    constexpr std::array<std::string_view, 4> k_meridiem = {"am", "pm", "a.m.", "p.m."};
    const int w = in.word(k_meridiem);
    if (w < 0) {
        return false;
    }
    f.meridiem = w % 2;
    return true;
}

bool parse_month_name(Cursor& in, Fields& f) {
    const int w = in.word(k_month_names);
    if (w < 0) {
        return false;
    }
    f.month = w % 12 + 1;
    return true;
}

// %Z: "UTC"-like names mean offset 0, anything else must name an IANA zone.
bool parse_zone_name(Cursor& in, Fields& f) {
    const auto rest = in.rest();
    std::size_t n = 0;
    while (n < rest.size() &&
           (std::isalnum(static_cast<unsigned char>(rest[n])) != 0 || rest[n] == '/' ||
            rest[n] == '_' || rest[n] == '-' || rest[n] == '+')) {
        ++n;
    }
    const auto name = rest.substr(0, n);
    if (name.empty()) {
        return false;
    }
    in.skip(n);
    if (name == "Z" || name == "UTC" || name == "GMT" || name == "UT") {
        f.has_offset = true;
        f.offset_seconds = 0;
        return true;
    }
    try {
        f.zone = date::locate_zone(std::string(name));
        return true;
    } catch (const std::exception&) {
        return false;
    }
}

// %s: seconds since the epoch, at most 12 digits.
bool parse_epoch(Cursor& in, Fields& f) {
    const bool negative = in.eat('-');
    std::int64_t value = 0;
    int count = 0;
    while (is_digit(in.peek()) && count < 12) {
        value = value * 10 + (in.peek() - '0');
        in.advance();
        ++count;
    }
    if (count == 0 || is_digit(in.peek())) {
        return false;
    }
    f.has_epoch = true;
    f.epoch_seconds = negative ? -value : value;
    return true;
}

bool parse_directive(Cursor& in, char d, std::string_view format_rest, Fields& f, int depth) {
    switch (d) {
    case 'Y':
        return parse_year(in, f);
    case 'y':
        return parse_two_digit_year(in, f);
    case 'm':
        return in.number(1, 2, f.month);
    case 'd':
        return in.number(1, 2, f.day);
    case 'e':
        in.skip_spaces();
        return in.number(1, 2, f.day);
    case 'j':
        return in.number(1, 3, f.yday) && f.yday >= 1;
    case 'H':
    case 'k':
        in.skip_spaces();
        return in.number(1, 2, f.hour);
    case 'I':
    case 'l':
        in.skip_spaces();
        return in.number(1, 2, f.hour12) && f.hour12 >= 1 && f.hour12 <= 12;
    case 'M':
        return in.number(1, 2, f.minute);
    case 'S':
        return parse_seconds(in, format_rest, f);
    case 'f':
        return in.fraction(f.micros);
    case 'p':
        return parse_meridiem(in, f);
    case 'b':
    case 'B':
    case 'h':
        return parse_month_name(in, f);
    case 'a':
    case 'A':
        return in.word(k_weekday_names) >= 0; // read and ignored, as strptime does
    case 'z':
        return parse_offset(in, f);
    case 'Z':
        return parse_zone_name(in, f);
    case 's':
        return parse_epoch(in, f);
    case 'T':
        return parse_format(in, "%H:%M:%S", f, depth + 1);
    case 'F':
        return parse_format(in, "%Y-%m-%d", f, depth + 1);
    case 'D':
        return parse_format(in, "%m/%d/%y", f, depth + 1);
    case 'R':
        return parse_format(in, "%H:%M", f, depth + 1);
    case 'n':
    case 't':
        in.skip_spaces();
        return true;
    case '%':
        return in.eat('%');
    default:
        return false; // unsupported directive: nothing parses
    }
}

bool parse_format(Cursor& in, std::string_view format, Fields& f, int depth) {
    if (depth > 2) {
        return false;
    }
    for (std::size_t i = 0; i < format.size(); ++i) {
        const char c = format[i];
        if (c == '%') {
            if (++i >= format.size()) {
                return false;
            }
            char d = format[i];
            if ((d == 'E' || d == 'O') && i + 1 < format.size()) {
                d = format[++i]; // locale modifiers: no alternative forms here
            }
            if (!parse_directive(in, d, format.substr(i + 1), f, depth)) {
                return false;
            }
        } else if (is_space(c)) {
            in.skip_spaces();
        } else if (!in.eat(c)) {
            return false;
        }
    }
    return true;
}

std::optional<TimePoint> build(Fields& f, const date::time_zone* tz) {
    if (f.has_epoch) {
        return TimePoint{seconds{f.epoch_seconds}} + microseconds{f.micros};
    }
    if (f.hour12 >= 0) {
        f.hour = f.hour12 % 12 + (f.meridiem == 1 ? 12 : 0);
    } else if (f.meridiem == 1 && f.hour < 12) {
        f.hour += 12;
    }
    if (f.hour > 23 || f.minute > 59 || f.second > 59 || f.year < -9999 || f.year > 9999) {
        return std::nullopt;
    }
    date::local_days day;
    if (f.yday > 0) {
        const date::year y{f.year};
        if (f.yday > (y.is_leap() ? 366 : 365)) {
            return std::nullopt;
        }
        day = date::local_days{y / date::January / 1} + date::days{f.yday - 1};
    } else {
        const date::year_month_day ymd{date::year{f.year},
                                       date::month{static_cast<unsigned>(f.month)},
                                       date::day{static_cast<unsigned>(f.day)}};
        if (f.month < 1 || f.month > 12 || f.day < 1 || !ymd.ok()) {
            return std::nullopt;
        }
        day = date::local_days{ymd};
    }
    const detail::LocalTime local =
        day + hours{f.hour} + minutes{f.minute} + seconds{f.second} + microseconds{f.micros};
    if (f.has_offset) {
        return TimePoint{local.time_since_epoch()} - seconds{f.offset_seconds};
    }
    return detail::from_local_pg(local, f.zone != nullptr ? f.zone : tz);
}

std::string format_impl(TimePoint t, bool with_micros) {
    const auto day = date::floor<date::days>(t);
    const date::year_month_day ymd{day};
    const auto tod = t - day;
    const auto h = std::chrono::duration_cast<hours>(tod);
    const auto m = std::chrono::duration_cast<minutes>(tod - h);
    const auto s = std::chrono::duration_cast<seconds>(tod - h - m);
    const auto us = (tod - h - m - s).count();
    std::array<char, 48> buf{};
    if (with_micros) {
        std::snprintf(buf.data(), buf.size(), "%04d-%02u-%02uT%02d:%02d:%02d.%06dZ",
                      static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                      static_cast<unsigned>(ymd.day()), static_cast<int>(h.count()),
                      static_cast<int>(m.count()), static_cast<int>(s.count()),
                      static_cast<int>(us));
    } else {
        std::snprintf(buf.data(), buf.size(), "%04d-%02u-%02uT%02d:%02d:%02dZ",
                      static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                      static_cast<unsigned>(ymd.day()), static_cast<int>(h.count()),
                      static_cast<int>(m.count()), static_cast<int>(s.count()));
    }
    return buf.data();
}

} // namespace

const date::time_zone* find_zone(std::string_view name) {
    try {
        return date::locate_zone(std::string(name));
    } catch (const std::exception&) {
        throw ParseError("unknown time zone \"" + std::string(name) +
                         "\": expected an IANA name such as \"Europe/Paris\" or \"UTC\"");
    }
}

const date::time_zone* zone_or_utc(std::string_view name) {
    try {
        return find_zone(name);
    } catch (const std::exception&) {
        return find_zone("UTC");
    }
}

const date::time_zone* zone_or_utc(const date::time_zone* tz) {
    return tz != nullptr ? tz : find_zone("UTC");
}

std::optional<TimePoint> parse_timestamp(std::string_view text, std::string_view format,
                                         const date::time_zone* tz) {
    text = trim(text);
    Fields f;
    if (format.empty()) {
        if (!parse_default(text, f)) {
            return std::nullopt;
        }
    } else {
        Cursor in(text);
        if (!parse_format(in, format, f, 0)) {
            return std::nullopt;
        }
        in.skip_spaces();
        if (!in.eof()) {
            return std::nullopt;
        }
    }
    return build(f, tz);
}

std::optional<TimePoint> parse_epoch_or_iso(std::string_view text, const date::time_zone* tz) {
    text = trim(text);
    Cursor in(text);
    const bool negative = in.eat('-');
    std::int64_t whole = 0;
    int count = 0;
    while (is_digit(in.peek())) {
        if (++count > 12) {
            return std::nullopt; // beyond year 33658: not a clock
        }
        whole = whole * 10 + (in.peek() - '0');
        in.advance();
    }
    if (count > 0 && (in.eof() || in.peek() == '.')) {
        std::int64_t micros = 0;
        if (in.eat('.') && !in.eof() && !in.fraction(micros)) {
            return std::nullopt;
        }
        if (!in.eof()) {
            return std::nullopt;
        }
        const auto value = seconds{whole} + microseconds{micros};
        return TimePoint{negative ? -value : value};
    }
    if (negative || count < 4) {
        return std::nullopt;
    }
    return parse_timestamp(text, "", tz);
}

std::string format_utc(TimePoint t) {
    return format_impl(t, true);
}

std::string format_utc_seconds(TimePoint t) {
    return format_impl(date::floor<seconds>(t), false);
}

TimePoint now_utc() {
    return std::chrono::time_point_cast<microseconds>(std::chrono::system_clock::now());
}

} // namespace retentiond
