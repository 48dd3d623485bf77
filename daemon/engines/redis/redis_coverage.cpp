// Coverage for redis (Kind::scan_coverage): a bounded SCAN sample (k_max_keys keys), each key
// reduced to a pattern (segments that look like ids or values become "*"), each pattern judged
// against the rules' patterns; a few keys of each pattern are read (strings, hashes, lists) to
// classify their fields and values. Every pattern no rule matches is reported, with its count
// and types.
#include "redis_connection.hpp"
#include "redis_kind.hpp"
#include "redis_reads.hpp"
#include "redis_url.hpp"

#include "retentiond/coverage.hpp"

#include <fnmatch.h>

#include <map>
#include <set>

namespace retentiond {

namespace {

using redis_detail::Connection;
using redis_detail::text_of;

constexpr std::size_t k_max_keys = 10000;
constexpr std::size_t k_read_per_pattern = 5;

bool word_like(std::string_view segment) {
    if (segment.empty() || segment.size() > 32) {
        return false;
    }
    for (const char c : segment) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

// "session:8f3a...": "session:*". Never a part of a key that is not a plain word.
std::string key_pattern(std::string_view key) {
    std::string out;
    std::size_t start = 0;
    for (;;) {
        const auto colon = key.find(':', start);
        const auto segment =
            key.substr(start, colon == std::string_view::npos ? colon : colon - start);
        out += word_like(segment) ? std::string(segment) : "*";
        if (colon == std::string_view::npos) {
            return out;
        }
        out += ':';
        start = colon + 1;
    }
}

struct Group {
    std::string pattern;
    const Rule* rule = nullptr;
    std::int64_t keys = 0;
    std::set<std::string> types;
    std::vector<std::string> sample; // keys read to classify (never shown)
};

void add_values(Connection& c, const std::string& key, const std::string& type,
                std::set<std::string>& fields, ValueTally& values) {
    if (type == "string") {
        const auto r = c.call({"GETRANGE", key, "0", "65535"});
        values.add(text_of(r.get()));
    } else if (type == "hash") {
        const auto r = c.call({"HSCAN", key, "0", "COUNT", "100"});
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
            const auto* page = r->element[1];
            for (std::size_t i = 0; i + 1 < page->elements; i += 2) {
                fields.insert(std::string(text_of(page->element[i])));
                values.add(text_of(page->element[i + 1]));
            }
        }
    } else if (type == "list") {
        const auto r = c.call({"LRANGE", key, "0", "19"});
        for (std::size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
            values.add(text_of(r->element[i]));
        }
    }
}

CoverageFinding judge(Connection& c, const std::string& store, Group& g) {
    CoverageFinding f;
    f.datastore = store;
    f.pattern = g.pattern;
    f.location = g.pattern;
    std::set<std::string> fields;
    ValueTally values;
    for (const auto& key : g.sample) {
        const auto t = c.call({"TYPE", key});
        const std::string type(text_of(t.get()));
        g.types.insert(type);
        add_values(c, key, type, fields, values);
    }
    std::string types;
    for (const auto& t : g.types) {
        types += (types.empty() ? "" : ", ") + t;
    }
    f.why.push_back(std::to_string(g.keys) + " keys sampled (" + types + ")");
    for (const auto& field : fields) {
        for (auto& reason : name_reasons(field)) {
            f.why.push_back("field " + safe_name(field) + " " + reason);
        }
    }
    const auto value_reasons = values.reasons();
    f.why.insert(f.why.end(), value_reasons.begin(), value_reasons.end());
    if (g.rule != nullptr) {
        f.covered_by = g.rule->name + " (keys " + spec_of<RedisRule>(*g.rule).keys + ")";
    } else {
        f.why.insert(f.why.begin(), "no rule's pattern matches");
    }
    return f;
}

const Rule* matching_rule(const std::vector<const Rule*>& rules, const std::string& key) {
    for (const Rule* rule : rules) {
        if (::fnmatch(spec_of<RedisRule>(*rule).keys.c_str(), key.c_str(), 0) == 0) {
            return rule;
        }
    }
    return nullptr;
}

// SCAN until the end or k_max_keys keys; the groups by pattern and rule.
std::map<std::string, Group> sample_keys(Connection& c, const std::vector<const Rule*>& rules,
                                         bool& cut) {
    std::map<std::string, Group> groups;
    std::string cursor = "0";
    std::vector<std::string> keys;
    std::size_t seen = 0;
    do {
        redis_detail::read_scan_reply(c.call({"SCAN", cursor, "COUNT", "1000"}).get(), cursor,
                                      keys);
        for (const auto& key : keys) {
            const Rule* rule = matching_rule(rules, key);
            const auto pattern = key_pattern(key);
            auto& g = groups[pattern + '\n' + (rule != nullptr ? rule->name : "")];
            g.pattern = pattern;
            g.rule = rule;
            ++g.keys;
            if (g.sample.size() < k_read_per_pattern) {
                g.sample.push_back(key);
            }
        }
        seen += keys.size();
    } while (cursor != "0" && seen < k_max_keys);
    cut = cursor != "0";
    return groups;
}

} // namespace

CoverageScan scan_redis_coverage(const Datastore& store, const std::vector<const Rule*>& rules) {
    const auto url = parse_redis_url(spec_of<RedisStore>(store).url.reveal());
    Connection c(url, store.name);
    CoverageScan scan;
    bool cut = false;
    try {
        auto groups = sample_keys(c, rules, cut);
        for (auto& [id, g] : groups) {
            scan.findings.push_back(judge(c, store.name, g));
        }
    } catch (const redis_detail::ReplyError& e) {
        scan.notes.push_back(std::string("the scan stopped on an error reply: ") + e.what());
        scan.partial = true;
    }
    if (cut) {
        scan.notes.push_back("sampled the first " + std::to_string(k_max_keys) +
                             " keys of SCAN only: patterns beyond them were not seen");
    }
    return scan;
}

} // namespace retentiond
