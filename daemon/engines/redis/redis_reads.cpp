#include "redis_reads.hpp"

#include "retentiond/timeutil.hpp"

namespace retentiond::redis_detail {

namespace {

bool all_digits(std::string_view v) {
    return std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

std::string_view trimmed(std::string_view v) {
    constexpr std::string_view k_space = " \t\n\r\v\f";
    const auto first = v.find_first_not_of(k_space);
    if (first == std::string_view::npos) {
        return {};
    }
    return v.substr(first, v.find_last_not_of(k_space) - first + 1);
}

// A plain decimal number: its whole part without leading zeros, and its fraction.
struct Decimal {
    bool negative = false;
    std::string_view whole;
    std::string_view frac;
};

std::optional<Decimal> decimal(std::string_view v) {
    Decimal d;
    d.negative = v.starts_with('-');
    v.remove_prefix(d.negative ? 1 : 0);
    const auto dot = v.find('.');
    d.whole = v.substr(0, dot);
    d.frac = dot == std::string_view::npos ? std::string_view() : v.substr(dot + 1);
    if (d.whole.empty() || !all_digits(d.whole) ||
        (dot != std::string_view::npos && (d.frac.empty() || !all_digits(d.frac)))) {
        return std::nullopt;
    }
    d.whole.remove_prefix(std::min(d.whole.find_first_not_of('0'), d.whole.size()));
    return d;
}

// `whole` units of `unit` plus the fraction, to the microsecond.
TimePoint from_decimal(const Decimal& d, std::chrono::microseconds unit) {
    std::int64_t whole = 0;
    for (const char ch : d.whole) {
        whole = whole * 10 + (ch - '0');
    }
    std::int64_t frac = 0; // in millionths of `unit`
    for (std::size_t i = 0; i < 6; ++i) {
        frac = frac * 10 + (i < d.frac.size() ? d.frac[i] - '0' : 0);
    }
    return TimePoint(unit * whole + std::chrono::microseconds(frac * unit.count() / 1000000));
}

} // namespace

ClockRead read_clock(std::string_view text, const date::time_zone* tz) {
    text = trimmed(text);
    if (text.empty()) {
        return {}; // as an empty CSV field or JSON string: no clock
    }
    const auto d = decimal(text);
    if (!d) {
        if (auto t = parse_epoch_or_iso(text, tz)) {
            return {Observed::Clock::parsed, *t};
        }
        return {Observed::Clock::unparseable, {}};
    }
    const bool zero = d->whole.empty() && d->frac.find_first_not_of('0') == std::string_view::npos;
    if (d->negative || zero) {
        return {}; // a sentinel ("never", "unset"), not a date in 1969 or 1970
    }
    if (d->whole.size() < 9 || d->whole.size() > 13) {
        // Before 1973-03-03 in seconds, or past 2286 in milliseconds: a counter, a flag or a
        // truncated value, not a clock.
        return {Observed::Clock::unparseable, {}};
    }
    if (d->whole.size() == 13) {
        return {Observed::Clock::parsed, from_decimal(*d, std::chrono::milliseconds(1))};
    }
    return {Observed::Clock::parsed, from_decimal(*d, std::chrono::seconds(1))};
}

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
                o.field = true;
                o.raw.assign(r->str, r->len);
                const auto read = read_clock(o.raw, tz);
                o.clock = read.clock;
                o.at = read.at;
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
