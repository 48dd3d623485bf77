#pragma once

// A small parser of the Prometheus text exposition format 0.0.4, strict enough to fail on what
// Prometheus would reject: bad metric or label names, bad escapes, unparseable values, samples
// before their TYPE line, TYPE given twice, the same series twice. Shared by test_metrics and
// test_daemon (header-only: each test file is its own executable).

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace retentiond::test {

struct PromSample {
    std::string name;
    std::map<std::string, std::string> labels;
    double value = 0;
};

struct PromFamily {
    std::string type;
    std::string help;
};

struct PromText {
    std::map<std::string, PromFamily> families;
    std::vector<PromSample> samples;

    // The value of the one sample with this name and these labels; throws when absent.
    double value(const std::string& name, const std::map<std::string, std::string>& labels) const {
        for (const auto& s : samples) {
            if (s.name == name && s.labels == labels) {
                return s.value;
            }
        }
        throw std::out_of_range("no sample " + name);
    }
    bool has(const std::string& name, const std::map<std::string, std::string>& labels) const {
        for (const auto& s : samples) {
            if (s.name == name && s.labels == labels) {
                return true;
            }
        }
        return false;
    }
};

inline bool prom_valid_name(const std::string& n, bool label) {
    if (n.empty()) {
        return false;
    }
    for (std::size_t i = 0; i < n.size(); ++i) {
        const char c = n[i];
        const bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) {
            return false;
        }
    }
    return true;
}

// One line of the text being parsed, for its error messages.
struct PromLine {
    const std::string& text;
    int number;

    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("line " + std::to_string(number) + ": " + why + ": " + text);
    }
};

// "# HELP name text" or "# TYPE name type"; any other comment is ignored.
inline void prom_comment(const PromLine& line, PromText& out) {
    std::istringstream words(line.text.substr(1));
    std::string keyword;
    std::string name;
    words >> keyword >> name;
    if (keyword != "HELP" && keyword != "TYPE") {
        return; // a plain comment
    }
    if (!prom_valid_name(name, false)) {
        line.fail("bad metric name");
    }
    std::string rest;
    std::getline(words >> std::ws, rest);
    auto& family = out.families[name];
    if (keyword != "TYPE") {
        family.help = rest;
        return;
    }
    static const std::set<std::string> k_types{"counter", "gauge", "histogram", "summary",
                                               "untyped"};
    if (!family.type.empty()) {
        line.fail("TYPE given twice");
    }
    if (k_types.count(rest) == 0) {
        line.fail("unknown type");
    }
    for (const auto& s : out.samples) {
        if (s.name == name) {
            line.fail("TYPE after samples");
        }
    }
    family.type = rest;
}

// A quoted label value starting at `j` (after its opening quote), unescaped; `j` ends on the
// closing quote.
inline std::string prom_label_value(const PromLine& line, std::size_t& j) {
    const std::string& text = line.text;
    std::string value;
    for (; j < text.size() && text[j] != '"'; ++j) {
        if (text[j] != '\\') {
            value += text[j];
            continue;
        }
        if (++j >= text.size()) {
            line.fail("dangling escape");
        }
        switch (text[j]) {
        case '\\':
            value += '\\';
            break;
        case '"':
            value += '"';
            break;
        case 'n':
            value += '\n';
            break;
        default:
            line.fail("bad escape");
        }
    }
    if (j >= text.size()) {
        line.fail("unterminated label value");
    }
    return value;
}

// The label set starting at `i` (after '{'); `i` ends after the closing '}'.
inline void prom_labels(const PromLine& line, std::size_t& i, PromSample& sample) {
    const std::string& text = line.text;
    while (i < text.size() && text[i] != '}') {
        const auto eq = text.find('=', i);
        if (eq == std::string::npos || eq + 1 >= text.size() || text[eq + 1] != '"') {
            line.fail("bad label");
        }
        const std::string key = text.substr(i, eq - i);
        if (!prom_valid_name(key, true)) {
            line.fail("bad label name");
        }
        std::size_t j = eq + 2;
        const std::string value = prom_label_value(line, j);
        if (!sample.labels.emplace(key, value).second) {
            line.fail("label given twice");
        }
        i = j + 1;
        if (i < text.size() && text[i] == ',') {
            ++i;
        }
    }
    if (i >= text.size()) {
        line.fail("unterminated label set");
    }
    ++i;
}

inline double prom_value(const PromLine& line, const std::string& value) {
    if (value == "NaN" || value == "+Inf" || value == "-Inf") {
        return value == "NaN" ? NAN : (value[0] == '-' ? -INFINITY : INFINITY);
    }
    char* end = nullptr;
    const double parsed = std::strtod(value.c_str(), &end);
    if (end == value.c_str() || (*end != '\0' && *end != ' ')) {
        line.fail("bad value");
    }
    return parsed;
}

// "name{label="value",...} value": appended to out.samples, its series added to `series`.
inline void prom_sample(const PromLine& line, PromText& out, std::set<std::string>& series) {
    const std::string& text = line.text;
    PromSample sample;
    std::size_t i = 0;
    while (i < text.size() && text[i] != '{' && text[i] != ' ') {
        ++i;
    }
    sample.name = text.substr(0, i);
    if (!prom_valid_name(sample.name, false)) {
        line.fail("bad metric name");
    }
    if (i < text.size() && text[i] == '{') {
        ++i;
        prom_labels(line, i, sample);
    }
    if (i >= text.size() || text[i] != ' ') {
        line.fail("no value");
    }
    sample.value = prom_value(line, text.substr(i + 1));
    const auto family = out.families.find(sample.name);
    if (family == out.families.end() || family->second.type.empty()) {
        line.fail("sample without TYPE");
    }
    std::string key = sample.name;
    for (const auto& [k, v] : sample.labels) {
        key += '\x1f' + k + '\x1e' + v;
    }
    if (!series.insert(key).second) {
        line.fail("series given twice");
    }
    out.samples.push_back(std::move(sample));
}

inline PromText parse_prometheus(const std::string& text) {
    PromText out;
    std::set<std::string> series;
    std::istringstream in(text);
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
        ++number;
        if (line.empty()) {
            continue;
        }
        if (line[0] == '#') {
            prom_comment({line, number}, out);
        } else {
            prom_sample({line, number}, out, series);
        }
    }
    return out;
}

} // namespace retentiond::test
