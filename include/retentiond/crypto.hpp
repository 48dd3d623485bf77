#pragma once

#include <string>
#include <string_view>

namespace retentiond {

std::string sha256_hex(std::string_view data);
std::string hmac_sha256_hex(std::string_view key, std::string_view data);
// Appends HMAC-SHA256(key, first + second), hex, to `out`: the same digest as hmac_sha256_hex of
// the concatenation, without building it (a purge digests every key it removes).
void append_hmac_sha256_hex(std::string_view key, std::string_view first, std::string_view second,
                            std::string& out);
std::string random_hex(std::size_t bytes); // run ids, temp file suffixes

} // namespace retentiond
