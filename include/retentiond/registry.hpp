#pragma once

// The registry (engines/registry.cpp): the one list of datastore kinds, and what needs every kind
// at once: a kind found by name, a configuration loaded with every kind, a datastore's engine.
// Above the engines: included by run/, service/ and cli/, never by the core or an engine.

#include "retentiond/config.hpp"
#include "retentiond/engine.hpp"
#include "retentiond/kind.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

// Every kind, in the order messages list them ("postgres, files or redis").
const std::vector<const Kind*>& kinds();
// nullptr when no kind has that name.
const Kind* find_kind(std::string_view name);

// load_config (config.hpp) with every kind of the registry.
Config load_config(const std::string& path, const EnvLookup& env = process_env());

// The engine of a datastore, made by its kind.
std::unique_ptr<Engine> make_engine(const Datastore& store, const Config& config);

} // namespace retentiond
