#include "retentiond/duration.hpp"

#include "localtime.hpp"
#include "retentiond/errors.hpp"

#include <array>
#include <cstdio>
#include <optional>
#include <vector>

namespace retentiond {

namespace {

using std::chrono::microseconds;

constexpr std::int64_t k_micros_per_second = 1'000'000;
constexpr std::int64_t k_micros_per_minute = 60 * k_micros_per_second;
constexpr std::int64_t k_micros_per_hour = 60 * k_micros_per_minute;
constexpr std::int64_t k_micros_per_day = 24 * k_micros_per_hour;
// Retention periods beyond this are typos; the cap also keeps every sum far from overflow.
constexpr std::int64_t k_max_years = 10'000;

constexpr std::string_view k_accepted =
    "expected \"N unit\" (unit: second, minute, hour, day, week, month or year, plural allowed), "
    "an ISO 8601 duration such as \"P2Y\", \"P1Y6M\" or \"PT12H\", \"session\" or \"0\"";
constexpr std::string_view k_accepted_fixed =
    "expected \"N unit\" (unit: ms, second, minute, hour, day or week, plural allowed; decimals "
    "such as \"0.5 s\" allowed), an ISO 8601 duration such as \"PT30S\" or \"PT0.04S\", or "
    "\"0\"";

// Calendar durations (retain) keep whole numbers of calendar units; fixed ones (throttle,
// timeouts, backoff, splay) also take milliseconds and decimals.
enum class Mode { calendar, fixed };

// Units in the order a description lists them.
enum Unit { k_year, k_month, k_week, k_day, k_hour, k_minute, k_second, k_unit_count };

// A duration as written, unit by unit: reports say "1 an" for "1 year" but "12 mois" for
// "12 months", although both are 12 months once normalized.
struct Parts {
    std::array<std::int64_t, k_unit_count> count{};
    std::array<bool, k_unit_count> given{};
    std::int64_t fraction_micros = 0; // fractional seconds (ISO "PT1.5S")
    std::int64_t extra_micros = 0;    // fixed mode: milliseconds and decimals of any unit
    bool session = false;
};

class DurationError : public ParseError {
public:
    DurationError(std::string_view text, std::string_view reason, Mode mode = Mode::calendar)
        : ParseError("invalid duration \"" + std::string(text) +
                     "\": " + (reason.empty() ? std::string() : std::string(reason) + "; ") +
                     std::string(mode == Mode::fixed ? k_accepted_fixed : k_accepted)) {}
};

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
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

std::optional<Unit> unit_from_word(const std::string& word) {
    struct Alias {
        std::string_view word;
        Unit unit;
    };
    // "m" is left out on purpose: minutes or months is a guess we refuse to make.
    static constexpr std::array<Alias, 29> k_aliases = {{
        {"second", k_second}, {"seconds", k_second}, {"sec", k_second},     {"secs", k_second},
        {"s", k_second},      {"minute", k_minute},  {"minutes", k_minute}, {"min", k_minute},
        {"mins", k_minute},   {"hour", k_hour},      {"hours", k_hour},     {"h", k_hour},
        {"hr", k_hour},       {"hrs", k_hour},       {"day", k_day},        {"days", k_day},
        {"d", k_day},         {"week", k_week},      {"weeks", k_week},     {"w", k_week},
        {"month", k_month},   {"months", k_month},   {"mon", k_month},      {"mons", k_month},
        {"year", k_year},     {"years", k_year},     {"y", k_year},         {"yr", k_year},
        {"yrs", k_year},
    }};
    for (const auto& alias : k_aliases) {
        if (alias.word == word) {
            return alias.unit;
        }
    }
    return std::nullopt;
}

// Reads up to 12 digits (anything longer is far beyond k_max_years in any unit).
bool read_count(std::string_view text, std::size_t& pos, std::int64_t& out) {
    std::int64_t value = 0;
    std::size_t digits = 0;
    while (pos < text.size() && is_digit(text[pos])) {
        if (++digits > 12) {
            return false;
        }
        value = value * 10 + (text[pos] - '0');
        ++pos;
    }
    out = value;
    return digits > 0;
}

constexpr std::array<std::int64_t, k_unit_count> k_unit_micros = {0,
                                                                  0,
                                                                  7 * k_micros_per_day,
                                                                  k_micros_per_day,
                                                                  k_micros_per_hour,
                                                                  k_micros_per_minute,
                                                                  k_micros_per_second};

bool is_millisecond_word(const std::string& word) {
    return word == "ms" || word == "msec" || word == "msecs" || word == "millisecond" ||
           word == "milliseconds";
}

// Digits after a decimal point, as a fraction numerator/10^digits (at most 9 digits kept).
struct Fraction {
    std::int64_t numerator = 0;
    std::int64_t scale = 1;
    bool given = false;
};

Fraction read_fraction(std::string_view text, std::size_t& pos) {
    Fraction f;
    if (pos + 1 >= text.size() || (text[pos] != '.' && text[pos] != ',') ||
        !is_digit(text[pos + 1])) {
        return f;
    }
    f.given = true;
    ++pos;
    for (; pos < text.size() && is_digit(text[pos]); ++pos) {
        if (f.scale < 1'000'000'000) {
            f.numerator = f.numerator * 10 + (text[pos] - '0');
            f.scale *= 10;
        }
    }
    return f;
}

// One "N unit" term of a fixed duration that a calendar one would refuse ("40 ms", "0.5 s"):
// adds its microseconds to parts.extra_micros. Returns false when the term is an ordinary one.
bool add_fixed_term(std::string_view text, Parts& parts, std::int64_t n, const Fraction& f,
                    const std::string& word, bool& ms_given) {
    if (is_millisecond_word(word)) {
        if (ms_given) {
            throw DurationError(text, "unit \"" + word + "\" given twice", Mode::fixed);
        }
        ms_given = true;
        parts.extra_micros += n * 1000 + f.numerator * 1000 / f.scale;
        return true;
    }
    if (!f.given) {
        return false;
    }
    const auto unit = unit_from_word(word);
    if (!unit || k_unit_micros[*unit] == 0) {
        throw DurationError(text,
                            "decimals are allowed with ms, seconds, minutes, hours, days "
                            "and weeks only",
                            Mode::fixed);
    }
    if (parts.given[*unit]) {
        throw DurationError(text, "unit \"" + word + "\" given twice", Mode::fixed);
    }
    const std::int64_t per_unit = k_unit_micros[*unit];
    if (n > k_max_years * 366 * k_micros_per_day / per_unit) {
        throw DurationError(text, "too large (at most 10000 years)", Mode::fixed);
    }
    parts.given[*unit] = true;
    // The fraction in long double: numerator x per_unit can exceed 64 bits (weeks).
    parts.extra_micros +=
        n * per_unit + static_cast<std::int64_t>(static_cast<long double>(f.numerator) *
                                                 static_cast<long double>(per_unit) /
                                                 static_cast<long double>(f.scale));
    return true;
}

std::string read_word(std::string_view text, std::size_t& pos) {
    while (pos < text.size() && is_space(text[pos])) {
        ++pos;
    }
    std::string word;
    while (pos < text.size() && is_alpha(text[pos])) {
        word += lower(text[pos]);
        ++pos;
    }
    return word;
}

// "12 months", "1 year 6 months", "90min", "12h"; in fixed mode also "40 ms", "0.5 s".
Parts parse_words(std::string_view text, Mode mode) {
    Parts parts;
    bool ms_given = false;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::int64_t n = 0;
        const std::size_t start = pos;
        if (!read_count(text, pos, n)) {
            if (!is_digit(text[start])) {
                throw DurationError(text, "", mode);
            }
            throw DurationError(text, "too large (at most 10000 years)", mode);
        }
        const Fraction fraction = read_fraction(text, pos);
        if (fraction.given && mode == Mode::calendar) {
            throw DurationError(text, "only whole numbers are allowed (write \"90 minutes\", not "
                                      "\"1.5 hours\")");
        }
        const std::string word = read_word(text, pos);
        if (word.empty()) {
            throw DurationError(
                text, "missing unit after " + std::string(text.substr(start, pos - start)), mode);
        }
        if (mode == Mode::fixed && add_fixed_term(text, parts, n, fraction, word, ms_given)) {
            // counted in extra_micros
        } else if (const auto unit = unit_from_word(word)) {
            if (parts.given[*unit]) {
                throw DurationError(text, "unit \"" + word + "\" given twice", mode);
            }
            parts.given[*unit] = true;
            parts.count[*unit] = n;
        } else if (word == "m") {
            throw DurationError(text, "unit \"m\" is ambiguous (write \"min\" or \"months\")",
                                mode);
        } else {
            throw DurationError(text, "unknown unit \"" + word + "\"", mode);
        }
        // Terms are separated by spaces and an optional comma: "1 year, 6 months".
        while (pos < text.size() && (is_space(text[pos]) || text[pos] == ',')) {
            ++pos;
        }
    }
    return parts;
}

// An ISO designator read in the date part (before 'T') or the time part, and its rank: the
// designators must come in this order, each at most once.
struct Designator {
    char letter;
    bool in_time;
    Unit unit;
};
constexpr std::array<Designator, 7> k_designators = {{
    {'Y', false, k_year},
    {'M', false, k_month},
    {'W', false, k_week},
    {'D', false, k_day},
    {'H', true, k_hour},
    {'M', true, k_minute},
    {'S', true, k_second},
}};

// The index of `letter` in k_designators (its rank), or throws.
int designator_rank(std::string_view text, char letter, bool in_time) {
    for (std::size_t i = 0; i < k_designators.size(); ++i) {
        if (k_designators[i].letter == letter && k_designators[i].in_time == in_time) {
            return static_cast<int>(i);
        }
    }
    throw DurationError(text, "");
}

// ".f" or ",f" after an ISO number: microseconds (digits past the sixth ignored), or nullopt.
std::optional<std::int64_t> read_iso_fraction(std::string_view text, std::size_t& pos) {
    if (pos >= text.size() || (text[pos] != '.' && text[pos] != ',')) {
        return std::nullopt;
    }
    ++pos;
    std::int64_t fraction = 0;
    std::int64_t scale = 100'000;
    std::size_t digits = 0;
    while (pos < text.size() && is_digit(text[pos])) {
        if (digits < 6) {
            fraction += (text[pos] - '0') * scale;
            scale /= 10;
        }
        ++digits;
        ++pos;
    }
    if (digits == 0) {
        throw DurationError(text, "");
    }
    return fraction;
}

// P[nY][nM][nW][nD][T[nH][nM][n[.f]S]]
Parts parse_iso(std::string_view text) {
    Parts parts;
    std::size_t pos = 1; // after 'P'
    bool in_time = false;
    int last_rank = -1;
    while (pos < text.size()) {
        if (text[pos] == 'T') {
            if (in_time || ++pos >= text.size()) {
                throw DurationError(text, "");
            }
            in_time = true;
            continue;
        }
        std::int64_t n = 0;
        if (!read_count(text, pos, n)) {
            throw DurationError(text, pos < text.size() && is_digit(text[pos])
                                          ? "too large (at most 10000 years)"
                                          : "");
        }
        const auto fraction = read_iso_fraction(text, pos);
        if (pos >= text.size()) {
            throw DurationError(text, "");
        }
        const int rank = designator_rank(text, text[pos++], in_time);
        const Unit unit = k_designators[static_cast<std::size_t>(rank)].unit;
        if (rank <= last_rank || (fraction && unit != k_second)) {
            throw DurationError(text, "");
        }
        last_rank = rank;
        parts.given[unit] = true;
        parts.count[unit] = n;
        if (fraction) {
            parts.fraction_micros = *fraction;
        }
    }
    if (last_rank < 0 || (in_time && last_rank < 4)) {
        throw DurationError(text, "");
    }
    return parts;
}

Parts parse_parts(std::string_view text, Mode mode = Mode::calendar) {
    if (text.empty()) {
        throw DurationError(text, "", mode);
    }
    if (text == "session") {
        Parts parts;
        parts.session = true;
        return parts;
    }
    if (text == "0") {
        return Parts{};
    }
    if (text.front() == '-') {
        throw DurationError(text, "a duration cannot be negative", mode);
    }
    if (text.front() == 'P') {
        return parse_iso(text);
    }
    return parse_words(text, mode);
}

Duration normalize(std::string_view text, const Parts& parts) {
    const auto& c = parts.count;
    const std::int64_t months = c[k_year] * 12 + c[k_month];
    const std::int64_t days = c[k_week] * 7 + c[k_day];
    const std::int64_t micros = c[k_hour] * k_micros_per_hour + c[k_minute] * k_micros_per_minute +
                                c[k_second] * k_micros_per_second + parts.fraction_micros +
                                parts.extra_micros;
    // Each count is below 10^12, so none of the sums above can overflow.
    const std::int64_t approx_days = months * 30 + days + micros / k_micros_per_day;
    if (approx_days > k_max_years * 366) {
        throw DurationError(text, "too large (at most 10000 years)");
    }
    Duration d;
    d.months = static_cast<std::int32_t>(months);
    d.days = static_cast<std::int32_t>(days);
    d.micros = micros;
    d.session = parts.session;
    d.text = std::string(text);
    return d;
}

// Parts for a description: as written when the text still matches the values, otherwise rebuilt
// from the normalized values (a Duration built in code).
Parts describable_parts(const Duration& d) {
    if (!d.text.empty()) {
        try {
            const Parts written = parse_parts(trim(d.text));
            const Duration again = normalize(trim(d.text), written);
            if (again.months == d.months && again.days == d.days && again.micros == d.micros &&
                again.session == d.session) {
                return written;
            }
        } catch (const ParseError&) {
            // fall through to the normalized values
        }
    }
    Parts parts;
    parts.session = d.session;
    parts.count[k_year] = d.months / 12;
    parts.count[k_month] = d.months % 12;
    parts.count[k_day] = d.days;
    std::int64_t rest = d.micros;
    parts.count[k_hour] = rest / k_micros_per_hour;
    rest %= k_micros_per_hour;
    parts.count[k_minute] = rest / k_micros_per_minute;
    rest %= k_micros_per_minute;
    parts.count[k_second] = rest / k_micros_per_second;
    parts.fraction_micros = rest % k_micros_per_second;
    for (int u = 0; u < k_unit_count; ++u) {
        parts.given[u] = parts.count[u] != 0;
    }
    parts.given[k_second] = parts.given[k_second] || parts.fraction_micros != 0;
    return parts;
}

// "1.5" in English, "1,5" in French; trailing zeros dropped.
std::string decimal(std::int64_t whole, std::int64_t micros, bool french) {
    std::string out = std::to_string(whole);
    if (micros != 0) {
        std::array<char, 8> buf{};
        std::snprintf(buf.data(), buf.size(), "%06lld", static_cast<long long>(micros));
        std::string frac = buf.data();
        while (!frac.empty() && frac.back() == '0') {
            frac.pop_back();
        }
        out += french ? ',' : '.';
        out += frac;
    }
    return out;
}

// Calendar step of `months` months keeping the wall-clock time, the day clamped to the month's end.
TimePoint shift_months(TimePoint t, std::int64_t months, const date::time_zone* tz) {
    const auto local = detail::to_local(t, tz);
    const auto day = date::floor<date::days>(local);
    const auto time_of_day = local - day;
    const date::year_month_day ymd{day};
    const std::int64_t index = static_cast<int>(ymd.year()) * std::int64_t{12} +
                               (static_cast<unsigned>(ymd.month()) - 1) + months;
    const std::int64_t year = index >= 0 ? index / 12 : (index - 11) / 12;
    const auto month = static_cast<unsigned>(index - year * 12 + 1);
    const date::year_month y_m{date::year{static_cast<int>(year)}, date::month{month}};
    const date::day last =
        date::year_month_day_last{y_m.year(), date::month_day_last{y_m.month()}}.day();
    const date::day clamped = ymd.day() > last ? last : ymd.day();
    return detail::from_local_pg(date::local_days{y_m / clamped} + time_of_day, tz);
}

TimePoint shift_days(TimePoint t, std::int64_t days, const date::time_zone* tz) {
    const auto local = detail::to_local(t, tz);
    return detail::from_local_pg(local + date::days{days}, tz);
}

} // namespace

std::chrono::microseconds Duration::approx() const {
    return microseconds{(std::int64_t{months} * 30 + days) * k_micros_per_day + micros};
}

std::string Duration::to_pg_interval() const {
    // "M mons D days H:MM:SS.ffffff": PostgreSQL's interval input takes the hour field unbounded,
    // which keeps large hour counts exact (a "N secs" field is parsed as a 32-bit integer).
    const std::int64_t hours = micros / k_micros_per_hour;
    std::int64_t rest = micros % k_micros_per_hour;
    const std::int64_t mins = rest / k_micros_per_minute;
    rest %= k_micros_per_minute;
    const std::int64_t secs = rest / k_micros_per_second;
    rest %= k_micros_per_second;
    std::array<char, 96> buf{};
    std::snprintf(buf.data(), buf.size(), "%d mons %d days %lld:%02lld:%02lld.%06lld", months, days,
                  static_cast<long long>(hours), static_cast<long long>(mins),
                  static_cast<long long>(secs), static_cast<long long>(rest));
    return buf.data();
}

Duration parse_duration(std::string_view text) {
    const std::string_view trimmed = trim(text);
    return normalize(trimmed, parse_parts(trimmed));
}

Duration parse_fixed_duration(std::string_view text) {
    const std::string_view trimmed = trim(text);
    return normalize(trimmed, parse_parts(trimmed, Mode::fixed));
}

TimePoint add(TimePoint t, const Duration& d, const date::time_zone* tz) {
    if (d.months != 0) {
        t = shift_months(t, d.months, tz);
    }
    if (d.days != 0) {
        t = shift_days(t, d.days, tz);
    }
    return t + microseconds{d.micros};
}

TimePoint subtract(TimePoint t, const Duration& d, const date::time_zone* tz) {
    TimePoint c = t - microseconds{d.micros};
    if (d.days != 0) {
        c = shift_days(c, -std::int64_t{d.days}, tz);
    }
    if (d.months != 0) {
        c = shift_months(c, -std::int64_t{d.months}, tz);
    }
    if (d.months == 0 && d.days == 0) {
        return c; // exact: no calendar step
    }
    // The steps in reverse are not an exact inverse of add() (month-end clamping, a day step
    // landing in a DST gap), and a cutoff a little late would make records due early. Return
    // the exact cutoff instead: the latest instant c with add(c, d) <= t. add() never decreases
    // as its argument grows, and the reverse steps are off by at most a few days, so a binary
    // search over a window around the estimate finds it.
    constexpr auto k_window = std::chrono::hours(24 * 5);
    TimePoint lo = c - k_window; // add(lo) <= t
    TimePoint hi = c + k_window; // add(hi) > t
    if (add(lo, d, tz) > t || add(hi, d, tz) <= t) {
        return lo < c ? lo : c; // cannot happen for sane inputs; stay on the early side
    }
    while (hi - lo > microseconds{1}) {
        const TimePoint mid = lo + (hi - lo) / 2;
        if (add(mid, d, tz) <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

std::string describe_duration(const Duration& d, std::string_view lang) {
    if (d.session) {
        return "session";
    }
    const bool french = lang == "fr";
    struct Words {
        std::string_view one;
        std::string_view many;
    };
    static constexpr std::array<Words, k_unit_count> k_fr = {{{"an", "ans"},
                                                              {"mois", "mois"},
                                                              {"semaine", "semaines"},
                                                              {"jour", "jours"},
                                                              {"heure", "heures"},
                                                              {"minute", "minutes"},
                                                              {"seconde", "secondes"}}};
    static constexpr std::array<Words, k_unit_count> k_en = {{{"year", "years"},
                                                              {"month", "months"},
                                                              {"week", "weeks"},
                                                              {"day", "days"},
                                                              {"hour", "hours"},
                                                              {"minute", "minutes"},
                                                              {"second", "seconds"}}};
    const auto& words = french ? k_fr : k_en;
    const Parts parts = describable_parts(d);

    std::vector<std::string> terms;
    for (int u = 0; u < k_unit_count; ++u) {
        const std::int64_t n = parts.count[u];
        const std::int64_t fraction = u == k_second ? parts.fraction_micros : 0;
        if (n == 0 && fraction == 0) {
            continue;
        }
        // French: singular below 2 ("1,5 seconde"); English: singular for exactly 1.
        const bool singular = french ? n < 2 : (n == 1 && fraction == 0);
        terms.push_back(decimal(n, fraction, french) + " " +
                        std::string(singular ? words[u].one : words[u].many));
    }
    if (terms.empty()) {
        // A zero duration: name the unit that was written ("0 days"), days otherwise.
        int unit = k_day;
        for (int u = 0; u < k_unit_count; ++u) {
            if (parts.given[u]) {
                unit = u;
                break;
            }
        }
        return "0 " + std::string(french ? words[unit].one : words[unit].many);
    }
    std::string out = terms.front();
    for (std::size_t i = 1; i < terms.size(); ++i) {
        out += i + 1 == terms.size() ? (french ? " et " : " and ") : ", ";
        out += terms[i];
    }
    return out;
}

} // namespace retentiond
