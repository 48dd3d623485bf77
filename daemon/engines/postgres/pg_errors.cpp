// Classification of a failed batch: see pg_errors.hpp.
#include "pg_errors.hpp"

#include <pqxx/pqxx>

namespace retentiond::pg {

ErrorClass classify_sqlstate(std::string_view sqlstate) {
    const bool retry =
        sqlstate == "55P03" || sqlstate == "57014" || sqlstate == "40P01" || sqlstate == "40001";
    return retry ? ErrorClass::retry : ErrorClass::fail;
}

namespace {

// libpqxx 6.4 throws these without their SQLSTATE.
std::string rollback_state(const std::exception& e) {
    if (dynamic_cast<const pqxx::serialization_failure*>(&e) != nullptr) {
        return "40001";
    }
    if (dynamic_cast<const pqxx::deadlock_detected*>(&e) != nullptr) {
        return "40P01";
    }
    return "40000";
}

} // namespace

SqlFailure classify(const std::exception& e) {
    if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr ||
        dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
        return {ErrorClass::unavailable, ""};
    }
    if (const auto* se = dynamic_cast<const pqxx::sql_error*>(&e)) {
        return {classify_sqlstate(se->sqlstate()), se->sqlstate()};
    }
    if (dynamic_cast<const pqxx::transaction_rollback*>(&e) != nullptr) {
        return {ErrorClass::retry, rollback_state(e)};
    }
    return {ErrorClass::fail, ""};
}

} // namespace retentiond::pg
