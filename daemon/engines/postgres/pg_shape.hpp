#pragma once
// What the target table is made of, read from the catalog: the shapes that defeat or slow a purge
// (partitions and inheritance children the page walk must visit one by one, views and foreign
// tables, triggers and rules that can cancel a delete, row-level security that hides rows from the
// role, foreign keys without an index, a large table without an index on its clock).

#include <pqxx/pqxx>

#include <cstdint>
#include <string>
#include <vector>

namespace retentiond::pg_shape {

struct Target {
    char relkind = 'r';               // r table, p partitioned, v view, m matview, f foreign
    std::vector<std::string> heaps;   // quoted tables whose pages hold the rows: the target itself
                                      // for a plain table, else every leaf partition / inheritance
                                      // child without children of its own
    std::vector<std::string> foreign; // partitions or children that are foreign tables
    std::vector<std::string> parents_with_heap; // inheritance parents (relkind r with children):
                                                // their own rows are not walked by page range
    bool rls_hides_rows = false;                // row-level security applies to this role
    std::string role;                           // current_user, for messages
    std::int64_t estimated_rows = 0;            // reltuples of the heaps, for advisories
};

// Reads the shape of `table` (a name as written in the rule, possibly schema-qualified).
Target read_target(pqxx::transaction_base& tx, const std::string& table);

// Refusals: a target whose rows the engine cannot delete by page ranges or at all (a view, a
// foreign table, a materialized view). Empty when the target is a table (plain, partitioned or
// with inheritance children).
std::string refusal(const Target& target, const std::string& table);

// Triggers (any timing or event, enabled, not internal) and rewrite rules on the relations of
// `tables` (quoted names): each could cancel, redirect or redo a delete, so a run on them cannot
// prove from its own batches that no due row remains. Named, for messages.
std::vector<std::string> triggers_and_rules(pqxx::transaction_base& tx,
                                            const std::vector<std::string>& tables);

// The index of `table` a keyset walk can follow: a valid, non-partial btree index whose first
// column is `clock`. Empty when there is none.
std::string clock_btree_index(pqxx::transaction_base& tx, const std::string& table,
                              const std::string& clock);

// One advisory of `check`: a warning does not stop a run, a refusal does.
struct Advisory {
    bool refusal = false;
    std::string message;
};

// The advisories for `table` (the rule's target) and the tables that reference it
// (`dependents`, quoted-or-plain names as in the rule), with `clock` the rule's clock columns.
std::vector<Advisory> advisories(pqxx::transaction_base& tx, const std::string& table,
                                 const std::vector<std::string>& dependents,
                                 const std::vector<std::string>& clock);

} // namespace retentiond::pg_shape
