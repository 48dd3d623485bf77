// Duration, schedule and timestamp parsers: reject or accept, never crash; what they accept must
// be usable (next_run terminates and moves forward).
#include "retentiond/duration.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/schedule.hpp"
#include "retentiond/timeutil.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    static const auto* paris = retentiond::find_zone("Europe/Paris");
    const auto t0 = retentiond::TimePoint(std::chrono::seconds(1774749600)); // 2026-03-29 DST day
    try {
        const auto d = retentiond::parse_duration(text);
        const auto later = retentiond::add(t0, d, paris);
        (void)retentiond::subtract(later, d, paris);
        (void)retentiond::describe_duration(d, "fr");
        (void)d.to_pg_interval();
    } catch (const retentiond::ParseError&) {
    }
    try {
        const auto s = retentiond::parse_schedule(text);
        const auto next = retentiond::next_run(s, t0, paris);
        if (next <= t0) {
            std::abort(); // a schedule must move forward
        }
        (void)s.period();
    } catch (const retentiond::ParseError&) {
    }
    (void)retentiond::parse_timestamp(text, "", paris);
    (void)retentiond::parse_timestamp(text, "%Y-%m-%d %H:%M:%S", paris);
    (void)retentiond::parse_epoch_or_iso(text, paris);
    return 0;
}
