#include "redis_reads.hpp"

#include "retentiond/timeutil.hpp"

namespace retentiond::redis_detail {

std::uint64_t append_reads(Connection& c, const Rule& rule, const std::vector<std::string>& keys,
                           const ReadPlan& plan) {
    const auto& spec = spec_of<RedisRule>(rule);
    std::uint64_t first = 0;
    bool any = false;
    auto add = [&](std::initializer_list<std::string_view> args) {
        const auto seq = c.append(args);
        if (!any) {
            first = seq;
            any = true;
        }
    };
    const bool idle = spec.clock.kind == RedisClock::Kind::idle;
    for (const auto& key : keys) {
        // The clock first: nothing before it may touch the key.
        if (idle) {
            add({"OBJECT", "IDLETIME", key});
        } else {
            add({"HGET", key, spec.clock.hash_field});
        }
        if (plan.hold) {
            add({"HGET", key, spec.hold->hash_field});
        }
        if (plan.ttl) {
            add({"TTL", key});
        }
    }
    return first;
}

void collect_reads(Connection& c, const Rule& rule, const std::vector<std::string>& keys,
                   std::uint64_t seq, const ReadPlan& plan, TimePoint now,
                   const date::time_zone* tz, std::vector<Observed>& out) {
    const auto& spec = spec_of<RedisRule>(rule);
    const bool idle = spec.clock.kind == RedisClock::Kind::idle;
    out.assign(keys.size(), Observed{});
    for (auto& o : out) {
        auto r = c.reply(seq++);
        if (idle) {
            if (r->type == REDIS_REPLY_INTEGER) {
                o.exists = true;
                o.clock = Observed::Clock::parsed;
                o.at = now - std::chrono::seconds(r->integer);
            } else if (r->type == REDIS_REPLY_ERROR) {
                // e.g. an LFU maxmemory-policy: idle time is not tracked
                throw ReplyError("OBJECT IDLETIME: " + std::string(text_of(r.get())));
            }
        } else {
            o.exists = true; // corrected by TTL below
            if (r->type == REDIS_REPLY_STRING) {
                o.raw.assign(r->str, r->len);
                if (auto t = parse_epoch_or_iso(o.raw, tz)) {
                    o.clock = Observed::Clock::parsed;
                    o.at = *t;
                } else {
                    o.clock = Observed::Clock::unparseable;
                }
            }
            // NIL: no field (or no key); ERROR (WRONGTYPE): not a hash, so no clock
        }
        if (plan.hold) {
            auto h = c.reply(seq++);
            o.held = h->type == REDIS_REPLY_STRING && text_of(h.get()) == spec.hold->equals;
        }
        if (plan.ttl) {
            auto t = c.reply(seq++);
            if (t->type != REDIS_REPLY_INTEGER) {
                throw ReplyError("TTL: unexpected reply");
            }
            o.ttl_known = true;
            o.ttl = t->integer;
            if (t->integer == -2) {
                o.exists = false;
            }
        }
    }
}

// Parses a SCAN reply into the next cursor and the page's keys.
void read_scan_reply(const redisReply* r, std::string& cursor, std::vector<std::string>& keys) {
    if (r->type == REDIS_REPLY_ERROR) {
        throw ReplyError("SCAN: " + std::string(text_of(r)));
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        throw ReplyError("SCAN: unexpected reply");
    }
    cursor = std::string(text_of(r->element[0]));
    keys.clear();
    const auto* page = r->element[1];
    for (std::size_t i = 0; i < page->elements; ++i) {
        keys.emplace_back(text_of(page->element[i]));
    }
}

} // namespace retentiond::redis_detail
