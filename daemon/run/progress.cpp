#include "retentiond/progress.hpp"

#include <algorithm>
#include <cstdio>

namespace retentiond {

namespace {

using std::chrono::milliseconds;

double fraction_of(const ProgressState& s) {
    if (s.total <= 0) {
        return 0.0;
    }
    return std::clamp(static_cast<double>(s.done) / static_cast<double>(s.total), 0.0, 1.0);
}

std::string percent(const ProgressState& s) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * fraction_of(s));
    return buf;
}

// Records per second since the rule started; 0 when not measurable yet.
std::int64_t rate_of(const ProgressState& s) {
    const double secs = std::chrono::duration<double>(s.elapsed).count();
    return secs > 0.05 ? static_cast<std::int64_t>(static_cast<double>(s.done) / secs) : 0;
}

// "ETA 7s", "ETA 3m05s", "ETA 1h02m"; empty when unknown.
std::string eta_of(const ProgressState& s) {
    const std::int64_t rate = rate_of(s);
    if (rate <= 0 || s.done >= s.total) {
        return {};
    }
    const std::int64_t secs = (s.total - s.done + rate - 1) / rate;
    char buf[32];
    if (secs < 60) {
        std::snprintf(buf, sizeof buf, "ETA %llds", static_cast<long long>(secs));
    } else if (secs < 3600) {
        std::snprintf(buf, sizeof buf, "ETA %lldm%02llds", static_cast<long long>(secs / 60),
                      static_cast<long long>(secs % 60));
    } else {
        std::snprintf(buf, sizeof buf, "ETA %lldh%02lldm", static_cast<long long>(secs / 3600),
                      static_cast<long long>(secs % 3600 / 60));
    }
    return buf;
}

std::string counts(const ProgressState& s) {
    return group_digits(s.done) + "/" + group_digits(s.total);
}

} // namespace

std::string group_digits(std::int64_t n) {
    const bool negative = n < 0;
    const std::string digits = std::to_string(negative ? -n : n);
    std::string out;
    const std::size_t first = digits.size() % 3 == 0 ? 3 : digits.size() % 3;
    out = digits.substr(0, first);
    for (std::size_t i = first; i < digits.size(); i += 3) {
        out += ',';
        out += digits.substr(i, 3);
    }
    return negative ? "-" + out : out;
}

std::string progress_bar(double fraction, int width) {
    const int cells = std::max(1, width);
    const int full = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * cells + 1e-9);
    return "[" + std::string(static_cast<std::size_t>(full), '#') +
           std::string(static_cast<std::size_t>(cells - full), '-') + "]";
}

std::string progress_tty_line(const ProgressState& s) {
    if (s.total <= 0 && s.done <= 0) {
        return s.rule + "  " + (s.phase.empty() ? "starting" : s.phase) + "...";
    }
    std::string line = s.rule + "  " + progress_bar(fraction_of(s), 20) + " " + percent(s) + "  " +
                       counts(s) + "  " + group_digits(rate_of(s)) + "/s";
    const std::string eta = eta_of(s);
    if (!eta.empty()) {
        line += "  " + eta;
    }
    if (!s.phase.empty()) {
        line += "  " + s.phase;
    }
    return line;
}

std::string progress_log_line(const ProgressState& s) {
    std::string line = "rule " + s.rule + ": " + (s.phase.empty() ? "running" : s.phase);
    if (s.total > 0 || s.done > 0) {
        line += ", " + counts(s) + " due records done (" + percent(s) + "), " +
                group_digits(rate_of(s)) + "/s";
        const std::string eta = eta_of(s);
        if (!eta.empty()) {
            line += ", " + eta;
        }
    }
    return line;
}

std::string progress_status(const ProgressState& s) {
    std::string text = "purging " + s.rule;
    if (!s.phase.empty()) {
        text += " (" + s.phase + ")";
    }
    if (s.total > 0 || s.done > 0) {
        text += ": " + counts(s) + " (" + percent(s) + ")";
    }
    return text;
}

ProgressReporter::ProgressReporter(Sinks sinks, milliseconds log_every, Clock clock)
    : m_sinks(std::move(sinks)), m_log_every(log_every), m_clock(std::move(clock)) {}

void ProgressReporter::start_rule(const std::string& rule) {
    if (m_started && m_state.rule == rule) {
        return;
    }
    m_started = true;
    m_state = ProgressState{};
    m_state.rule = rule;
    m_rule_started = m_clock();
    m_last_log = m_rule_started; // a rule done within log_every logs no progress line
    m_last_tty = {};
    m_last_status = {};
}

void ProgressReporter::phase(const std::string& rule, std::string_view phase) {
    start_rule(rule);
    m_state.phase = std::string(phase);
    emit(/*force_tty=*/true);
}

void ProgressReporter::progress(const std::string& rule, std::int64_t done, std::int64_t total) {
    start_rule(rule);
    m_state.done = done;
    m_state.total = total;
    emit(/*force_tty=*/done >= total);
}

void ProgressReporter::emit(bool force_tty) {
    const auto now = m_clock();
    m_state.elapsed = std::chrono::duration_cast<milliseconds>(now - m_rule_started);
    if (m_sinks.tty && (force_tty || now - m_last_tty >= milliseconds{100})) {
        m_last_tty = now;
        m_sinks.tty(progress_tty_line(m_state));
    }
    if (m_sinks.log && now - m_last_log >= m_log_every) {
        m_last_log = now;
        m_sinks.log(progress_log_line(m_state));
    }
    if (m_sinks.status && (force_tty || now - m_last_status >= milliseconds{1000})) {
        m_last_status = now;
        m_sinks.status(progress_status(m_state));
    }
}

} // namespace retentiond
