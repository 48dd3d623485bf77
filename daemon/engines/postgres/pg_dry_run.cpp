// The dry run: what a purge would do now, counted in one read-only transaction.
#include "postgres_engine.hpp"

#include "pg_notice.hpp"
#include "pg_statements.hpp"

namespace retentiond::pg {

using pg_sql::exec;

namespace {

// The run's now, cutoff and due bounds, in the rule's time zone.
void read_dry_clock(pqxx::transaction_base& tx, Plan& plan, DryRun& dry) {
    const Rule& rule = *plan.rule;
    Params tz;
    exec(tx, "SELECT set_config('TimeZone', " + tz.add(plan.tz) + ", true)", tz);
    Params p;
    const auto retain = p.add(rule.retain.to_pg_interval()) + "::interval";
    const auto row = exec(tx,
                          "SELECT (now() - " + retain +
                              ")::text, (extract(epoch FROM now()) * 1000000)::bigint, "
                              "(extract(epoch FROM now() - " +
                              retain + ") * 1000000)::bigint, now()::text",
                          p)[0];
    plan.cutoff_text = row[0].c_str();
    plan.now_text = row[3].c_str();
    dry.now = from_micros(row[1].as<std::int64_t>());
    read_due_bounds(tx, plan, dry.now);
    dry.cutoff = from_micros(row[2].as<std::int64_t>());
}

// In scope, due, held, without clock, the oldest clock, and due within 7/30/90 days.
void count_rows(pqxx::transaction_base& tx, const Plan& plan, DryRun& dry) {
    Params c;
    const auto due = due_sql(plan, tx, c);
    const auto held = clock_due_sql(plan, c) + " AND " + held_sql(plan, tx, c);
    const auto r = c.add(plan.rule->retain.to_pg_interval()) + "::interval";
    const auto not_held = not_held_sql(plan, tx, c) + " AND " + unmarked_sql(plan);
    const auto soon = [&](int days) {
        return plan.clock + " > " + c.add(plan.cutoff_text) + "::timestamptz AND " + plan.clock +
               " <= (now() + " + c.add(std::to_string(days) + " days") + "::interval) - " + r +
               " AND " + not_held;
    };
    const auto counts = exec(
        tx,
        "SELECT count(*), count(*) FILTER (WHERE " + due + "), count(*) FILTER (WHERE " + held +
            "), count(*) FILTER (WHERE " + plan.clock + " IS NULL), (extract(epoch FROM min(" +
            plan.clock + ")) * 1000000)::bigint, count(*) FILTER (WHERE " + soon(7) +
            "), count(*) FILTER (WHERE " + soon(30) + "), count(*) FILTER (WHERE " + soon(90) +
            ") FROM " + plan.table,
        c)[0];
    dry.in_scope = counts[0].as<std::int64_t>();
    dry.due = counts[1].as<std::int64_t>();
    dry.held = counts[2].as<std::int64_t>();
    dry.no_clock = counts[3].as<std::int64_t>();
    if (!counts[4].is_null()) {
        dry.oldest_clock = from_micros(counts[4].as<std::int64_t>());
    }
    dry.due_7d = counts[5].as<std::int64_t>();
    dry.due_30d = counts[6].as<std::int64_t>();
    dry.due_90d = counts[7].as<std::int64_t>();
}

// Rows by age in eighths of retain (16: retain is zero or the row is twice as old or more).
void count_ages(pqxx::transaction_base& tx, const Plan& plan, DryRun& dry) {
    Params b;
    const auto secs =
        "extract(epoch FROM " + b.add(plan.rule->retain.to_pg_interval()) + "::interval)";
    const auto buckets =
        exec(tx,
             "SELECT CASE WHEN " + secs +
                 " <= 0 THEN 16 ELSE least(16, greatest(0, floor(extract("
                 "epoch FROM now() - " +
                 plan.clock + ") / " + secs + " * 8)))::int END AS bucket, count(*) FROM " +
                 plan.table + " WHERE " + plan.clock + " IS NOT NULL GROUP BY 1",
             b);
    for (const auto& row : buckets) {
        dry.age_buckets.at(static_cast<std::size_t>(row[0].as<int>())) += row[1].as<std::int64_t>();
    }
}

// Dependents of the due rows, and the notices to send or waiting.
void count_related(pqxx::transaction_base& tx, const Plan& plan, DryRun& dry) {
    for (const auto& d : plan.dependents) {
        Params dp;
        const auto set =
            "SELECT " + d.reference + " FROM " + plan.table + " WHERE " + due_sql(plan, tx, dp);
        count_dependents(tx, std::vector<DepPlan>{d}, set, dp, dry.counters);
    }
    if (spec_of<PostgresRule>(*plan.rule).notice) {
        const auto notices = pg_notice::count(tx, *plan.rule, notice_target(plan, tx));
        dry.counters["notice.to_send"] = notices.to_send;
        dry.counters["notice.waiting"] = notices.waiting;
    }
}

} // namespace

DryRun PostgresEngine::dry_run(const Rule& rule, const RunContext& ctx) {
    DryRun dry;
    dry.age_buckets.assign(17, 0);
    try {
        auto conn = connect();
        pqxx::read_transaction tx(*conn);
        Plan plan;
        try {
            plan = make_plan(tx, rule, zone_name(ctx));
        } catch (const PlanError& e) {
            dry.notes.push_back(e.what());
            return dry;
        }
        read_dry_clock(tx, plan, dry);
        count_rows(tx, plan, dry);
        count_ages(tx, plan, dry);
        count_related(tx, plan, dry);
        if (!rule.clock_null_due && dry.no_clock > 0) {
            dry.notes.push_back(std::to_string(dry.no_clock) + " rows have no clock (never due)");
        }
    } catch (const pqxx::broken_connection& e) {
        unavailable(e);
    }
    return dry;
}

} // namespace retentiond::pg
