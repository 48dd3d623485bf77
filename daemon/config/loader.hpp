#pragma once

// The configuration loader (private to config/): yaml-cpp, strict keys with hints, duplicate
// keys, positions, ${VAR}/${file:}, includes. It is the ConfigReader through which each kind reads
// its own keys (engines/<kind>/<kind>_config.cpp).

#include "retentiond/config.hpp"
#include "retentiond/config_reader.hpp"
#include "retentiond/kind.hpp"

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace retentiond {

struct ConfigNode::Impl {
    YAML::Node node;
};

namespace config_detail {

inline ConfigNode wrap(const YAML::Node& node) {
    return ConfigNode(std::make_shared<const ConfigNode::Impl>(ConfigNode::Impl{node}));
}
inline const YAML::Node& yaml(const ConfigNode& node) {
    return node.impl().node;
}

// The keys every rule may have, whatever its kind.
extern const Keys k_common_rule_keys;

bool contains(const Keys& keys, std::string_view key);
std::string trim(std::string_view s);
// " (did you mean "retain"?)" for the closest candidate within two edits, else "".
std::string hint(std::string_view word, const Keys& candidates);
// "a, b or c"
std::string join_names(const Keys& names);

struct SourceFile {
    std::string display; // as the user wrote it (main) or as the include glob produced it
    std::string bytes;
    ConfigNode root;
    bool main = false;
    bool parsed = false;
};

using Diagnostics = std::vector<std::pair<std::size_t, Diagnostic>>; // file index, diagnostic
using Includes = std::vector<std::pair<std::string, ConfigNode>>;    // glob, where written

class Loader final : public ConfigReader {
public:
    Loader(const std::vector<const Kind*>& kinds, const EnvLookup& env);

    Config load(const std::string& path);

    // --- ConfigReader
    void error(const ConfigNode& node, std::string message) override;
    void warn(const ConfigNode& node, std::string message) override;
    void type_error(const ConfigNode& node, std::string_view key,
                    std::string_view expected) override;
    SourcePos pos(const ConfigNode& node) const override;
    std::optional<ConfigMap> map(const ConfigNode& node, std::string_view key) override;
    void check_keys(const ConfigMap& fields, const Keys& allowed) override;
    void require(const ConfigMap& fields, std::initializer_list<std::string_view> keys) override;
    std::optional<std::string> string(const ConfigNode& node, std::string_view key) override;
    std::optional<std::vector<std::string>>
    string_list(const ConfigNode& node, std::string_view key, bool allow_scalar) override;
    std::optional<std::int64_t> integer(const ConfigNode& node, std::string_view key) override;
    std::optional<bool> boolean(const ConfigNode& node, std::string_view key) override;
    std::optional<std::string> choice(const ConfigNode& node, std::string_view key,
                                      const Keys& options) override;
    std::optional<Duration> duration(const ConfigNode& node, std::string_view key,
                                     bool fixed = false) override;
    std::optional<std::chrono::microseconds> fixed_duration(const ConfigMap& fields,
                                                            std::string_view key) override;
    using ConfigReader::fixed_duration;
    std::vector<FieldStrategy> anonymize(const ConfigNode& node, std::string_view key) override;
    std::string main_dir() const override { return m_main_dir.string(); }

private:
    const std::vector<const Kind*>& m_kinds;
    const EnvLookup& m_env;
    Config m_config;
    std::vector<SourceFile> m_files;
    std::size_t m_file = 0;  // index of the file being read
    std::string m_rule;      // the rule being read, for diagnostics
    std::string m_datastore; // the datastore being read, for diagnostics
    Diagnostics m_errors;
    Diagnostics m_warnings;
    std::map<std::string, SourcePos> m_rule_names;
    std::filesystem::path m_main_dir;
    std::vector<std::pair<YAML::Node, YAML::Mark>> m_null_values; // empty values: their key's mark
    std::set<std::string> m_kindless_datastores; // declared with a bad or missing kind
    std::optional<ConfigNode> m_audit_store;     // daemon.audit_store, checked after datastores
    std::optional<ConfigNode> m_coordination;    // daemon.coordination, checked after datastores
    Keys m_kind_names;                           // "postgres", "files", "redis"
    Keys m_datastore_keys;                       // "kind" and every kind's datastore keys
    Keys m_known_keys;                           // every key of every section

    bool is_known_key(std::string_view key) const { return contains(m_known_keys, key); }
    Diagnostic diagnostic(SourcePos p, std::string message) const;

    // --- values (loader_values.cpp)
    std::optional<std::string> expand(const ConfigNode& node, std::string_view key);
    bool expand_text(std::string_view text, std::string& out, std::string& problem, int depth);
    std::optional<double> number(const ConfigNode& node, std::string_view key);
    std::optional<LocalizedText> localized(const ConfigNode& node, std::string_view key);
    std::optional<Strategy> read_strategy(const ConfigNode& node, std::string_view key);
    std::optional<Strategy> read_scalar_strategy(const ConfigNode& node, std::string_view key);
    std::optional<Strategy> read_strategy_with_value(const ConfigMap::Entry& e,
                                                     std::string_view key);

    // --- files and sections (loader.cpp)
    bool add_file(const std::string& display, bool main);
    void read_file(std::size_t index);
    void read_top(std::size_t index, Includes& includes);
    void read_includes(const Includes& includes, const std::string& path);
    void read_sections(std::string_view name);
    void check_coordination();
    void check_audit_store();
    void read_audit_store(const ConfigMap& f);
    void read_daemon(const ConfigNode& node);
    void read_datastores(const ConfigNode& node);
    void read_datastore(const ConfigNode& name_node, const ConfigNode& node);
    const Kind* read_datastore_kind(const ConfigMap& f, const ConfigNode& node);
    void read_rules(const ConfigNode& node);

    // --- coverage acknowledgements (loader_coverage.cpp)
    void read_coverage(const ConfigNode& node);
    void read_coverage_ignore(const ConfigNode& node);

    // --- rules (loader_rules.cpp)
    void read_rule(const ConfigNode& node);
    void read_rule_name(const ConfigMap& f, Rule& rule);
    const Kind* read_rule_datastore(const ConfigMap& f, Rule& rule);
    void check_rule_keys(const ConfigMap& f, const Rule& rule, const Kind* kind);
    void read_rule_texts(const ConfigMap& f, Rule& rule);
    void read_rule_action(const ConfigMap& f, const ConfigNode& node, Rule& rule, const Kind* kind);
    void read_rule_schedule(const ConfigMap& f, Rule& rule);
    void read_rule_limits(const ConfigMap& f, Rule& rule);
    void read_rule_subjects(const ConfigMap& f, Rule& rule, const Kind* kind);
};

} // namespace config_detail

} // namespace retentiond
