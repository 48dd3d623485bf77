#pragma once

#include "retentiond/config.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

class BatchJournal;
struct SubjectQuery;

// What a dry run found for one rule. Computed with counting/reading only: nothing is modified.
struct DryRun {
    TimePoint now{};              // the datastore's now (postgres: server now())
    TimePoint cutoff{};           // now - retain: records whose clock <= cutoff are due
    std::int64_t in_scope = 0;    // records the rule looks at
    std::int64_t due = 0;         // due now and not held (what a purge would process)
    std::int64_t held = 0;        // due but held
    std::int64_t no_clock = 0;    // clock NULL/missing (never due unless clock_null: due)
    std::int64_t unparseable = 0; // files: records that do not parse (file left alone)
    std::optional<TimePoint> oldest_clock;
    std::int64_t due_7d = 0; // not due now, falling due within 7 / 30 / 90 days
    std::int64_t due_30d = 0;
    std::int64_t due_90d = 0;
    // Age histogram in eighths of the retention period: bucket i counts records whose age is in
    // [i/8, (i+1)/8) x retain, the last bucket everything from 2x retain up (17 buckets).
    std::vector<std::int64_t> age_buckets;
    // Kind-specific counters shown as is: "dependents.notifications_notification.delete",
    // "files", "no_ttl", "ttl_above_max", "notice.to_send", ...
    std::map<std::string, std::int64_t> counters;
    std::vector<std::string> notes; // "exports/a.csv:17: unterminated quote" (never content)
};

struct RunResult {
    enum class Status { ok, refused, failed, stopped };
    Status status = Status::ok;
    std::int64_t processed = 0; // records deleted or anonymized
    std::int64_t due = 0;       // as counted before the first batch
    std::int64_t batches = 0;
    TimePoint cutoff{};
    TimePoint now{};     // the store's now for this run, when it has its own clock (postgres)
    std::string message; // refused/failed: why, with numbers; never a key or value
    // failed because a record could not be parsed (exit 65), as opposed to an operational failure
    bool data_error = false;
    std::map<std::string, std::int64_t> counters; // dependents touched, keys given a TTL, ...
    // How the engine reached the due rows when it has several ways (postgres: "pages" or
    // "index NAME"): printed by purge and recorded in the audit's rule_end line.
    std::string path;
};

// Everything an engine gets from the run that drives it.
struct RunContext {
    std::string run_id;
    bool force = false; // override limits
    const date::time_zone* tz = nullptr;
    const Secret* audit_key = nullptr; // for hmac / email_domain strategies
    BatchJournal* journal = nullptr;   // intent before commit, outcome after; may be null in tests
    std::function<void(std::int64_t done, std::int64_t total)> on_progress;
    // What the run is doing, for progress displays: "counting", "notices", "batches",
    // "verification". Engines call phase(), which does nothing when nobody listens.
    std::function<void(std::string_view phase)> on_phase;
    // SIGTERM: finish the current batch, then return. Must be thread-safe: the postgres engine
    // also polls it from its connection watch, which cancels a statement still running 2 s after
    // the request (pg_connect.hpp).
    std::function<bool()> stop_requested;
    // An erasure request's id (the subject's digest): engines copy it into their intents.
    std::string request;

    void phase(std::string_view name) const {
        if (on_phase) {
            on_phase(name);
        }
    }
};

enum class Presence { present, absent, unknown };

// One datastore kind. The contract suite (tests/contract) runs the same behavioural tests against
// every implementation.
class Engine {
public:
    virtual ~Engine() = default;
    // Online validation of a rule against the live store (tables, columns, foreign keys, root
    // directory...). Returns problems; throws UnavailableError when the store cannot be reached.
    virtual std::vector<Diagnostic> check(const Rule& rule) = 0;
    virtual DryRun dry_run(const Rule& rule, const RunContext& ctx) = 0;
    // Applies the rule. Refusals (limits) and failures are returned, not thrown, except
    // UnavailableError when the store is down.
    virtual RunResult purge(const Rule& rule, RunContext& ctx) = 0;
    // Crash recovery: whether the records of an unresolved batch are still in their pre-batch
    // state (present = the batch did not commit).
    virtual Presence records_present(const Rule& rule, const std::string& target,
                                     const std::vector<std::string>& keys) = 0;
    // An erasure request (subject.hpp): the records of `rule` whose subject field matches
    // `query`, whatever their clock; a held record is never touched. The figures: due = matching
    // and not held, counters "held" (deferred by a hold) and "in_scope" (every record the rule
    // looks at, for the limits). dry: counts only. Otherwise applies the rule's action (with its
    // dependents) to the matching records not held, journaled like a purge's batches with
    // ctx.request in each intent; processed = records erased. Limits are the caller's (it checks
    // every rule before any is applied). Throws UnavailableError when the store is down. The
    // default: a failed result saying the kind takes no erasure requests.
    virtual RunResult erase_subject(const Rule& rule, const SubjectQuery& query, RunContext& ctx,
                                    bool dry);
};

// Canonical text of a record key, for digests and `audit prove --key`: the value itself for a
// single column, a JSON array of the values for a composite key.
std::string canonical_key(const std::vector<std::string>& values);

} // namespace retentiond
