#pragma once

#include "redis_spec.hpp"
#include "retentiond/coverage.hpp"
#include "retentiond/engine.hpp"
#include "retentiond/kind.hpp"

#include <cstddef>

namespace retentiond {

// The kind object the registry lists (engines/registry.cpp).
const Kind& redis_kind();

// redis_config.cpp: the kind's datastore section and rule keys.
std::shared_ptr<const DatastoreSpec> read_redis_datastore(ConfigReader& in,
                                                          const ConfigMap& section);
std::shared_ptr<const RuleSpec> read_redis_rule(ConfigReader& in, const ConfigMap& section,
                                                const Rule& rule);

std::unique_ptr<Engine> make_redis_engine(const Datastore& store, const Config& config);

// redis_coverage.cpp: Kind::scan_coverage.
CoverageScan scan_redis_coverage(const Datastore& store, const std::vector<const Rule*>& rules);

// Tests: the bytes of keys a redis rule with limits keeps between its counting pass and the purge
// (default 16 MiB; past it the purge scans again). Not thread-safe: set it before any run.
void set_redis_remember_budget(std::size_t bytes);

} // namespace retentiond
