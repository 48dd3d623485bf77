// The rule resolved against the catalog: see pg_plan.hpp.
#include "pg_plan.hpp"

#include "pg_notice.hpp"
#include "pg_sql.hpp"

#include <functional>

namespace retentiond::pg {

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

namespace {

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

} // namespace

bool needs_client(const Strategy& s) {
    return s.kind == Strategy::Kind::hmac || s.kind == Strategy::Kind::email_domain;
}

// A rule that does not match the database (missing table or column): the run fails, the store is
TimePoint from_micros(std::int64_t micros) {
    return TimePoint(std::chrono::microseconds(micros));
}

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

namespace {

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

void plan_dependents(pqxx::transaction_base& tx, const std::vector<Dependent>& deps,
                     const std::string& parent_quoted, const std::string& parent_key,
                     std::vector<DepPlan>& out) {
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

bool any_client(const std::vector<DepPlan>& deps) {
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
}

} // namespace

Plan make_plan(pqxx::transaction_base& tx, const Rule& rule, const std::string& tz) {
    const auto& pg = spec_of<PostgresRule>(rule);
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
    if (any_client(plan.dependents)) {
        throw PlanError("hmac and email_domain are not supported on dependents");
    }
    return plan;
}

} // namespace retentiond::pg
