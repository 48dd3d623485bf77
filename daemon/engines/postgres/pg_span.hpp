#pragma once
// How many heap pages a page-range batch covers, and how that span follows the density of due rows.
// Every batch pays a commit, round trips and an intent, so fuller batches mean fewer of them, while
// a range that overflows batch_size is rolled back and split (measured: aiming at 80% -> 90% of
// batch_size takes 126 -> ~112 batches for 1M due rows; overflow stays rare at page-level noise).
// Pure: testable without a server. Internal to the postgres engine.

#include <algorithm>
#include <cstdint>

namespace retentiond::pg {

// Pages per range so that a range holds about 90% of batch_size due rows on average, within
// [1, pages].
inline std::int64_t initial_span(std::int64_t batch_size, std::int64_t pages, std::int64_t due) {
    return std::clamp<std::int64_t>(batch_size * pages * 9 / (10 * std::max<std::int64_t>(1, due)),
                                    1, pages);
}

// After a range of `span` pages held `done` due rows (no overflow): the next span, aiming at 90%
// of batch_size, moving by at most a factor of two either way, within [1, pages].
inline std::int64_t next_span(std::int64_t span, std::int64_t done, std::int64_t batch_size,
                              std::int64_t pages) {
    const std::int64_t target = std::max<std::int64_t>(1, batch_size * 9 / 10);
    const std::int64_t next = done == 0 ? span * 2 : span * target / done;
    return std::clamp<std::int64_t>(
        std::clamp<std::int64_t>(next, std::max<std::int64_t>(1, span / 2), span * 2), 1, pages);
}

// A range held more than batch_size due rows: the same range again with half the span, or, when
// a single page overflows, a selection pass (`force_select`) over that page.
struct SpanAfterOverflow {
    std::int64_t span = 1;
    bool force_select = false;
};
inline SpanAfterOverflow span_after_overflow(std::int64_t span) {
    if (span > 1) {
        return {std::max<std::int64_t>(1, span / 2), false};
    }
    return {span, true};
}

} // namespace retentiond::pg
