#pragma once

#include "retentiond/engine.hpp"

#include <cstddef>

namespace retentiond {

// One factory per kind; make_engine() dispatches on Datastore::kind.
std::unique_ptr<Engine> make_postgres_engine(const Datastore& store, const Config& config);
std::unique_ptr<Engine> make_files_engine(const Datastore& store, const Config& config);
std::unique_ptr<Engine> make_redis_engine(const Datastore& store, const Config& config);

// Tests: the bytes of keys a redis rule with limits keeps between its counting pass and the purge
// (default 16 MiB; past it the purge scans again). Not thread-safe: set it before any run.
void set_redis_remember_budget(std::size_t bytes);

} // namespace retentiond
