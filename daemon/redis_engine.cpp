// Placeholder until the redis engine lands: fails loudly, never pretends to succeed.
#include "retentiond/engines.hpp"

#include <stdexcept>

namespace retentiond {

std::unique_ptr<Engine> make_redis_engine(const Datastore&, const Config&) {
    throw std::runtime_error("the redis engine is not built yet");
}

} // namespace retentiond
