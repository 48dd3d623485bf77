#pragma once

// A datastore kind: what it accepts in the configuration, how it reads it, the engine it makes,
// and what the run, the report and the daemon ask of it. The list of kinds is
// engines/registry.cpp; each kind lives in engines/<kind>/.

#include "retentiond/config.hpp"
#include "retentiond/config_reader.hpp"

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

class Engine;
class RunLock;
struct CoverageScan;

class Kind {
public:
    virtual ~Kind() = default;

    // "postgres": the value of a datastore's `kind`.
    virtual std::string_view name() const = 0;
    // The keys of a datastore section besides `kind`; the first names its location in messages
    // ("use \"dsn\""). postgres: dsn, files: root, redis: url.
    virtual const Keys& datastore_keys() const = 0;
    // The keys of a rule of this kind besides the common ones (name, retain, clock, hold, ...).
    virtual const Keys& rule_keys() const = 0;

    // Reads a datastore section (`kind` and keys of other kinds already checked); diagnostics go
    // to `in`. Returns the spec even when incomplete: the load fails on any error anyway.
    virtual std::shared_ptr<const DatastoreSpec> read_datastore(ConfigReader& in,
                                                                const ConfigMap& section) const = 0;
    // Reads a rule's own keys (and the common keys whose meaning is the kind's: clock, hold);
    // `rule` holds the common keys already read.
    virtual std::shared_ptr<const RuleSpec> read_rule(ConfigReader& in, const ConfigMap& section,
                                                      const Rule& rule) const = 0;
    // Whether `action: anonymize` is meaningful (it then needs an `anonymize` map); a kind that
    // says no reports the action itself.
    virtual bool supports_anonymize() const { return true; }
    // Erasure requests: whether `subject:` names a hash field (`{ hash_field: NAME }`, redis)
    // rather than a column / CSV column / JSON path.
    virtual bool subject_in_hash_field() const { return false; }

    virtual std::unique_ptr<Engine> make_engine(const Datastore& store,
                                                const Config& config) const = 0;

    // The report: whether an audit batch on `target` (non-empty) is one of the rule's own records
    // rather than a dependent's, a TTL or a notice.
    virtual bool is_rule_target(const Rule& rule, const std::string& target) const {
        (void)rule;
        (void)target;
        return true;
    }

    // Coverage (coverage.hpp): what looks personal in `store` and which of `rules` (the
    // store's) covers it. Bounded reads only, never a value in the result. Throws
    // UnavailableError when the store cannot be reached. The default: a note that this kind has
    // no scan.
    virtual CoverageScan scan_coverage(const Datastore& store,
                                       const std::vector<const Rule*>& rules) const;

    // Erasure requests (the daemon re-applies them after a restore): what identifies the data
    // `store` holds for `rules` (its rules declaring `subject:`) so that a restore from a backup
    // changes it; catalog numbers, never personal data. "" when the kind cannot tell (the
    // default; docs/dpo-guide.md says what each kind detects). Throws UnavailableError when the
    // store cannot be reached.
    virtual std::string store_identity(const Datastore& store,
                                       const std::vector<const Rule*>& rules) const {
        (void)store;
        (void)rules;
        return {};
    }

    // The daemon: whether rules on this kind's datastores take their cross-host run lock on
    // their own datastore, and a datastore of this kind can be `daemon.coordination`.
    virtual bool coordinates_runs() const { return false; }
    // The run lock of `rule` on `store` (coordinates_runs() only): nullptr when another session
    // holds it; throws UnavailableError when the store cannot be reached. `stop` (thread-safe)
    // ends a wait on the store within seconds.
    virtual std::unique_ptr<RunLock> try_lock_run(const Datastore& store, std::string_view rule,
                                                  const std::function<bool()>& stop) const;

    // The audit chain: whether a datastore of this kind can hold it (`daemon.audit_store`), and
    // the connection string its store opens (holds_audit() only; a secret: never logged).
    virtual bool holds_audit() const { return false; }
    virtual std::string audit_conninfo(const Datastore& store) const {
        (void)store;
        return {};
    }
};

} // namespace retentiond
