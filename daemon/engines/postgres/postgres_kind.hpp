#pragma once

#include "postgres_spec.hpp"
#include "retentiond/coverage.hpp"
#include "retentiond/engine.hpp"
#include "retentiond/kind.hpp"

namespace retentiond {

// The kind object the registry lists (engines/registry.cpp).
const Kind& postgres_kind();

// postgres_config.cpp: the kind's datastore section and rule keys.
std::shared_ptr<const DatastoreSpec> read_postgres_datastore(ConfigReader& in,
                                                             const ConfigMap& section);
std::shared_ptr<const RuleSpec> read_postgres_rule(ConfigReader& in, const ConfigMap& section,
                                                   const Rule& rule);

std::unique_ptr<Engine> make_postgres_engine(const Datastore& store, const Config& config);

// pg_coverage.cpp: Kind::scan_coverage.
CoverageScan scan_postgres_coverage(const Datastore& store, const std::vector<const Rule*>& rules);

// pg_identity.cpp: Kind::store_identity.
std::string postgres_store_identity(const Datastore& store, const std::vector<const Rule*>& rules);

} // namespace retentiond
