#include "retentiond/config.hpp"

#include "loader.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/duration.hpp"
#include "retentiond/schedule.hpp"
#include "retentiond/timeutil.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace retentiond {

std::string_view to_string(Action action) {
    switch (action) {
    case Action::remove:
        return "delete";
    case Action::anonymize:
        return "anonymize";
    }
    return "unknown";
}

const std::string& LocalizedText::get(std::string_view lang) const {
    if (lang == "en") {
        return en.empty() ? fr : en;
    }
    return fr.empty() ? en : fr;
}

const Rule* Config::find_rule(std::string_view name) const {
    for (const auto& rule : rules) {
        if (rule.name == name) {
            return &rule;
        }
    }
    return nullptr;
}

const date::time_zone* Config::zone() const {
    return find_zone(daemon.timezone);
}

EnvLookup process_env() {
    return [](const std::string& name) -> std::optional<std::string> {
        if (const char* value = std::getenv(name.c_str())) {
            return std::string(value);
        }
        return std::nullopt;
    };
}

std::string default_config_path(const EnvLookup& env) {
    if (auto path = env("RETENTIOND_CONFIG"); path && !path->empty()) {
        return *path;
    }
    return "/etc/retentiond/retentiond.yaml";
}

std::string in_quotes(std::string_view s) {
    return "\"" + std::string(s) + "\"";
}

// A glob(3)/fnmatch pattern that is well formed: brackets closed, "**" only as a whole path
// component, no dangling escape.
std::optional<std::string> glob_problem(std::string_view pattern) {
    if (pattern.empty()) {
        return "empty glob";
    }
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        if (c == '\\') {
            if (i + 1 == pattern.size()) {
                return "glob ends with a lone backslash";
            }
            ++i;
        } else if (c == '[') {
            std::size_t j = i + 1;
            if (j < pattern.size() && (pattern[j] == '!' || pattern[j] == '^')) {
                ++j;
            }
            if (j < pattern.size() && pattern[j] == ']') {
                ++j;
            }
            while (j < pattern.size() && pattern[j] != ']') {
                ++j;
            }
            if (j >= pattern.size()) {
                return "unclosed \"[\" in glob";
            }
            i = j;
        } else if (c == '*' && i + 1 < pattern.size() && pattern[i + 1] == '*') {
            const bool starts = i == 0 || pattern[i - 1] == '/';
            const bool ends = i + 2 == pattern.size() || pattern[i + 2] == '/';
            if (!starts || !ends) {
                return "\"**\" must be a whole path component (\"**/*.csv\")";
            }
            ++i;
        }
    }
    return std::nullopt;
}

// --- ConfigNode, ConfigMap -------------------------------------------------------------------

ConfigNode::ConfigNode() : m_impl(std::make_shared<const Impl>()) {}
ConfigNode::ConfigNode(std::shared_ptr<const Impl> impl) : m_impl(std::move(impl)) {}

bool ConfigNode::is_null() const {
    return m_impl->node.IsNull();
}
bool ConfigNode::is_scalar() const {
    return m_impl->node.IsScalar();
}
bool ConfigNode::is_map() const {
    return m_impl->node.IsMap();
}
bool ConfigNode::is_sequence() const {
    return m_impl->node.IsSequence();
}
const std::string& ConfigNode::scalar() const {
    return m_impl->node.Scalar();
}
std::size_t ConfigNode::size() const {
    return m_impl->node.size();
}
std::vector<ConfigNode> ConfigNode::items() const {
    std::vector<ConfigNode> out;
    if (m_impl->node.IsSequence()) {
        for (const auto& item : m_impl->node) {
            out.push_back(config_detail::wrap(item));
        }
    }
    return out;
}

const ConfigMap::Entry* ConfigMap::find(std::string_view name) const {
    for (const auto& e : entries) {
        if (e.name == name) {
            return &e;
        }
    }
    return nullptr;
}

const ConfigNode* ConfigMap::get(std::string_view name) const {
    const Entry* e = find(name);
    return e ? &e->value : nullptr;
}

std::unique_ptr<RunLock> Kind::try_lock_run(const Datastore& store, std::string_view rule,
                                            const std::function<bool()>& stop) const {
    (void)rule;
    (void)stop;
    throw std::logic_error("datastore \"" + store.name + "\": kind " + std::string(name()) +
                           " takes no run lock");
}

namespace config_detail {

const Keys k_common_rule_keys = {
    "name",   "datastore",   "category",   "legal_basis",  "description", "retain",
    "clock",  "action",      "anonymize",  "hold",         "schedule",    "batch_size",
    "limits", "clock_label", "clock_null", "policy_table", "subject"};

bool contains(const Keys& keys, std::string_view key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
}

std::string trim(std::string_view s) {
    const auto first = s.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) {
        return {};
    }
    const auto last = s.find_last_not_of(" \t\r\n");
    return std::string(s.substr(first, last - first + 1));
}

// Optimal string alignment distance: a swapped pair ("retian") counts as one edit.
static std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i) {
        d[i][0] = i;
    }
    for (std::size_t j = 0; j <= b.size(); ++j) {
        d[0][j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
            }
        }
    }
    return d[a.size()][b.size()];
}

std::string hint(std::string_view word, const Keys& candidates) {
    std::string_view best;
    std::size_t best_distance = 3;
    for (const auto candidate : candidates) {
        const std::size_t limit =
            std::min<std::size_t>(2, std::max<std::size_t>(1, word.size() / 3));
        const std::size_t distance = edit_distance(word, candidate);
        if (distance <= limit && distance < best_distance) {
            best = candidate;
            best_distance = distance;
        }
    }
    return best.empty() ? std::string() : " (did you mean " + in_quotes(best) + "?)";
}

std::string join_names(const Keys& names) {
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i > 0) {
            out += i + 1 == names.size() ? " or " : ", ";
        }
        out += names[i];
    }
    return out;
}

} // namespace config_detail

Config load_config(const std::string& path, const std::vector<const Kind*>& kinds,
                   const EnvLookup& env) {
    config_detail::Loader loader(kinds, env);
    return loader.load(path);
}

} // namespace retentiond
