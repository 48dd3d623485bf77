#pragma once

// The small interface through which a datastore kind reads its own keys of a datastore section
// and of a rule: the same readers, positions and messages as the rest of the configuration
// (config/config.cpp implements it over yaml-cpp, which stays private to the core).

#include "retentiond/config.hpp"

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ratio>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

using Keys = std::vector<std::string_view>;

// "\"s\""
std::string in_quotes(std::string_view s);

// One value of a configuration file (a scalar, a map, a list or nothing), cheap to copy.
class ConfigNode {
public:
    struct Impl; // the yaml-cpp node
    ConfigNode();
    explicit ConfigNode(std::shared_ptr<const Impl> impl);
    bool is_null() const;
    bool is_scalar() const;
    bool is_map() const;
    bool is_sequence() const;
    const std::string& scalar() const; // "" unless a scalar
    std::size_t size() const;
    std::vector<ConfigNode> items() const; // a list's items, in order
    const Impl& impl() const { return *m_impl; }

private:
    std::shared_ptr<const Impl> m_impl;
};

// The key/value pairs of one map, first occurrence of each key, in file order.
struct ConfigMap {
    struct Entry {
        std::string name;
        ConfigNode key;
        ConfigNode value;
    };
    ConfigNode node;
    std::vector<Entry> entries;

    const Entry* find(std::string_view name) const;
    const ConfigNode* get(std::string_view name) const;
};

class ConfigReader {
public:
    virtual ~ConfigReader() = default;

    // Diagnostics at a node's position ("file:line:column"), prefixed like every other message of
    // the section being read (its rule, its datastore).
    virtual void error(const ConfigNode& node, std::string message) = 0;
    virtual void warn(const ConfigNode& node, std::string message) = 0;
    // "KEY: expected EXPECTED, got WHAT"
    virtual void type_error(const ConfigNode& node, std::string_view key,
                            std::string_view expected) = 0;
    virtual SourcePos pos(const ConfigNode& node) const = 0;

    // Structure: a map (duplicate keys are errors), its allowed and required keys.
    virtual std::optional<ConfigMap> map(const ConfigNode& node, std::string_view key) = 0;
    virtual void check_keys(const ConfigMap& fields, const Keys& allowed) = 0;
    virtual void require(const ConfigMap& fields, std::initializer_list<std::string_view> keys) = 0;

    // Scalars, ${VAR}/${file:} expanded; nullopt after an error.
    virtual std::optional<std::string> string(const ConfigNode& node, std::string_view key) = 0;
    virtual std::optional<std::vector<std::string>>
    string_list(const ConfigNode& node, std::string_view key, bool allow_scalar) = 0;
    virtual std::optional<std::int64_t> integer(const ConfigNode& node, std::string_view key) = 0;
    virtual std::optional<bool> boolean(const ConfigNode& node, std::string_view key) = 0;
    virtual std::optional<std::string> choice(const ConfigNode& node, std::string_view key,
                                              const Keys& options) = 0;
    // fixed: not calendar-based (throttle, timeouts, backoff, splay): ms and decimals allowed.
    virtual std::optional<Duration> duration(const ConfigNode& node, std::string_view key,
                                             bool fixed = false) = 0;
    // A duration of fixed length (no months or years) under `key` of `fields`, if given.
    virtual std::optional<std::chrono::microseconds> fixed_duration(const ConfigMap& fields,
                                                                    std::string_view key) = 0;
    template <class Rep, class Period>
    void fixed_duration(const ConfigMap& fields, std::string_view key,
                        std::chrono::duration<Rep, Period>& out) {
        const auto d = fixed_duration(fields, key);
        if (!d) {
            return;
        }
        const auto value = std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(*d);
        if (value != *d) {
            // "40 ms" where whole seconds are kept: say so rather than round it away.
            const ConfigNode& node = *fields.get(key);
            error(node, std::string(key) + ": " + in_quotes(node.scalar()) +
                            " is finer than this setting keeps (whole " +
                            (std::ratio_equal_v<Period, std::milli> ? "milliseconds" : "seconds") +
                            ")");
            return;
        }
        out = value;
    }
    // An `anonymize` map of field: strategy.
    virtual std::vector<FieldStrategy> anonymize(const ConfigNode& node, std::string_view key) = 0;

    // The main configuration file's directory (relative paths are relative to it).
    virtual std::string main_dir() const = 0;
};

// A glob(3)/fnmatch pattern's problem (brackets unclosed, "**" not a whole path component,
// dangling escape), or nullopt when it is well formed.
std::optional<std::string> glob_problem(std::string_view pattern);
} // namespace retentiond
