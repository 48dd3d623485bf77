#pragma once

#include "retentiond/duration.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/schedule.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace retentiond {

// A string that came from ${...} expansion or holds a credential (DSN, URL, audit key). Its text is
// reachable only through reveal(): printing it, putting it in a report or a log goes through
// redacted(), which never shows the value.
class Secret {
public:
    Secret() = default;
    explicit Secret(std::string value) : m_value(std::move(value)) {}
    const std::string& reveal() const { return m_value; }
    bool empty() const { return m_value.empty(); }
    std::string redacted() const { return m_value.empty() ? "" : "<redacted>"; }

private:
    std::string m_value;
};

enum class DatastoreKind { postgres, files, redis };
std::string_view to_string(DatastoreKind kind);

struct Datastore {
    std::string name;
    DatastoreKind kind = DatastoreKind::postgres;
    Secret dsn;       // postgres: libpq connection string or URI
    std::string root; // files: absolute or relative to the main config file's directory
    Secret url;       // redis: redis://[:password@]host:port/db or unix socket path
    bool dsn_has_inline_password = false; // warned about at load, never logged
    SourcePos pos;
};

// An anonymization strategy (policy-format.md, "Anonymization strategies").
struct Strategy {
    enum class Kind {
        null_value,
        fixed,
        hmac,
        email_domain,
        truncate_ip,
        strip_query,
        round,
        drop_keys,
        date_trunc
    };
    Kind kind = Kind::null_value;
    std::string fixed_value;            // fixed: the constant, as a string
    int round_digits = 0;               // round
    std::vector<std::string> drop_keys; // drop_keys: dotted paths
    std::string trunc_unit;             // date_trunc: day | month | year
};

struct FieldStrategy {
    std::string field; // column, CSV header, or dotted JSON path
    Strategy strategy;
    SourcePos pos;
};

enum class Action { remove, anonymize }; // `delete`, `anonymize`
std::string_view to_string(Action action);

struct Limits {
    std::optional<std::int64_t> max_rows;
    double max_fraction = 0.5;
};

// --- kind postgres -------------------------------------------------------------------------

struct PgHold {
    enum class Kind { equals, after_now };
    std::string column;
    Kind kind = Kind::equals;
    std::string equals; // passed as a $n parameter, cast by PostgreSQL to the column's type
};

struct Dependent {
    enum class Action { remove, set_null, anonymize };
    std::string table;  // possibly schema-qualified
    std::string column; // the referencing column
    Action action = Action::remove;
    std::vector<FieldStrategy> anonymize;
    std::vector<Dependent> dependents; // rows referencing this dependent's rows
    SourcePos pos;
};

// Extension (docs/policy-format-extensions.md): warn the record's holder before deleting it.
struct Notice {
    Duration before;
    std::vector<std::string> fields;
    std::string command;
    std::chrono::milliseconds timeout{60000};
};

struct PostgresRule {
    std::string table;
    std::vector<std::string> key;   // one column, or several for a composite key
    std::vector<std::string> clock; // COALESCE(clock[0], clock[1], ...)
    std::optional<PgHold> hold;
    std::vector<Dependent> dependents;
    std::optional<std::string> mark; // anonymize: boolean or timestamp column
    std::chrono::milliseconds lock_timeout{2000};
    std::chrono::milliseconds statement_timeout{60000};
    std::chrono::milliseconds sleep_between_batches{0};
    int parallel = 1; // concurrent batch streams (action: delete without dependents)
    std::optional<Notice> notice;
};

// --- kind files ----------------------------------------------------------------------------

struct FilesClock {
    enum class Kind { field, mtime, filename };
    Kind kind = Kind::field;
    std::string field;    // CSV column or dotted JSON path
    std::string format;   // strptime-style; empty = ISO 8601 / Tally default
    std::string filename; // regex with one capture group, for Kind::filename
};

struct FilesHold {
    std::string field;
    std::string equals;
};

struct FilesRule {
    enum class Format { csv, jsonl, whole };
    std::string files; // glob under the datastore root, ** allowed
    Format format = Format::csv;
    FilesClock clock;
    std::optional<FilesHold> hold;
    char delimiter = 0;    // 0 = detect from the header (',' or ';')
    std::string key_field; // audit digests: defaults to the first CSV column / "id"
};

// --- kind redis ----------------------------------------------------------------------------

struct RedisClock {
    enum class Kind { idle, hash_field };
    Kind kind = Kind::idle;
    std::string hash_field;
};

struct RedisHold {
    std::string hash_field;
    std::string equals;
};

struct RedisRule {
    std::string keys; // SCAN MATCH pattern
    RedisClock clock;
    std::optional<Duration> max_ttl;
    std::optional<RedisHold> hold;
    int scan_count = 1000;
};

// --- rules ---------------------------------------------------------------------------------

// Text in the policy's two languages; either may be empty.
struct LocalizedText {
    std::string fr;
    std::string en;
    const std::string& get(std::string_view lang) const;
};

struct Rule {
    std::string name;
    std::string datastore;
    DatastoreKind kind = DatastoreKind::postgres;
    std::string category;
    std::string legal_basis;
    std::string description;
    Duration retain;
    // Extension: how the privacy policy words the clock ("à compter de la dernière utilisation du
    // compte"), used by policy-table and report.
    LocalizedText clock_label;
    Action action = Action::remove;
    std::vector<FieldStrategy> anonymize;
    Schedule schedule;
    int batch_size = 5000;
    Limits limits;
    bool clock_null_due = false;
    // Extension `policy_table: false`: enforced, but not a line of the published retention table
    // (e.g. Django sessions, which the privacy policy does not list).
    bool in_policy_table = true;
    std::variant<PostgresRule, FilesRule, RedisRule> spec;
    SourcePos pos;

    const PostgresRule& pg() const { return std::get<PostgresRule>(spec); }
    const FilesRule& files() const { return std::get<FilesRule>(spec); }
    const RedisRule& redis() const { return std::get<RedisRule>(spec); }
};

struct DaemonSettings {
    std::string audit_log = "/var/lib/retentiond/audit.jsonl";
    Secret audit_key;                       // empty = not configured
    std::string metrics = "127.0.0.1:9467"; // "off" disables
    std::string timezone = "UTC";
    std::chrono::seconds max_clock_skew{300};
    std::chrono::seconds store_down_unhealthy{900}; // /healthz turns 503 after this long
    // max random delay added to each scheduled start (capped per rule: scheduler.hpp)
    std::chrono::milliseconds splay{30000};
    std::chrono::milliseconds retry_backoff_initial{30000}; // after a store outage, doubled
    std::chrono::milliseconds retry_backoff_max{900000};
    // A postgres datastore where rules of other kinds take their advisory lock and record their
    // slots, so that several daemons run each slot once. Empty: only postgres rules coordinate
    // (each on its own datastore).
    std::string coordination;
};

struct Config {
    std::string main_file;
    std::vector<std::string> files; // every file read, main first
    std::string sha256;             // of the files' bytes, in order (not of expanded secrets)
    DaemonSettings daemon;
    std::map<std::string, Datastore> datastores;
    std::vector<Rule> rules;
    std::vector<Diagnostic> warnings; // e.g. a DSN with an inline password

    const Rule* find_rule(std::string_view name) const;
    const date::time_zone* zone() const;
};

// Reads an environment variable; nullopt when unset. Injected so tests need no setenv().
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Loads the main file and its includes, validates everything, and returns the config, or throws
// ConfigError holding every diagnostic of every file (not only the first).
Config load_config(const std::string& path, const EnvLookup& env = process_env());

// The config file path from --config, else $RETENTIOND_CONFIG, else
// /etc/retentiond/retentiond.yaml.
std::string default_config_path(const EnvLookup& env = process_env());

} // namespace retentiond
