#include "redis_connection.hpp"

#include <charconv>

namespace retentiond::redis_detail {

TimePoint server_now(Connection& c) {
    auto r = c.call_ok({"TIME"});
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        throw ReplyError("TIME: unexpected reply");
    }
    long long secs = 0;
    long long micros = 0;
    const auto s = text_of(r->element[0]);
    const auto u = text_of(r->element[1]);
    std::from_chars(s.data(), s.data() + s.size(), secs);
    std::from_chars(u.data(), u.data() + u.size(), micros);
    return TimePoint(std::chrono::seconds(secs) + std::chrono::microseconds(micros));
}

} // namespace retentiond::redis_detail
