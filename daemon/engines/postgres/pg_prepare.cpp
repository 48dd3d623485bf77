// Preparing a purge: notices first, then the plan, the run's clock (now, cutoff, due bounds) with
// the clock-skew check, and the counts the limits and the batch spans need. Nothing is touched.
#include "postgres_engine.hpp"

#include "pg_notice.hpp"
#include "pg_shape.hpp"
#include "pg_statements.hpp"

#include "retentiond/engine_common.hpp"
#include "retentiond/timeutil.hpp"

namespace retentiond::pg {

using pg_sql::exec;

namespace {

// Where the run's proof that no due row remains starts (see verify_nothing_due): the next
// transaction id, whether any transaction is in progress, and whether triggers or rules sit on the
// target, its heaps or its dependents.
void read_evidence_start(pqxx::transaction_base& tx, PreparedRun& run) {
    const auto row = tx.exec("SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text "
                             "FROM pg_current_snapshot() s")[0];
    run.xid_start = std::stoull(row[1].c_str());
    run.xid_quiet_start = std::string_view(row[0].c_str()) == row[1].c_str();
    std::vector<std::string> tables{run.plan.table};
    for (const auto& heap : run.heaps) {
        tables.push_back(heap.rfind("ONLY ", 0) == 0 ? heap.substr(5) : heap);
    }
    const std::function<void(const std::vector<DepPlan>&)> add = [&](const auto& deps) {
        for (const auto& d : deps) {
            tables.push_back(d.table);
            add(d.children);
        }
    };
    add(run.plan.dependents);
    run.triggers_or_rules = !pg_shape::triggers_and_rules(tx, tables).empty();
}

} // namespace

std::optional<PreparedRun> PostgresEngine::prepare(const Rule& rule, RunContext& ctx,
                                                   pqxx::connection& conn,
                                                   RunResult& result) const {
    PreparedRun run;
    if (spec_of<PostgresRule>(rule).notice) {
        ctx.phase("notices");
    }
    if (spec_of<PostgresRule>(rule).notice &&
        !send_notices(rule, ctx, conn, result, run.notice_error)) {
        return std::nullopt;
    }
    try {
        pqxx::work tx(conn);
        if (!resolve_plan(tx, rule, ctx, result, run.plan) || shape_refused(tx, run, ctx, result) ||
            !read_clock(tx, run.plan, ctx, result)) {
            return std::nullopt;
        }
        classify_partitions(tx, run);
        read_evidence_start(tx, run);
        ctx.phase("counting");
        if (!choose_index_path(tx, run, result)) {
            count_due(tx, run, result);
        }
        tx.commit();
    } catch (const pqxx::sql_error& e) {
        // Counting timed out or the rule's SQL is refused: nothing was touched.
        result.status = RunResult::Status::failed;
        result.message = "counting due rows in " + spec_of<PostgresRule>(rule).table +
                         " failed (SQLSTATE " + e.sqlstate() + "): " + first_line(e.what());
        journal_event(ctx.journal, rule, "error", {{"sqlstate", e.sqlstate()}});
        return std::nullopt;
    }
    return run;
}

// Notices first: records entering their window are warned now; deletion only takes records
// noticed at least `before` ago. A failed notifier does not stop deletions of records noticed
// earlier, but fails the run (`notice_error`).
bool PostgresEngine::send_notices(const Rule& rule, RunContext& ctx, pqxx::connection& conn,
                                  RunResult& result, std::string& notice_error) const {
    pg_notice::Target target;
    {
        pqxx::work tx(conn);
        Plan plan;
        if (!resolve_plan(tx, rule, ctx, result, plan)) {
            return false;
        }
        target = notice_target(plan, tx);
        tx.commit();
    }
    const auto notices = pg_notice::send_notices(conn, rule, target, ctx, m_name);
    result.counters["notice.sent"] = notices.sent;
    if (notices.failed) {
        notice_error = "notices: " + notices.message;
    }
    return true;
}

bool PostgresEngine::resolve_plan(pqxx::transaction_base& tx, const Rule& rule,
                                  const RunContext& ctx, RunResult& result, Plan& plan) const {
    try {
        plan = make_plan(tx, rule, zone_name(ctx));
        return true;
    } catch (const PlanError& e) {
        result.status = RunResult::Status::failed;
        result.message = e.what();
        journal_event(ctx.journal, rule, "error", {{"message", result.message}});
        return false;
    }
}

// The run's now and cutoff, from the database's clock, and whether batches may commit
// asynchronously (the run can force the flush at its end: pg_logical_emit_message, the text
// variant, looked up by name: a bytea one exists too, and PostgreSQL 17 added a fourth, defaulted
// argument). False when the host clock is too far from the database's.
bool PostgresEngine::read_clock(pqxx::transaction_base& tx, Plan& plan, const RunContext& ctx,
                                RunResult& result) const {
    const Rule& rule = *plan.rule;
    set_local(tx, plan);
    Params p;
    const auto retain = p.add(rule.retain.to_pg_interval());
    const auto row = exec(tx,
                          "SELECT (now() - " + retain +
                              "::interval)::text, (extract(epoch "
                              "FROM now() - " +
                              retain +
                              "::interval) * 1000000)::bigint, now()::text, "
                              "(extract(epoch FROM now()) * 1000000)::bigint, "
                              "EXISTS (SELECT FROM pg_catalog.pg_proc WHERE proname = "
                              "'pg_logical_emit_message' AND pronamespace = "
                              "'pg_catalog'::regnamespace AND proargtypes[2] = "
                              "'text'::regtype AND "
                              "has_function_privilege(oid, 'EXECUTE'))",
                          p)[0];
    plan.cutoff_text = row[0].c_str();
    plan.now_text = row[2].c_str();
    result.now = from_micros(row[3].as<std::int64_t>());
    read_due_bounds(tx, plan, result.now);
    if (clock_skew_refused(result, ctx, rule)) {
        return false;
    }
    result.cutoff = from_micros(row[1].as<std::int64_t>());
    plan.async_commit = row[4].as<bool>();
    return true;
}

// Due dates follow the database's clock (result.now). A host clock far from it means one of them
// is wrong, and the rules of the other kinds (host clock) would disagree: refuse.
bool PostgresEngine::clock_skew_refused(RunResult& result, const RunContext& ctx,
                                        const Rule& rule) const {
    const auto skew = std::chrono::duration_cast<std::chrono::seconds>(
        result.now > now_utc() ? result.now - now_utc() : now_utc() - result.now);
    if (skew <= m_max_skew) {
        return false;
    }
    result.status = RunResult::Status::refused;
    result.message = "refused: the host clock differs from the database's by " +
                     std::to_string(skew.count()) + " s (daemon.max_clock_skew " +
                     std::to_string(m_max_skew.count()) + " s); fix the clocks";
    journal_event(ctx.journal, rule, k_refusal_event,
                  {{"reason", "clock_skew"},
                   {"skew_seconds", skew.count()},
                   {"max_clock_skew", m_max_skew.count()}});
    return true;
}

// Rows in the table, due rows, and the table's pages. With heaps (partitions, children): the heaps
// the walk visits, counted one by one, plus the planner's estimates for the partitions emptied
// whole (replaced by their exact counts as they are) or skipped.
void PostgresEngine::count_due(pqxx::transaction_base& tx, PreparedRun& run, RunResult& result) {
    if (run.by_heaps) {
        for (const auto& heap : run.heaps) {
            Params c;
            const auto counts = exec(tx,
                                     "SELECT count(*), count(*) FILTER (WHERE " +
                                         due_sql(run.plan, tx, c) + ") FROM " + heap,
                                     c)[0];
            run.total_rows += counts[0].as<std::int64_t>();
            result.due += counts[1].as<std::int64_t>();
        }
        for (const auto& whole : run.whole) {
            run.total_rows += whole.estimated_rows;
            result.due += whole.estimated_rows;
        }
        run.total_rows += run.skipped_rows;
        return;
    }
    Params c;
    const auto counts = exec(tx,
                             "SELECT count(*), count(*) FILTER (WHERE " + due_sql(run.plan, tx, c) +
                                 "), pg_relation_size(" + c.add(run.plan.table) +
                                 "::regclass) / current_setting('block_size')::bigint "
                                 "FROM " +
                                 run.plan.table,
                             c)[0];
    run.total_rows = counts[0].as<std::int64_t>();
    result.due = counts[1].as<std::int64_t>();
    run.pages = counts[2].as<std::int64_t>();
}

} // namespace retentiond::pg
