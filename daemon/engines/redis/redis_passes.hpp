#pragma once

// The passes of a redis purge. With limits that can refuse the run, a counting pass reads every
// key first and keeps the due keys (Remembered), and the purge sends them (purge_remembered);
// without limits, or past the budget, the purge scans and sends as it goes (purge_scanning).
// Private to the redis engine.

#include "redis_batch_sender.hpp"
#include "redis_reads.hpp"
#include "redis_remembered.hpp"

#include <cstdint>
#include <optional>

namespace retentiond::redis_detail {

// The TTL figures of the keys a pass looks at, and the keys whose clock does not parse.
struct TtlTally {
    std::optional<long long> max_ttl;
    std::int64_t no_ttl = 0;
    std::int64_t above_max = 0;
    std::int64_t unparseable = 0;

    // Counts the key's TTL figures; true when it is to be clamped.
    bool count(const Observed& o) {
        no_ttl += o.ttl_known && o.ttl == -1 ? 1 : 0;
        const bool clamp = ttl_above_max(o, max_ttl);
        above_max += clamp && o.ttl != -1 ? 1 : 0;
        return clamp;
    }
};

// The delete flag of a due key in hash_field mode (see k_delete_script): '-' no field, 'n' epoch
// seconds, '=' any other text, sentinels ("0", "-1") included.
inline char delete_flag(const Observed& o) {
    if (!o.field) {
        return '-';
    }
    return o.clock == Observed::Clock::parsed && epoch_digits(o.raw) ? 'n' : '=';
}

// What the counting pass found.
struct Counted {
    std::int64_t due = 0;
    std::int64_t in_scope = 0; // keys that exist
    Remembered found;          // the due keys and the keys to clamp, unless over the budget
};

// The counting pass: scans and reads every key as the purge does, counts the due ones and keeps
// them (with the keys to clamp) within the budget.
Counted count_due(Connection& c, const Rule& rule, const PurgeSetup& setup, TtlTally& ttl);

// The purge from the counting pass's keys: no second scan; each script re-checks every key as
// after a scan.
void purge_remembered(const Remembered& keys, BatchSender& sender);

// The purge that scans: judges each page and hands its due keys and keys to clamp to the sender
// while the next page is read; stops between pages on request.
void purge_scanning(Connection& c, const Rule& rule, const PurgeSetup& setup, TtlTally& ttl,
                    BatchSender& sender);

} // namespace retentiond::redis_detail
