#pragma once
// What a failed batch means: retry it (a lock or statement timeout, a deadlock, a serialization
// failure), fail the rule (the server refused the SQL), or give up on the store (the connection
// broke, or a commit's outcome is unknown). Pure: testable without a server. Internal to the
// engine.

#include <exception>
#include <string>
#include <string_view>

namespace retentiond::pg {

enum class ErrorClass { retry, fail, unavailable };

// By SQLSTATE: 55P03 lock_not_available, 57014 query_canceled (statement_timeout), 40P01
// deadlock_detected, 40001 serialization_failure are retried; anything else fails.
ErrorClass classify_sqlstate(std::string_view sqlstate);

struct SqlFailure {
    ErrorClass kind = ErrorClass::fail;
    std::string sqlstate; // empty when the error carried none
};

// By exception: pqxx::broken_connection and pqxx::in_doubt_error are unavailable; a
// pqxx::sql_error by its SQLSTATE; a pqxx::transaction_rollback without one (libpqxx 6.4) by its
// type (40001, 40P01, else 40000), always retried; anything else fails.
SqlFailure classify(const std::exception& e);

} // namespace retentiond::pg
