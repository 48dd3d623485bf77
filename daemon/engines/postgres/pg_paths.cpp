// The path a run takes to its due rows. The page walk (pg_batch_stream.cpp) reads the whole heap in
// physical order: the cheapest way through a backlog, and the only one without an index on the
// clock. A daily run on a table already purged finds few rows due: it then follows the clock's
// btree index from the oldest row, in (clock, ctid) order, so it costs in proportion to the due
// rows, not to the table. Chosen per run from the planner's estimates: at most 5% of the table
// estimated due, a plain table (partitions and inheritance children take the page walk, heap by
// heap), one clock column with a valid, non-partial btree index leading with it, and no
// `clock_null: due` (rows without a clock are not in the index's range). On this path the table's
// size the limits compare against is the planner's estimate (pg_class.reltuples); the due count is
// exact, read through the index.
#include "postgres_engine.hpp"

#include "pg_shape.hpp"
#include "pg_statements.hpp"

#include <nlohmann/json.hpp>

namespace retentiond::pg {

using pg_sql::exec;

namespace {

constexpr double k_index_path_max_fraction = 0.05;

// The planner's estimate of the rows `sql` returns.
double estimated_rows(pqxx::transaction_base& tx, const std::string& sql, const Params& p) {
    const auto plan = exec(tx, "EXPLAIN (FORMAT JSON) " + sql, p)[0][0];
    return nlohmann::json::parse(plan.c_str()).at(0).at("Plan").at("Plan Rows").get<double>();
}

} // namespace

bool PostgresEngine::choose_index_path(pqxx::transaction_base& tx, PreparedRun& run,
                                       RunResult& result) {
    Plan& plan = run.plan;
    const auto& pg = spec_of<PostgresRule>(*plan.rule);
    if (run.by_heaps || pg.clock.size() != 1 || plan.rule->clock_null_due) {
        return false;
    }
    const auto index = pg_shape::clock_btree_index(tx, plan.table, pg.clock.front());
    if (index.empty()) {
        return false;
    }
    Params t({plan.table});
    const auto size = exec(tx,
                           "SELECT reltuples::bigint, pg_relation_size($1::regclass) / "
                           "current_setting('block_size')::bigint FROM pg_class "
                           "WHERE oid = $1::regclass",
                           t)[0];
    const auto reltuples = size[0].as<std::int64_t>();
    if (reltuples <= 0) {
        return false; // never analyzed: no estimate to trust
    }
    Params e;
    const double due_estimate =
        estimated_rows(tx,
                       "SELECT 1 FROM " + plan.table + " WHERE " + plan.clock +
                           " <= " + e.add(plan.due_hi_text) + "::timestamptz",
                       e);
    if (due_estimate > k_index_path_max_fraction * static_cast<double>(reltuples)) {
        return false;
    }
    Params c;
    result.due =
        exec(tx, "SELECT count(*) FROM " + plan.table + " WHERE " + due_sql(plan, tx, c), c)[0][0]
            .as<std::int64_t>();
    run.total_rows = std::max(reltuples, result.due);
    run.pages = size[1].as<std::int64_t>();
    run.by_index = true;
    run.clock_index = index;
    return true;
}

} // namespace retentiond::pg
