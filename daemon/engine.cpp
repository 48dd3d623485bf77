#include "retentiond/engine.hpp"
#include "retentiond/engines.hpp"

#include <nlohmann/json.hpp>

namespace retentiond {

std::unique_ptr<Engine> make_engine(const Datastore& store, const Config& config) {
    switch (store.kind) {
    case DatastoreKind::postgres:
        return make_postgres_engine(store, config);
    case DatastoreKind::files:
        return make_files_engine(store, config);
    case DatastoreKind::redis:
        return make_redis_engine(store, config);
    }
    throw std::logic_error("unknown datastore kind");
}

std::string canonical_key(const std::vector<std::string>& values) {
    if (values.size() == 1) {
        return values.front();
    }
    return nlohmann::json(values).dump();
}

} // namespace retentiond
