// The target's shape decides how the page walk reaches its rows: a plain table is walked as it is;
// a partitioned table has no pages of its own (pg_relation_size is 0), so each leaf partition is
// walked in turn, and an inheritance parent's own rows with ONLY. A view or a foreign table is
// refused, and row-level security that hides rows from the role fails the run: it could not see
// every due row. After the last batch, the rows still due at the run's cutoff are counted (but
// those other transactions wrote since the run started: the next run's), unless the run proves
// none can remain: a run never says ok while due rows remain (a trigger that cancels deletes,
// rows the walk missed).
#include "postgres_engine.hpp"

#include "pg_shape.hpp"
#include "pg_statements.hpp"

#include "retentiond/engine_common.hpp"

#include <set>

namespace retentiond::pg {

using pg_sql::exec;
using pg_sql::Params;

namespace {

std::int64_t heap_pages(pqxx::connection& conn, const std::string& heap) {
    const std::string name = heap.rfind("ONLY ", 0) == 0 ? heap.substr(5) : heap;
    pqxx::read_transaction tx(conn);
    return exec(tx, "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint",
                Params({name}))[0][0]
        .as<std::int64_t>();
}

void fail(const Rule& rule, const RunContext& ctx, RunResult& result, std::string why) {
    result.status = RunResult::Status::failed;
    result.message = std::move(why);
    journal_event(ctx.journal, rule, "error", {{"message", result.message}});
}

} // namespace

bool PostgresEngine::shape_refused(pqxx::transaction_base& tx, PreparedRun& run,
                                   const RunContext& ctx, RunResult& result) const {
    const Rule& rule = *run.plan.rule;
    const auto& table = spec_of<PostgresRule>(rule).table;
    const auto target = pg_shape::read_target(tx, run.plan.table);
    if (auto why = pg_shape::refusal(target, table); !why.empty()) {
        fail(rule, ctx, result, "refused: " + why);
        return true;
    }
    if (target.rls_hides_rows) {
        fail(rule, ctx, result,
             "row-level security on " + table + " hides rows from role " + target.role +
                 ": the run cannot see every due row, so it cannot be called done; run it with "
                 "a role that bypasses row-level security (BYPASSRLS, or the owner without "
                 "FORCE ROW LEVEL SECURITY)");
        return true;
    }
    const bool plain =
        target.relkind == 'r' && target.heaps.size() == 1 && target.parents_with_heap.empty();
    if (!plain) {
        run.by_heaps = true;
        run.heaps = target.heaps;
        for (const auto& parent : target.parents_with_heap) {
            run.heaps.push_back("ONLY " + parent);
        }
    }
    return false;
}

void PostgresEngine::walk(PreparedRun& run, RunContext& ctx, pg::Connection conn,
                          RunResult& result) const {
    if (!run.by_heaps) {
        if (run.pages > 0) {
            run_streams(run, ctx, std::move(conn), result);
        }
        return;
    }
    for (const auto& heap : run.heaps) {
        if (result.status != RunResult::Status::ok) {
            return;
        }
        if (!conn) {
            conn = connect();
        }
        PreparedRun part = run;
        part.plan.table = heap;
        part.pages = heap_pages(*conn, heap);
        if (part.pages > 0) {
            run_streams(part, ctx, std::move(conn), result);
        }
    }
}

// No due row can remain, without counting them, when: no transaction was in progress at the run's
// start and every transaction id assigned since is one of the run's own (nothing else wrote to the
// cluster, so no row was added, moved or changed behind the walk); no trigger or rule sits on the
// target, its heaps or its dependents (nothing could cancel or redo a delete); and every batch
// deleted every row it selected (each page range in one snapshot, deleted == read; each keyset
// selection, done == selected). The walk then reached every row due at the cutoff. Otherwise the
// rows are counted: one scan on the page walk's tables, an index range on the keyset path.
bool PostgresEngine::proven_nothing_due(const PreparedRun& run, pqxx::transaction_base& tx) const {
    if (!run.xid_quiet_start || run.triggers_or_rules) {
        return false;
    }
    const auto next =
        std::stoull(tx.exec("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")[0][0].c_str());
    RunEvidence& evidence = *run.evidence;
    const std::lock_guard<std::mutex> lock(evidence.mutex);
    if (evidence.kept_selected || next < run.xid_start) {
        return false;
    }
    std::set<std::uint64_t> ours;
    for (const auto xid : evidence.xids) {
        if (xid >= run.xid_start && xid < next) {
            ours.insert(xid);
        }
    }
    return ours.size() == next - run.xid_start;
}

namespace {

// Rows written since the run started by other transactions (inserted with a clock already due,
// or updated, and so moved where the walk had passed) are the next run's: left out of the count.
// Rows the run's own transactions wrote (a trigger that turned a delete into an update) count.
// age(xmin) runs from a point at or after the snapshot's xmax, so a row written before the run
// is never taken for one written since (the error, at the edge, is on the side of counting).
std::string not_written_by_others_since(const PreparedRun& run, Params& p) {
    if (run.evidence == nullptr || run.xid_start == 0) {
        return {};
    }
    std::vector<std::string> ours; // xmin is the 32-bit transaction id
    {
        const std::lock_guard<std::mutex> lock(run.evidence->mutex);
        for (const auto xid : run.evidence->xids) {
            ours.push_back(std::to_string(xid & 0xFFFFFFFFULL));
        }
    }
    return " AND NOT (age(xmin) <= pg_snapshot_xmax(pg_current_snapshot())::text::bigint - " +
           p.add(std::to_string(run.xid_start)) + "::bigint AND xmin::text::bigint <> ALL(" +
           p.add(pg_sql::array_literal(ours)) + "::bigint[]))";
}

} // namespace

void PostgresEngine::verify_nothing_due(const PreparedRun& run, const RunContext& ctx,
                                        RunResult& result) const {
    const Rule& rule = *run.plan.rule;
    // Anonymize without a mark: an anonymized row cannot be told from a due one by SQL alone.
    if (result.status != RunResult::Status::ok ||
        (rule.action == Action::anonymize && !run.plan.mark)) {
        return;
    }
    auto conn = connect();
    pqxx::work tx(*conn);
    set_local(tx, run.plan);
    if (proven_nothing_due(run, tx)) {
        tx.commit();
        result.counters["verification.remaining"] = 0;
        result.counters["verification.proven_without_count"] = 1;
        return;
    }
    Params p;
    const std::string where = due_sql(run.plan, tx, p) + not_written_by_others_since(run, p);
    // Partitions emptied whole or proven not due hold no due row: only the walked heaps count.
    std::int64_t left = 0;
    for (const auto& table : run.by_heaps ? run.heaps : std::vector<std::string>{run.plan.table}) {
        left += exec(tx, "SELECT count(*) FROM " + table + " WHERE " + where, p)[0][0]
                    .as<std::int64_t>();
    }
    tx.commit();
    result.counters["verification.remaining"] = left;
    if (left == 0) {
        return;
    }
    fail(rule, ctx, result,
         std::to_string(left) + " rows of " + spec_of<PostgresRule>(rule).table +
             " are still due after the run (due at its cutoff, not held, not written since by "
             "anyone but the run): "
             "likely a BEFORE DELETE trigger or a DO INSTEAD rule that cancels deletes, or rows "
             "the run could not reach; see `retentiond check`");
}

} // namespace retentiond::pg
