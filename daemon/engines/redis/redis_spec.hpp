#pragma once

// Kind redis: what its datastore sections and rules hold (read by redis_config.cpp). Private to
// engines/redis/ and its tests; core code never needs it.

#include "retentiond/config.hpp"

#include <optional>
#include <string>

namespace retentiond {

struct RedisStore : DatastoreSpec {
    Secret url; // redis://[:password@]host:port/db or unix socket path
    RedisStore() = default;
    explicit RedisStore(Secret u) : url(std::move(u)) {}
};

struct RedisClock {
    enum class Kind { idle, hash_field };
    Kind kind = Kind::idle;
    std::string hash_field;
};

struct RedisHold {
    std::string hash_field;
    std::string equals;
};

struct RedisRule : RuleSpec {
    std::string keys; // SCAN MATCH pattern
    RedisClock clock;
    std::optional<Duration> max_ttl;
    std::optional<RedisHold> hold;
    int scan_count = 1000;
};

} // namespace retentiond
