#pragma once

#include "retentiond/duration.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/schedule.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
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

class Kind; // a datastore kind (kind.hpp); the list of kinds is engines/registry.cpp

// What a kind reads from its own keys: the datastore's location (postgres: dsn, files: root,
// redis: url), a rule's table/files/keys... Each kind defines its types in its own folder; core
// code never needs them. Read them back with spec_of<T>().
struct DatastoreSpec {
    virtual ~DatastoreSpec() = default;
};
struct RuleSpec {
    virtual ~RuleSpec() = default;
};

template <class T> std::shared_ptr<const T> spec_ptr(T value) {
    return std::make_shared<T>(std::move(value)); // not const itself: see edit_spec
}

// The spec of a rule or datastore as the kind's type; throws std::logic_error when it holds
// another kind's (or none).
template <class T, class Owner> const T& spec_of(const Owner& owner) {
    if (const auto* spec = dynamic_cast<const T*>(owner.spec.get())) {
        return *spec;
    }
    throw std::logic_error("\"" + owner.name + "\" has no spec of the expected kind");
}
template <class T, class Owner> bool has_spec(const Owner& owner) {
    return dynamic_cast<const T*>(owner.spec.get()) != nullptr;
}
// Tests and benches: the owner's spec, modifiable; copied first when another owner shares it.
template <class T, class Owner> T& edit_spec(Owner& owner) {
    if (owner.spec.use_count() != 1) {
        auto copy = std::make_shared<T>(spec_of<T>(owner));
        owner.spec = copy;
        return *copy;
    }
    return const_cast<T&>(spec_of<T>(owner)); // made by spec_ptr or here: not a const object
}

struct Datastore {
    std::string name;
    const Kind* kind = nullptr;                // null: declared with a bad or missing kind
    std::shared_ptr<const DatastoreSpec> spec; // the kind's keys (secrets stay in Secret)
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

// Extension `subject:` (docs/policy-format-extensions.md, "Erasure requests"): where a rule's
// records carry a person's identifier of one kind (email, user_id, phone, ...).
struct SubjectField {
    std::string field;       // postgres column, CSV column or dotted JSON path, redis hash field
    bool hash_field = false; // written `{ hash_field: NAME }` (redis)
    SourcePos pos;
};

struct Limits {
    std::optional<std::int64_t> max_rows;
    double max_fraction = 0.5;
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
    const Kind* kind = nullptr; // its datastore's
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
    // Extension `subject:`: identifier kind -> where the rule's records hold it.
    std::map<std::string, SubjectField> subjects;
    std::shared_ptr<const RuleSpec> spec; // the kind's keys: spec_of<PostgresRule>(rule), ...
    SourcePos pos;
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
    // Extension: an erasure request is due this long after it was received (GDPR art. 12(3)).
    Duration erasure_deadline{1, 0, 0, false, "1 month"};
    // Extension: `retentiond run` resumes the open erasure requests this often (a deferred
    // record is erased once its hold lifts), and re-applies every request this often and when a
    // datastore's identity changed (a restore). 0 turns either off.
    std::chrono::seconds erasure_resume{3600};
    std::chrono::seconds erasure_reapply{7 * 86400};
    // Extension `audit_store: NAME`: the audit chain in a table of this postgres datastore,
    // schema `audit_schema` (audit_pg_store.hpp), instead of the file `audit_log`. Empty: the file.
    std::string audit_store;
    std::string audit_schema = "retentiond";
};

// Extension `coverage: { ignore: [...] }`: a location that looks personal and needs no rule, with
// the reason the report prints. One of table (and column), files or pattern.
struct CoverageIgnore {
    std::string datastore; // empty: any datastore
    std::string table;     // "public.t" or "t" (public)
    std::string column;    // empty: every column of the table
    std::string files;     // a glob relative to the root
    std::string pattern;   // a key pattern, compared with the scan's pattern
    std::string reason;
    SourcePos pos;
};

struct Config {
    std::string main_file;
    std::vector<std::string> files; // every file read, main first
    std::string sha256;             // of the files' bytes, in order (not of expanded secrets)
    DaemonSettings daemon;
    std::map<std::string, Datastore> datastores;
    std::vector<Rule> rules;
    std::vector<CoverageIgnore> coverage_ignores;
    std::vector<Diagnostic> warnings; // e.g. a DSN with an inline password

    const Rule* find_rule(std::string_view name) const;
    const date::time_zone* zone() const;
};

// Reads an environment variable; nullopt when unset. Injected so tests need no setenv().
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Loads the main file and its includes, validates everything, and returns the config, or throws
// ConfigError holding every diagnostic of every file (not only the first). Each datastore's and
// rule's own keys are read by its kind, one of `kinds` (in the order messages list them).
// (registry.hpp: the same with every kind of the registry.)
Config load_config(const std::string& path, const std::vector<const Kind*>& kinds,
                   const EnvLookup& env);

// The config file path from --config, else $RETENTIOND_CONFIG, else
// /etc/retentiond/retentiond.yaml.
std::string default_config_path(const EnvLookup& env = process_env());

} // namespace retentiond
