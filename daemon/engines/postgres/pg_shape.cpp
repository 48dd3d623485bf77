#include "pg_shape.hpp"

#include "pg_sql.hpp"

namespace retentiond::pg_shape {
namespace {

using pg_sql::Params;

// Tables with at least this many (estimated) rows get the "no index on the clock" advisory.
constexpr std::int64_t k_large_table_rows = 100000;

// Every relation of the tree under $1 (itself, partitions, inheritance children, at any depth):
// name, relkind, estimated rows, whether it has children of its own.
constexpr const char* k_tree_sql = R"(
WITH RECURSIVE tree(relid) AS (
    SELECT $1::regclass::oid
    UNION ALL
    SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid
)
SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text, greatest(c.reltuples, 0)::bigint,
       EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid)
FROM tree JOIN pg_class c ON c.oid = tree.relid JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY 1)";

// Whether row-level security filters $1's rows for this role, and the role.
constexpr const char* k_rls_sql = R"(
SELECT c.relkind::text,
       c.relrowsecurity AND NOT (r.rolsuper OR r.rolbypassrls)
       AND (pg_get_userbyid(c.relowner) <> current_user OR c.relforcerowsecurity),
       current_user::text
FROM pg_class c, pg_roles r
WHERE c.oid = $1::regclass AND r.rolname = current_user)";

// BEFORE DELETE row triggers (tgtype bits: 1 row, 2 before, 8 delete) and DO INSTEAD rules on
// DELETE (ev_type '4') of the relations in $1.
constexpr const char* k_cancel_sql = R"(
SELECT 'trigger ' || quote_ident(t.tgname) || ' (BEFORE DELETE) on ' || t.tgrelid::regclass::text
FROM pg_trigger t
WHERE t.tgrelid = ANY ($1::regclass[]) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
  AND t.tgtype & 11 = 11
UNION ALL
SELECT 'rule ' || quote_ident(r.rulename) || ' (DO INSTEAD on DELETE) on ' || r.ev_class::regclass::text
FROM pg_rewrite r
WHERE r.ev_class = ANY ($1::regclass[]) AND r.ev_type = '4' AND r.is_instead
ORDER BY 1)";

// Foreign keys into the relations of $1 whose referencing columns lead no index.
constexpr const char* k_fk_sql = R"(
SELECT con.conname::text, con.conrelid::regclass::text,
       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
        FROM unnest(con.conkey) WITH ORDINALITY k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum)
FROM pg_constraint con
WHERE con.contype = 'f' AND con.confrelid = ANY ($1::regclass[]) AND con.conparentid = 0
  AND NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = con.conrelid
      AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] @> con.conkey
      AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] <@ con.conkey)
ORDER BY 2, 1)";

// Whether an index of $1 leads with the column $2 (any method: btree, BRIN...).
constexpr const char* k_clock_index_sql = R"(
SELECT EXISTS (
    SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = $2
    WHERE i.indrelid = $1::regclass AND i.indkey[0] = a.attnum))";

// Every enabled user trigger and every rewrite rule (not a view's _RETURN) of the relations in $1.
constexpr const char* k_triggers_rules_sql = R"(
SELECT 'trigger ' || quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass::text
FROM pg_trigger t
WHERE t.tgrelid = ANY ($1::regclass[]) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
UNION ALL
SELECT 'rule ' || quote_ident(r.rulename) || ' on ' || r.ev_class::regclass::text
FROM pg_rewrite r
WHERE r.ev_class = ANY ($1::regclass[]) AND r.rulename <> '_RETURN'
ORDER BY 1)";

// A valid, non-partial btree index of $1 whose first column is $2.
constexpr const char* k_clock_btree_sql = R"(
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = $2
WHERE i.indrelid = $1::regclass AND i.indkey[0] = a.attnum AND i.indisvalid AND i.indisready
  AND i.indpred IS NULL AND am.amname = 'btree'
ORDER BY i.indnatts, c.relname LIMIT 1)";

std::string array_of(const std::vector<std::string>& tables) {
    return pg_sql::array_literal(tables);
}

void add_cancellers(pqxx::transaction_base& tx, const std::vector<std::string>& tables,
                    std::vector<Advisory>& out) {
    for (const auto& row : pg_sql::exec(tx, k_cancel_sql, Params({array_of(tables)}))) {
        out.push_back({false, std::string(row[0].c_str()) +
                                  " can cancel deletes: the run then fails its verification "
                                  "with the rows that remain"});
    }
}

void add_unindexed_foreign_keys(pqxx::transaction_base& tx, const std::vector<std::string>& tables,
                                std::vector<Advisory>& out) {
    for (const auto& row : pg_sql::exec(tx, k_fk_sql, Params({array_of(tables)}))) {
        const std::string table = row[1].c_str();
        const std::string columns = row[2].c_str();
        out.push_back({false, "foreign key " + std::string(row[0].c_str()) + " on " + table + " (" +
                                  columns + ") has no index: PostgreSQL scans " + table +
                                  " once per deleted row; fix: CREATE INDEX ON " + table + " (" +
                                  columns + ");"});
    }
}

void add_clock_index(pqxx::transaction_base& tx, const std::string& table, const Target& target,
                     const std::vector<std::string>& clock, std::vector<Advisory>& out) {
    if (clock.empty() || target.estimated_rows < k_large_table_rows) {
        return;
    }
    const auto row = pg_sql::exec(tx, k_clock_index_sql, Params({table, clock.front()}));
    if (!row.empty() && row[0][0].as<bool>()) {
        return;
    }
    out.push_back({false, table + " has about " + std::to_string(target.estimated_rows) +
                              " rows and no index on its clock " + clock.front() +
                              ": every run reads the whole table; fix: CREATE INDEX ON " + table +
                              " (" + tx.quote_name(clock.front()) + ");"});
}

} // namespace

Target read_target(pqxx::transaction_base& tx, const std::string& table) {
    Target t;
    for (const auto& row : pg_sql::exec(tx, k_tree_sql, Params({table}))) {
        const std::string name = row[0].c_str();
        const char kind = row[1].c_str()[0];
        const bool has_children = row[3].as<bool>();
        t.estimated_rows += row[2].as<std::int64_t>();
        if (kind == 'f') {
            t.foreign.push_back(name);
        } else if (kind == 'r' && !has_children) {
            t.heaps.push_back(name);
        } else if (kind == 'r') {
            t.parents_with_heap.push_back(name);
        }
    }
    const auto rls = pg_sql::exec(tx, k_rls_sql, Params({table}));
    if (!rls.empty()) {
        t.relkind = rls[0][0].c_str()[0];
        t.rls_hides_rows = rls[0][1].as<bool>();
        t.role = rls[0][2].c_str();
    }
    return t;
}

std::vector<std::string> triggers_and_rules(pqxx::transaction_base& tx,
                                            const std::vector<std::string>& tables) {
    std::vector<std::string> out;
    for (const auto& row : pg_sql::exec(tx, k_triggers_rules_sql, Params({array_of(tables)}))) {
        out.emplace_back(row[0].c_str());
    }
    return out;
}

std::string clock_btree_index(pqxx::transaction_base& tx, const std::string& table,
                              const std::string& clock) {
    const auto r = pg_sql::exec(tx, k_clock_btree_sql, Params({table, clock}));
    return r.empty() ? "" : std::string(r[0][0].c_str());
}

std::string refusal(const Target& target, const std::string& table) {
    switch (target.relkind) {
    case 'v':
        return table + " is a view: retentiond deletes from tables; name the table behind it";
    case 'm':
        return table + " is a materialized view: name the table it is built from";
    case 'f':
        return table + " is a foreign table: run retentiond against the server that holds it";
    default:
        break;
    }
    if (!target.foreign.empty()) {
        return table + " has a foreign-table partition (" + target.foreign.front() +
               "): run retentiond against the server that holds it";
    }
    return "";
}

std::vector<Advisory> advisories(pqxx::transaction_base& tx, const std::string& table,
                                 const std::vector<std::string>& dependents,
                                 const std::vector<std::string>& clock) {
    std::vector<Advisory> out;
    const Target target = read_target(tx, table);
    if (const auto why = refusal(target, table); !why.empty()) {
        out.push_back({true, why});
        return out;
    }
    if (target.rls_hides_rows) {
        out.push_back({true, "row-level security on " + table + " hides rows from role " +
                                 target.role + ": a run could not see every due row; run it " +
                                 "with a role that bypasses row-level security (BYPASSRLS) or " +
                                 "owns the table without FORCE ROW LEVEL SECURITY"});
    }
    std::vector<std::string> tables{table};
    tables.insert(tables.end(), dependents.begin(), dependents.end());
    add_cancellers(tx, tables, out);
    add_unindexed_foreign_keys(tx, tables, out);
    add_clock_index(tx, table, target, clock, out);
    return out;
}

} // namespace retentiond::pg_shape
