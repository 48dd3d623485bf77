#include "contract/contract.hpp"

#include <stdexcept>

namespace retentiond::test {

std::unique_ptr<ContractBackend> make_postgres_backend() {
    throw std::runtime_error("no postgres contract backend yet");
}

} // namespace retentiond::test
