#pragma once

#include "retentiond/engine.hpp"

namespace retentiond {

std::unique_ptr<Engine> make_postgres_engine(const Datastore& store, const Config& config);

} // namespace retentiond
