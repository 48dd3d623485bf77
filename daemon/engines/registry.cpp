// The one list of datastore kinds. A new kind is a folder under engines/ and a line here.
#include "retentiond/registry.hpp"
#include "engines/files/files_kind.hpp"
#include "engines/postgres/postgres_kind.hpp"
#include "engines/redis/redis_kind.hpp"

#include <stdexcept>

namespace retentiond {

const std::vector<const Kind*>& kinds() {
    // In the order messages list them ("postgres, files or redis").
    static const std::vector<const Kind*> list = {
        &postgres_kind(),
        &files_kind(),
        &redis_kind(),
    };
    return list;
}

const Kind* find_kind(std::string_view name) {
    for (const Kind* kind : kinds()) {
        if (kind->name() == name) {
            return kind;
        }
    }
    return nullptr;
}

std::unique_ptr<Engine> make_engine(const Datastore& store, const Config& config) {
    if (store.kind == nullptr) {
        throw std::logic_error("datastore \"" + store.name + "\" has no kind");
    }
    return store.kind->make_engine(store, config);
}

Config load_config(const std::string& path, const EnvLookup& env) {
    return load_config(path, kinds(), env);
}

} // namespace retentiond
