#include "retentiond/crypto.hpp"

#include <array>
#include <stdexcept>
#include <vector>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

namespace retentiond {

namespace {

std::string to_hex(const unsigned char* data, std::size_t size) {
    constexpr std::string_view k_digits = "0123456789abcdef";
    std::string out(size * 2, '\0');
    for (std::size_t i = 0; i < size; ++i) {
        out[2 * i] = k_digits[data[i] >> 4U];
        out[2 * i + 1] = k_digits[data[i] & 0x0FU];
    }
    return out;
}

// OpenSSL takes void*/unsigned char*; string_view data is bytes all the same.
const unsigned char* bytes(std::string_view s) {
    static constexpr unsigned char k_empty = 0;
    // A null pointer means "no key / reuse the previous key" to some OpenSSL entry points.
    return s.empty() ? &k_empty : reinterpret_cast<const unsigned char*>(s.data());
}

} // namespace

std::string sha256_hex(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int size = 0;
    if (EVP_Digest(bytes(data), data.size(), md.data(), &size, EVP_sha256(), nullptr) != 1) {
        throw std::runtime_error("SHA-256 failed (OpenSSL EVP_Digest)");
    }
    return to_hex(md.data(), size);
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int size = 0;
    if (HMAC(EVP_sha256(), bytes(key), static_cast<int>(key.size()), bytes(data), data.size(),
             md.data(), &size) == nullptr) {
        throw std::runtime_error("HMAC-SHA256 failed (OpenSSL HMAC)");
    }
    return to_hex(md.data(), size);
}

std::string random_hex(std::size_t bytes_count) {
    std::vector<unsigned char> buf(bytes_count);
    if (bytes_count > 0 && RAND_bytes(buf.data(), static_cast<int>(bytes_count)) != 1) {
        throw std::runtime_error("random bytes unavailable (OpenSSL RAND_bytes)");
    }
    return to_hex(buf.data(), buf.size());
}

} // namespace retentiond
