// Erasure requests on PostgreSQL (Engine::erase_subject): the rule's own plan (table, key,
// dependents, hold, mark), with the subject's rows in place of the due ones (Plan::subject, see
// due_sql). The rows of one request are few (the limits bound them), so one transaction selects
// and locks them, writes the intent, applies the dependents and the action by ctid with the
// condition repeated, and commits; the outcome follows the commit.
#include "postgres_engine.hpp"

#include "pg_audit_tx.hpp"
#include "pg_batch_stream.hpp"
#include "pg_sql.hpp"
#include "pg_statements.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/subject.hpp"
#include "retentiond/timeutil.hpp"

#include <algorithm>

namespace retentiond::pg {

using pg_sql::array_literal;
using pg_sql::exec;

namespace {

RunResult failed(std::string message) {
    RunResult r;
    r.status = RunResult::Status::failed;
    r.message = std::move(message);
    return r;
}

// A resume or a re-application knows digests only: the column's distinct values are read and
// hashed here, and those whose digest is wanted join the request's values (never written).
void add_values_by_digest(pqxx::transaction_base& tx, const Plan& plan, const SubjectQuery& query,
                          SubjectFilter& subject) {
    if (query.digests.empty()) {
        return;
    }
    const auto value = subject_value_sql(subject);
    const auto rows = tx.exec("SELECT DISTINCT " + value + " FROM " + plan.table + " WHERE " +
                              subject.column + " IS NOT NULL");
    for (const auto& row : rows) {
        const std::string v = row[0].c_str();
        if (!v.empty() && query.matches(v)) {
            subject.values.push_back(v);
        }
    }
}

// in_scope, matching and not held (due), matching and held, in one scan.
void count_subject_rows(pqxx::transaction_base& tx, const Plan& plan, RunResult& r) {
    Params p;
    const auto due = due_sql(plan, tx, p);
    const auto held = subject_sql(plan, p) + " AND " + held_sql(plan, tx, p);
    const auto row = exec(tx,
                          "SELECT count(*), count(*) FILTER (WHERE " + due +
                              "), count(*) FILTER (WHERE " + held + ") FROM " + plan.table,
                          p)[0];
    r.counters["in_scope"] = row[0].as<std::int64_t>();
    r.due = row[1].as<std::int64_t>();
    r.counters["held"] = row[2].as<std::int64_t>();
}

// `first_key`: the column of the first key column in `selected` (after ctid and the client-side
// fields).
BatchIntent erase_intent(const Plan& plan, const std::string& datastore, const RunContext& ctx,
                         const pqxx::result& selected, int first_key) {
    BatchIntent intent;
    intent.rule = plan.rule->name;
    intent.datastore = datastore;
    intent.target = spec_of<PostgresRule>(*plan.rule).table;
    intent.action = plan.rule->action == Action::anonymize ? "anonymize" : "delete";
    intent.cutoff = now_utc();
    intent.request = ctx.request;
    const auto n_keys = plan.keys.size();
    for (const auto& row : selected) {
        std::vector<std::string> values;
        for (std::size_t i = 0; i < n_keys; ++i) {
            values.emplace_back(row[static_cast<int>(i) + first_key].c_str());
        }
        intent.keys.push_back(canonical_key(values));
    }
    return intent;
}

// The rule's action on the selected rows (`tid_array`): delete, or anonymize with the purge's
// statements, hmac / email_domain values computed here as the purge computes them.
pqxx::result apply_action(pqxx::work& tx, const Plan& plan, const RunContext& ctx,
                          const pqxx::result& selected, const std::string& tid_array) {
    Params m;
    if (plan.rule->action == Action::anonymize && plan.client_side) {
        const auto values = client_values(*plan.rule, ctx, selected);
        return exec(tx, client_anonymize_sql(plan, tx, m, tid_array, values), m);
    }
    const std::string rows_sql = "ctid = ANY(" + m.add(tid_array) + "::tid[])";
    return plan.rule->action == Action::anonymize
               ? exec(tx, anonymize_update_sql(plan, tx, m, rows_sql), m)
               : exec(tx, keyed_delete_sql(plan, tx, m, rows_sql), m);
}

// Selects and locks the rows, journals them, applies dependents and the action; returns the rows
// touched. The caller commits.
std::int64_t apply_erasure(pqxx::work& tx, const Plan& plan, const std::string& datastore,
                           RunContext& ctx, RunResult& r, std::string& batch_id) {
    Params s;
    const std::string client = client_columns(plan, tx);
    const auto selected =
        exec(tx,
             "SELECT ctid::text" + client + ", " + keys_text_sql(plan) + " FROM " + plan.table +
                 " WHERE " + due_sql(plan, tx, s) + " FOR UPDATE",
             s);
    if (selected.empty()) {
        return 0;
    }
    std::vector<std::string> tids;
    for (const auto& row : selected) {
        tids.emplace_back(row[0].c_str());
    }
    const auto tid_array = array_literal(tids);
    const auto n_client = std::count_if(plan.rule->anonymize.begin(), plan.rule->anonymize.end(),
                                        [](const auto& fs) { return needs_client(fs.strategy); });
    const int first_key = 1 + static_cast<int>(n_client);
    const bool in_tx = lines_in_transaction(ctx.journal, datastore);
    if (ctx.journal != nullptr && !in_tx) {
        batch_id = ctx.journal->intent(erase_intent(plan, datastore, ctx, selected, first_key));
    }
    apply_batch_dependents(tx, plan, tid_array, r.counters);
    const auto done =
        static_cast<std::int64_t>(apply_action(tx, plan, ctx, selected, tid_array).size());
    if (in_tx) { // the audit store's own database: the lines commit with the erasure
        write_lines(
            *ctx.journal->lines_for(erase_intent(plan, datastore, ctx, selected, first_key), done),
            tx);
        r.batches = 1;
    }
    return done;
}

} // namespace

RunResult PostgresEngine::erase_subject(const Rule& rule, const SubjectQuery& query,
                                        RunContext& ctx, bool dry) {
    RunResult r;
    std::string batch_id;
    try {
        auto conn = connect();
        pqxx::work tx(*conn);
        Plan plan;
        try {
            plan = make_plan(tx, rule, zone_name(ctx));
        } catch (const PlanError& e) {
            return failed(e.what());
        }
        if (plan.columns.count(query.field.field) == 0) {
            return failed("subject column " + query.field.field + " not found in " +
                          spec_of<PostgresRule>(rule).table);
        }
        tx.exec0("SET CONSTRAINTS ALL IMMEDIATE");
        set_local(tx, plan);
        SubjectFilter subject{tx.quote_name(query.field.field),
                              query.kind == "email",
                              {query.values.begin(), query.values.end()}};
        add_values_by_digest(tx, plan, query, subject);
        plan.subject = std::move(subject);
        count_subject_rows(tx, plan, r);
        if (dry || r.due == 0) {
            return r;
        }
        r.processed = apply_erasure(tx, plan, m_name, ctx, r, batch_id);
        tx.commit();
        if (!batch_id.empty()) {
            ctx.journal->outcome(batch_id, true, r.processed);
        }
        r.batches = batch_id.empty() ? r.batches : 1;
    } catch (const pqxx::broken_connection& e) {
        unavailable(e);
    } catch (const pqxx::in_doubt_error& e) {
        throw UnavailableError("datastore \"" + m_name +
                               "\": commit outcome unknown: " + first_line(e.what()));
    } catch (const PlanError& e) {
        // hmac / email_domain without daemon.audit_key: rolled back.
        if (!batch_id.empty()) {
            ctx.journal->outcome(batch_id, false, 0);
        }
        return failed(e.what());
    } catch (const pqxx::sql_error& e) {
        if (!batch_id.empty()) {
            ctx.journal->outcome(batch_id, false, 0);
        }
        return failed(first_line(e.what()));
    }
    return r;
}

} // namespace retentiond::pg
