#include "contract/contract.hpp"

#include <stdexcept>

namespace retentiond::test {

std::unique_ptr<ContractBackend> make_files_backend() {
    throw std::runtime_error("no files contract backend yet");
}

} // namespace retentiond::test
