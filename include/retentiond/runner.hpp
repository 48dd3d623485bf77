#pragma once

#include "retentiond/audit.hpp"
#include "retentiond/audit_pg_store.hpp"
#include "retentiond/engine.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace retentiond {

// The outcome of one rule in one run, as the CLI, the daemon and the report see it.
struct RuleRun {
    std::string run_id;
    std::string rule;
    std::string datastore;
    enum class Failure { none, unavailable, error };
    Failure failure = Failure::none;
    std::string error;        // why it failed; never a key, a value or a secret
    bool audit_error = false; // the audit log could not be written (exit 74)
    RunResult result;         // meaningful when failure == none
    std::chrono::milliseconds elapsed{0};

    bool ok() const { return failure == Failure::none && result.status == RunResult::Status::ok; }
};

struct RuleDryRun {
    std::string rule;
    std::string datastore;
    std::optional<DryRun> dry; // nullopt when the store could not be read
    bool unavailable = false;
    std::string error;
};

struct PurgeOptions {
    std::vector<std::string> rules; // empty = every rule
    bool force = false;
    std::string mode = "purge"; // run_start's mode: purge | daemon
    std::function<bool()> stop_requested;
    std::function<void(const Rule&, std::int64_t done, std::int64_t total)> progress;
    std::function<void(const Rule&, std::string_view phase)> phase; // RunContext::on_phase
    // The daemon's scheduled slot this run stands for: written as `slot` in the rule_end line.
    std::optional<TimePoint> slot;
};

// The rules named (in config order), or all of them. Throws std::invalid_argument naming an
// unknown rule.
std::vector<const Rule*> select_rules(const Config& config, const std::vector<std::string>& names);

// "20261126T030000Z-1a2b3c4d": sortable, unique across hosts.

// Opens the audit log of a config for a run. Throws ConfigError (exit 78) when audit_key is
// missing, std::runtime_error (exit 74) when the log cannot be written.
std::unique_ptr<AuditLog> open_audit_log(const Config& config, const std::string& run_id);
// The configured audit chain's PostgreSQL store (daemon.audit_store), if any.
std::optional<PgAuditTarget> audit_store_target(const Config& config);
// The lines of the configured audit chain, for every reader (verify, prove, report, last
// successes, export): the file `log_file` when given, else the store's table
// (daemon.audit_store) or the file log (daemon.audit_log). `with_rotated`: a file log's rotated
// files first (all but verify, which checks one file against its predecessor).
std::unique_ptr<AuditLines> open_audit_lines(const Config& config,
                                             const std::optional<std::string>& log_file,
                                             bool with_rotated = true);
// Where the chain is, for people: the file's path, or "audit store NAME (SCHEMA.audit_log)".
std::string describe_audit(const Config& config);
// Logs the chain's head (`audit head: seq=N sha256=H`) to the process's log output (journald,
// a log drain): the anchor `audit verify --head` checks the store against.
void log_audit_head(const AuditLog& audit);

// Drives engines for a config: one engine per datastore, made on first use.
class Runner {
public:
    explicit Runner(const Config& config) : m_config(config) {}

    // A full `purge --now`: audit log opened first (nothing is touched if that fails), batches
    // left unresolved by a crash are resolved against their datastore, then each rule runs.
    std::vector<RuleRun> purge(const PurgeOptions& options);
    // Counting only; needs no audit log.
    std::vector<RuleDryRun> dry_run(const std::vector<std::string>& rules);

    // One rule, with an audit log the caller opened (the daemon keeps one).
    RuleRun run_rule(const Rule& rule, AuditLog& audit, const std::string& run_id,
                     const PurgeOptions& options);
    // Resolves the pending batches a crash left (`purge`; the daemon's per-datastore workers
    // pick theirs and call resolve()). Returns how many were resolved.
    int recover(AuditLog& audit);
    // Resolves these batches against their datastores (a store that is down keeps its batches
    // pending). Returns how many were resolved.
    int resolve(AuditLog& audit, const std::vector<AuditLog::Pending>& batches);

    // Logs the chain head purge() ended on (`audit head: seq=N sha256=H`), once the caller's
    // progress display is done with the terminal.
    void log_audit_head() const;

    // Drops the engine of a datastore (after an outage, so the next use reconnects).
    void reset_engine(const std::string& datastore);
    Engine& engine(const std::string& datastore);

private:
    // The run's `error` (if it failed) and `rule_end` lines. Throws AuditWriteError.
    static void write_rule_end(AuditLog& audit, const RuleRun& run, const PurgeOptions& options);

    const Config& m_config;
    std::map<std::string, std::unique_ptr<Engine>> m_engines;
    std::string m_head; // the head line purge() ended on
};

// "ok", "refused", "failed", "stopped", "unavailable".
std::string rule_run_status(const RuleRun& run);

// 0, 74 (the audit log could not be written), 65 (a record could not be parsed), 69 (a store was
// down), 75 (refused/failed/stopped).
int exit_code(const std::vector<RuleRun>& runs);

} // namespace retentiond
