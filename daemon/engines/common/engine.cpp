#include "retentiond/engine.hpp"

#include <nlohmann/json.hpp>

namespace retentiond {

std::string canonical_key(const std::vector<std::string>& values) {
    if (values.size() == 1) {
        return values.front();
    }
    return nlohmann::json(values).dump();
}

} // namespace retentiond
