#pragma once

#include <string>
#include <string_view>

namespace retentiond {

// Text for HTML element content and attribute values: & < > " ' escaped.
std::string html_escape(std::string_view text);

} // namespace retentiond
