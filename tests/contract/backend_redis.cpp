#include "contract/contract.hpp"

#include <stdexcept>

namespace retentiond::test {

std::unique_ptr<ContractBackend> make_redis_backend() {
    throw std::runtime_error("no redis contract backend yet");
}

} // namespace retentiond::test
