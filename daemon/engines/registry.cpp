// The one list of datastore kinds. A new kind is a folder under engines/ and a line here.
#include "engines/files/files_kind.hpp"
#include "engines/postgres/postgres_kind.hpp"
#include "engines/redis/redis_kind.hpp"

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

} // namespace retentiond
