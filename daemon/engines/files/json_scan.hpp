#pragma once

// Files engine, JSON Lines: one line checked as JSON and the few fields a rule reads found in it,
// without building a document. Private to the files engine.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond::files_detail {

enum class JsonScan { object, not_object, invalid };

// Checks that text is one JSON value (RFC 8259, as nlohmann::json::parse accepts it: a UTF-8 BOM
// first, UTF-8 checked in strings, \u escapes paired, numbers finite, whitespace around, and, as
// it does, nothing read after a NUL byte that follows the value), and
// when it is an object, finds the value at each dotted path (a path's segments are object keys
// from the top; the last of duplicate keys wins, as in a parsed document). found[i] is the raw
// text of the value at paths[i] (a string with its quotes, a number, an object...), or nullopt.
// Memory: a bit per level of nesting, and the keys on a path that hold escapes. Iterative: no
// recursion whatever the nesting.
JsonScan scan_json(std::string_view text, const std::vector<std::vector<std::string>>& paths,
                   std::vector<std::optional<std::string_view>>& found);

} // namespace retentiond::files_detail
