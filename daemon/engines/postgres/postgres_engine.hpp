#pragma once
// The postgres engine's class, its methods spread over the files of its steps:
//   postgres_engine.cpp  purge (prepare, limits, streams), records_present, connections
//   pg_connect.cpp       connect_timeout default, connection attempts a stop can abandon
//   pg_prepare.cpp       preparing the run: notices, plan, counts, clock skew
//   pg_targets.cpp       the target's shape (partitions, children), the walk, the verification
//   pg_partitions.cpp    leaf partitions emptied whole (DETACH + DROP) or skipped by their bounds
//   pg_paths.cpp         the path per run: page walk, or keyset walk of the clock's index
//   pg_streams.cpp       running the batch streams (parallel: N) and merging their results
//   pg_batch_stream.cpp  one stream: page ranges, attempts, commits, durability, span
//   pg_statements.cpp    one builder per statement shape, and the conditions they share
//   pg_errors.cpp        SQLSTATE -> retry / fail / unavailable
//   pg_erase.cpp         erasure requests: the subject's rows in one transaction
//   pg_dry_run.cpp, pg_check.cpp
// Internal to the postgres engine.

#include "pg_connect.hpp"
#include "pg_plan.hpp"

#include "retentiond/engine.hpp"

#include <date/tz.h>
#include <pqxx/pqxx>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace retentiond::pg {

// A leaf partition whose every row is due, proven from its range bounds on the clock
// (pg_partitions.cpp): detached and dropped (or kept detached) whole.
struct WholePartition {
    std::string leaf;   // quoted
    std::string parent; // quoted: the partitioned table it is detached from
    std::string name;   // schema.name, for the audit and messages
    std::string from;   // the bounds as the server prints them; from is "" for MINVALUE
    std::string to;
    std::optional<std::int64_t> from_us; // the bounds in microseconds since the epoch
    std::int64_t to_us = 0;
    std::int64_t estimated_rows = 0;
    // Judged by its clock's extremes (min/max through an index), not by range bounds: from/to are
    // the extremes, re-checked inside the transaction once the partition is detached.
    bool by_extremes = false;
};

// What preparing a run resolved: the plan (with the run's now and cutoff), the table's size.
struct PreparedRun {
    Plan plan;
    std::int64_t total_rows = 0;
    std::int64_t pages = 0;
    // The heaps the page walk visits, quoted: empty for a plain table (the target itself), else
    // each leaf partition or inheritance child, and "ONLY parent" for inheritance parents.
    std::vector<std::string> heaps;
    bool by_heaps = false; // a partitioned table or one with inheritance children: walk `heaps`
    // Leaf partitions of a range on the clock: emptied whole, or skipped (none of their rows due).
    std::vector<WholePartition> whole;
    std::int64_t skipped_partitions = 0;
    std::int64_t skipped_rows = 0; // their estimated rows, for the limits' table size
    // The path the batches take (pg_paths.cpp): the page walk, or a keyset walk of `clock_index`
    // in (clock, ctid) order when few rows are due.
    bool by_index = false;
    std::string clock_index;
    // For the proof that no due row remains: the first transaction id assigned after the run's
    // start, whether none was in progress then, whether triggers or rules sit on the heaps.
    std::uint64_t xid_start = 0;
    bool xid_quiet_start = false;
    bool triggers_or_rules = true;
    std::shared_ptr<RunEvidence> evidence = std::make_shared<RunEvidence>();
    std::string notice_error; // the notifier failed: the run fails once the deletions are done
};

class PostgresEngine final : public Engine {
public:
    PostgresEngine(const Datastore& store, std::string default_tz, std::chrono::seconds max_skew)
        : m_name(store.name),
          m_conninfo(with_connection_defaults(spec_of<PostgresStore>(store).dsn.reveal())),
          m_default_tz(std::move(default_tz)), m_max_skew(max_skew) {}

    std::vector<Diagnostic> check(const Rule& rule) override;
    DryRun dry_run(const Rule& rule, const RunContext& ctx) override;
    RunResult purge(const Rule& rule, RunContext& ctx) override;
    Presence records_present(const Rule& rule, const std::string& target,
                             const std::vector<std::string>& keys) override;
    // pg_erase.cpp
    RunResult erase_subject(const Rule& rule, const SubjectQuery& query, RunContext& ctx,
                            bool dry) override;

private:
    pg::Connection connect() const;
    [[noreturn]] void unavailable(const pqxx::broken_connection& e) const;
    Presence partition_presence(const std::string& partition) const;
    std::string zone_name(const RunContext& ctx) const {
        return ctx.tz != nullptr ? std::string(ctx.tz->name()) : m_default_tz;
    }

    // --- preparing the run (pg_prepare.cpp); false / nullopt: `result` says why it ended ---
    std::optional<PreparedRun> prepare(const Rule& rule, RunContext& ctx, pqxx::connection& conn,
                                       RunResult& result) const;
    bool send_notices(const Rule& rule, RunContext& ctx, pqxx::connection& conn, RunResult& result,
                      std::string& notice_error) const;
    bool resolve_plan(pqxx::transaction_base& tx, const Rule& rule, const RunContext& ctx,
                      RunResult& result, Plan& plan) const;
    bool read_clock(pqxx::transaction_base& tx, Plan& plan, const RunContext& ctx,
                    RunResult& result) const;
    bool clock_skew_refused(RunResult& result, const RunContext& ctx, const Rule& rule) const;
    static void count_due(pqxx::transaction_base& tx, PreparedRun& run, RunResult& result);

    // --- whole partitions (pg_partitions.cpp): leaves a range on the clock proves wholly due
    // (emptied without a per-row DELETE) or wholly not due (skipped) ---
    static void classify_partitions(pqxx::transaction_base& tx, PreparedRun& run);
    void empty_whole_partitions(PreparedRun& run, RunContext& ctx, RunResult& result) const;
    bool empty_partition(pqxx::connection& conn, const PreparedRun& run, const WholePartition& p,
                         RunContext& ctx, RunResult& result) const;
    void recount_due(pqxx::connection& conn, const PreparedRun& run, const WholePartition& p,
                     RunResult& result) const;

    // --- the path (pg_paths.cpp): a keyset walk of the clock's index when few rows are due ---
    static bool choose_index_path(pqxx::transaction_base& tx, PreparedRun& run, RunResult& result);

    // --- the target's shape (pg_targets.cpp): partitions and children walked one by one, views
    // and foreign tables refused, row-level security failing the run, and the verification that
    // no due row remains ---
    bool shape_refused(pqxx::transaction_base& tx, PreparedRun& run, const RunContext& ctx,
                       RunResult& result) const;
    void walk(PreparedRun& run, RunContext& ctx, pg::Connection conn, RunResult& result) const;
    void verify_nothing_due(const PreparedRun& run, const RunContext& ctx, RunResult& result) const;
    bool proven_nothing_due(const PreparedRun& run, pqxx::transaction_base& tx) const;

    // --- running and merging the streams (pg_streams.cpp) ---
    void run_streams(PreparedRun& run, RunContext& ctx, pg::Connection conn,
                     RunResult& result) const;

    std::string m_name;
    std::string m_conninfo;
    std::string m_default_tz;
    std::chrono::seconds m_max_skew;
    // During a purge: its stop request, polled while connect() waits for the server. Set before
    // the purge's threads start and cleared after they end.
    std::function<bool()> m_stop;
};

} // namespace retentiond::pg
