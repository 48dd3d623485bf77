// The SQL of a run: see pg_statements.hpp.
#include "pg_statements.hpp"

#include "retentiond/duration.hpp"
#include "retentiond/timeutil.hpp"

#include <date/tz.h>

#include <algorithm>
#include <chrono>

namespace retentiond::pg {

using pg_sql::array_literal;
using pg_sql::exec;

std::string not_held_sql(const Plan& plan, pqxx::transaction_base& tx, Params& p) {
    const auto& hold = spec_of<PostgresRule>(*plan.rule).hold;
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
// clock <= now - retain (2025-01-31 + 1 month = 02-28, but 02-28 - 1 month = 01-28), and it is
// not even monotonic: across a change of the UTC offset (DST ending, and DST starting too, since a
// local time in the skipped hour is read with the offset before the change) a later clock can
// give an earlier clock + retain, by at most that change; and where adding months clamps the day
// (07-29, 07-30 and 07-31 + 7 months are all 02-28, each keeping its time of day) by less than a
// day. The run measures both near the cutoff (due_step_back) and finds, once, two bounds around the
// cutoff: every clock up to due_lo is due, no clock after due_hi is, and only between them (a band
// of about twice the step; one minute in UTC) is the costly per-row test evaluated. They are read
// off a one-minute grid of candidate clocks around now - retain, each tested exactly by the server:
// a grid point lo with lo + retain <= now - step proves every clock at or before it due, one hi
// with hi + retain > now + step proves every later one not due.
namespace {

using Seconds = std::chrono::seconds;

// The largest change of `zone`'s UTC offset, either way, between `from` and `to` (0 without one).
Seconds largest_offset_change(const date::time_zone* zone, TimePoint from, TimePoint to) {
    const auto end = std::chrono::floor<Seconds>(to);
    auto info = zone->get_info(std::chrono::floor<Seconds>(from));
    Seconds worst{0};
    while (info.end < end) {
        const auto next = zone->get_info(info.end);
        worst = std::max(worst, std::chrono::abs(std::chrono::duration_cast<Seconds>(info.offset -
                                                                                     next.offset)));
        info = next;
    }
    return worst;
}

// Whether adding `months` clamps the day of some local date within a week of `around`.
bool clamps_near(const date::time_zone* zone, TimePoint around, int months) {
    if (months == 0) {
        return false;
    }
    const auto day = date::floor<date::days>(zone->to_local(around));
    for (int i = -7; i <= 7; ++i) {
        const date::year_month_day ymd{day + date::days{i}};
        const auto target = ymd.year() / ymd.month() + date::months{months};
        if (ymd.day() > date::year_month_day_last{target / date::last}.day()) {
            return true;
        }
    }
    return false;
}

} // namespace

std::string due_step_back(const std::string& tz, const Duration& retain, TimePoint now) {
    const date::time_zone* zone = nullptr;
    try {
        zone = find_zone(tz);
    } catch (const std::exception&) {
        return "50 hours"; // a zone the host does not know: any step ever made, and a clamp
    }
    const auto week = std::chrono::hours(24 * 7);
    const auto cutoff = subtract(now, retain, zone);
    auto step = largest_offset_change(zone, cutoff - week, now + week);
    if (clamps_near(zone, cutoff, retain.months)) {
        step += std::chrono::hours(24);
    }
    return std::to_string(step.count()) + " seconds";
}

void read_due_bounds(pqxx::transaction_base& tx, Plan& plan, TimePoint now) {
    const Rule& rule = *plan.rule;
    Params p;
    const auto retain = p.add(rule.retain.to_pg_interval()) + "::interval";
    const auto step = p.add(due_step_back(plan.tz, rule.retain, now)) + "::interval";
    const auto cutoff = "(now() - " + retain + ")";
    const auto row =
        exec(tx,
             "SELECT min(g) FILTER (WHERE g + " + retain + " > now() + " + step +
                 ")::text, max(g) FILTER (WHERE g + " + retain + " <= now() - " + step +
                 ")::text FROM generate_series(" + cutoff + " - interval '4 days', " + cutoff +
                 " + interval '4 days', interval '1 minute') AS g",
             p)[0];
    // No grid point proven not due: no upper bound but the exact test.
    plan.due_hi_text = row[0].is_null() ? "infinity" : row[0].c_str();
    plan.due_lo_text = row[1].is_null() ? "" : row[1].c_str();
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

std::string subject_value_sql(const SubjectFilter& subject) {
    const std::string trimmed = "btrim(" + subject.column + "::text, E' \\t\\r\\n')";
    return subject.email ? "translate(" + trimmed +
                               ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
                         : trimmed;
}

std::string subject_sql(const Plan& plan, Params& p) {
    return subject_value_sql(*plan.subject) + " = ANY(" +
           p.add(array_literal(plan.subject->values)) + "::text[])";
}

std::string due_sql(const Plan& plan, pqxx::transaction_base& tx, Params& p) {
    if (plan.subject) {
        // An erasure request: the request is the reason, the clock is not asked; holds are.
        return subject_sql(plan, p) + " AND " + not_held_sql(plan, tx, p) + " AND " +
               unmarked_sql(plan);
    }
    std::string s =
        clock_due_sql(plan, p) + " AND " + not_held_sql(plan, tx, p) + " AND " + unmarked_sql(plan);
    if (plan.rule->action == Action::anonymize && !plan.mark && !plan.own_xids.empty()) {
        s += " AND NOT (xmin = ANY(" + p.add(array_literal(plan.own_xids)) + "::xid[]))";
    }
    if (spec_of<PostgresRule>(*plan.rule).notice) {
        // Notice before deletion: only records noticed for this due date, `before` ago.
        s += " AND " + pg_notice::gate_sql(*plan.rule, notice_target(plan, tx), plan.notice_table,
                                           [&](std::string v) { return p.add(std::move(v)); });
    }
    return s;
}

std::string keys_text_sql(const Plan& plan, const std::string& alias) {
    std::string s;
    for (const auto& k : plan.keys) {
        s += (s.empty() ? "" : ", ") + (alias.empty() ? "" : alias + ".") + k + "::text";
    }
    return s;
}

namespace {

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

} // namespace

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
std::string ms(std::chrono::milliseconds d) {
    return std::to_string(d.count()) + "ms";
}

void set_local(pqxx::transaction_base& tx, const Plan& plan) {
    const auto& pg = spec_of<PostgresRule>(*plan.rule);
    Params p;
    exec(tx,
         "SELECT set_config('lock_timeout', " + p.add(ms(pg.lock_timeout)) +
             ", true), set_config('statement_timeout', " + p.add(ms(pg.statement_timeout)) +
             ", true), set_config('TimeZone', " + p.add(plan.tz) + ", true)",
         p);
}

void apply_batch_dependents(pqxx::transaction_base& tx, const Plan& plan,
                            const std::string& tid_array,
                            std::map<std::string, std::int64_t>& counters) {
    Params dp;
    const std::string parent_set =
        "SELECT %REF% FROM " + plan.table + " WHERE ctid = ANY(" + dp.add(tid_array) + "::tid[])";
    for (const auto& d : plan.dependents) {
        std::string set = parent_set;
        set.replace(set.find("%REF%"), 5, d.reference);
        apply_dependents(tx, std::vector<DepPlan>{d}, set, dp, counters);
    }
}

// --- statements ------------------------------------------------------------------------------

namespace {

std::string page_tid(std::int64_t page) {
    return "(" + std::to_string(page) + ",0)";
}

// ", <mark> = true|now()" when the rule marks anonymized rows.
std::string mark_set(const Plan& plan) {
    if (!plan.mark) {
        return "";
    }
    return ", " + *plan.mark + " = " + (plan.mark_is_bool ? "true" : "now()");
}

} // namespace

std::string page_range_sql(Params& m, std::int64_t start, std::int64_t end) {
    return "ctid >= " + m.add(page_tid(start)) + "::tid AND ctid < " + m.add(page_tid(end)) +
           "::tid";
}

std::string client_columns(const Plan& plan, pqxx::transaction_base& tx) {
    std::string extra_cols;
    for (const auto& fs : plan.rule->anonymize) {
        if (needs_client(fs.strategy)) {
            extra_cols += ", " + tx.quote_name(fs.field) + "::text";
        }
    }
    return extra_cols;
}

std::string select_batch_sql(const Plan& plan, pqxx::transaction_base& tx, Params& s,
                             std::int64_t start, std::int64_t end, const std::string& after_tid,
                             std::int64_t limit, bool lock) {
    const std::string extra_cols = client_columns(plan, tx);
    const std::string lower = after_tid.empty() ? "ctid >= " + s.add(page_tid(start)) + "::tid"
                                                : "ctid > " + s.add(after_tid) + "::tid";
    return "SELECT ctid::text AS retentiond_tid" + extra_cols + " FROM " + plan.table + " WHERE " +
           lower + " AND ctid < " + s.add(page_tid(end)) + "::tid AND " + due_sql(plan, tx, s) +
           " ORDER BY ctid LIMIT " + s.add(std::to_string(limit)) + "::bigint" +
           (lock ? " FOR UPDATE" : "");
}

std::string select_index_batch_sql(const Plan& plan, pqxx::transaction_base& tx, Params& s,
                                   const IndexKeyset& after, std::int64_t limit, bool lock) {
    std::string keyset;
    if (after.clock) {
        const std::string type =
            plan.columns.at(spec_of<PostgresRule>(*plan.rule).clock.front()).type;
        const auto c = s.add(*after.clock) + "::" + type;
        keyset = plan.clock + " >= " + c + " AND (" + plan.clock + " > " + c + " OR ctid > " +
                 s.add(after.tid) + "::tid) AND ";
    }
    // The clock's text is named apart: ORDER BY a name that is also an output column's sorts by
    // that output (the text, which is not the clock's order across a change of UTC offset).
    return "SELECT ctid::text AS retentiond_tid" + client_columns(plan, tx) + ", " + plan.clock +
           "::text AS retentiond_clock FROM " + plan.table + " WHERE " + keyset +
           due_sql(plan, tx, s) + " ORDER BY " + plan.clock + ", ctid LIMIT " +
           s.add(std::to_string(limit)) + "::bigint" + (lock ? " FOR UPDATE" : "");
}

namespace {

std::string clock_type(const Plan& plan) {
    return plan.columns.at(spec_of<PostgresRule>(*plan.rule).clock.front()).type;
}

} // namespace

std::string index_boundary_sql(const Plan& plan, Params& s, const IndexKeyset& after,
                               std::int64_t limit) {
    const std::string from =
        after.clock ? plan.clock + " >= " + s.add(*after.clock) + "::" + clock_type(plan) + " AND "
                    : std::string();
    return "SELECT " + plan.clock + "::text AS retentiond_clock FROM " + plan.table + " WHERE " +
           from + plan.clock + " <= " + s.add(plan.due_hi_text) + "::timestamptz ORDER BY " +
           plan.clock + " OFFSET " + s.add(std::to_string(limit - 1)) + "::bigint LIMIT 1";
}

std::string clock_range_sql(const Plan& plan, Params& s, const IndexKeyset& after,
                            const std::optional<std::string>& below) {
    const std::string type = clock_type(plan);
    std::string sql = "TRUE";
    if (after.clock) {
        const auto c = s.add(*after.clock) + "::" + type;
        sql = plan.clock + " >= " + c + " AND (" + plan.clock + " > " + c + " OR ctid > " +
              s.add(after.tid) + "::tid)";
    }
    if (below) {
        sql += " AND " + plan.clock + " < " + s.add(*below) + "::" + type;
    }
    return sql;
}

ReadThenDelete read_then_delete_sql(const Plan& plan, pqxx::transaction_base& tx, Params& m,
                                    const std::string& rows_sql) {
    const std::string where = rows_sql + " AND " + due_sql(plan, tx, m);
    return {"SELECT " + keys_text_sql(plan) + " FROM " + plan.table + " WHERE " + where,
            "DELETE FROM " + plan.table + " WHERE " + where};
}

std::string keyed_delete_sql(const Plan& plan, pqxx::transaction_base& tx, Params& m,
                             const std::string& rows_sql) {
    return "DELETE FROM " + plan.table + " WHERE " + rows_sql + " AND " + due_sql(plan, tx, m) +
           " RETURNING " + keys_text_sql(plan);
}

std::string anonymize_update_sql(const Plan& plan, pqxx::transaction_base& tx, Params& m,
                                 const std::string& rows_sql) {
    const std::string set = set_list(plan.rule->anonymize, plan.columns, tx, m) + mark_set(plan);
    return "UPDATE " + plan.table + " SET " + set + " WHERE " + rows_sql + " AND " +
           due_sql(plan, tx, m) + " RETURNING " + keys_text_sql(plan);
}

std::string
client_anonymize_sql(const Plan& plan, pqxx::transaction_base& tx, Params& m,
                     const std::string& tid_array,
                     const std::vector<std::vector<std::optional<std::string>>>& values) {
    const std::string set = set_list(plan.rule->anonymize, plan.columns, tx, m) + mark_set(plan);
    std::string unnest = "unnest(" + m.add(tid_array) + "::tid[]";
    std::string names = "retentiond_tid";
    for (std::size_t i = 0; i < values.size(); ++i) {
        unnest += ", " + m.add(array_literal(values[i])) + "::text[]";
        names += ", retentiond_f" + std::to_string(i + 1);
    }
    return "UPDATE " + plan.table + " AS t SET " + set + " FROM " + unnest + ") AS v(" + names +
           ") WHERE t.ctid = v.retentiond_tid AND " + due_sql(plan, tx, m) + " RETURNING " +
           keys_text_sql(plan, "t");
}

} // namespace retentiond::pg
