#pragma once

// Kind postgres: what its datastore sections and rules hold (read by postgres_config.cpp). Private
// to engines/postgres/ and its tests; core code never needs it.

#include "retentiond/config.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace retentiond {

struct PostgresStore : DatastoreSpec {
    Secret dsn;                           // libpq connection string or URI
    bool dsn_has_inline_password = false; // warned about at load, never logged
    PostgresStore() = default;
    explicit PostgresStore(Secret d, bool inline_password = false)
        : dsn(std::move(d)), dsn_has_inline_password(inline_password) {}
};

struct PgHold {
    enum class Kind { equals, after_now };
    std::string column;
    Kind kind = Kind::equals;
    std::string equals; // passed as a $n parameter, cast by PostgreSQL to the column's type
};

struct Dependent {
    enum class Action { remove, set_null, anonymize };
    std::string table;  // possibly schema-qualified
    std::string column; // the referencing column
    Action action = Action::remove;
    std::vector<FieldStrategy> anonymize;
    std::vector<Dependent> dependents; // rows referencing this dependent's rows
    SourcePos pos;
};

// Extension (docs/policy-format-extensions.md): warn the record's holder before deleting it.
struct Notice {
    Duration before;
    std::vector<std::string> fields;
    std::string command;
    std::chrono::milliseconds timeout{60000};
};

struct PostgresRule : RuleSpec {
    std::string table;
    std::vector<std::string> key;   // one column, or several for a composite key
    std::vector<std::string> clock; // COALESCE(clock[0], clock[1], ...)
    std::optional<PgHold> hold;
    std::vector<Dependent> dependents;
    std::optional<std::string> mark; // anonymize: boolean or timestamp column
    std::chrono::milliseconds lock_timeout{2000};
    std::chrono::milliseconds statement_timeout{60000};
    std::chrono::milliseconds sleep_between_batches{0};
    int parallel = 1; // concurrent batch streams (action: delete without dependents)
    // Extension: a leaf partition whose every row is due is dropped whole (drop), detached and
    // kept (detach), or purged row by row like any table (rows).
    enum class Partitions { drop, detach, rows };
    Partitions partitions = Partitions::drop;
    bool partition_digests =
        false; // journal each key of a whole partition (partition_digests: keys)
    // A whole partition's row count in its audit line: the planner's estimate (estimate: no row
    // read, the drop costs the same whatever the rows) or a count(*) of it (exact).
    bool partition_rows_exact = false;
    std::optional<Notice> notice;
};

} // namespace retentiond
