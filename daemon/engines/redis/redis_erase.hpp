#pragma once
// Erasure requests on Redis (Engine::erase_subject): SCAN the rule's pattern, read the subject's
// hash field (and the hold) of each key, and UNLINK the subject's keys from a script that
// re-checks both atomically. Private to the redis engine.

#include "redis_connection.hpp"

#include "retentiond/subject.hpp"

namespace retentiond::redis_detail {

RunResult erase_subject_keys(Connection& c, const std::string& store, const Rule& rule,
                             const SubjectQuery& query, RunContext& ctx, bool dry);

} // namespace retentiond::redis_detail
