#include "retentiond/engine.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace retentiond {

// The JSON array nlohmann's dump() writes, built by hand when every value is printable ASCII
// (then only '"' and '\\' need escaping): a composite key is built for every row a batch or a
// whole partition with digests touches, and a json array costs allocations per value.
std::string canonical_key(const std::vector<std::string>& values) {
    if (values.size() == 1) {
        return values.front();
    }
    std::string out = "[";
    for (const auto& v : values) {
        if (!std::all_of(v.begin(), v.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
            return nlohmann::json(values).dump();
        }
        out += out.size() == 1 ? "\"" : ",\"";
        for (const char c : v) {
            if (c == '"' || c == '\\') {
                out += '\\';
            }
            out += c;
        }
        out += '"';
    }
    out += ']';
    return out;
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
