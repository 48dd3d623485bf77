#pragma once

#include "retentiond/audit.hpp"
#include "retentiond/audit_pg_store.hpp"
#include "retentiond/engine.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace retentiond::test {

// One record of a contract fixture. age = how long ago its clock is (relative to the store's now);
// nullopt = no clock (NULL column, missing field).
struct ContractRecord {
    std::string key;
    std::optional<std::chrono::seconds> age;
    bool held = false;
};

struct RuleOptions {
    Duration retain;
    Action action = Action::remove;
    bool with_hold = true;
    bool clock_null_due = false;
    int batch_size = 5000;
    Limits limits{std::nullopt, 1.0};
};

// What a datastore kind must provide for the contract suite (tests/contract/test_contract.cpp).
// Every kind passes the same tests.
class ContractBackend {
public:
    virtual ~ContractBackend() = default;
    // Creates a fresh, empty target (table, directory, key prefix) holding exactly these records.
    virtual void seed(const std::vector<ContractRecord>& records) = 0;
    // A rule over that target: clock from the record's age, hold from `held`.
    virtual Rule make_rule(const RuleOptions& options) = 0;
    virtual Engine& engine() = 0;
    // Keys still present.
    virtual std::set<std::string> remaining_keys() = 0;
    // Keys whose personal fields were anonymized (only when supports_anonymize()).
    virtual std::set<std::string> anonymized_keys() = 0;
    virtual bool supports_anonymize() const = 0;
    // A fingerprint of every record's full content, keyed by key: untouched records must keep
    // theirs byte for byte.
    virtual std::map<std::string, std::string> fingerprints() = 0;
    // An engine of this kind whose store cannot be reached (server gone, root gone): dry_run and
    // purge must throw UnavailableError, never report an empty store.
    virtual std::unique_ptr<Engine> unreachable_engine() = 0;
    // A rule whose target does not exist, checked on an engine of this kind: check() must name
    // it. nullopt when the kind has no such thing (redis: a key pattern that matches nothing is an
    // empty target, not a missing one).
    struct MissingTarget {
        std::unique_ptr<Engine> engine;
        Rule rule;
        std::string named; // what check()'s message must contain
    };
    virtual std::optional<MissingTarget> missing_target(const RuleOptions& options) = 0;

    // Erasure requests: where the seeded records hold a person's identifier (the rule's
    // `subject:` field), and the text a record of `key` holds there.
    virtual SubjectField subject_field() const = 0;
    virtual std::string subject_of(const std::string& key) const = 0;

    // The audit store in this datastore's own database (`daemon.audit_store` naming it: a
    // batch's lines then commit with it), for the suite's audit-store variant; nullopt for a
    // kind that cannot hold it (the variant then puts the store in a database of its own).
    virtual std::optional<PgAuditTarget> own_audit_store() const { return std::nullopt; }
};

// Each kind's adapter (daemon/engines/<kind>/tests/contract_<kind>.cpp) defines
// make_<kind>_backend(); the build lists the kinds in contract_kinds.inc.
#define RETENTIOND_CONTRACT_KIND(kind) std::unique_ptr<ContractBackend> make_##kind##_backend();
#include "contract_kinds.inc"
#undef RETENTIOND_CONTRACT_KIND

// check()'s problems without its advisories (warnings): what makes `retentiond check` fail.
inline std::vector<Diagnostic> problems(std::vector<Diagnostic> found) {
    std::erase_if(found, [](const Diagnostic& d) { return d.warning; });
    return found;
}

// Records every journal call, checking intent/outcome pairing.
class RecordingJournal : public BatchJournal {
public:
    std::string intent(const BatchIntent& batch) override {
        m_intents.push_back(batch);
        return std::to_string(m_intents.size() - 1);
    }
    void outcome(const std::string& batch_id, bool committed, std::int64_t count) override {
        m_outcomes.push_back({std::stoul(batch_id), committed, count});
    }
    void event(const std::string& type, const nlohmann::json& fields) override {
        m_events.push_back({type, fields});
    }
    struct Outcome {
        std::size_t intent;
        bool committed;
        std::int64_t count;
    };
    std::vector<BatchIntent> m_intents;
    std::vector<Outcome> m_outcomes;
    std::vector<std::pair<std::string, nlohmann::json>> m_events;
};

} // namespace retentiond::test
