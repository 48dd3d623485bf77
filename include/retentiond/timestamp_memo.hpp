#pragma once

#include "retentiond/duration.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

// parse_timestamp() for one column of a large file, with the same results. Text of the Tally
// shape "YYYY-MM-DD HH:MM:SS" (no offset) read by a format that reads it field for field ("",
// "%Y-%m-%d %H:%M:%S", "%F %T") is parsed here, and the zone periods seen are remembered (a few
// dozen at most): a local time more than 26 hours inside one has that period's offset and no
// other. Anything else goes to parse_timestamp().
class TimestampMemo {
public:
    TimestampMemo(std::string format, const date::time_zone* tz);
    std::optional<TimePoint> parse(std::string_view text);

private:
    struct Period {
        std::int64_t safe_begin; // local seconds
        std::int64_t safe_end;
        std::int64_t offset; // seconds east of UTC
    };
    static constexpr std::size_t k_max_periods = 32;
    [[gnu::noinline]] std::optional<TimePoint> in_new_period(std::int64_t local_seconds);

    std::string m_format;
    const date::time_zone* m_tz;
    bool m_fast;
    std::vector<Period> m_periods;
    std::size_t m_replace = 0; // round robin once full
    char m_last_date[10] = {}; // "YYYY-MM-DD" of the last fast parse, and its days since 1970
    std::int64_t m_last_days = 0;
};

} // namespace retentiond
