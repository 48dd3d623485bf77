// Placeholder until the files engine lands: fails loudly, never pretends to succeed.
#include "retentiond/engines.hpp"

#include <stdexcept>

namespace retentiond {

std::unique_ptr<Engine> make_files_engine(const Datastore&, const Config&) {
    throw std::runtime_error("the files engine is not built yet");
}

} // namespace retentiond
