// The loader's readers of values: maps and keys, ${...} expansion, scalars, durations, texts and
// the anonymization strategies.
#include "loader.hpp"

#include "retentiond/duration.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace retentiond::config_detail {

Loader::Loader(const std::vector<const Kind*>& kinds, const EnvLookup& env)
    : m_kinds(kinds), m_env(env) {
    static const Keys fixed = {"version",
                               "daemon",
                               "include",
                               "datastores",
                               "rules",
                               "audit_log",
                               "audit_store",
                               "audit_schema",
                               "audit_key",
                               "metrics",
                               "timezone",
                               "max_clock_skew",
                               "store_down_unhealthy",
                               "splay",
                               "retry_backoff",
                               "coordination",
                               "erasure_deadline",
                               "erasure_resume",
                               "erasure_reapply"};
    m_known_keys = fixed;
    m_known_keys.insert(m_known_keys.end(), k_common_rule_keys.begin(), k_common_rule_keys.end());
    m_datastore_keys = {"kind"};
    for (const Kind* kind : m_kinds) {
        m_kind_names.push_back(kind->name());
        const Keys& rule_keys = kind->rule_keys();
        m_known_keys.insert(m_known_keys.end(), rule_keys.begin(), rule_keys.end());
        const Keys& store_keys = kind->datastore_keys();
        m_datastore_keys.insert(m_datastore_keys.end(), store_keys.begin(), store_keys.end());
    }
}

SourcePos Loader::pos(const ConfigNode& node) const {
    SourcePos p;
    p.file = m_files[m_file].display;
    const YAML::Node& n = yaml(node);
    YAML::Mark mark = n.Mark();
    if (n.IsNull()) {
        // yaml-cpp places an empty value at the next token, often on the next line.
        for (const auto& [value, key_mark] : m_null_values) {
            if (value.is(n)) {
                mark = key_mark;
            }
        }
    }
    if (mark.line >= 0) {
        p.line = mark.line + 1;
        p.column = mark.column + 1;
    }
    return p;
}

Diagnostic Loader::diagnostic(SourcePos p, std::string message) const {
    if (!m_datastore.empty()) {
        message = "datastore " + in_quotes(m_datastore) + ": " + message;
    }
    return Diagnostic{std::move(p), m_rule, std::move(message)};
}

void Loader::error(const ConfigNode& node, std::string message) {
    m_errors.emplace_back(m_file, diagnostic(pos(node), std::move(message)));
}

void Loader::warn(const ConfigNode& node, std::string message) {
    m_warnings.emplace_back(m_file, diagnostic(pos(node), std::move(message)));
}

namespace {

std::string describe(const ConfigNode& node) {
    switch (yaml(node).Type()) {
    case YAML::NodeType::Map:
        return "a map";
    case YAML::NodeType::Sequence:
        return "a list";
    case YAML::NodeType::Null:
        return "nothing";
    case YAML::NodeType::Scalar:
        return in_quotes(node.scalar());
    default:
        return "nothing";
    }
}

} // namespace

void Loader::type_error(const ConfigNode& node, std::string_view key, std::string_view expected) {
    error(node, (key.empty() ? "" : std::string(key) + ": ") + "expected " + std::string(expected) +
                    ", got " + describe(node));
}

std::optional<ConfigMap> Loader::map(const ConfigNode& node, std::string_view key) {
    if (!node.is_map()) {
        type_error(node, key, "a map");
        return std::nullopt;
    }
    // yaml-cpp keeps duplicate keys silently; the format forbids them.
    ConfigMap fields;
    fields.node = node;
    const YAML::Node& n = yaml(node);
    for (auto it = n.begin(); it != n.end(); ++it) {
        const YAML::Node k = it->first;
        if (!k.IsScalar()) {
            error(wrap(k), std::string(key) + ": keys must be plain strings");
            continue;
        }
        if (const auto* first = fields.find(k.Scalar())) {
            error(wrap(k), "duplicate key " + in_quotes(k.Scalar()) + " (first at line " +
                               std::to_string(yaml(first->key).Mark().line + 1) + ")");
            continue;
        }
        if (it->second.IsNull()) {
            m_null_values.emplace_back(it->second, k.Mark());
        }
        fields.entries.push_back({k.Scalar(), wrap(k), wrap(it->second)});
    }
    return fields;
}

void Loader::check_keys(const ConfigMap& fields, const Keys& allowed) {
    for (const auto& e : fields.entries) {
        if (!contains(allowed, e.name)) {
            error(e.key, "unknown key " + in_quotes(e.name) + hint(e.name, allowed));
        }
    }
}

void Loader::require(const ConfigMap& fields, std::initializer_list<std::string_view> keys) {
    for (const auto key : keys) {
        // A misspelt key ("retian") already got a "did you mean" error; do not add "missing".
        const bool misspelt = std::any_of(
            fields.entries.begin(), fields.entries.end(), [&](const ConfigMap::Entry& e) {
                return !is_known_key(e.name) && !hint(e.name, {key}).empty();
            });
        if (!fields.find(key) && !misspelt) {
            error(fields.node, "missing key " + in_quotes(key));
        }
    }
}

// ${NAME} from the environment, ${file:PATH} from a file (trimmed); PATH may itself hold ${...}.
bool Loader::expand_text(std::string_view text, std::string& out, std::string& problem, int depth) {
    if (depth > 8) {
        problem = "${...} nested too deeply";
        return false;
    }
    std::size_t i = 0;
    while (i < text.size()) {
        if (text[i] != '$' || i + 1 >= text.size() || text[i + 1] != '{') {
            out += text[i++];
            continue;
        }
        std::size_t j = i + 2;
        int open = 1;
        while (j < text.size()) {
            if (text[j] == '$' && j + 1 < text.size() && text[j + 1] == '{') {
                ++open;
                ++j;
            } else if (text[j] == '}' && --open == 0) {
                break;
            }
            ++j;
        }
        if (j >= text.size()) {
            problem = "unterminated \"${\"";
            return false;
        }
        const std::string_view inner = text.substr(i + 2, j - i - 2);
        const std::string_view whole = text.substr(i, j - i + 1);
        if (inner.rfind("file:", 0) == 0) {
            std::string path;
            if (!expand_text(inner.substr(5), path, problem, depth + 1)) {
                return false;
            }
            std::ifstream in(path, std::ios::binary);
            std::stringstream content;
            if (in) {
                content << in.rdbuf();
            }
            if (!in || in.bad()) {
                // The raw text only: the expanded path may come from a secret.
                problem = "cannot read the file of " + in_quotes(whole);
                return false;
            }
            out += trim(content.str());
        } else {
            const bool name_ok =
                !inner.empty() && std::all_of(inner.begin(), inner.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
                });
            if (!name_ok) {
                problem = "invalid variable reference " + in_quotes(whole);
                return false;
            }
            const auto value = m_env(std::string(inner));
            if (!value) {
                problem = "environment variable " + in_quotes(inner) + " is not set";
                return false;
            }
            out += *value;
        }
        i = j + 1;
    }
    return true;
}

std::optional<std::string> Loader::expand(const ConfigNode& node, std::string_view key) {
    std::string out;
    std::string problem;
    if (!expand_text(node.scalar(), out, problem, 0)) {
        error(node, std::string(key) + ": " + problem);
        return std::nullopt;
    }
    return out;
}

std::optional<std::string> Loader::string(const ConfigNode& node, std::string_view key) {
    if (!node.is_scalar()) {
        type_error(node, key, "a string");
        return std::nullopt;
    }
    return expand(node, key);
}

std::optional<std::vector<std::string>>
Loader::string_list(const ConfigNode& node, std::string_view key, bool allow_scalar) {
    std::vector<std::string> out;
    if (allow_scalar && node.is_scalar()) {
        auto s = string(node, key);
        if (!s) {
            return std::nullopt;
        }
        out.push_back(*s);
        return out;
    }
    if (!node.is_sequence()) {
        type_error(node, key, allow_scalar ? "a string or a list" : "a list");
        return std::nullopt;
    }
    if (node.size() == 0) {
        error(node, std::string(key) + ": the list is empty");
        return std::nullopt;
    }
    bool ok = true;
    for (const auto& item : node.items()) {
        if (auto s = string(item, key)) {
            out.push_back(*s);
        } else {
            ok = false;
        }
    }
    return ok ? std::optional(out) : std::nullopt;
}

std::optional<std::int64_t> Loader::integer(const ConfigNode& node, std::string_view key) {
    if (!node.is_scalar()) {
        type_error(node, key, "an integer");
        return std::nullopt;
    }
    const auto text = expand(node, key);
    if (!text) {
        return std::nullopt;
    }
    std::int64_t value = 0;
    const char* end = text->data() + text->size();
    const auto [ptr, ec] = std::from_chars(text->data(), end, value);
    if (ec != std::errc() || ptr != end || text->empty()) {
        type_error(node, key, "an integer");
        return std::nullopt;
    }
    return value;
}

std::optional<double> Loader::number(const ConfigNode& node, std::string_view key) {
    if (!node.is_scalar()) {
        type_error(node, key, "a number");
        return std::nullopt;
    }
    const auto text = expand(node, key);
    if (!text) {
        return std::nullopt;
    }
    char* end = nullptr;
    const double value = std::strtod(text->c_str(), &end);
    if (text->empty() || end != text->c_str() + text->size()) {
        type_error(node, key, "a number");
        return std::nullopt;
    }
    return value;
}

std::optional<bool> Loader::boolean(const ConfigNode& node, std::string_view key) {
    if (node.is_scalar()) {
        const std::string& s = node.scalar();
        if (s == "true" || s == "True" || s == "TRUE" || s == "yes") {
            return true;
        }
        if (s == "false" || s == "False" || s == "FALSE" || s == "no") {
            return false;
        }
    }
    type_error(node, key, "true or false");
    return std::nullopt;
}

std::optional<std::string> Loader::choice(const ConfigNode& node, std::string_view key,
                                          const Keys& options) {
    const auto s = string(node, key);
    if (!s) {
        return std::nullopt;
    }
    if (!contains(options, *s)) {
        std::string h = hint(*s, options);
        error(node, std::string(key) + ": unknown value " + in_quotes(node.scalar()) +
                        (h.empty() ? " (expected " + join_names(options) + ")" : h));
        return std::nullopt;
    }
    return s;
}

std::optional<Duration> Loader::duration(const ConfigNode& node, std::string_view key, bool fixed) {
    const auto text = string(node, key);
    if (!text) {
        return std::nullopt;
    }
    try {
        Duration d = fixed ? parse_fixed_duration(*text) : parse_duration(*text);
        d.text = node.scalar();
        return d;
    } catch (const ParseError& e) {
        // After ${...} expansion the parser's message would quote the expanded value.
        error(node, std::string(key) + ": " +
                        (*text == node.scalar() ? std::string(e.what())
                                                : "invalid duration " + in_quotes(node.scalar())));
        return std::nullopt;
    }
}

std::optional<std::chrono::microseconds> Loader::fixed_duration(const ConfigMap& fields,
                                                                std::string_view key) {
    const auto* node = fields.get(key);
    if (!node) {
        return std::nullopt;
    }
    const auto d = duration(*node, key, /*fixed=*/true);
    if (!d) {
        return std::nullopt;
    }
    if (d->months != 0) {
        error(*node, std::string(key) + ": months and years have no fixed length here; use "
                                        "ms, seconds, minutes, hours, days or weeks");
        return std::nullopt;
    }
    return std::chrono::microseconds(d->micros) + std::chrono::days(d->days);
}

std::optional<LocalizedText> Loader::localized(const ConfigNode& node, std::string_view key) {
    LocalizedText text;
    if (node.is_scalar()) {
        auto s = string(node, key);
        if (!s) {
            return std::nullopt;
        }
        text.fr = *s;
        return text;
    }
    auto f = map(node, key);
    if (!f) {
        return std::nullopt;
    }
    check_keys(*f, {"fr", "en"});
    if (const auto* fr = f->get("fr")) {
        text.fr = string(*fr, std::string(key) + ".fr").value_or("");
    }
    if (const auto* en = f->get("en")) {
        text.en = string(*en, std::string(key) + ".en").value_or("");
    }
    return text;
}

// --- rules ---------------------------------------------------------------------------------

namespace {

const Keys k_scalar_strategies = {"null", "hmac", "email_domain", "truncate_ip", "strip_query"};
const Keys k_strategies_with_value = {"fixed", "round", "drop_keys", "date_trunc"};

Keys all_strategies() {
    Keys all = k_scalar_strategies;
    all.insert(all.end(), k_strategies_with_value.begin(), k_strategies_with_value.end());
    return all;
}

} // namespace

std::optional<Strategy> Loader::read_scalar_strategy(const ConfigNode& node, std::string_view key) {
    Strategy s;
    const std::string& name = node.scalar();
    if (name == "hmac") {
        s.kind = Strategy::Kind::hmac;
    } else if (name == "email_domain") {
        s.kind = Strategy::Kind::email_domain;
    } else if (name == "truncate_ip") {
        s.kind = Strategy::Kind::truncate_ip;
    } else if (name == "strip_query") {
        s.kind = Strategy::Kind::strip_query;
    } else if (name == "null") {
        s.kind = Strategy::Kind::null_value;
    } else if (contains(k_strategies_with_value, name)) {
        error(node, std::string(key) + ": strategy " + in_quotes(name) + " needs a value: { " +
                        name + ": ... }");
        return std::nullopt;
    } else {
        error(node, std::string(key) + ": unknown strategy " + in_quotes(name) +
                        hint(name, all_strategies()));
        return std::nullopt;
    }
    return s;
}

std::optional<Strategy> Loader::read_strategy_with_value(const ConfigMap::Entry& e,
                                                         std::string_view key) {
    Strategy s;
    const std::string sub = std::string(key) + "." + e.name;
    if (e.name == "fixed") {
        s.kind = Strategy::Kind::fixed;
        auto v = string(e.value, sub);
        if (!v) {
            return std::nullopt;
        }
        s.fixed_value = *v;
    } else if (e.name == "round") {
        s.kind = Strategy::Kind::round;
        auto v = integer(e.value, sub);
        if (!v) {
            return std::nullopt;
        }
        if (*v < 0 || *v > 15) {
            error(e.value, sub + ": expected 0 to 15 decimals");
            return std::nullopt;
        }
        s.round_digits = static_cast<int>(*v);
    } else if (e.name == "drop_keys") {
        s.kind = Strategy::Kind::drop_keys;
        auto v = string_list(e.value, sub, false);
        if (!v) {
            return std::nullopt;
        }
        s.drop_keys = *v;
    } else if (e.name == "date_trunc") {
        s.kind = Strategy::Kind::date_trunc;
        auto v = choice(e.value, sub, {"day", "month", "year"});
        if (!v) {
            return std::nullopt;
        }
        s.trunc_unit = *v;
    } else if (contains(k_scalar_strategies, e.name)) {
        error(e.key, std::string(key) + ": strategy " + in_quotes(e.name) +
                         " takes no value; write it alone");
        return std::nullopt;
    } else {
        error(e.key, std::string(key) + ": unknown strategy " + in_quotes(e.name) +
                         hint(e.name, all_strategies()));
        return std::nullopt;
    }
    return s;
}

std::optional<Strategy> Loader::read_strategy(const ConfigNode& node, std::string_view key) {
    if (node.is_null()) {
        return Strategy{}; // null_value
    }
    if (node.is_scalar()) {
        return read_scalar_strategy(node, key);
    }
    auto f = map(node, key);
    if (!f) {
        return std::nullopt;
    }
    if (f->entries.size() != 1) {
        error(node, std::string(key) + ": a strategy map has exactly one key, e.g. { round: 2 }");
        return std::nullopt;
    }
    return read_strategy_with_value(f->entries.front(), key);
}

std::vector<FieldStrategy> Loader::anonymize(const ConfigNode& node, std::string_view key) {
    std::vector<FieldStrategy> out;
    if (node.is_null() || (node.is_map() && node.size() == 0)) {
        error(node, std::string(key) + ": no field listed; give at least one field: strategy");
        return out;
    }
    auto f = map(node, key);
    if (!f) {
        return out;
    }
    for (const auto& e : f->entries) {
        if (e.name.empty()) {
            error(e.key, std::string(key) + ": empty field name");
            continue;
        }
        if (auto s = read_strategy(e.value, std::string(key) + "." + e.name)) {
            out.push_back(FieldStrategy{e.name, *s, pos(e.key)});
        }
    }
    return out;
}

} // namespace retentiond::config_detail
