// Kind redis: reading its datastore sections (url) and its rules (keys, clock, max_ttl, hold,
// scan_count), with the same positions and messages as the rest of the file.
#include "redis_kind.hpp"

namespace retentiond {

namespace {

void read_redis(ConfigReader& in, const ConfigMap& f, const Rule& rule, RedisRule& redis) {
    in.require(f, {"keys"});
    if (rule.action == Action::anonymize) {
        in.error(f.get("action") ? *f.get("action") : f.node,
                 "action: redis rules support action: delete only");
    }
    if (const auto* v = f.get("keys")) {
        if (auto s = in.string(*v, "keys")) {
            if (auto problem = glob_problem(*s)) {
                in.error(*v, "keys: " + *problem);
            }
            redis.keys = *s;
        }
    }
    if (const auto* v = f.get("clock")) {
        if (v->is_scalar()) {
            if (v->scalar() == "idle") {
                redis.clock.kind = RedisClock::Kind::idle;
            } else {
                in.error(*v, "clock: expected \"idle\" or { hash_field: NAME }, got " +
                                 in_quotes(v->scalar()));
            }
        } else if (auto c = in.map(*v, "clock")) {
            in.check_keys(*c, {"hash_field"});
            in.require(*c, {"hash_field"});
            redis.clock.kind = RedisClock::Kind::hash_field;
            if (const auto* x = c->get("hash_field")) {
                redis.clock.hash_field = in.string(*x, "clock.hash_field").value_or("");
            }
        }
    }
    if (const auto* v = f.get("max_ttl")) {
        if (auto d = in.duration(*v, "max_ttl")) {
            if (d->is_zero()) {
                in.error(*v, "max_ttl: must be longer than zero");
            }
            redis.max_ttl = *d;
        }
    }
    if (const auto* v = f.get("hold")) {
        if (auto h = in.map(*v, "hold")) {
            in.check_keys(*h, {"hash_field", "equals"});
            in.require(*h, {"hash_field", "equals"});
            RedisHold hold;
            if (const auto* x = h->get("hash_field")) {
                hold.hash_field = in.string(*x, "hold.hash_field").value_or("");
            }
            if (const auto* x = h->get("equals")) {
                hold.equals = in.string(*x, "hold.equals").value_or("");
            }
            redis.hold = hold;
        }
    }
    if (const auto* v = f.get("scan_count")) {
        if (auto n = in.integer(*v, "scan_count")) {
            if (*n <= 0 || *n > 1000000) {
                in.error(*v, "scan_count: expected 1 to 1000000");
            } else {
                redis.scan_count = static_cast<int>(*n);
            }
        }
    }
}

} // namespace

std::shared_ptr<const DatastoreSpec> read_redis_datastore(ConfigReader& in,
                                                          const ConfigMap& section) {
    RedisStore store;
    const auto* value = section.get("url");
    if (!value) {
        in.error(section.node, "missing key \"url\"");
    } else if (auto s = in.string(*value, "url")) {
        store.url = Secret(*s);
    }
    return spec_ptr(std::move(store));
}

std::shared_ptr<const RuleSpec> read_redis_rule(ConfigReader& in, const ConfigMap& section,
                                                const Rule& rule) {
    RedisRule redis;
    read_redis(in, section, rule, redis);
    return spec_ptr(std::move(redis));
}

} // namespace retentiond
