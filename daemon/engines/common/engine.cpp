#include "retentiond/engine.hpp"

#include <nlohmann/json.hpp>

namespace retentiond {

std::string canonical_key(const std::vector<std::string>& values) {
    if (values.size() == 1) {
        return values.front();
    }
    return nlohmann::json(values).dump();
}

RunResult Engine::erase_subject(const Rule& rule, const SubjectQuery& query, RunContext& ctx,
                                bool dry) {
    (void)query;
    (void)ctx;
    (void)dry;
    RunResult r;
    r.status = RunResult::Status::failed;
    r.message = "rule \"" + rule.name + "\": this datastore kind takes no erasure requests";
    return r;
}

} // namespace retentiond
