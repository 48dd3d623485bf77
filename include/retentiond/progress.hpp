#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace retentiond {

// Progress of `purge --now` and of the daemon's runs, for people: on a terminal a bar per rule
// with the percentage, numbers grouped for reading and the rule's phase; off a terminal (systemd,
// Scalingo) a log line every ~10 s and sd_notify STATUS= with done/due.

// What a rule is doing: the phase the engine reported (counting, notices, batches,
// verification) and its records done out of those due.
struct ProgressState {
    std::string rule;
    std::string phase;
    std::int64_t done = 0;
    std::int64_t total = 0;
    std::chrono::milliseconds elapsed{0}; // since the rule started
};

// 1502436 -> "1,502,436".
std::string group_digits(std::int64_t n);
// "[#######-------------]" for a fraction in [0, 1], `width` cells between the brackets.
std::string progress_bar(double fraction, int width);
// "big  [#####---------------]  22.3%  335,752/1,502,436  168,756/s  ETA 7s  batches"; before
// the count is known: "big  counting...".
std::string progress_tty_line(const ProgressState& s);
// "rule big: batches, 335,752/1,502,436 due records done (22.3%), 168,756/s, ETA 7s".
std::string progress_log_line(const ProgressState& s);
// For STATUS=: "purging big (batches): 335,752/1,502,436 (22.3%)".
std::string progress_status(const ProgressState& s);

// Feeds the sinks from the engines' callbacks: the terminal at most every 100 ms (and at each
// phase change), the log every `log_every`, STATUS= at most every second. The clock is injected
// for tests.
class ProgressReporter {
public:
    using Clock = std::function<std::chrono::steady_clock::time_point()>;
    struct Sinks {
        std::function<void(const std::string&)> tty;    // one line, redrawn in place
        std::function<void(const std::string&)> log;    // a log line
        std::function<void(const std::string&)> status; // sd_notify STATUS=
    };
    explicit ProgressReporter(Sinks sinks,
                              std::chrono::milliseconds log_every = std::chrono::seconds{10},
                              Clock clock = &std::chrono::steady_clock::now);

    void phase(const std::string& rule, std::string_view phase);
    void progress(const std::string& rule, std::int64_t done, std::int64_t total);

private:
    void start_rule(const std::string& rule);
    void emit(bool force_tty);

    Sinks m_sinks;
    std::chrono::milliseconds m_log_every;
    Clock m_clock;
    ProgressState m_state;
    std::chrono::steady_clock::time_point m_rule_started{};
    std::chrono::steady_clock::time_point m_last_tty{};
    std::chrono::steady_clock::time_point m_last_log{};
    std::chrono::steady_clock::time_point m_last_status{};
    bool m_started = false;
};

} // namespace retentiond
