// The streaming CSV reader: every record either parses or raises csv::ParseError; the raw bytes
// of the records read, concatenated, are a prefix of the input (nothing invented or reordered).
#include "engines/files/csv.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    for (const std::size_t block : {std::size_t{7}, std::size_t{4096}}) {
        std::string seen;
        try {
            retentiond::csv::Reader reader(retentiond::csv::string_reader(input), 0, block);
            retentiond::csv::Record record;
            std::string scratch;
            while (reader.next(record)) {
                seen.append(record.raw());
                for (std::size_t i = 0; i < record.size(); ++i) {
                    (void)record.value(i, scratch);
                }
            }
            // Without a BOM the records are the whole input, byte for byte.
            if (!reader.has_bom() && seen != input) {
                std::abort();
            }
        } catch (const retentiond::csv::ParseError&) {
        }
        if (input.substr(0, seen.size()) != seen && seen.rfind("\xEF\xBB\xBF", 0) != 0) {
            std::abort();
        }
    }
    return 0;
}
