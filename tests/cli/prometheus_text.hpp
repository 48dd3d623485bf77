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

inline PromText parse_prometheus(const std::string& text) {
    PromText out;
    std::set<std::string> series;
    std::istringstream in(text);
    std::string line;
    int number = 0;
    const auto fail = [&](const std::string& why) {
        throw std::runtime_error("line " + std::to_string(number) + ": " + why + ": " + line);
    };
    while (std::getline(in, line)) {
        ++number;
        if (line.empty()) {
            continue;
        }
        if (line[0] == '#') {
            std::istringstream words(line.substr(1));
            std::string keyword;
            std::string name;
            words >> keyword >> name;
            if (keyword != "HELP" && keyword != "TYPE") {
                continue; // a plain comment
            }
            if (!prom_valid_name(name, false)) {
                fail("bad metric name");
            }
            std::string rest;
            std::getline(words >> std::ws, rest);
            auto& family = out.families[name];
            if (keyword == "TYPE") {
                static const std::set<std::string> k_types{"counter", "gauge", "histogram",
                                                           "summary", "untyped"};
                if (!family.type.empty()) {
                    fail("TYPE given twice");
                }
                if (k_types.count(rest) == 0) {
                    fail("unknown type");
                }
                for (const auto& s : out.samples) {
                    if (s.name == name) {
                        fail("TYPE after samples");
                    }
                }
                family.type = rest;
            } else {
                family.help = rest;
            }
            continue;
        }
        PromSample sample;
        std::size_t i = 0;
        while (i < line.size() && line[i] != '{' && line[i] != ' ') {
            ++i;
        }
        sample.name = line.substr(0, i);
        if (!prom_valid_name(sample.name, false)) {
            fail("bad metric name");
        }
        if (i < line.size() && line[i] == '{') {
            ++i;
            while (i < line.size() && line[i] != '}') {
                const auto eq = line.find('=', i);
                if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
                    fail("bad label");
                }
                const std::string key = line.substr(i, eq - i);
                if (!prom_valid_name(key, true)) {
                    fail("bad label name");
                }
                std::string value;
                std::size_t j = eq + 2;
                for (; j < line.size() && line[j] != '"'; ++j) {
                    if (line[j] == '\\') {
                        if (++j >= line.size()) {
                            fail("dangling escape");
                        }
                        switch (line[j]) {
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
                            fail("bad escape");
                        }
                    } else {
                        value += line[j];
                    }
                }
                if (j >= line.size()) {
                    fail("unterminated label value");
                }
                if (!sample.labels.emplace(key, value).second) {
                    fail("label given twice");
                }
                i = j + 1;
                if (i < line.size() && line[i] == ',') {
                    ++i;
                }
            }
            if (i >= line.size()) {
                fail("unterminated label set");
            }
            ++i;
        }
        if (i >= line.size() || line[i] != ' ') {
            fail("no value");
        }
        const std::string value = line.substr(i + 1);
        if (value == "NaN" || value == "+Inf" || value == "-Inf") {
            sample.value = value == "NaN" ? NAN : (value[0] == '-' ? -INFINITY : INFINITY);
        } else {
            char* end = nullptr;
            sample.value = std::strtod(value.c_str(), &end);
            if (end == value.c_str() || (*end != '\0' && *end != ' ')) {
                fail("bad value");
            }
        }
        const auto family = out.families.find(sample.name);
        if (family == out.families.end() || family->second.type.empty()) {
            fail("sample without TYPE");
        }
        std::string key = sample.name;
        for (const auto& [k, v] : sample.labels) {
            key += '\x1f' + k + '\x1e' + v;
        }
        if (!series.insert(key).second) {
            fail("series given twice");
        }
        out.samples.push_back(std::move(sample));
    }
    return out;
}

} // namespace retentiond::test
