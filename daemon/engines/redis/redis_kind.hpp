#pragma once

#include "retentiond/engine.hpp"

#include <cstddef>

namespace retentiond {

std::unique_ptr<Engine> make_redis_engine(const Datastore& store, const Config& config);

// Tests: the bytes of keys a redis rule with limits keeps between its counting pass and the purge
// (default 16 MiB; past it the purge scans again). Not thread-safe: set it before any run.
void set_redis_remember_budget(std::size_t bytes);

} // namespace retentiond
