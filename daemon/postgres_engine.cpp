// Placeholder until the postgres engine lands: fails loudly, never pretends to succeed.
#include "retentiond/engines.hpp"

#include <stdexcept>

namespace retentiond {

std::unique_ptr<Engine> make_postgres_engine(const Datastore&, const Config&) {
    throw std::runtime_error("the postgres engine is not built yet");
}

} // namespace retentiond
