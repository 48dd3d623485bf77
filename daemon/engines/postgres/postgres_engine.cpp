// kind postgres: batched purge and anonymization on a live database (issue 3).
//
// Batches walk the heap in physical order: the table's pages are split into ranges, and each batch
// selects the due rows of one range with a TID range scan (`ctid >= '(p,0)' AND ctid < '(q,0)'`,
// PostgreSQL 14+), ordered by ctid and limited to batch_size, continuing from the last ctid when a
// range holds more. Rows are then deleted or updated by ctid (`ctid = ANY($n)`: a TID scan) with
// the due condition repeated in that statement, so a row whose clock moved since the selection (a
// user who logged in) is kept. Measured on PostgreSQL 15 this costs about what a single DELETE
// does, where keyset pagination on the primary key costs ~2.6x and `IN (SELECT ... LIMIT n)` ~35x.
// When dependents or client-side strategies need the selected rows to stay as they were, the
// selection takes row locks (FOR UPDATE), which re-checks the due condition at lock time.
//
// Batches overlap with the audit journal: batch i stays applied but uncommitted on one connection
// while batch i+1's statement runs on a second one and batch i's intent (an HMAC per key, fsyncs)
// is written on a journal thread; then batch i commits (not with dependents, see `pipelined`).
// Commits are asynchronous (synchronous_commit off): a batch's outcome line is written only once
// the server's flushed WAL position passes its commit, and the rule ends with one synchronous
// commit, so a purge that returned is durable and the log never claims a commit a crash undid.
#include "postgres_kind.hpp"
#include "retentiond/anonymize.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/timeutil.hpp"

#include "pg_notice.hpp"
#include "pg_sql.hpp"

#include <date/tz.h>
#include <pqxx/pqxx>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <deque>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

namespace retentiond {
namespace {

constexpr int k_max_attempts = 5;
constexpr std::chrono::milliseconds k_first_backoff{100};
constexpr std::chrono::milliseconds k_max_backoff{5000};

using pg_sql::array_literal;
using pg_sql::exec;
using pg_sql::Params;

std::string first_line(std::string_view text) {
    const auto nl = text.find('\n');
    std::string line(text.substr(0, nl));
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) {
        line.pop_back();
    }
    return line;
}

// "public.users_user" -> "public"."users_user"; a name without a dot is quoted whole.
std::string quote_table(pqxx::connection_base& c, const std::string& name) {
    const auto dot = name.find('.');
    if (dot == std::string::npos) {
        return c.quote_name(name);
    }
    return c.quote_name(name.substr(0, dot)) + "." + c.quote_name(name.substr(dot + 1));
}

std::string with_application_name(const std::string& dsn) {
    if (dsn.find("application_name") != std::string::npos) {
        return dsn; // the operator chose one
    }
    if (dsn.rfind("postgres://", 0) == 0 || dsn.rfind("postgresql://", 0) == 0) {
        return dsn + (dsn.find('?') == std::string::npos ? "?" : "&") +
               "application_name=retentiond";
    }
    return dsn + (dsn.empty() ? "" : " ") + "application_name=retentiond";
}

bool is_time_type(const std::string& type) {
    return type == "date" || type.rfind("timestamp", 0) == 0;
}

bool is_text_type(const std::string& type) {
    return type == "text" || type.rfind("character", 0) == 0 || type == "citext" || type == "name";
}

bool is_numeric_type(const std::string& type) {
    return type.rfind("numeric", 0) == 0 || type == "double precision" || type == "real" ||
           type == "integer" || type == "bigint" || type == "smallint";
}

const char* dependent_action_name(Dependent::Action action) {
    switch (action) {
    case Dependent::Action::remove:
        return "delete";
    case Dependent::Action::set_null:
        return "set_null";
    case Dependent::Action::anonymize:
        return "anonymize";
    }
    return "?";
}

bool needs_client(const Strategy& s) {
    return s.kind == Strategy::Kind::hmac || s.kind == Strategy::Kind::email_domain;
}

// A rule that does not match the database (missing table or column): the run fails, the store is
// up.
class PlanError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

TimePoint from_micros(std::int64_t micros) {
    return TimePoint(std::chrono::microseconds(micros));
}

struct ColumnInfo {
    std::string type; // format_type(): "timestamp with time zone", "character varying(254)"...
    bool not_null = false;
};
using Columns = std::map<std::string, ColumnInfo>;

Columns read_columns(pqxx::transaction_base& tx, const std::string& quoted_table) {
    Params p;
    const auto r = exec(tx,
                        "SELECT attname, format_type(atttypid, atttypmod), attnotnull "
                        "FROM pg_attribute WHERE attrelid = to_regclass(" +
                            p.add(quoted_table) + ") AND attnum > 0 AND NOT attisdropped",
                        p);
    Columns out;
    for (const auto& row : r) {
        out[row[0].c_str()] = ColumnInfo{row[1].c_str(), row[2].as<bool>()};
    }
    return out;
}

bool table_exists(pqxx::transaction_base& tx, const std::string& quoted_table) {
    Params p;
    return !exec(tx, "SELECT to_regclass(" + p.add(quoted_table) + ")", p)[0][0].is_null();
}

// The column of `parent` that `child.column` references: from the foreign key when there is one,
// else the parent's single-column primary key.
std::optional<std::string> referenced_column(pqxx::transaction_base& tx,
                                             const std::string& child_quoted,
                                             const std::string& column,
                                             const std::string& parent_quoted) {
    Params p;
    const auto child = p.add(child_quoted);
    const auto parent = p.add(parent_quoted);
    const auto col = p.add(column);
    auto r = exec(tx,
                  "SELECT a.attname FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = "
                  "c.confrelid AND a.attnum = c.confkey[1] WHERE c.contype = 'f' AND c.conrelid = "
                  "to_regclass(" +
                      child + ") AND c.confrelid = to_regclass(" + parent +
                      ") AND array_length(c.conkey, 1) = 1 AND c.conkey[1] = (SELECT attnum FROM "
                      "pg_attribute WHERE attrelid = to_regclass(" +
                      child + ") AND attname = " + col + ") LIMIT 1",
                  p);
    if (!r.empty()) {
        return std::string(r[0][0].c_str());
    }
    Params q;
    r = exec(tx,
             "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND "
             "a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(" +
                 q.add(parent_quoted) + ") AND i.indisprimary AND i.indnatts = 1",
             q);
    if (!r.empty()) {
        return std::string(r[0][0].c_str());
    }
    return std::nullopt;
}

// One dependent, resolved against the catalog.
struct DepPlan {
    const Dependent* dep = nullptr;
    std::string table;     // quoted
    std::string column;    // quoted referencing column
    std::string reference; // quoted column of the parent it references
    Columns columns;
    std::string counter; // "dependents.<table>.<action>"
    std::vector<DepPlan> children;
};

// Everything a run needs about its rule, resolved once.
struct Plan {
    const Rule* rule = nullptr;
    std::string table;             // quoted
    std::vector<std::string> keys; // quoted
    std::string clock;             // SQL expression
    Columns columns;
    std::optional<std::string> mark; // quoted
    bool mark_is_bool = false;
    std::string tz;
    std::string cutoff_text; // now() - retain, from the server: reported, and the index bound
    std::string now_text;    // the run's now(), the same for every batch
    // Bounds around the cutoff, computed once by the server: every due row has clock <= due_hi,
    // and every row with clock <= due_lo is due (empty: not proven, no shortcut).
    std::string due_hi_text;
    std::string due_lo_text;
    std::vector<DepPlan> dependents;
    bool client_side = false;          // some strategy computed here (hmac, email_domain)
    std::vector<std::string> own_xids; // anonymize without mark: our batches' xids
    bool notice_table = false;         // retentiond.notice exists (rules with `notice:`)
    bool async_commit = false;         // batches commit with synchronous_commit off
};

class PostgresEngine final : public Engine {
public:
    PostgresEngine(const Datastore& store, std::string default_tz, std::chrono::seconds max_skew)
        : m_name(store.name), m_conninfo(with_application_name(store.dsn.reveal())),
          m_default_tz(std::move(default_tz)), m_max_skew(max_skew) {}

    std::vector<Diagnostic> check(const Rule& rule) override;
    DryRun dry_run(const Rule& rule, const RunContext& ctx) override;
    RunResult purge(const Rule& rule, RunContext& ctx) override;
    Presence records_present(const Rule& rule, const std::string& target,
                             const std::vector<std::string>& keys) override;

private:
    std::unique_ptr<pqxx::connection> connect() const;
    [[noreturn]] void unavailable(const pqxx::broken_connection& e) const;
    std::string zone_name(const RunContext& ctx) const {
        return ctx.tz != nullptr ? std::string(ctx.tz->name()) : m_default_tz;
    }
    // Resolves names and types; throws std::runtime_error naming what is missing.
    Plan make_plan(pqxx::transaction_base& tx, const Rule& rule, const std::string& tz) const;
    void plan_dependents(pqxx::transaction_base& tx, const std::vector<Dependent>& deps,
                         const std::string& parent_quoted, const std::string& parent_key,
                         std::vector<DepPlan>& out) const;

    std::string m_name;
    std::string m_conninfo;
    std::string m_default_tz;
    std::chrono::seconds m_max_skew;
};

std::unique_ptr<pqxx::connection> PostgresEngine::connect() const {
    try {
        return std::make_unique<pqxx::connection>(m_conninfo);
    } catch (const pqxx::broken_connection& e) {
        unavailable(e);
    }
}

void PostgresEngine::unavailable(const pqxx::broken_connection& e) const {
    throw UnavailableError("datastore \"" + m_name + "\": " + first_line(e.what()));
}

void PostgresEngine::plan_dependents(pqxx::transaction_base& tx, const std::vector<Dependent>& deps,
                                     const std::string& parent_quoted,
                                     const std::string& parent_key,
                                     std::vector<DepPlan>& out) const {
    for (const auto& d : deps) {
        DepPlan plan;
        plan.dep = &d;
        plan.table = quote_table(tx.conn(), d.table);
        if (!table_exists(tx, plan.table)) {
            throw PlanError("dependent table " + d.table + " does not exist");
        }
        plan.columns = read_columns(tx, plan.table);
        if (plan.columns.count(d.column) == 0) {
            throw PlanError("dependent table " + d.table + " has no column " + d.column);
        }
        plan.column = tx.quote_name(d.column);
        const auto ref = referenced_column(tx, plan.table, d.column, parent_quoted);
        plan.reference = ref ? tx.quote_name(*ref) : parent_key;
        if (plan.reference.empty()) {
            throw PlanError("cannot tell which column of the parent " + d.table + "." + d.column +
                            " references");
        }
        plan.counter = "dependents." + d.table + "." + dependent_action_name(d.action);
        for (const auto& fs : d.anonymize) {
            if (plan.columns.count(fs.field) == 0) {
                throw PlanError("dependent table " + d.table + " has no column " + fs.field);
            }
        }
        if (!d.dependents.empty()) {
            const auto own_key = referenced_column(tx, plan.table, "", plan.table);
            plan_dependents(tx, d.dependents, plan.table, own_key ? tx.quote_name(*own_key) : "",
                            plan.children);
        }
        out.push_back(std::move(plan));
    }
}

Plan PostgresEngine::make_plan(pqxx::transaction_base& tx, const Rule& rule,
                               const std::string& tz) const {
    const auto& pg = rule.pg();
    Plan plan;
    plan.rule = &rule;
    plan.tz = tz;
    plan.table = quote_table(tx.conn(), pg.table);
    if (!table_exists(tx, plan.table)) {
        throw PlanError("table " + pg.table + " does not exist");
    }
    plan.columns = read_columns(tx, plan.table);
    const auto need = [&](const std::string& column, const char* what) {
        if (plan.columns.count(column) == 0) {
            throw PlanError(std::string(what) + " column " + column + " not found in " + pg.table);
        }
    };
    if (pg.key.empty() || pg.clock.empty()) {
        throw PlanError("rule has no key or no clock");
    }
    for (const auto& k : pg.key) {
        need(k, "key");
        plan.keys.push_back(tx.quote_name(k));
    }
    std::string clock;
    for (const auto& c : pg.clock) {
        need(c, "clock");
        clock += (clock.empty() ? "" : ", ") + tx.quote_name(c);
    }
    plan.clock = pg.clock.size() == 1 ? clock : "COALESCE(" + clock + ")";
    if (pg.hold) {
        need(pg.hold->column, "hold");
    }
    if (pg.mark) {
        need(*pg.mark, "mark");
        plan.mark = tx.quote_name(*pg.mark);
        plan.mark_is_bool = plan.columns.at(*pg.mark).type == "boolean";
    }
    for (const auto& fs : rule.anonymize) {
        need(fs.field, "anonymized");
        plan.client_side = plan.client_side || needs_client(fs.strategy);
    }
    if (pg.notice) {
        plan.notice_table = pg_notice::state_table_exists(tx);
    }
    const std::string parent_key = pg.key.size() == 1 ? plan.keys.front() : "";
    plan_dependents(tx, pg.dependents, plan.table, parent_key, plan.dependents);
    const std::function<bool(const std::vector<DepPlan>&)> any_client =
        [&](const std::vector<DepPlan>& deps) {
            for (const auto& d : deps) {
                for (const auto& fs : d.dep->anonymize) {
                    if (needs_client(fs.strategy)) {
                        return true;
                    }
                }
                if (any_client(d.children)) {
                    return true;
                }
            }
            return false;
        };
    if (any_client(plan.dependents)) {
        throw PlanError("hmac and email_domain are not supported on dependents");
    }
    return plan;
}

// --- SQL fragments --------------------------------------------------------------------------

std::string not_held_sql(const Plan& plan, pqxx::transaction_base& tx, Params& p) {
    const auto& hold = plan.rule->pg().hold;
    if (!hold) {
        return "TRUE";
    }
    const auto col = tx.quote_name(hold->column);
    if (hold->kind == PgHold::Kind::after_now) {
        return "(" + col + " > now()) IS NOT TRUE";
    }
    return "(" + col + " = " + p.add(hold->equals) + ") IS NOT TRUE";
}

std::string held_sql(const Plan& plan, pqxx::transaction_base& tx, Params& p) {
    return "NOT (" + not_held_sql(plan, tx, p) + ")";
}

std::string unmarked_sql(const Plan& plan) {
    if (!plan.mark || plan.rule->action != Action::anonymize) {
        return "TRUE";
    }
    return plan.mark_is_bool ? *plan.mark + " IS NOT TRUE" : *plan.mark + " IS NULL";
}

// Due means clock + retain <= now (policy-format.md). With calendar units that is not the same as
// clock <= now - retain (2025-01-31 + 1 month = 02-28, but 02-28 - 1 month = 01-28), so the exact
// test is the second term; the first, a few days looser, only lets an index on the clock help.
// The SQL computing the bounds of Plan::due_hi_text / due_lo_text from `now()` and `retain`: text
// of now() - retain +/- 4 days (calendar arithmetic round trips differ by at most a few days), and
// whether the lower one is proven due by the server itself, with a day to spare (local-time
// arithmetic is monotonic up to a DST shift).
std::string due_bounds_sql(const std::string& retain) {
    const auto lo = "(now() - " + retain + "::interval - interval '4 days')";
    return "(now() - " + retain + "::interval + interval '4 days')::text, " + lo + "::text, " + lo +
           " + " + retain + "::interval + interval '1 day' <= now()";
}

void set_due_bounds(Plan& plan, const pqxx::row& row, int first) {
    plan.due_hi_text = row[first].c_str();
    plan.due_lo_text = row[first + 2].as<bool>() ? row[first + 1].c_str() : "";
}

// clock + retain <= now, exactly. The per-row calendar arithmetic is costly (time zone rules), so
// it is only evaluated between the two bounds: rows far past the cutoff are due by comparison.
std::string clock_due_sql(const Plan& plan, Params& p) {
    std::string exact = plan.clock + " + " + p.add(plan.rule->retain.to_pg_interval()) +
                        "::interval <= " + p.add(plan.now_text) + "::timestamptz";
    if (!plan.due_lo_text.empty()) {
        exact =
            "(" + plan.clock + " <= " + p.add(plan.due_lo_text) + "::timestamptz OR " + exact + ")";
    }
    std::string s =
        "(" + plan.clock + " <= " + p.add(plan.due_hi_text) + "::timestamptz AND " + exact + ")";
    if (plan.rule->clock_null_due) {
        s = "(" + s + " OR " + plan.clock + " IS NULL)";
    }
    return s;
}

// Due, not held, not already processed (mark, or our own earlier batch this run).
// The rule's table as the notice code needs it; `eligible` = not held and not yet anonymized.
pg_notice::Target notice_target(const Plan& plan, pqxx::transaction_base& tx) {
    pg_notice::Target t;
    t.table = plan.table;
    t.clock = plan.clock;
    t.keys = plan.keys;
    t.tz = plan.tz;
    Params p;
    t.eligible = not_held_sql(plan, tx, p) + " AND " + unmarked_sql(plan);
    t.params = p.values();
    return t;
}

std::string due_sql(const Plan& plan, pqxx::transaction_base& tx, Params& p) {
    std::string s =
        clock_due_sql(plan, p) + " AND " + not_held_sql(plan, tx, p) + " AND " + unmarked_sql(plan);
    if (plan.rule->action == Action::anonymize && !plan.mark && !plan.own_xids.empty()) {
        s += " AND NOT (xmin = ANY(" + p.add(array_literal(plan.own_xids)) + "::xid[]))";
    }
    if (plan.rule->pg().notice) {
        // Notice before deletion: only records noticed for this due date, `before` ago.
        s += " AND " + pg_notice::gate_sql(*plan.rule, notice_target(plan, tx), plan.notice_table,
                                           [&](std::string v) { return p.add(std::move(v)); });
    }
    return s;
}

std::string keys_text_sql(const Plan& plan, const std::string& alias = "") {
    std::string s;
    for (const auto& k : plan.keys) {
        s += (s.empty() ? "" : ", ") + (alias.empty() ? "" : alias + ".") + k + "::text";
    }
    return s;
}

std::string json_path_literal(const std::string& dotted) {
    std::vector<std::string> parts;
    std::string cur;
    for (const char c : dotted) {
        if (c == '.') {
            parts.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    parts.push_back(cur);
    return array_literal(parts);
}

// The SQL expression giving a column's anonymized value; `client` is the expression holding a
// value computed here (for hmac/email_domain).
std::string strategy_sql(const Strategy& s, const std::string& col, const std::string& type,
                         Params& p, const std::string& client) {
    switch (s.kind) {
    case Strategy::Kind::null_value:
        return "NULL";
    case Strategy::Kind::fixed:
        return p.add(s.fixed_value);
    case Strategy::Kind::hmac:
    case Strategy::Kind::email_domain:
        return client;
    case Strategy::Kind::truncate_ip:
        if (type == "inet" || type == "cidr") {
            return "CASE WHEN family(" + col + ") = 4 THEN set_masklen(network(set_masklen(" + col +
                   ", 24))::inet, 32) WHEN " + col +
                   " << '::ffff:0:0/96'::inet THEN set_masklen(network(set_masklen(" + col +
                   ", 120))::inet, 128) ELSE set_masklen(network(set_masklen(" + col +
                   ", 48))::inet, 128) END";
        } else {
            // An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what Node reports for an IPv4
            // client on a dual-stack socket) is an IPv4 address: its /24, written as it was.
            const auto v4 = p.add(R"(^(::[fF]{4}:)?[0-9]{1,3}(\.[0-9]{1,3}){3}$)");
            const auto v6 = p.add(R"(^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$)");
            return "CASE WHEN " + col + "::text ~ " + v4 + " THEN regexp_replace(" + col +
                   "::text, " + p.add(R"(\.[0-9]{1,3}$)") + ", '.0') WHEN " + col + "::text ~ " +
                   v6 + " THEN host(set_masklen(network(set_masklen(" + col +
                   "::text::inet, 48)), 128)) ELSE " + col + "::text END";
        }
    case Strategy::Kind::strip_query:
        return "regexp_replace(" + col + "::text, '[?#].*$', '')";
    case Strategy::Kind::round: {
        const auto digits = p.add(std::to_string(s.round_digits)) + "::int";
        if (is_numeric_type(type)) {
            return "round(" + col + "::numeric, " + digits + ")";
        }
        return "CASE WHEN " + col + "::text ~ " + p.add(R"(^\s*-?[0-9]+(\.[0-9]+)?\s*$)") +
               " THEN round(" + col + "::text::numeric, " + digits + ")::text ELSE " + col +
               "::text END";
    }
    case Strategy::Kind::drop_keys: {
        std::string e = type == "jsonb" ? col : col + "::jsonb";
        for (const auto& k : s.drop_keys) {
            e = "(" + e + " #- " + p.add(json_path_literal(k)) + "::text[])";
        }
        return type == "jsonb" ? e : e + "::" + (type == "json" ? "json" : "text");
    }
    case Strategy::Kind::date_trunc:
        return "date_trunc(" + p.add(s.trunc_unit) + ", " + col + ")";
    }
    return "NULL";
}

// "SET a = ..., b = ..." for anonymizing; client expressions are v.f1, v.f2... in order.
std::string set_list(const std::vector<FieldStrategy>& fields, const Columns& columns,
                     pqxx::transaction_base& tx, Params& p) {
    std::string out;
    int client = 0;
    for (const auto& fs : fields) {
        const auto col = tx.quote_name(fs.field);
        std::string client_expr;
        if (needs_client(fs.strategy)) {
            client_expr = "v.retentiond_f" + std::to_string(++client);
        }
        out += (out.empty() ? "" : ", ") + col + " = " +
               strategy_sql(fs.strategy, col, columns.at(fs.field).type, p, client_expr);
    }
    return out;
}

// --- dependents ------------------------------------------------------------------------------

// Applies the dependents of the rows whose referenced values `parent_set` selects, deepest first.
void apply_dependents(pqxx::transaction_base& tx, const std::vector<DepPlan>& deps,
                      const std::string& parent_set_sql, const Params& parent_params,
                      std::map<std::string, std::int64_t>& counters) {
    for (const auto& d : deps) {
        const std::string match = d.column + " IN (" + parent_set_sql + ")";
        // Deepest first: the children reference this dependent's rows that reference the parents.
        for (const auto& child : d.children) {
            const std::string child_set =
                "SELECT " + child.reference + " FROM " + d.table + " WHERE " + match;
            apply_dependents(tx, std::vector<DepPlan>{child}, child_set, parent_params, counters);
        }
        Params p = parent_params;
        std::string sql;
        switch (d.dep->action) {
        case Dependent::Action::remove:
            sql = "DELETE FROM " + d.table + " WHERE " + match;
            break;
        case Dependent::Action::set_null:
            sql = "UPDATE " + d.table + " SET " + d.column + " = NULL WHERE " + match;
            break;
        case Dependent::Action::anonymize:
            if (d.dep->anonymize.empty()) {
                continue;
            }
            sql = "UPDATE " + d.table + " SET " + set_list(d.dep->anonymize, d.columns, tx, p) +
                  " WHERE " + match;
            break;
        }
        counters[d.counter] += static_cast<std::int64_t>(exec(tx, sql, p).affected_rows());
    }
}

std::int64_t count_dependents(pqxx::transaction_base& tx, const std::vector<DepPlan>& deps,
                              const std::string& parent_set_sql, const Params& parent_params,
                              std::map<std::string, std::int64_t>& counters) {
    std::int64_t total = 0;
    for (const auto& d : deps) {
        const std::string match = d.column + " IN (" + parent_set_sql + ")";
        for (const auto& child : d.children) {
            count_dependents(tx, std::vector<DepPlan>{child},
                             "SELECT " + child.reference + " FROM " + d.table + " WHERE " + match,
                             parent_params, counters);
        }
        const auto n =
            exec(tx, "SELECT count(*) FROM " + d.table + " WHERE " + match, parent_params)[0][0]
                .as<std::int64_t>();
        counters[d.counter] += n;
        total += n;
    }
    return total;
}

bool retryable(const pqxx::sql_error& e) {
    const auto& state = e.sqlstate();
    return state == "55P03" || state == "57014" || state == "40P01" || state == "40001";
}

std::string ms(std::chrono::milliseconds d) {
    return std::to_string(d.count()) + "ms";
}

void set_local(pqxx::transaction_base& tx, const Plan& plan) {
    const auto& pg = plan.rule->pg();
    Params p;
    exec(tx,
         "SELECT set_config('lock_timeout', " + p.add(ms(pg.lock_timeout)) +
             ", true), set_config('statement_timeout', " + p.add(ms(pg.statement_timeout)) +
             ", true), set_config('TimeZone', " + p.add(plan.tz) + ", true)",
         p);
}

// --- purge -----------------------------------------------------------------------------------

// Where the server's WAL stands: inserted (written into the buffers) and flushed (durable).
struct WalPosition {
    std::uint64_t inserted = 0;
    std::uint64_t flushed = 0;
};

std::uint64_t parse_lsn(std::string_view text) {
    // "16/B374D848": high and low 32 bits in hex.
    const auto slash = text.find('/');
    if (slash == std::string_view::npos) {
        throw std::runtime_error("unexpected LSN from the server: " + std::string(text));
    }
    return (std::stoull(std::string(text.substr(0, slash)), nullptr, 16) << 32U) |
           std::stoull(std::string(text.substr(slash + 1)), nullptr, 16);
}

// A batch's transaction: deferrable constraints checked at each statement, timeouts, time zone,
// and an asynchronous commit (a batch's outcome line waits until the server has flushed its
// commit, see WalPosition). Returns the WAL position, read in the same round trip as the settings.
WalPosition begin_batch(pqxx::transaction_base& tx, const Plan& plan) {
    const auto& pg = plan.rule->pg();
    // Django creates its foreign keys DEFERRABLE INITIALLY DEFERRED: a reference the dependents
    // missed would only fail at COMMIT, after the batch's statements, on the pipelined path even
    // while the next batch runs. Checked at each statement instead, it fails the batch there,
    // naming the constraint, and the batch rolls back whole. (One round trip, about 17 us on a
    // Unix socket: a utility statement cannot share the parameterized one below.)
    tx.exec0("SET CONSTRAINTS ALL IMMEDIATE");
    Params p;
    const auto row = exec(
        tx,
        "SELECT set_config('lock_timeout', " + p.add(ms(pg.lock_timeout)) +
            ", true), set_config('statement_timeout', " + p.add(ms(pg.statement_timeout)) +
            ", true), set_config('TimeZone', " + p.add(plan.tz) +
            ", true), set_config('synchronous_commit', " + p.add(plan.async_commit ? "off" : "on") +
            ", true), pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text",
        p)[0];
    return WalPosition{parse_lsn(row[4].c_str()), parse_lsn(row[5].c_str())};
}

// Applied, not yet committed: the transaction waits on its connection for the intent.
struct OpenBatch {
    std::unique_ptr<pqxx::work> tx;
    std::future<std::string> intent; // the batch id, once the intent is durable
    int slot = 0;
    std::int64_t done = 0;
    bool counts = false; // selected rows: a batch for the summary
};

// Committed asynchronously: its outcome line waits until the server has flushed the commit.
struct UnsettledBatch {
    std::string batch_id;
    std::int64_t done = 0;
    std::optional<std::uint64_t> lsn; // WAL position past the commit record, once known
};

// Serializes the calls to a journal that is not thread-safe, for parallel streams.
class LockedJournal final : public BatchJournal {
public:
    explicit LockedJournal(BatchJournal* inner) : m_inner(inner) {}
    std::string intent(const BatchIntent& batch) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        return m_inner->intent(batch);
    }
    void outcome(const std::string& batch_id, bool committed, std::int64_t count) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        m_inner->outcome(batch_id, committed, count);
    }
    void outcome_except(const std::string& batch_id, std::int64_t count,
                        const std::vector<std::string>& unapplied_keys) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        m_inner->outcome_except(batch_id, count, unapplied_keys);
    }
    void event(const std::string& type, const nlohmann::json& fields) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        m_inner->event(type, fields);
    }

private:
    BatchJournal* m_inner;
    std::mutex m_mutex;
};

class CommitRefused : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Batch {
    bool by_range = false; // one statement over a page range, no selection pass
    bool overflow = false; // that range held more than batch_size due rows: rolled back
    std::int64_t selected = 0;
    std::string last_tid;
    std::int64_t done = 0;
};

} // namespace

RunResult PostgresEngine::purge(const Rule& rule, RunContext& ctx) {
    RunResult result;
    const auto& pg = rule.pg();
    const auto action_name = std::string(rule.action == Action::anonymize ? "anonymize" : "delete");
    const auto event_to = [&](BatchJournal* journal, const std::string& type,
                              nlohmann::json fields) {
        if (journal != nullptr) {
            fields["rule"] = rule.name;
            fields["datastore"] = m_name;
            journal->event(type, fields);
        }
    };
    const auto journal_event = [&](const std::string& type, nlohmann::json fields) {
        event_to(ctx.journal, type, std::move(fields));
    };
    const auto stopped_after = [](std::int64_t rows) {
        return "stopped on request after " + std::to_string(rows) + " rows";
    };
    // A failed notifier does not stop deletions of records noticed earlier, but fails the run.
    std::string notice_error;
    const auto with_notice_error = [&]() -> RunResult& {
        if (!notice_error.empty() && result.status == RunResult::Status::ok) {
            result.status = RunResult::Status::failed;
            result.message = notice_error;
        }
        return result;
    };
    try {
        auto conn = connect();
        std::optional<pg_notice::Outcome> notices;
        if (pg.notice) {
            ctx.phase("notices");
            // Notices first: records entering their window are warned now; deletion below only
            // takes records noticed at least `before` ago.
            pg_notice::Target target;
            {
                pqxx::work tx(*conn);
                try {
                    target = notice_target(make_plan(tx, rule, zone_name(ctx)), tx);
                } catch (const PlanError& e) {
                    result.status = RunResult::Status::failed;
                    result.message = e.what();
                    journal_event("error", {{"message", result.message}});
                    return result;
                }
                tx.commit();
            }
            notices = pg_notice::send_notices(*conn, rule, target, ctx, m_name);
            result.counters["notice.sent"] = notices->sent;
        }
        if (notices && notices->failed) {
            notice_error = "notices: " + notices->message;
        }
        ctx.phase("counting");
        Plan plan;
        std::int64_t total_rows = 0;
        std::int64_t pages = 0;
        try {
            pqxx::work tx(*conn);
            try {
                plan = make_plan(tx, rule, zone_name(ctx));
            } catch (const PlanError& e) {
                result.status = RunResult::Status::failed;
                result.message = e.what();
                journal_event("error", {{"message", result.message}});
                return result;
            }
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
                                      "has_function_privilege(oid, 'EXECUTE')), " +
                                      due_bounds_sql(retain),
                                  p)[0];
            plan.cutoff_text = row[0].c_str();
            plan.now_text = row[2].c_str();
            set_due_bounds(plan, row, 5);
            result.now = from_micros(row[3].as<std::int64_t>());
            // Due dates follow the database's clock. A host clock far from it means one of them
            // is wrong, and the rules of the other kinds (host clock) would disagree: stop.
            const auto skew = std::chrono::duration_cast<std::chrono::seconds>(
                result.now > now_utc() ? result.now - now_utc() : now_utc() - result.now);
            if (skew > m_max_skew) {
                result.status = RunResult::Status::refused;
                result.message = "refused: the host clock differs from the database's by " +
                                 std::to_string(skew.count()) + " s (daemon.max_clock_skew " +
                                 std::to_string(m_max_skew.count()) + " s); fix the clocks";
                journal_event("refusal", {{"reason", "clock_skew"},
                                          {"skew_seconds", skew.count()},
                                          {"max_clock_skew", m_max_skew.count()}});
                return result;
            }
            result.cutoff = from_micros(row[1].as<std::int64_t>());
            // Batches commit asynchronously only when the run can force the flush at its end.
            // (The text variant, looked up by name: a bytea one exists too, and PostgreSQL 17
            // added a fourth, defaulted argument.)
            plan.async_commit = row[4].as<bool>();
            Params c;
            const auto counts =
                exec(tx,
                     "SELECT count(*), count(*) FILTER (WHERE " + due_sql(plan, tx, c) +
                         "), pg_relation_size(" + c.add(plan.table) +
                         "::regclass) / current_setting('block_size')::bigint "
                         "FROM " +
                         plan.table,
                     c)[0];
            total_rows = counts[0].as<std::int64_t>();
            result.due = counts[1].as<std::int64_t>();
            pages = counts[2].as<std::int64_t>();
            tx.commit();
        } catch (const pqxx::sql_error& e) {
            // Counting timed out or the rule's SQL is refused: nothing was touched.
            result.status = RunResult::Status::failed;
            result.message = "counting due rows in " + pg.table + " failed (SQLSTATE " +
                             e.sqlstate() + "): " + first_line(e.what());
            journal_event("error", {{"sqlstate", e.sqlstate()}});
            return result;
        }

        // Limits, before touching anything.
        if (refuse_over_limits(rule, ctx, {result.due, total_rows, "rows", "in " + pg.table},
                               result)) {
            return result;
        }
        if (result.due == 0 || pages == 0) {
            return with_notice_error();
        }

        // Pages per range so that a range holds about 90% of batch_size due rows on average: every
        // batch pays a commit, round trips and an intent, so fuller batches mean fewer of them,
        // while a range that overflows batch_size is rolled back and split (measured: 80% -> 90%
        // takes 126 -> ~112 batches for 1M due rows, overflow stays rare at page-level noise).
        const std::int64_t batch_size = std::max(1, rule.batch_size);
        const std::int64_t initial_span = std::clamp<std::int64_t>(
            batch_size * pages * 9 / (10 * std::max<std::int64_t>(1, result.due)), 1, pages);
        const bool lock_first = !plan.dependents.empty() || plan.client_side;
        // Pipelined batches: batch i stays applied but uncommitted on one connection while batch
        // i+1's statement runs on a second one, and batch i's intent (digests, fsyncs) is written
        // on a journal thread meanwhile; then batch i commits. The journal's cost hides behind the
        // database's. Not with dependents: a referencing row may point at the parents of two
        // batches, and the second batch would wait on the first's row locks.
        const bool pipelined = plan.dependents.empty();
        // Parallel streams (`parallel: N`, deletes without dependents only: an anonymized row may
        // move to a page another stream reads, and dependents could deadlock on each other's
        // locks). Each stream claims the next pages from one shared cursor, so streams share the
        // work wherever the due rows lie, and runs the loop below on its own connections.
        const int streams = rule.action == Action::remove && pipelined && !plan.client_side
                                ? std::max(1, pg.parallel)
                                : 1;
        std::mutex shared_mutex; // next_page, on_progress
        std::int64_t next_page = 0;
        std::atomic<std::int64_t> processed_all{0};
        std::atomic<bool> abort_streams{false}; // a sibling stream failed
        LockedJournal locked_journal(ctx.journal);
        BatchJournal* const journal =
            streams > 1 && ctx.journal != nullptr && !ctx.journal->thread_safe() ? &locked_journal
                                                                                 : ctx.journal;
        const auto stream_event = [&](const std::string& type, nlohmann::json fields) {
            event_to(journal, type, std::move(fields));
        };
        const auto progress = [&](std::int64_t done) {
            const std::lock_guard<std::mutex> lock(shared_mutex); // totals reported in order
            const std::int64_t total = processed_all += done;
            if (ctx.on_progress) {
                ctx.on_progress(total, result.due);
            }
        };
        // One stream: batches over the pages it claims. Fills `sr` (processed, batches, counters,
        // status, message); throws what the single-stream loop throws.
        const auto run_stream = [&](std::unique_ptr<pqxx::connection> own, RunResult& sr) {
            std::int64_t span = initial_span;
            std::array<std::unique_ptr<pqxx::connection>, 2> conns{std::move(own), nullptr};
            std::optional<OpenBatch> open;
            std::deque<UnsettledBatch> unsettled;
            WalPosition wal;
            bool need_sync = false; // commits the server may not have flushed yet

            // Outcome lines only for commits the server has flushed (batches commit
            // asynchronously).
            const auto settle = [&](bool all) {
                while (!unsettled.empty() &&
                       (all || (unsettled.front().lsn && *unsettled.front().lsn <= wal.flushed))) {
                    journal->outcome(unsettled.front().batch_id, true, unsettled.front().done);
                    unsettled.pop_front();
                }
            };
            // Commits the open batch once its intent is durable. A refused commit fails the rule.
            const auto finish_open = [&]() {
                if (!open) {
                    return;
                }
                OpenBatch o = std::move(*open);
                open.reset();
                std::optional<std::string> batch_id;
                if (o.intent.valid()) {
                    batch_id = o.intent.get(); // not durable: o.tx rolls back as the error unwinds
                }
                try {
                    o.tx->commit();
                } catch (const pqxx::broken_connection&) {
                    throw; // outcome unknown: crash recovery resolves the intent
                } catch (const pqxx::in_doubt_error&) {
                    throw;
                } catch (const std::exception& e) {
                    if (batch_id) {
                        journal->outcome(*batch_id, false, 0);
                    }
                    throw CommitRefused(first_line(e.what()));
                }
                need_sync = plan.async_commit;
                if (o.counts) {
                    ++sr.batches;
                }
                sr.processed += o.done;
                // The journal thread is idle here: earlier batches the server has flushed get their
                // outcome lines.
                settle(false);
                if (batch_id && plan.async_commit) {
                    unsettled.push_back({*batch_id, o.done, std::nullopt});
                } else if (batch_id) {
                    journal->outcome(*batch_id, true, o.done); // flushed by its own commit
                }
                progress(o.done);
            };
            // Waits for the server to flush every commit so far (a synchronous commit flushes the
            // WAL up to its own commit record, which follows all of ours), then writes their
            // outcomes.
            const auto make_durable = [&]() {
                finish_open();
                if (!need_sync) {
                    settle(true); // nothing committed asynchronously since the last flush
                    return;
                }
                pqxx::work tx(*conns[0]);
                // A transaction that writes no WAL of its own commits without a flush, whatever
                // synchronous_commit says: a transactional logical message (no table, any
                // wal_level) is the smallest record that makes this commit flush.
                tx.exec("SELECT set_config('synchronous_commit', 'on', true), "
                        "pg_logical_emit_message(true, 'retentiond', 'durable')");
                tx.commit();
                need_sync = false;
                settle(true);
            };
            const auto journal_now = [&](const std::string& type, nlohmann::json fields) {
                make_durable(); // the journal thread is idle and earlier lines come first
                stream_event(type, std::move(fields));
            };

            std::int64_t range_start = 0;
            std::int64_t claim_end = 0; // this stream's pages: [range_start, claim_end)
            std::string after_tid;      // keyset within the current range
            bool force_select = false;  // a single page holds more than batch_size due rows
            bool first = true;
            try {
                for (;;) {
                    if (range_start >= claim_end) {
                        const std::lock_guard<std::mutex> lock(shared_mutex);
                        range_start = next_page;
                        claim_end = std::min(pages, next_page + span);
                        next_page = claim_end;
                    }
                    if (range_start >= pages) {
                        break;
                    }
                    if (abort_streams) {
                        make_durable();
                        sr.status = RunResult::Status::stopped;
                        return;
                    }
                    if (!first && ctx.stop_requested && ctx.stop_requested()) {
                        make_durable();
                        sr.status = RunResult::Status::stopped;
                        sr.message = stopped_after(processed_all.load());
                        return;
                    }
                    const std::int64_t range_end = std::min(claim_end, range_start + span);
                    // The connection the open batch does not hold.
                    const int slot = open ? 1 - open->slot : 0;
                    if (!conns[slot]) {
                        conns[slot] = connect();
                    }
                    Batch batch;
                    // A row changed under a REPEATABLE READ batch: the retry deletes in READ
                    // COMMITTED (DELETE ... RETURNING, which re-judges a changed row without
                    // failing), so a busy table cannot use up the attempts.
                    bool conflicted = false;
                    // Without dependents or client-side values, a batch works on a page range,
                    // reading it like the plain DELETE. Otherwise (or when one page overflows
                    // batch_size) a selection pass picks the next due rows in physical order.
                    batch.by_range = !lock_first && after_tid.empty() && !force_select;
                    for (int attempt = 1;; ++attempt) {
                        bool pushed_xid = false;
                        try {
                            auto tx = std::make_unique<pqxx::work>(*conns[slot]);
                            // Deletes by page range read the keys, then delete, in one
                            // REPEATABLE READ snapshot (see below).
                            const bool read_then_delete =
                                batch.by_range && rule.action == Action::remove && !conflicted;
                            if (read_then_delete) {
                                tx->exec0("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
                            }
                            wal = begin_batch(*tx, plan);
                            for (auto& u : unsettled) {
                                if (!u.lsn) {
                                    u.lsn = wal.inserted; // its commit returned before this point
                                }
                            }
                            if (rule.action == Action::anonymize && !plan.mark) {
                                plan.own_xids.push_back(std::to_string(
                                    tx->exec(
                                          "SELECT pg_current_xact_id()::text::bigint % 4294967296")
                                        [0][0]
                                            .as<std::int64_t>()));
                                pushed_xid = true;
                            }
                            Params m;
                            std::string rows_sql;
                            std::string tid_array;
                            pqxx::result selected;
                            if (batch.by_range) {
                                rows_sql =
                                    "ctid >= " + m.add("(" + std::to_string(range_start) + ",0)") +
                                    "::tid AND ctid < " +
                                    m.add("(" + std::to_string(range_end) + ",0)") + "::tid";
                            } else {
                                Params s;
                                std::string extra_cols;
                                for (const auto& fs : rule.anonymize) {
                                    if (needs_client(fs.strategy)) {
                                        extra_cols += ", " + tx->quote_name(fs.field) + "::text";
                                    }
                                }
                                const std::string lower =
                                    after_tid.empty()
                                        ? "ctid >= " +
                                              s.add("(" + std::to_string(range_start) + ",0)") +
                                              "::tid"
                                        : "ctid > " + s.add(after_tid) + "::tid";
                                selected = exec(*tx,
                                                "SELECT ctid::text AS retentiond_tid" + extra_cols +
                                                    " FROM " + plan.table + " WHERE " + lower +
                                                    " AND ctid < " +
                                                    s.add("(" + std::to_string(range_end) + ",0)") +
                                                    "::tid AND " + due_sql(plan, *tx, s) +
                                                    " ORDER BY ctid LIMIT " +
                                                    s.add(std::to_string(batch_size)) + "::bigint" +
                                                    (lock_first ? " FOR UPDATE" : ""),
                                                s);
                                batch.selected = static_cast<std::int64_t>(selected.size());
                                if (selected.empty()) {
                                    tx->commit();
                                    break;
                                }
                                batch.last_tid = selected[selected.size() - 1][0].c_str();
                                std::vector<std::string> tids;
                                tids.reserve(selected.size());
                                for (const auto& row : selected) {
                                    tids.emplace_back(row[0].c_str());
                                }
                                tid_array = array_literal(tids);

                                if (!plan.dependents.empty()) {
                                    Params dp;
                                    const std::string parent_set =
                                        "SELECT %REF% FROM " + plan.table + " WHERE ctid = ANY(" +
                                        dp.add(tid_array) + "::tid[])";
                                    for (const auto& d : plan.dependents) {
                                        std::string set = parent_set;
                                        set.replace(set.find("%REF%"), 5, d.reference);
                                        apply_dependents(*tx, std::vector<DepPlan>{d}, set, dp,
                                                         sr.counters);
                                    }
                                }
                                if (!plan.client_side) { // the client path joins on its own tid
                                                         // list
                                    rows_sql = "ctid = ANY(" + m.add(tid_array) + "::tid[])";
                                }
                            }

                            std::string sql;
                            pqxx::result touched;
                            if (read_then_delete) {
                                // The keys the audit needs, then the same rows deleted, both in
                                // the batch's snapshot: two scans of the range cost the server
                                // less than `DELETE ... RETURNING`, which fetches every deleted
                                // row once more. A row changed after the snapshot (a login)
                                // makes the DELETE fail with 40001 and the batch is retried in
                                // a new snapshot, where it is judged again; so the DELETE removes
                                // exactly the rows the SELECT returned (checked).
                                const std::string where =
                                    rows_sql + " AND " + due_sql(plan, *tx, m);
                                touched = exec(*tx,
                                               "SELECT " + keys_text_sql(plan) + " FROM " +
                                                   plan.table + " WHERE " + where,
                                               m);
                                if (static_cast<std::int64_t>(touched.size()) <= batch_size) {
                                    const auto deleted =
                                        exec(*tx, "DELETE FROM " + plan.table + " WHERE " + where,
                                             m)
                                            .affected_rows();
                                    if (deleted != touched.size()) {
                                        throw pqxx::sql_error(
                                            "deleted " + std::to_string(deleted) + " rows of the " +
                                                std::to_string(touched.size()) + " read",
                                            "", "40001");
                                    }
                                }
                            } else if (rule.action == Action::remove) {
                                sql = "DELETE FROM " + plan.table + " WHERE " + rows_sql + " AND " +
                                      due_sql(plan, *tx, m) + " RETURNING " + keys_text_sql(plan);
                            } else if (!plan.client_side) {
                                std::string set = set_list(rule.anonymize, plan.columns, *tx, m);
                                if (plan.mark) {
                                    set += ", " + *plan.mark + " = " +
                                           (plan.mark_is_bool ? "true" : "now()");
                                }
                                sql = "UPDATE " + plan.table + " SET " + set + " WHERE " +
                                      rows_sql + " AND " + due_sql(plan, *tx, m) + " RETURNING " +
                                      keys_text_sql(plan);
                            } else {
                                // hmac / email_domain computed here, joined back by ctid.
                                std::vector<std::vector<std::optional<std::string>>> client_values;
                                int column = 1;
                                for (const auto& fs : rule.anonymize) {
                                    if (!needs_client(fs.strategy)) {
                                        continue;
                                    }
                                    if (ctx.audit_key == nullptr || ctx.audit_key->empty()) {
                                        throw PlanError(
                                            "strategy hmac/email_domain needs daemon.audit_key");
                                    }
                                    std::vector<std::optional<std::string>> values;
                                    for (const auto& row : selected) {
                                        const auto f = row[column];
                                        values.push_back(
                                            f.is_null() ? std::nullopt
                                                        : anonymize_text(fs.strategy, f.c_str(),
                                                                         *ctx.audit_key, ctx.tz));
                                    }
                                    client_values.push_back(std::move(values));
                                    ++column;
                                }
                                std::string set = set_list(rule.anonymize, plan.columns, *tx, m);
                                if (plan.mark) {
                                    set += ", " + *plan.mark + " = " +
                                           (plan.mark_is_bool ? "true" : "now()");
                                }
                                std::string unnest = "unnest(" + m.add(tid_array) + "::tid[]";
                                std::string names = "retentiond_tid";
                                for (std::size_t i = 0; i < client_values.size(); ++i) {
                                    unnest +=
                                        ", " + m.add(array_literal(client_values[i])) + "::text[]";
                                    names += ", retentiond_f" + std::to_string(i + 1);
                                }
                                sql = "UPDATE " + plan.table + " AS t SET " + set + " FROM " +
                                      unnest + ") AS v(" + names +
                                      ") WHERE t.ctid = v.retentiond_tid AND " +
                                      due_sql(plan, *tx, m) + " RETURNING " +
                                      keys_text_sql(plan, "t");
                            }
                            if (!read_then_delete) {
                                touched = exec(*tx, sql, m);
                            }
                            batch.done = static_cast<std::int64_t>(touched.size());
                            if (batch.by_range) {
                                if (batch.done > batch_size) {
                                    batch.overflow = true; // rolled back by tx's destructor
                                    if (pushed_xid) {
                                        plan.own_xids.pop_back();
                                    }
                                    break;
                                }
                                batch.selected = batch.done;
                            }
                            // The previous batch commits now that this one's statement has run.
                            finish_open();
                            OpenBatch next;
                            next.slot = slot;
                            next.done = batch.done;
                            next.counts = batch.selected > 0 || (batch.by_range && batch.done > 0);
                            if (journal != nullptr && batch.done > 0) {
                                BatchIntent intent;
                                intent.rule = rule.name;
                                intent.datastore = m_name;
                                intent.target = pg.table;
                                intent.action = action_name;
                                intent.cutoff = result.cutoff;
                                intent.keys.reserve(touched.size());
                                for (const auto& row : touched) {
                                    if (plan.keys.size() == 1) { // its canonical form: itself
                                        intent.keys.emplace_back(row[0].c_str(), row[0].size());
                                        continue;
                                    }
                                    std::vector<std::string> values;
                                    for (std::size_t i = 0; i < plan.keys.size(); ++i) {
                                        values.emplace_back(row[static_cast<int>(i)].c_str());
                                    }
                                    intent.keys.push_back(canonical_key(values));
                                }
                                // A stream's journal calls come one at a time (finish_open waits
                                // for this task first); streams share a thread-safe journal.
                                next.intent = std::async(std::launch::async,
                                                         [journal, b = std::move(intent)] {
                                                             return journal->intent(b);
                                                         });
                            }
                            next.tx = std::move(tx);
                            open = std::move(next);
                            if (!pipelined) {
                                finish_open();
                            }
                            break;
                        } catch (const pqxx::broken_connection&) {
                            throw; // outcome unknown: crash recovery resolves the intents
                        } catch (const pqxx::in_doubt_error&) {
                            throw;
                        } catch (const CommitRefused&) {
                            throw;
                        } catch (const AuditWriteError&) {
                            throw; // the batch rolled back; the run stops before touching more
                        } catch (const std::exception& e) {
                            if (pushed_xid) {
                                plan.own_xids.pop_back();
                            }
                            std::string state;
                            bool retry = false;
                            if (const auto* se = dynamic_cast<const pqxx::sql_error*>(&e)) {
                                state = se->sqlstate();
                                retry = retryable(*se);
                            } else if (dynamic_cast<const pqxx::transaction_rollback*>(&e) !=
                                       nullptr) {
                                // libpqxx 6.4 throws these without their SQLSTATE.
                                state =
                                    dynamic_cast<const pqxx::serialization_failure*>(&e) != nullptr
                                        ? "40001"
                                    : dynamic_cast<const pqxx::deadlock_detected*>(&e) != nullptr
                                        ? "40P01"
                                        : "40000";
                                retry = true;
                            }
                            conflicted = conflicted || state == "40001";
                            if (!retry) {
                                const std::string what = first_line(e.what());
                                journal_now("error", {{"sqlstate", state},
                                                      {"processed", processed_all.load()}});
                                sr.status = RunResult::Status::failed;
                                sr.message = "batch on " + pg.table + " failed" +
                                             (state.empty() ? "" : " (SQLSTATE " + state + ")") +
                                             ": " + what + "; stopped after " +
                                             std::to_string(processed_all.load()) + " rows";
                                return;
                            }
                            make_durable(); // nothing stays open while this batch waits
                            if (attempt >= k_max_attempts) {
                                sr.status = RunResult::Status::failed;
                                sr.message = "batch on " + pg.table + " timed out " +
                                             std::to_string(attempt) + " times (lock_timeout " +
                                             ms(pg.lock_timeout) + ", statement_timeout " +
                                             ms(pg.statement_timeout) + ", SQLSTATE " + state +
                                             "); stopped after " +
                                             std::to_string(processed_all.load()) +
                                             " rows, nothing of that batch applied";
                                stream_event("error", {{"sqlstate", state},
                                                       {"attempts", attempt},
                                                       {"processed", processed_all.load()}});
                                return;
                            }
                            std::this_thread::sleep_for(
                                std::min(k_max_backoff, k_first_backoff * (1 << (attempt - 1))));
                        }
                    }
                    if (batch.overflow) {
                        if (span > 1) {
                            span = std::max<std::int64_t>(1, span / 2);
                        } else {
                            force_select = true;
                        }
                        continue; // the same range again, smaller
                    }
                    if (batch.selected > 0) {
                        first = false;
                    }
                    if (!batch.by_range && batch.selected >= batch_size) {
                        after_tid = batch.last_tid; // more in this range
                    } else {
                        range_start = range_end;
                        after_tid.clear();
                        force_select = false;
                        if (batch.by_range) {
                            // Follow the density of due rows: aim at 90% of batch_size per range.
                            const std::int64_t target =
                                std::max<std::int64_t>(1, batch_size * 9 / 10);
                            const std::int64_t next =
                                batch.done == 0 ? span * 2 : span * target / batch.done;
                            span = std::clamp<std::int64_t>(
                                std::clamp<std::int64_t>(next, std::max<std::int64_t>(1, span / 2),
                                                         span * 2),
                                1, pages);
                        }
                    }
                    if (batch.selected > 0 && pg.sleep_between_batches.count() > 0 &&
                        range_start < pages) {
                        make_durable(); // no row locks held, no outcome left waiting while
                                        // throttled
                        std::this_thread::sleep_for(pg.sleep_between_batches);
                    }
                }
                make_durable();
            } catch (const CommitRefused& e) {
                sr.status = RunResult::Status::failed;
                sr.message = "commit on " + pg.table + " refused: " + e.what() +
                             "; stopped after " + std::to_string(processed_all.load()) + " rows";
                journal_now("error", {{"processed", processed_all.load()}});
                return;
            }
        };

        ctx.phase("batches");
        std::vector<RunResult> parts(static_cast<std::size_t>(streams));
        if (streams == 1) {
            run_stream(std::move(conn), parts[0]);
        } else {
            std::vector<std::exception_ptr> errors(parts.size());
            std::vector<std::thread> threads;
            for (std::size_t i = 0; i < parts.size(); ++i) {
                threads.emplace_back([&, i, own = i == 0 ? std::move(conn) : nullptr]() mutable {
                    try {
                        if (!own) {
                            own = connect();
                        }
                        run_stream(std::move(own), parts[i]);
                    } catch (...) {
                        errors[i] = std::current_exception();
                    }
                    if (errors[i] || parts[i].status == RunResult::Status::failed) {
                        abort_streams = true; // the others finish their batch and stop
                    }
                });
            }
            for (auto& t : threads) {
                t.join();
            }
            for (const auto& e : errors) {
                if (e) {
                    std::rethrow_exception(e);
                }
            }
        }
        const RunResult* failed = nullptr;
        const RunResult* stopped = nullptr;
        for (const auto& part : parts) {
            result.processed += part.processed;
            result.batches += part.batches;
            for (const auto& [name, n] : part.counters) {
                result.counters[name] += n;
            }
            if (part.status == RunResult::Status::failed && failed == nullptr) {
                failed = &part;
            } else if (part.status == RunResult::Status::stopped && stopped == nullptr) {
                stopped = &part;
            }
        }
        if (failed != nullptr) {
            result.status = failed->status;
            result.message = failed->message;
            return result;
        }
        if (stopped != nullptr) {
            result.status = stopped->status;
            result.message = stopped_after(result.processed);
            return result;
        }
    } catch (const pqxx::broken_connection& e) {
        unavailable(e);
    } catch (const pqxx::in_doubt_error& e) {
        throw UnavailableError("datastore \"" + m_name +
                               "\": commit outcome unknown: " + first_line(e.what()));
    }
    return with_notice_error();
}

// --- dry run ----------------------------------------------------------------------------------

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
        Params tz;
        exec(tx, "SELECT set_config('TimeZone', " + tz.add(plan.tz) + ", true)", tz);
        Params p;
        const auto retain = p.add(rule.retain.to_pg_interval()) + "::interval";
        const auto row = exec(tx,
                              "SELECT (now() - " + retain +
                                  ")::text, (extract(epoch FROM now()) * 1000000)::bigint, "
                                  "(extract(epoch FROM now() - " +
                                  retain + ") * 1000000)::bigint, now()::text, " +
                                  due_bounds_sql(p.add(rule.retain.to_pg_interval())),
                              p)[0];
        plan.cutoff_text = row[0].c_str();
        plan.now_text = row[3].c_str();
        set_due_bounds(plan, row, 4);
        dry.now = from_micros(row[1].as<std::int64_t>());
        dry.cutoff = from_micros(row[2].as<std::int64_t>());

        Params c;
        const auto due = due_sql(plan, tx, c);
        const auto held = clock_due_sql(plan, c) + " AND " + held_sql(plan, tx, c);
        const auto r = c.add(rule.retain.to_pg_interval()) + "::interval";
        const auto not_held = not_held_sql(plan, tx, c) + " AND " + unmarked_sql(plan);
        const auto soon = [&](int days) {
            return plan.clock + " > " + c.add(plan.cutoff_text) + "::timestamptz AND " +
                   plan.clock + " <= (now() + " + c.add(std::to_string(days) + " days") +
                   "::interval) - " + r + " AND " + not_held;
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

        Params b;
        const auto secs =
            "extract(epoch FROM " + b.add(rule.retain.to_pg_interval()) + "::interval)";
        const auto buckets =
            exec(tx,
                 "SELECT CASE WHEN " + secs +
                     " <= 0 THEN 16 ELSE least(16, greatest(0, floor(extract("
                     "epoch FROM now() - " +
                     plan.clock + ") / " + secs + " * 8)))::int END AS bucket, count(*) FROM " +
                     plan.table + " WHERE " + plan.clock + " IS NOT NULL GROUP BY 1",
                 b);
        for (const auto& row2 : buckets) {
            dry.age_buckets.at(static_cast<std::size_t>(row2[0].as<int>())) +=
                row2[1].as<std::int64_t>();
        }

        if (!plan.dependents.empty()) {
            for (const auto& d : plan.dependents) {
                Params dp;
                const auto set = "SELECT " + d.reference + " FROM " + plan.table + " WHERE " +
                                 due_sql(plan, tx, dp);
                count_dependents(tx, std::vector<DepPlan>{d}, set, dp, dry.counters);
            }
        }
        if (rule.pg().notice) {
            const auto notices = pg_notice::count(tx, rule, notice_target(plan, tx));
            dry.counters["notice.to_send"] = notices.to_send;
            dry.counters["notice.waiting"] = notices.waiting;
        }
        if (!rule.clock_null_due && dry.no_clock > 0) {
            dry.notes.push_back(std::to_string(dry.no_clock) + " rows have no clock (never due)");
        }
    } catch (const pqxx::broken_connection& e) {
        unavailable(e);
    }
    return dry;
}

// --- check -----------------------------------------------------------------------------------

std::vector<Diagnostic> PostgresEngine::check(const Rule& rule) {
    std::vector<Diagnostic> out;
    const auto diag = [&](std::string message) {
        out.push_back(Diagnostic{rule.pos, rule.name, std::move(message)});
    };
    try {
        auto conn = connect();
        pqxx::read_transaction tx(*conn);
        const auto& pg = rule.pg();
        const auto table = quote_table(*conn, pg.table);
        if (!table_exists(tx, table)) {
            diag("table " + pg.table + " does not exist");
            return out;
        }
        const auto columns = read_columns(tx, table);
        const auto need = [&](const std::string& column, const std::string& what) {
            if (columns.count(column) == 0) {
                diag(what + " column " + column + " not found in " + pg.table);
                return false;
            }
            return true;
        };
        for (const auto& k : pg.key) {
            need(k, "key");
        }
        for (const auto& c : pg.clock) {
            if (need(c, "clock") && !is_time_type(columns.at(c).type)) {
                diag("clock column " + pg.table + "." + c + " is of type " + columns.at(c).type +
                     ", not a timestamp, timestamptz or date");
            }
        }
        if (pg.hold) {
            need(pg.hold->column, "hold");
        }
        if (pg.mark && need(*pg.mark, "mark")) {
            const auto& type = columns.at(*pg.mark).type;
            if (type != "boolean" && !is_time_type(type)) {
                diag("mark column " + *pg.mark + " is of type " + type +
                     ", not boolean or a timestamp");
            }
        }
        for (const auto& fs : rule.anonymize) {
            if (need(fs.field, "anonymized")) {
                const auto& type = columns.at(fs.field).type;
                if (fs.strategy.kind == Strategy::Kind::date_trunc && !is_time_type(type)) {
                    diag("date_trunc on " + fs.field + " of type " + type);
                }
                if (fs.strategy.kind == Strategy::Kind::drop_keys && type != "jsonb" &&
                    type != "json" && !is_text_type(type)) {
                    diag("drop_keys on " + fs.field + " of type " + type);
                }
            }
        }

        // Foreign key coverage: every FK into a table whose rows get deleted must be handled.
        const std::function<void(const std::string&, const std::string&,
                                 const std::vector<Dependent>&)>
            cover = [&](const std::string& target_quoted, const std::string& target_name,
                        const std::vector<Dependent>& deps) {
                Params p;
                const auto fks =
                    exec(tx,
                         "SELECT c.conname, c.conrelid::regclass::text, c.confdeltype, "
                         "array_to_string(ARRAY(SELECT a.attname FROM unnest(c.conkey) k JOIN "
                         "pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k), ','), "
                         "c.conrelid FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = "
                         "to_regclass(" +
                             p.add(target_quoted) + ") ORDER BY 1",
                         p);
                for (const auto& fk : fks) {
                    const std::string action = fk[2].c_str();
                    if (action == "c" || action == "n" || action == "d") {
                        continue; // the database handles it
                    }
                    const std::string columns_text = fk[3].c_str();
                    bool covered = false;
                    for (const auto& d : deps) {
                        Params q;
                        const auto same =
                            exec(tx,
                                 "SELECT to_regclass(" + q.add(quote_table(*conn, d.table)) +
                                     ")::oid = " + q.add(fk[4].c_str()) + "::oid",
                                 q)[0][0];
                        if (!same.is_null() && same.as<bool>() && d.column == columns_text) {
                            covered = true;
                        }
                    }
                    if (!covered) {
                        diag("foreign key \"" + std::string(fk[0].c_str()) + "\" on table " +
                             fk[1].c_str() + " column " + columns_text + " references " +
                             target_name +
                             " but is neither covered by dependents nor ON DELETE CASCADE/SET "
                             "NULL");
                    }
                }
                for (const auto& d : deps) {
                    const auto dq = quote_table(*conn, d.table);
                    if (!table_exists(tx, dq)) {
                        diag("dependent table " + d.table + " does not exist");
                        continue;
                    }
                    const auto dcols = read_columns(tx, dq);
                    if (dcols.count(d.column) == 0) {
                        diag("dependent column " + d.table + "." + d.column + " not found");
                        continue;
                    }
                    if (d.action == Dependent::Action::set_null && dcols.at(d.column).not_null) {
                        diag("dependent column " + d.table + "." + d.column +
                             " is NOT NULL: set_null cannot apply");
                    }
                    for (const auto& fs : d.anonymize) {
                        if (dcols.count(fs.field) == 0) {
                            diag("dependent column " + d.table + "." + fs.field + " not found");
                        }
                        if (needs_client(fs.strategy)) {
                            diag("hmac and email_domain are not supported on dependents (" +
                                 d.table + "." + fs.field + ")");
                        }
                    }
                    if (d.action == Dependent::Action::remove) {
                        cover(dq, d.table, d.dependents);
                    }
                }
            };
        if (rule.action == Action::remove) {
            cover(table, pg.table, pg.dependents);
        }
    } catch (const pqxx::broken_connection& e) {
        unavailable(e);
    }
    return out;
}

// --- crash recovery --------------------------------------------------------------------------

Presence PostgresEngine::records_present(const Rule& rule, const std::string& target,
                                         const std::vector<std::string>& keys) {
    const auto& pg = rule.pg();
    if (target != pg.table) {
        return Presence::unknown;
    }
    if (rule.action == Action::anonymize && !pg.mark) {
        return Presence::unknown;
    }
    if (keys.empty()) {
        return Presence::absent;
    }
    try {
        auto conn = connect();
        pqxx::read_transaction tx(*conn);
        const auto table = quote_table(*conn, pg.table);
        if (!table_exists(tx, table)) {
            return Presence::unknown;
        }
        const auto columns = read_columns(tx, table);
        std::vector<std::vector<std::string>> split(pg.key.size());
        for (const auto& key : keys) {
            if (pg.key.size() == 1) {
                split[0].push_back(key);
                continue;
            }
            const auto values = nlohmann::json::parse(key).get<std::vector<std::string>>();
            if (values.size() != pg.key.size()) {
                return Presence::unknown;
            }
            for (std::size_t i = 0; i < values.size(); ++i) {
                split[i].push_back(values[i]);
            }
        }
        Params p;
        std::string unnest;
        std::string names;
        std::string match;
        for (std::size_t i = 0; i < pg.key.size(); ++i) {
            const auto& col = pg.key[i];
            if (columns.count(col) == 0) {
                return Presence::unknown;
            }
            unnest += (i ? ", " : "") + p.add(array_literal(split[i])) + "::text[]";
            names += (i ? ", " : "") + std::string("k") + std::to_string(i);
            // The catalog's own spelling of the type, so the key index is usable.
            match += (i ? " AND " : "") + tx.quote_name(col) + " = u.k" + std::to_string(i) +
                     "::" + columns.at(col).type;
        }
        std::string sql = "SELECT EXISTS (SELECT 1 FROM " + table + " t JOIN unnest(" + unnest +
                          ") AS u(" + names + ") ON " + match;
        if (rule.action == Action::anonymize) {
            sql += " WHERE " + std::string(columns.at(*pg.mark).type == "boolean"
                                               ? "t." + tx.quote_name(*pg.mark) + " IS NOT TRUE"
                                               : "t." + tx.quote_name(*pg.mark) + " IS NULL");
        }
        sql += ")";
        return exec(tx, sql, p)[0][0].as<bool>() ? Presence::present : Presence::absent;
    } catch (const pqxx::broken_connection& e) {
        unavailable(e);
    }
}

std::unique_ptr<Engine> make_postgres_engine(const Datastore& store, const Config& config) {
    return std::make_unique<PostgresEngine>(store, config.daemon.timezone,
                                            config.daemon.max_clock_skew);
}

} // namespace retentiond
