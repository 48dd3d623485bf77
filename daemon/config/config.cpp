#include "retentiond/config.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/duration.hpp"
#include "retentiond/schedule.hpp"
#include "retentiond/timeutil.hpp"

#include <yaml-cpp/yaml.h>

#include <glob.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ratio>
#include <regex>
#include <set>
#include <sstream>

namespace retentiond {

std::string_view to_string(DatastoreKind kind) {
    switch (kind) {
    case DatastoreKind::postgres:
        return "postgres";
    case DatastoreKind::files:
        return "files";
    case DatastoreKind::redis:
        return "redis";
    }
    return "unknown";
}

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

namespace {

namespace fs = std::filesystem;

using Keys = std::vector<std::string_view>;

const Keys k_main_keys = {"version", "daemon", "include", "datastores", "rules"};
const Keys k_daemon_keys = {"audit_log", "audit_key",      "metrics",
                            "timezone",  "max_clock_skew", "store_down_unhealthy",
                            "splay",     "retry_backoff",  "coordination"};
const Keys k_common_rule_keys = {"name",        "datastore",   "category",   "legal_basis",
                                 "description", "retain",      "clock",      "action",
                                 "anonymize",   "hold",        "schedule",   "batch_size",
                                 "limits",      "clock_label", "clock_null", "policy_table"};
const Keys k_postgres_rule_keys = {"table",
                                   "key",
                                   "dependents",
                                   "mark",
                                   "lock_timeout",
                                   "statement_timeout",
                                   "sleep_between_batches",
                                   "parallel",
                                   "notice"};
const Keys k_files_rule_keys = {"files", "format", "delimiter", "key_field"};
const Keys k_redis_rule_keys = {"keys", "max_ttl", "scan_count"};

bool contains(const Keys& keys, std::string_view key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
}

bool is_known_key(std::string_view key) {
    return contains(k_common_rule_keys, key) || contains(k_postgres_rule_keys, key) ||
           contains(k_files_rule_keys, key) || contains(k_redis_rule_keys, key) ||
           contains(k_main_keys, key) || contains(k_daemon_keys, key);
}

std::string qt(std::string_view s) {
    return "\"" + std::string(s) + "\"";
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
std::size_t edit_distance(std::string_view a, std::string_view b) {
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

// " (did you mean "retain"?)" for the closest candidate within two edits, else "".
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
    return best.empty() ? std::string() : " (did you mean " + qt(best) + "?)";
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

bool has_glob_magic(std::string_view s) {
    return s.find_first_of("*?[") != std::string_view::npos;
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

// A pattern that would reach outside the datastore root.
bool escapes_root(std::string_view pattern) {
    if (!pattern.empty() && pattern.front() == '/') {
        return true;
    }
    std::size_t start = 0;
    while (start <= pattern.size()) {
        const auto end = std::min(pattern.find('/', start), pattern.size());
        if (pattern.substr(start, end - start) == "..") {
            return true;
        }
        start = end + 1;
    }
    return false;
}

// "password=" in a keyword/value DSN, or "user:password@" in a URI.
bool has_inline_password(std::string_view dsn) {
    if (dsn.find("password=") != std::string_view::npos) {
        return true;
    }
    const auto scheme = dsn.find("://");
    if (scheme == std::string_view::npos) {
        return false;
    }
    const auto rest = dsn.substr(scheme + 3);
    const auto at = rest.find('@');
    if (at == std::string_view::npos) {
        return false;
    }
    const auto userinfo = rest.substr(0, at);
    const auto colon = userinfo.find(':');
    return colon != std::string_view::npos && colon + 1 < userinfo.size();
}

bool valid_rule_name(std::string_view name) {
    if (name.empty()) {
        return false;
    }
    const auto ok = [](char c, bool first) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (!first && c == '-');
    };
    for (std::size_t i = 0; i < name.size(); ++i) {
        if (!ok(name[i], i == 0)) {
            return false;
        }
    }
    return true;
}

bool valid_datastore_name(std::string_view name) {
    if (name.empty()) {
        return false;
    }
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '-' && c != '_'))) {
            return false;
        }
    }
    return true;
}

struct GlobResult {
    glob_t g{};
    int rc = 0;
    explicit GlobResult(const std::string& pattern) {
        rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    }
    ~GlobResult() { ::globfree(&g); }
    GlobResult(const GlobResult&) = delete;
    GlobResult& operator=(const GlobResult&) = delete;
};

struct SourceFile {
    std::string display; // as the user wrote it (main) or as the include glob produced it
    std::string bytes;
    YAML::Node root;
    bool main = false;
    bool parsed = false;
};

// The key/value pairs of one YAML map, first occurrence of each key, in file order.
struct Fields {
    struct Entry {
        std::string name;
        YAML::Node key;
        YAML::Node value;
    };
    YAML::Node node;
    std::vector<Entry> entries;

    const Entry* find(std::string_view name) const {
        for (const auto& e : entries) {
            if (e.name == name) {
                return &e;
            }
        }
        return nullptr;
    }
    const YAML::Node* get(std::string_view name) const {
        const Entry* e = find(name);
        return e ? &e->value : nullptr;
    }
};

class Loader {
public:
    explicit Loader(const EnvLookup& env) : m_env(env) {}

    Config load(const std::string& path);

private:
    const EnvLookup& m_env;
    Config m_config;
    std::vector<SourceFile> m_files;
    std::size_t m_file = 0;  // index of the file being read
    std::string m_rule;      // the rule being read, for diagnostics
    std::string m_datastore; // the datastore being read, for diagnostics
    std::vector<std::pair<std::size_t, Diagnostic>> m_errors;
    std::vector<std::pair<std::size_t, Diagnostic>> m_warnings;
    std::map<std::string, SourcePos> m_rule_names;
    fs::path m_main_dir;
    std::vector<std::pair<YAML::Node, YAML::Mark>> m_null_values; // empty values: their key's mark
    std::set<std::string> m_kindless_datastores; // declared with a bad or missing kind
    std::optional<YAML::Node> m_coordination;    // daemon.coordination, checked after datastores

    // --- diagnostics
    SourcePos pos(const YAML::Node& node) const {
        SourcePos p;
        p.file = m_files[m_file].display;
        YAML::Mark mark = node.Mark();
        if (node.IsNull()) {
            // yaml-cpp places an empty value at the next token, often on the next line.
            for (const auto& [value, key_mark] : m_null_values) {
                if (value.is(node)) {
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
    Diagnostic diagnostic(SourcePos p, std::string message) const {
        if (!m_datastore.empty()) {
            message = "datastore " + qt(m_datastore) + ": " + message;
        }
        return Diagnostic{std::move(p), m_rule, std::move(message)};
    }
    void error(const YAML::Node& node, std::string message) {
        m_errors.emplace_back(m_file, diagnostic(pos(node), std::move(message)));
    }
    void warn(const YAML::Node& node, std::string message) {
        m_warnings.emplace_back(m_file, diagnostic(pos(node), std::move(message)));
    }

    // --- generic readers
    static std::string describe(const YAML::Node& node) {
        switch (node.Type()) {
        case YAML::NodeType::Map:
            return "a map";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Null:
            return "nothing";
        case YAML::NodeType::Scalar:
            return qt(node.Scalar());
        default:
            return "nothing";
        }
    }
    void type_error(const YAML::Node& node, std::string_view key, std::string_view expected) {
        error(node, (key.empty() ? "" : std::string(key) + ": ") + "expected " +
                        std::string(expected) + ", got " + describe(node));
    }

    std::optional<Fields> map(const YAML::Node& node, std::string_view key);
    void check_keys(const Fields& fields, const Keys& allowed);
    void require(const Fields& fields, std::initializer_list<std::string_view> keys);

    std::optional<std::string> expand(const YAML::Node& node, std::string_view key);
    bool expand_text(std::string_view text, std::string& out, std::string& problem, int depth);
    std::optional<std::string> string(const YAML::Node& node, std::string_view key);
    std::optional<std::vector<std::string>> string_list(const YAML::Node& node,
                                                        std::string_view key, bool allow_scalar);
    std::optional<std::int64_t> integer(const YAML::Node& node, std::string_view key);
    std::optional<double> number(const YAML::Node& node, std::string_view key);
    std::optional<bool> boolean(const YAML::Node& node, std::string_view key);
    std::optional<std::string> choice(const YAML::Node& node, std::string_view key,
                                      const Keys& options);
    // fixed: not calendar-based (throttle, timeouts, backoff, splay): ms and decimals allowed.
    std::optional<Duration> duration(const YAML::Node& node, std::string_view key,
                                     bool fixed = false);
    template <class Rep, class Period>
    void fixed_duration(const Fields& fields, std::string_view key,
                        std::chrono::duration<Rep, Period>& out);
    std::optional<LocalizedText> localized(const YAML::Node& node, std::string_view key);

    // --- sections
    void read_file(std::size_t index);
    void read_top(std::size_t index, std::vector<std::pair<std::string, YAML::Node>>& includes);
    void read_daemon(const YAML::Node& node);
    void read_datastores(const YAML::Node& node);
    void read_datastore(const YAML::Node& name_node, const YAML::Node& node);
    void read_rules(const YAML::Node& node);
    void read_rule(const YAML::Node& node);
    void read_postgres(const Fields& f, Rule& rule, PostgresRule& pg);
    void read_files(const Fields& f, Rule& rule, FilesRule& files);
    void read_redis(const Fields& f, Rule& rule, RedisRule& redis);
    std::vector<FieldStrategy> read_anonymize(const YAML::Node& node, std::string_view key);
    std::optional<Strategy> read_strategy(const YAML::Node& node, std::string_view key);
    std::optional<Dependent> read_dependent(const YAML::Node& node);
    std::optional<Notice> read_notice(const YAML::Node& node);

    std::vector<std::pair<std::size_t, Diagnostic>>
    sorted(std::vector<std::pair<std::size_t, Diagnostic>> list) const {
        std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
            return std::tie(a.first, a.second.pos.line, a.second.pos.column) <
                   std::tie(b.first, b.second.pos.line, b.second.pos.column);
        });
        return list;
    }
};

std::optional<Fields> Loader::map(const YAML::Node& node, std::string_view key) {
    if (!node.IsMap()) {
        type_error(node, key, "a map");
        return std::nullopt;
    }
    // yaml-cpp keeps duplicate keys silently; the format forbids them.
    Fields fields;
    fields.node = node;
    for (auto it = node.begin(); it != node.end(); ++it) {
        const YAML::Node k = it->first;
        if (!k.IsScalar()) {
            error(k, std::string(key) + ": keys must be plain strings");
            continue;
        }
        if (const auto* first = fields.find(k.Scalar())) {
            error(k, "duplicate key " + qt(k.Scalar()) + " (first at line " +
                         std::to_string(first->key.Mark().line + 1) + ")");
            continue;
        }
        if (it->second.IsNull()) {
            m_null_values.emplace_back(it->second, k.Mark());
        }
        fields.entries.push_back({k.Scalar(), k, it->second});
    }
    return fields;
}

void Loader::check_keys(const Fields& fields, const Keys& allowed) {
    for (const auto& e : fields.entries) {
        if (!contains(allowed, e.name)) {
            error(e.key, "unknown key " + qt(e.name) + hint(e.name, allowed));
        }
    }
}

void Loader::require(const Fields& fields, std::initializer_list<std::string_view> keys) {
    for (const auto key : keys) {
        // A misspelt key ("retian") already got a "did you mean" error; do not add "missing".
        const bool misspelt =
            std::any_of(fields.entries.begin(), fields.entries.end(), [&](const Fields::Entry& e) {
                return !is_known_key(e.name) && !hint(e.name, {key}).empty();
            });
        if (!fields.find(key) && !misspelt) {
            error(fields.node, "missing key " + qt(key));
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
                problem = "cannot read the file of " + qt(whole);
                return false;
            }
            out += trim(content.str());
        } else {
            const bool name_ok =
                !inner.empty() && std::all_of(inner.begin(), inner.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
                });
            if (!name_ok) {
                problem = "invalid variable reference " + qt(whole);
                return false;
            }
            const auto value = m_env(std::string(inner));
            if (!value) {
                problem = "environment variable " + qt(inner) + " is not set";
                return false;
            }
            out += *value;
        }
        i = j + 1;
    }
    return true;
}

std::optional<std::string> Loader::expand(const YAML::Node& node, std::string_view key) {
    std::string out;
    std::string problem;
    if (!expand_text(node.Scalar(), out, problem, 0)) {
        error(node, std::string(key) + ": " + problem);
        return std::nullopt;
    }
    return out;
}

std::optional<std::string> Loader::string(const YAML::Node& node, std::string_view key) {
    if (!node.IsScalar()) {
        type_error(node, key, "a string");
        return std::nullopt;
    }
    return expand(node, key);
}

std::optional<std::vector<std::string>>
Loader::string_list(const YAML::Node& node, std::string_view key, bool allow_scalar) {
    std::vector<std::string> out;
    if (allow_scalar && node.IsScalar()) {
        auto s = string(node, key);
        if (!s) {
            return std::nullopt;
        }
        out.push_back(*s);
        return out;
    }
    if (!node.IsSequence()) {
        type_error(node, key, allow_scalar ? "a string or a list" : "a list");
        return std::nullopt;
    }
    if (node.size() == 0) {
        error(node, std::string(key) + ": the list is empty");
        return std::nullopt;
    }
    bool ok = true;
    for (const auto& item : node) {
        if (auto s = string(item, key)) {
            out.push_back(*s);
        } else {
            ok = false;
        }
    }
    return ok ? std::optional(out) : std::nullopt;
}

std::optional<std::int64_t> Loader::integer(const YAML::Node& node, std::string_view key) {
    if (!node.IsScalar()) {
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

std::optional<double> Loader::number(const YAML::Node& node, std::string_view key) {
    if (!node.IsScalar()) {
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

std::optional<bool> Loader::boolean(const YAML::Node& node, std::string_view key) {
    if (node.IsScalar()) {
        const std::string& s = node.Scalar();
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

std::optional<std::string> Loader::choice(const YAML::Node& node, std::string_view key,
                                          const Keys& options) {
    const auto s = string(node, key);
    if (!s) {
        return std::nullopt;
    }
    if (!contains(options, *s)) {
        std::string h = hint(*s, options);
        error(node, std::string(key) + ": unknown value " + qt(node.Scalar()) +
                        (h.empty() ? " (expected " + join_names(options) + ")" : h));
        return std::nullopt;
    }
    return s;
}

std::optional<Duration> Loader::duration(const YAML::Node& node, std::string_view key, bool fixed) {
    const auto text = string(node, key);
    if (!text) {
        return std::nullopt;
    }
    try {
        Duration d = fixed ? parse_fixed_duration(*text) : parse_duration(*text);
        d.text = node.Scalar();
        return d;
    } catch (const ParseError& e) {
        // After ${...} expansion the parser's message would quote the expanded value.
        error(node, std::string(key) + ": " +
                        (*text == node.Scalar() ? std::string(e.what())
                                                : "invalid duration " + qt(node.Scalar())));
        return std::nullopt;
    }
}

template <class Rep, class Period>
void Loader::fixed_duration(const Fields& fields, std::string_view key,
                            std::chrono::duration<Rep, Period>& out) {
    const auto* node = fields.get(key);
    if (!node) {
        return;
    }
    const auto d = duration(*node, key, /*fixed=*/true);
    if (!d) {
        return;
    }
    if (d->months != 0) {
        error(*node, std::string(key) + ": months and years have no fixed length here; use "
                                        "ms, seconds, minutes, hours, days or weeks");
        return;
    }
    const auto micros = std::chrono::microseconds(d->micros) + std::chrono::days(d->days);
    const auto value = std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(micros);
    if (value != micros) {
        // "40 ms" where whole seconds are kept: say so rather than round it away.
        error(*node, std::string(key) + ": " + qt(node->Scalar()) + " is finer than this setting " +
                         "keeps (whole " +
                         (std::ratio_equal_v<Period, std::milli> ? "milliseconds" : "seconds") +
                         ")");
        return;
    }
    out = value;
}

std::optional<LocalizedText> Loader::localized(const YAML::Node& node, std::string_view key) {
    LocalizedText text;
    if (node.IsScalar()) {
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

// --- top level -----------------------------------------------------------------------------

void Loader::read_file(std::size_t index) {
    SourceFile& file = m_files[index];
    m_file = index;
    try {
        file.root = YAML::Load(file.bytes);
        file.parsed = true;
    } catch (const YAML::Exception& e) {
        SourcePos p{file.display, 0, 0};
        if (e.mark.line >= 0) {
            p.line = e.mark.line + 1;
            p.column = e.mark.column + 1;
        }
        m_errors.emplace_back(index, Diagnostic{p, "", "invalid YAML: " + e.msg});
    }
}

void Loader::read_top(std::size_t index,
                      std::vector<std::pair<std::string, YAML::Node>>& includes) {
    m_file = index;
    const SourceFile& file = m_files[index];
    if (!file.parsed) {
        return;
    }
    auto f = map(file.root, "top level");
    if (!f) {
        return;
    }
    check_keys(*f, k_main_keys);
    if (const auto* v = f->get("version")) {
        if (auto n = integer(*v, "version"); n && *n != 1) {
            error(*v, "version: unsupported version " + std::to_string(*n) +
                          " (this retentiond reads version 1)");
        }
    } else {
        error(file.root, "missing key \"version\" (write \"version: 1\")");
    }
    if (const auto* e = f->find("daemon")) {
        if (file.main) {
            read_daemon(e->value);
        } else {
            error(e->key, "\"daemon\" is only allowed in the main file");
        }
    }
    if (const auto* e = f->find("include")) {
        if (!file.main) {
            error(e->key, "\"include\" is only allowed in the main file");
        } else if (e->value.IsScalar()) {
            if (auto s = string(e->value, "include")) {
                includes.emplace_back(*s, e->value);
            }
        } else if (!e->value.IsSequence()) {
            type_error(e->value, "include", "a list of globs");
        } else {
            for (const auto& item : e->value) {
                if (auto s = string(item, "include")) {
                    includes.emplace_back(*s, item);
                }
            }
        }
    }
}

void Loader::read_daemon(const YAML::Node& node) {
    auto f = map(node, "daemon");
    if (!f) {
        return;
    }
    check_keys(*f, k_daemon_keys);
    DaemonSettings& d = m_config.daemon;
    if (const auto* v = f->get("audit_log")) {
        d.audit_log = string(*v, "audit_log").value_or(d.audit_log);
    }
    if (const auto* v = f->get("audit_key")) {
        if (auto s = string(*v, "audit_key")) {
            if (s->empty()) {
                error(*v, "audit_key: the key is empty");
            }
            d.audit_key = Secret(*s);
        }
    }
    if (const auto* v = f->get("metrics")) {
        if (auto s = string(*v, "metrics")) {
            const auto colon = s->rfind(':');
            const bool port_ok = colon != std::string::npos && colon + 1 < s->size() &&
                                 std::all_of(s->begin() + static_cast<long>(colon) + 1, s->end(),
                                             [](char c) { return c >= '0' && c <= '9'; });
            if (*s != "off" && !port_ok) {
                error(*v, "metrics: expected HOST:PORT or \"off\", got " + qt(v->Scalar()));
            } else {
                d.metrics = *s;
            }
        }
    }
    if (const auto* v = f->get("timezone")) {
        if (auto s = string(*v, "timezone")) {
            try {
                find_zone(*s);
                d.timezone = *s;
            } catch (const ParseError& e) {
                error(*v, "timezone: unknown time zone " + qt(v->Scalar()));
            }
        }
    }
    fixed_duration(*f, "max_clock_skew", d.max_clock_skew);
    fixed_duration(*f, "store_down_unhealthy", d.store_down_unhealthy);
    fixed_duration(*f, "splay", d.splay);
    if (const auto* v = f->get("retry_backoff")) {
        if (auto b = map(*v, "retry_backoff")) {
            check_keys(*b, {"initial", "max"});
            fixed_duration(*b, "initial", d.retry_backoff_initial);
            fixed_duration(*b, "max", d.retry_backoff_max);
            // A zero delay would retry a down store in a tight loop.
            if (const auto* i = b->get("initial");
                i && d.retry_backoff_initial < std::chrono::seconds{1}) {
                error(*i, "retry_backoff.initial: must be at least 1 second");
            }
            if (const auto* m = b->get("max"); m && d.retry_backoff_max < d.retry_backoff_initial) {
                error(*m, "retry_backoff.max: must not be shorter than retry_backoff.initial");
            }
            if (b->get("max") == nullptr) {
                d.retry_backoff_max = std::max(d.retry_backoff_max, d.retry_backoff_initial);
            }
        }
    }
    if (const auto* v = f->get("coordination")) {
        if (auto s = string(*v, "coordination")) {
            d.coordination = *s;
            m_coordination = *v;
        }
    }
}

void Loader::read_datastores(const YAML::Node& node) {
    auto f = map(node, "datastores");
    if (!f) {
        return;
    }
    for (const auto& e : f->entries) {
        read_datastore(e.key, e.value);
    }
}

void Loader::read_datastore(const YAML::Node& name_node, const YAML::Node& node) {
    const std::string name = name_node.Scalar();
    if (!valid_datastore_name(name)) {
        error(name_node,
              "invalid datastore name " + qt(name) + " (lower-case letters, digits, '-' and '_')");
    }
    if (auto it = m_config.datastores.find(name); it != m_config.datastores.end()) {
        const SourcePos& first = it->second.pos;
        error(name_node, "duplicate datastore " + qt(name) + " (first defined at " + first.file +
                             ":" + std::to_string(first.line) + ")");
        return;
    }
    m_datastore = name;
    Datastore ds;
    ds.name = name;
    ds.pos = pos(name_node);
    auto f = map(node, "");
    if (!f) {
        m_kindless_datastores.insert(name);
        m_config.datastores.emplace(name, std::move(ds));
        m_datastore.clear();
        return;
    }
    const Keys all_keys = {"kind", "dsn", "root", "url"};
    const auto* kind_node = f->get("kind");
    std::optional<std::string> kind;
    if (!kind_node) {
        error(node, "missing key \"kind\" (postgres, files or redis)");
    } else {
        kind = choice(*kind_node, "kind", {"postgres", "files", "redis"});
    }
    if (kind) {
        const std::string own = *kind == "postgres" ? "dsn" : *kind == "files" ? "root" : "url";
        for (const auto& e : f->entries) {
            if (e.name == "kind" || e.name == own) {
                continue;
            }
            if (contains(all_keys, e.name)) {
                error(e.key, "key " + qt(e.name) + " is not valid for a " + *kind +
                                 " datastore (use " + qt(own) + ")");
            } else {
                error(e.key, "unknown key " + qt(e.name) + hint(e.name, all_keys));
            }
        }
        const auto* value = f->get(own);
        if (!value) {
            error(node, "missing key " + qt(own));
        } else if (*kind == "postgres") {
            ds.kind = DatastoreKind::postgres;
            if (auto s = string(*value, "dsn")) {
                ds.dsn = Secret(*s);
                ds.dsn_has_inline_password = has_inline_password(*s);
                if (ds.dsn_has_inline_password) {
                    warn(*value, "dsn: the connection string carries an inline password; "
                                 "prefer a credential file (${file:...}) or PGPASSFILE");
                }
            }
        } else if (*kind == "files") {
            ds.kind = DatastoreKind::files;
            if (auto s = string(*value, "root")) {
                if (s->empty()) {
                    error(*value, "root: empty path");
                } else {
                    fs::path root(*s);
                    if (root.is_relative()) {
                        root = fs::absolute(m_main_dir / root);
                    }
                    ds.root = root.lexically_normal().string();
                    if (ds.root.size() > 1 && ds.root.back() == '/') {
                        ds.root.pop_back();
                    }
                }
            }
        } else {
            ds.kind = DatastoreKind::redis;
            if (auto s = string(*value, "url")) {
                ds.url = Secret(*s);
            }
        }
    } else {
        check_keys(*f, all_keys);
        // Known by name, so its rules do not also get "unknown datastore".
        m_kindless_datastores.insert(name);
    }
    m_config.datastores.emplace(name, std::move(ds));
    m_datastore.clear();
}

void Loader::read_rules(const YAML::Node& node) {
    if (!node.IsSequence()) {
        type_error(node, "rules", "a list");
        return;
    }
    for (const auto& item : node) {
        read_rule(item);
        m_rule.clear();
    }
}

// --- rules ---------------------------------------------------------------------------------

std::optional<Strategy> Loader::read_strategy(const YAML::Node& node, std::string_view key) {
    static const Keys scalars = {"null", "hmac", "email_domain", "truncate_ip", "strip_query"};
    static const Keys with_value = {"fixed", "round", "drop_keys", "date_trunc"};
    Keys all = scalars;
    all.insert(all.end(), with_value.begin(), with_value.end());
    Strategy s;
    if (node.IsNull()) {
        s.kind = Strategy::Kind::null_value;
        return s;
    }
    if (node.IsScalar()) {
        const std::string& name = node.Scalar();
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
        } else if (contains(with_value, name)) {
            error(node, std::string(key) + ": strategy " + qt(name) + " needs a value: { " + name +
                            ": ... }");
            return std::nullopt;
        } else {
            error(node, std::string(key) + ": unknown strategy " + qt(name) + hint(name, all));
            return std::nullopt;
        }
        return s;
    }
    auto f = map(node, key);
    if (!f) {
        return std::nullopt;
    }
    if (f->entries.size() != 1) {
        error(node, std::string(key) + ": a strategy map has exactly one key, e.g. { round: 2 }");
        return std::nullopt;
    }
    const auto& e = f->entries.front();
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
    } else if (contains(scalars, e.name)) {
        error(e.key,
              std::string(key) + ": strategy " + qt(e.name) + " takes no value; write it alone");
        return std::nullopt;
    } else {
        error(e.key, std::string(key) + ": unknown strategy " + qt(e.name) + hint(e.name, all));
        return std::nullopt;
    }
    return s;
}

std::vector<FieldStrategy> Loader::read_anonymize(const YAML::Node& node, std::string_view key) {
    std::vector<FieldStrategy> out;
    if (node.IsNull() || (node.IsMap() && node.size() == 0)) {
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

std::optional<Dependent> Loader::read_dependent(const YAML::Node& node) {
    auto f = map(node, "dependents[]");
    if (!f) {
        return std::nullopt;
    }
    check_keys(*f, {"table", "column", "action", "anonymize", "dependents"});
    require(*f, {"table", "column", "action"});
    Dependent dep;
    dep.pos = pos(node);
    if (const auto* v = f->get("table")) {
        dep.table = string(*v, "table").value_or("");
    }
    if (const auto* v = f->get("column")) {
        dep.column = string(*v, "column").value_or("");
    }
    std::optional<std::string> action;
    if (const auto* v = f->get("action")) {
        action = choice(*v, "action", {"delete", "set_null", "anonymize"});
    }
    if (action == "set_null") {
        dep.action = Dependent::Action::set_null;
    } else if (action == "anonymize") {
        dep.action = Dependent::Action::anonymize;
    }
    if (const auto* e = f->find("anonymize")) {
        if (action && *action != "anonymize") {
            error(e->key, "anonymize: given but the action is " + *action);
        } else {
            dep.anonymize = read_anonymize(e->value, "anonymize");
        }
    } else if (action == "anonymize") {
        error(node, "action: anonymize needs an \"anonymize\" map of field: strategy");
    }
    if (const auto* v = f->get("dependents")) {
        if (!v->IsSequence()) {
            type_error(*v, "dependents", "a list");
        } else {
            for (const auto& child : *v) {
                if (auto d = read_dependent(child)) {
                    dep.dependents.push_back(std::move(*d));
                }
            }
        }
    }
    return dep;
}

std::optional<Notice> Loader::read_notice(const YAML::Node& node) {
    auto f = map(node, "notice");
    if (!f) {
        return std::nullopt;
    }
    check_keys(*f, {"before", "fields", "command", "timeout"});
    require(*f, {"before", "command"});
    Notice notice;
    if (const auto* v = f->get("before")) {
        if (auto d = duration(*v, "notice.before")) {
            notice.before = *d;
        }
    }
    if (const auto* v = f->get("fields")) {
        notice.fields = string_list(*v, "notice.fields", false).value_or(notice.fields);
    }
    if (const auto* v = f->get("command")) {
        if (auto s = string(*v, "notice.command")) {
            if (s->empty() || s->front() != '/') {
                error(*v, "notice.command: expected an absolute path");
            }
            notice.command = *s;
        }
    }
    fixed_duration(*f, "timeout", notice.timeout);
    return notice;
}

void Loader::read_postgres(const Fields& f, Rule& rule, PostgresRule& pg) {
    require(f, {"table", "key"});
    if (const auto* v = f.get("table")) {
        pg.table = string(*v, "table").value_or("");
    }
    if (const auto* v = f.get("key")) {
        pg.key = string_list(*v, "key", true).value_or(pg.key);
    }
    if (const auto* v = f.get("clock")) {
        pg.clock = string_list(*v, "clock", true).value_or(pg.clock);
    }
    if (const auto* v = f.get("hold")) {
        if (auto h = map(*v, "hold")) {
            check_keys(*h, {"column", "equals", "after_now"});
            require(*h, {"column"});
            PgHold hold;
            if (const auto* c = h->get("column")) {
                hold.column = string(*c, "hold.column").value_or("");
            }
            const auto* equals = h->get("equals");
            const auto* after_now = h->get("after_now");
            if (equals && after_now) {
                error(*v, "hold: give either \"equals\" or \"after_now\", not both");
            } else if (equals) {
                hold.equals = string(*equals, "hold.equals").value_or("");
            } else if (after_now) {
                if (auto b = boolean(*after_now, "hold.after_now"); b && !*b) {
                    error(*after_now, "hold.after_now: only \"true\" is meaningful");
                }
                hold.kind = PgHold::Kind::after_now;
            } else {
                error(*v, "hold: needs \"equals\" or \"after_now: true\"");
            }
            pg.hold = hold;
        }
    }
    if (const auto* v = f.get("dependents")) {
        if (!v->IsSequence()) {
            type_error(*v, "dependents", "a list");
        } else {
            for (const auto& item : *v) {
                if (auto d = read_dependent(item)) {
                    pg.dependents.push_back(std::move(*d));
                }
            }
        }
    }
    if (const auto* e = f.find("mark")) {
        if (rule.action != Action::anonymize) {
            error(e->key, "mark: only meaningful with action: anonymize");
        } else {
            pg.mark = string(e->value, "mark");
        }
    }
    fixed_duration(f, "lock_timeout", pg.lock_timeout);
    fixed_duration(f, "statement_timeout", pg.statement_timeout);
    fixed_duration(f, "sleep_between_batches", pg.sleep_between_batches);
    if (const auto* v = f.get("parallel")) {
        if (auto n = integer(*v, "parallel")) {
            if (*n < 1 || *n > 8) {
                error(*v, "parallel: expected an integer from 1 to 8, got " + qt(v->Scalar()));
            } else if (*n > 1 && rule.action != Action::remove) {
                error(*v, "parallel: only with action: delete (an anonymized row may move to "
                          "pages another stream reads)");
            } else if (*n > 1 && !pg.dependents.empty()) {
                error(*v, "parallel: not with dependents (two streams could wait on each "
                          "other's row locks)");
            } else {
                pg.parallel = static_cast<int>(*n);
            }
        }
    }
    if (const auto* v = f.get("notice")) {
        pg.notice = read_notice(*v);
    }
}

void Loader::read_files(const Fields& f, Rule& rule, FilesRule& files) {
    (void)rule;
    require(f, {"files"});
    if (const auto* v = f.get("files")) {
        if (auto s = string(*v, "files")) {
            if (auto problem = glob_problem(*s)) {
                error(*v, "files: " + *problem);
            } else if (escapes_root(*s)) {
                error(*v, "files: the glob " + qt(v->Scalar()) +
                              " escapes the datastore root (no leading \"/\", no \"..\")");
            }
            files.files = *s;
        }
    }
    if (const auto* v = f.get("format")) {
        if (auto s = choice(*v, "format", {"csv", "jsonl", "whole"})) {
            files.format = *s == "csv"     ? FilesRule::Format::csv
                           : *s == "jsonl" ? FilesRule::Format::jsonl
                                           : FilesRule::Format::whole;
        }
    }
    if (const auto* v = f.get("clock")) {
        if (v->IsScalar()) {
            if (v->Scalar() == "mtime") {
                files.clock.kind = FilesClock::Kind::mtime;
            } else {
                error(*v, "clock: expected \"mtime\", { field: NAME, format: ... } or "
                          "{ filename: REGEX, format: ... }, got " +
                              qt(v->Scalar()));
            }
        } else if (auto c = map(*v, "clock")) {
            check_keys(*c, {"field", "filename", "format"});
            const auto* field = c->get("field");
            const auto* filename = c->get("filename");
            if (field && filename) {
                error(*v, "clock: give either \"field\" or \"filename\", not both");
            } else if (field) {
                files.clock.kind = FilesClock::Kind::field;
                files.clock.field = string(*field, "clock.field").value_or("");
                if (files.clock.field.empty()) {
                    error(*field, "clock.field: empty field name");
                }
            } else if (filename) {
                files.clock.kind = FilesClock::Kind::filename;
                if (auto re = string(*filename, "clock.filename")) {
                    files.clock.filename = *re;
                    try {
                        const std::regex compiled(*re);
                        if (compiled.mark_count() < 1) {
                            error(*filename,
                                  "clock.filename: the regex needs a capture group "
                                  "around the date, e.g. \"(\\\\d{4}-\\\\d{2}-\\\\d{2})\"");
                        }
                    } catch (const std::regex_error& e) {
                        error(*filename, "clock.filename: invalid regex " + qt(filename->Scalar()) +
                                             ": " + e.what());
                    }
                }
            } else {
                error(*v, "clock: needs \"field\" or \"filename\"");
            }
            if (const auto* fmt = c->get("format")) {
                files.clock.format = string(*fmt, "clock.format").value_or("");
            }
        }
        const bool whole = files.format == FilesRule::Format::whole;
        const bool per_file_clock = files.clock.kind != FilesClock::Kind::field;
        if (whole && !per_file_clock) {
            error(*v, "clock: format: whole needs clock: mtime or { filename: ... }");
        } else if (!whole && per_file_clock) {
            error(*v, "clock: mtime and filename clocks need format: whole; csv and jsonl "
                      "records take their clock from a field");
        }
    }
    if (const auto* v = f.get("hold")) {
        if (auto h = map(*v, "hold")) {
            check_keys(*h, {"field", "equals"});
            require(*h, {"field", "equals"});
            FilesHold hold;
            if (const auto* x = h->get("field")) {
                hold.field = string(*x, "hold.field").value_or("");
            }
            if (const auto* x = h->get("equals")) {
                hold.equals = string(*x, "hold.equals").value_or("");
            }
            files.hold = hold;
            if (files.format == FilesRule::Format::whole) {
                error(*v, "hold: format: whole files have no fields to hold on");
            }
        }
    }
    if (const auto* v = f.get("delimiter")) {
        if (auto s = string(*v, "delimiter")) {
            if (s->size() != 1 || *s == "\"" || *s == "\n" || *s == "\r") {
                error(*v, "delimiter: expected one character such as \",\", \";\" or a tab");
            } else {
                files.delimiter = s->front();
            }
        }
        if (files.format != FilesRule::Format::csv) {
            error(*v, "delimiter: only meaningful with format: csv");
        }
    }
    if (const auto* v = f.get("key_field")) {
        files.key_field = string(*v, "key_field").value_or("");
    }
}

void Loader::read_redis(const Fields& f, Rule& rule, RedisRule& redis) {
    require(f, {"keys"});
    if (rule.action == Action::anonymize) {
        error(f.get("action") ? *f.get("action") : f.node,
              "action: redis rules support action: delete only");
    }
    if (const auto* v = f.get("keys")) {
        if (auto s = string(*v, "keys")) {
            if (auto problem = glob_problem(*s)) {
                error(*v, "keys: " + *problem);
            }
            redis.keys = *s;
        }
    }
    if (const auto* v = f.get("clock")) {
        if (v->IsScalar()) {
            if (v->Scalar() == "idle") {
                redis.clock.kind = RedisClock::Kind::idle;
            } else {
                error(*v,
                      "clock: expected \"idle\" or { hash_field: NAME }, got " + qt(v->Scalar()));
            }
        } else if (auto c = map(*v, "clock")) {
            check_keys(*c, {"hash_field"});
            require(*c, {"hash_field"});
            redis.clock.kind = RedisClock::Kind::hash_field;
            if (const auto* x = c->get("hash_field")) {
                redis.clock.hash_field = string(*x, "clock.hash_field").value_or("");
            }
        }
    }
    if (const auto* v = f.get("max_ttl")) {
        if (auto d = duration(*v, "max_ttl")) {
            if (d->is_zero()) {
                error(*v, "max_ttl: must be longer than zero");
            }
            redis.max_ttl = *d;
        }
    }
    if (const auto* v = f.get("hold")) {
        if (auto h = map(*v, "hold")) {
            check_keys(*h, {"hash_field", "equals"});
            require(*h, {"hash_field", "equals"});
            RedisHold hold;
            if (const auto* x = h->get("hash_field")) {
                hold.hash_field = string(*x, "hold.hash_field").value_or("");
            }
            if (const auto* x = h->get("equals")) {
                hold.equals = string(*x, "hold.equals").value_or("");
            }
            redis.hold = hold;
        }
    }
    if (const auto* v = f.get("scan_count")) {
        if (auto n = integer(*v, "scan_count")) {
            if (*n <= 0 || *n > 1000000) {
                error(*v, "scan_count: expected 1 to 1000000");
            } else {
                redis.scan_count = static_cast<int>(*n);
            }
        }
    }
}

void Loader::read_rule(const YAML::Node& node) {
    // The rule's name first, so that every diagnostic of the map (duplicate keys too) names it.
    if (node.IsMap()) {
        for (auto it = node.begin(); it != node.end(); ++it) {
            if (it->first.IsScalar() && it->first.Scalar() == "name" && it->second.IsScalar()) {
                m_rule = it->second.Scalar();
                break;
            }
        }
    }
    auto fields = map(node, "rule");
    if (!fields) {
        return;
    }
    const Fields& f = *fields;
    Rule rule;
    rule.pos = pos(node);

    if (const auto* v = f.get("name")) {
        if (v->IsScalar()) {
            rule.name = v->Scalar();
            m_rule = rule.name;
            if (!valid_rule_name(rule.name)) {
                error(*v,
                      "name: " + qt(rule.name) + " is not a valid rule name ([a-z0-9][a-z0-9-]*)");
            } else if (auto it = m_rule_names.find(rule.name); it != m_rule_names.end()) {
                error(*v, "duplicate rule name (first defined at " + it->second.file + ":" +
                              std::to_string(it->second.line) + ":" +
                              std::to_string(it->second.column) + ")");
            } else {
                m_rule_names.emplace(rule.name, pos(*v));
            }
        } else {
            type_error(*v, "name", "a string");
        }
    }

    std::optional<DatastoreKind> kind;
    if (const auto* v = f.get("datastore")) {
        if (auto s = string(*v, "datastore")) {
            rule.datastore = *s;
            if (m_kindless_datastores.count(*s) != 0) {
                // Its kind is unknown: only the common keys can be checked.
            } else if (auto it = m_config.datastores.find(*s); it != m_config.datastores.end()) {
                kind = it->second.kind;
                rule.kind = *kind;
            } else {
                Keys names;
                for (const auto& [name, ds] : m_config.datastores) {
                    names.push_back(name);
                }
                error(*v, "unknown datastore " + qt(v->Scalar()) + hint(*s, names));
            }
        }
    }
    require(f, {"name", "datastore", "category", "retain", "clock", "action"});

    // Keys of another kind get a message that says so, rather than "unknown key".
    const std::pair<DatastoreKind, const Keys*> kind_keys[] = {
        {DatastoreKind::postgres, &k_postgres_rule_keys},
        {DatastoreKind::files, &k_files_rule_keys},
        {DatastoreKind::redis, &k_redis_rule_keys}};
    Keys allowed = k_common_rule_keys;
    for (const auto& [k, keys] : kind_keys) {
        if (!kind || *kind == k) {
            allowed.insert(allowed.end(), keys->begin(), keys->end());
        }
    }
    for (const auto& e : f.entries) {
        if (contains(allowed, e.name)) {
            continue;
        }
        std::optional<DatastoreKind> owner;
        for (const auto& [k, keys] : kind_keys) {
            if (contains(*keys, e.name)) {
                owner = k;
            }
        }
        if (owner) {
            error(e.key, "key " + qt(e.name) + " is only valid in " +
                             std::string(to_string(*owner)) + " rules, and datastore " +
                             qt(rule.datastore) + " is " + std::string(to_string(*kind)));
        } else {
            error(e.key, "unknown key " + qt(e.name) + hint(e.name, allowed));
        }
    }

    if (const auto* v = f.get("category")) {
        rule.category = string(*v, "category").value_or("");
    }
    if (const auto* v = f.get("legal_basis")) {
        rule.legal_basis = string(*v, "legal_basis").value_or("");
    }
    if (const auto* v = f.get("description")) {
        rule.description = string(*v, "description").value_or("");
    }
    if (const auto* v = f.get("retain")) {
        if (auto d = duration(*v, "retain")) {
            rule.retain = *d;
        }
    }
    if (const auto* v = f.get("clock_label")) {
        rule.clock_label = localized(*v, "clock_label").value_or(LocalizedText{});
    }
    if (const auto* v = f.get("clock_null")) {
        rule.clock_null_due = choice(*v, "clock_null", {"due", "skip"}) == "due";
    }
    if (const auto* v = f.get("policy_table")) {
        rule.in_policy_table = boolean(*v, "policy_table").value_or(true);
    }
    std::optional<std::string> action;
    if (const auto* v = f.get("action")) {
        action = choice(*v, "action", {"delete", "anonymize"});
        rule.action = action == "anonymize" ? Action::anonymize : Action::remove;
    }
    if (const auto* e = f.find("anonymize")) {
        if (action == "delete") {
            error(e->key, "anonymize: given but the action is delete");
        } else {
            rule.anonymize = read_anonymize(e->value, "anonymize");
        }
    } else if (action == "anonymize" && kind != DatastoreKind::redis) {
        error(f.get("action") ? *f.get("action") : node,
              "action: anonymize needs an \"anonymize\" map of field: strategy");
    }
    try {
        rule.schedule = parse_schedule("daily 03:00");
    } catch (const ParseError&) {
        // The default is a constant; parse_schedule accepting it is its own tests' business.
    }
    if (const auto* v = f.get("schedule")) {
        if (auto s = string(*v, "schedule")) {
            try {
                rule.schedule = parse_schedule(*s);
            } catch (const ParseError& e) {
                error(*v,
                      "schedule: " + (*s == v->Scalar() ? std::string(e.what())
                                                        : "invalid schedule " + qt(v->Scalar())));
            }
        }
    }
    if (const auto* v = f.get("batch_size")) {
        if (auto n = integer(*v, "batch_size")) {
            if (*n <= 0 || *n > 10000000) {
                error(*v, "batch_size: expected a positive integer, got " + qt(v->Scalar()));
            } else {
                rule.batch_size = static_cast<int>(*n);
            }
        }
    }
    if (const auto* v = f.get("limits")) {
        if (auto l = map(*v, "limits")) {
            check_keys(*l, {"max_rows", "max_fraction"});
            if (const auto* x = l->get("max_rows")) {
                if (auto n = integer(*x, "limits.max_rows")) {
                    if (*n <= 0) {
                        error(*x, "limits.max_rows: expected a positive integer, got " +
                                      qt(x->Scalar()));
                    } else {
                        rule.limits.max_rows = *n;
                    }
                }
            }
            if (const auto* x = l->get("max_fraction")) {
                if (auto n = number(*x, "limits.max_fraction")) {
                    if (!(*n > 0.0 && *n <= 1.0)) {
                        error(*x, "limits.max_fraction: expected a number in (0, 1], got " +
                                      qt(x->Scalar()));
                    } else {
                        rule.limits.max_fraction = *n;
                    }
                }
            }
        }
    }

    if (kind == DatastoreKind::postgres) {
        PostgresRule pg;
        read_postgres(f, rule, pg);
        rule.spec = std::move(pg);
    } else if (kind == DatastoreKind::files) {
        FilesRule files;
        read_files(f, rule, files);
        rule.spec = std::move(files);
    } else if (kind == DatastoreKind::redis) {
        RedisRule redis;
        read_redis(f, rule, redis);
        rule.spec = std::move(redis);
    }
    m_config.rules.push_back(std::move(rule));
}

Config Loader::load(const std::string& path) {
    m_config.main_file = path;
    m_main_dir = fs::path(path).parent_path();

    auto add_file = [&](const std::string& display, bool main) -> bool {
        std::ifstream in(display, std::ios::binary);
        if (!in) {
            return false;
        }
        std::stringstream bytes;
        bytes << in.rdbuf();
        SourceFile file;
        file.display = display;
        file.bytes = bytes.str();
        file.main = main;
        m_files.push_back(std::move(file));
        read_file(m_files.size() - 1);
        return true;
    };

    if (!add_file(path, true)) {
        throw ConfigError(
            {Diagnostic{SourcePos{path, 0, 0}, "", "cannot read the configuration file"}});
    }
    std::vector<std::pair<std::string, YAML::Node>> includes;
    read_top(0, includes);

    // Included files, in the order of the globs, each glob's matches sorted.
    std::set<std::string> seen;
    std::error_code ec;
    seen.insert(fs::weakly_canonical(path, ec).string());
    for (const auto& [pattern, where] : includes) {
        const fs::path full =
            fs::path(pattern).is_absolute() ? fs::path(pattern) : m_main_dir / pattern;
        const GlobResult g(full.string());
        if (g.rc == GLOB_NOMATCH) {
            m_file = 0;
            if (has_glob_magic(pattern)) {
                warn(where, "include: " + qt(pattern) + " matches no file");
            } else {
                error(where, "include: cannot read " + qt(pattern));
            }
            continue;
        }
        if (g.rc != 0) {
            m_file = 0;
            error(where, "include: cannot expand " + qt(pattern));
            continue;
        }
        for (std::size_t i = 0; i < g.g.gl_pathc; ++i) {
            const std::string match = g.g.gl_pathv[i];
            if (!seen.insert(fs::weakly_canonical(match, ec).string()).second) {
                continue;
            }
            if (!add_file(match, false)) {
                m_file = 0;
                error(where, "include: cannot read " + qt(match));
                continue;
            }
            std::vector<std::pair<std::string, YAML::Node>> ignored;
            read_top(m_files.size() - 1, ignored);
        }
    }

    // Datastores of every file first: a rule may use a datastore declared in another file.
    for (std::size_t i = 0; i < m_files.size(); ++i) {
        m_file = i;
        const YAML::Node& root = m_files[i].root;
        if (!m_files[i].parsed || !root.IsMap()) {
            continue;
        }
        for (auto it = root.begin(); it != root.end(); ++it) {
            if (it->first.IsScalar() && it->first.Scalar() == "datastores") {
                read_datastores(it->second);
                break; // a duplicate "datastores" key was already reported
            }
        }
    }
    for (std::size_t i = 0; i < m_files.size(); ++i) {
        m_file = i;
        const YAML::Node& root = m_files[i].root;
        if (!m_files[i].parsed || !root.IsMap()) {
            continue;
        }
        for (auto it = root.begin(); it != root.end(); ++it) {
            if (it->first.IsScalar() && it->first.Scalar() == "rules") {
                read_rules(it->second);
                break;
            }
        }
    }

    if (m_coordination) {
        // Only now are the datastores of every file known.
        m_file = 0;
        const auto& name = m_config.daemon.coordination;
        const auto it = m_config.datastores.find(name);
        if (it == m_config.datastores.end()) {
            Keys names;
            for (const auto& [n, ds] : m_config.datastores) {
                names.push_back(n);
            }
            error(*m_coordination,
                  "coordination: unknown datastore " + qt(name) + hint(name, names));
        } else if (it->second.kind != DatastoreKind::postgres) {
            error(*m_coordination, "coordination: datastore " + qt(name) + " is " +
                                       std::string(to_string(it->second.kind)) +
                                       "; coordination needs a postgres datastore");
        }
    }

    std::string all_bytes;
    for (const auto& file : m_files) {
        m_config.files.push_back(file.display);
        all_bytes += file.bytes;
    }
    m_config.sha256 = sha256_hex(all_bytes);

    if (!m_errors.empty()) {
        std::vector<Diagnostic> diagnostics;
        for (auto& [index, d] : sorted(std::move(m_errors))) {
            diagnostics.push_back(std::move(d));
        }
        throw ConfigError(std::move(diagnostics));
    }
    for (auto& [index, d] : sorted(std::move(m_warnings))) {
        m_config.warnings.push_back(std::move(d));
    }
    return std::move(m_config);
}

} // namespace

Config load_config(const std::string& path, const EnvLookup& env) {
    Loader loader(env);
    return loader.load(path);
}

} // namespace retentiond
