#pragma once

#include "retentiond/engine.hpp"

namespace retentiond {

// One factory per kind; make_engine() dispatches on Datastore::kind.
std::unique_ptr<Engine> make_postgres_engine(const Datastore& store, const Config& config);
std::unique_ptr<Engine> make_files_engine(const Datastore& store, const Config& config);
std::unique_ptr<Engine> make_redis_engine(const Datastore& store, const Config& config);

} // namespace retentiond
