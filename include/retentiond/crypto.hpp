#pragma once

#include <string>
#include <string_view>

namespace retentiond {

std::string sha256_hex(std::string_view data);
std::string hmac_sha256_hex(std::string_view key, std::string_view data);
std::string random_hex(std::size_t bytes); // run ids, temp file suffixes

} // namespace retentiond
