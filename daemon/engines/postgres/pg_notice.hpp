#pragma once
// Notice before deletion (docs/policy-format-extensions.md, `notice:`), for kind postgres.
// State lives in the datastore itself (table retentiond.notice), so several daemons share it and
// a restored backup carries it. Internal to the postgres engine.

#include "postgres_kind.hpp"

#include <pqxx/pqxx>

#include <cstdint>
#include <string>
#include <vector>

namespace retentiond::pg_notice {

// What the engine resolved about the rule's table, as SQL fragments (identifiers already quoted).
struct Target {
    std::string table;               // quoted, possibly schema-qualified
    std::string clock;               // SQL expression of the record's clock
    std::vector<std::string> keys;   // quoted key columns
    std::string eligible;            // not held (and not yet anonymized): $1..$n of params
    std::vector<std::string> params; // values of eligible's parameters
    std::string tz;                  // session TimeZone for calendar arithmetic
};

// The record's key as stored in the state table: the key text, or for a composite key a JSON
// array of the texts (the same text as canonical_key()).
std::string state_key_sql(const std::vector<std::string>& quoted_keys);

bool state_table_exists(pqxx::transaction_base& tx);

// AND-able condition: the record holds a notice for its current due date, sent at least
// `before` ago. `add` registers a parameter value and returns its "$n".
template <typename AddParam>
std::string gate_sql(const Rule& rule, const Target& t, bool table_exists, AddParam&& add) {
    if (!table_exists) {
        return "FALSE"; // nobody was ever noticed: nothing may be deleted yet
    }
    const auto& notice = *spec_of<PostgresRule>(rule).notice;
    return "EXISTS (SELECT 1 FROM retentiond.notice rn WHERE rn.retentiond_rule = " +
           add(rule.name) + " AND rn.retentiond_key = " + state_key_sql(t.keys) +
           " AND rn.retentiond_due_at = (" + t.clock + " + " + add(rule.retain.to_pg_interval()) +
           "::interval) AND rn.retentiond_noticed_at <= now() - " +
           add(notice.before.to_pg_interval()) + "::interval)";
}

struct Outcome {
    std::int64_t sent = 0;
    bool failed = false;
    std::string message; // never a key or a field value
};

// Notices every eligible record that entered its window [due - before, due) (or is already due)
// and holds no notice for its current due date, batch by batch: the notifier command gets one
// JSON line per record on stdin; only when it exits 0 within its timeout are the records marked
// noticed (and journaled, action "notice"). Stale state rows (record gone, or clock moved so the
// due date changed) are dropped first.
Outcome send_notices(pqxx::connection& conn, const Rule& rule, const Target& t, RunContext& ctx,
                     const std::string& datastore);

// Dry-run figures: records to notice now, and noticed records still waiting out `before`.
struct Counts {
    std::int64_t to_send = 0;
    std::int64_t waiting = 0;
};
Counts count(pqxx::transaction_base& tx, const Rule& rule, const Target& t);

// Runs `command` through /bin/sh with `input` on stdin. True when it exits 0 within timeout;
// otherwise why in `error`. The child is killed (its whole process group) on timeout.
bool run_notifier(const std::string& command, const std::string& input,
                  std::chrono::milliseconds timeout, std::string& error);

} // namespace retentiond::pg_notice
