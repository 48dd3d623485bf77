#pragma once

// Reading the keyspace: SCAN pages, one pipeline of reads per page (clock, hold, TTL), and the
// verdict on each key. Private to the redis engine.

#include "redis_connection.hpp"
#include "redis_kind.hpp"
#include "retentiond/config.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond::redis_detail {

// What one pipeline learned about one key.
struct Observed {
    bool exists = false;
    enum class Clock { none, parsed, unparseable } clock = Clock::none;
    TimePoint at{};
    bool field = false; // hash_field mode: the field exists (raw holds its text)
    std::string raw;    // hash_field mode: the field's text, to re-check before deleting
    bool held = false;
    bool ttl_known = false;
    long long ttl = -1; // seconds; -1 = no TTL
};

struct ReadPlan {
    bool ttl = false;
    bool hold = false; // hash_field mode only: HGET touches keys
};

// What a purge knows before its first read: the server's now, the cutoff and what to read.
struct PurgeSetup {
    const date::time_zone* tz = nullptr;
    bool idle = false; // clock: idle
    std::optional<long long> max_ttl;
    TimePoint now{};
    TimePoint cutoff{};
    long long min_idle = 0; // idle mode: due <=> idle >= min_idle
    ReadPlan plan;
};

// Queues the page's reads; returns the sequence number of the first (the rest follow in order).
std::uint64_t append_reads(Connection& c, const Rule& rule, const std::vector<std::string>& keys,
                           const ReadPlan& plan);
// Claims the replies of a page's reads (from `seq` on) into `out`, one Observed per key.
void collect_reads(Connection& c, const Rule& rule, const std::vector<std::string>& keys,
                   std::uint64_t seq, const ReadPlan& plan, TimePoint now,
                   const date::time_zone* tz, std::vector<Observed>& out);
// Parses a SCAN reply into the next cursor and the page's keys.
void read_scan_reply(const redisReply* r, std::string& cursor, std::vector<std::string>& keys);

// SCANs the whole keyspace for the rule's pattern and reads every key as `plan` says; calls
// per_page(keys, observed) for every non-empty page, and stops when it returns false.
// The server is kept a page ahead: a page's keys are known when the previous SCAN answers, and
// the next SCAN is sent before the page's reads, so its cursor comes back while the server is
// still reading; the following page's SCAN and reads are queued before per_page() judges this
// page (and journals and sends its batches). Neither side waits for the other.
template <class PerPage>
void scan_all(Connection& c, const Rule& rule, const ReadPlan& plan, TimePoint now,
              const date::time_zone* tz, PerPage&& per_page) {
    const auto& spec = spec_of<RedisRule>(rule);
    const auto count = std::to_string(std::max(1, spec.scan_count));
    struct Page {
        std::vector<std::string> keys;
        std::uint64_t reads = 0;
        std::optional<std::uint64_t> scan; // the next SCAN, when the cursor is not 0
    };
    auto send_page = [&](std::vector<std::string> keys, const std::string& cursor) {
        Page p;
        p.keys = std::move(keys);
        if (cursor != "0") {
            p.scan = c.append({"SCAN", cursor, "MATCH", spec.keys, "COUNT", count});
        }
        p.reads = append_reads(c, rule, p.keys, plan);
        c.flush();
        return p;
    };
    std::string cursor;
    std::vector<std::string> keys;
    std::vector<Observed> seen;
    read_scan_reply(c.call({"SCAN", "0", "MATCH", spec.keys, "COUNT", count}).get(), cursor, keys);
    Page page = send_page(std::move(keys), cursor);
    for (;;) {
        std::optional<Page> next;
        if (page.scan) {
            keys = {};
            read_scan_reply(c.reply(*page.scan).get(), cursor, keys);
            next = send_page(std::move(keys), cursor);
        }
        collect_reads(c, rule, page.keys, page.reads, plan, now, tz, seen);
        if (!page.keys.empty() && !per_page(page.keys, seen)) {
            return; // the next page's replies, if any, are left unclaimed
        }
        if (!next) {
            return;
        }
        page = std::move(*next);
    }
}

// The clock policy of kind redis (docs/policy-format-extensions.md, "Clock values"), for a
// hash field's text, surrounding blanks ignored: an empty text, 0 or a negative number
// (sentinels: "never") is no clock; a decimal number whose whole part has 9 to 12 digits is epoch
// seconds, 13 digits epoch milliseconds (JavaScript's Date.now()); fewer than 9 digits (before
// 1973) or more than 13 is not a clock; other text is ISO 8601 as parse_timestamp reads it. What
// is not a clock does not parse: counted, and it fails the rule.
struct ClockRead {
    Observed::Clock clock = Observed::Clock::none;
    TimePoint at{};
};
ClockRead read_clock(std::string_view text, const date::time_zone* tz);

// A clock the scripts judge themselves: 1 to 12 decimal digits, epoch seconds (read_clock gives
// the same value when it parses it: due when <= the cutoff's whole seconds; the script also
// requires at least 100000000, as read_clock does).
inline bool epoch_digits(std::string_view v) {
    return !v.empty() && v.size() <= 12 &&
           std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

enum class Verdict { gone, unparseable, no_clock, not_due, due, held };

inline Verdict judge(const Observed& o, const Rule& rule, TimePoint cutoff) {
    if (!o.exists) {
        return Verdict::gone;
    }
    switch (o.clock) {
    case Observed::Clock::unparseable:
        return Verdict::unparseable;
    case Observed::Clock::none:
        if (!rule.clock_null_due) {
            return Verdict::no_clock;
        }
        break;
    case Observed::Clock::parsed:
        if (o.at > cutoff) {
            return Verdict::not_due;
        }
        break;
    }
    return o.held ? Verdict::held : Verdict::due;
}

inline std::optional<long long> max_ttl_seconds(const RedisRule& spec) {
    if (!spec.max_ttl) {
        return std::nullopt;
    }
    return std::chrono::duration_cast<std::chrono::seconds>(spec.max_ttl->approx()).count();
}

inline bool ttl_above_max(const Observed& o, std::optional<long long> max_ttl) {
    return max_ttl && o.ttl_known && (o.ttl == -1 || o.ttl > *max_ttl);
}

} // namespace retentiond::redis_detail
