#pragma once

#include <string>
#include <string_view>

namespace retentiond {

// Text for HTML element content and attribute values: & < > " ' escaped.
std::string html_escape(std::string_view text);
// A Markdown table cell: pipes escaped, line breaks as spaces, no raw HTML (& < > escaped).
std::string md_table_cell(std::string_view text);

namespace csv {
// Appends value to out as one CSV field, quoted only when it has to be (delimiter, quote, CR, LF).
void append_field(std::string& out, std::string_view value, char delimiter);
} // namespace csv

} // namespace retentiond
