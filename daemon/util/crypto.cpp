#include "retentiond/crypto.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <stdexcept>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

namespace retentiond {

namespace {

void append_hex_of(const unsigned char* data, std::size_t size, std::string& out) {
    constexpr std::string_view k_digits = "0123456789abcdef";
    const std::size_t at = out.size();
    out.resize(at + size * 2);
    for (std::size_t i = 0; i < size; ++i) {
        out[at + 2 * i] = k_digits[data[i] >> 4U];
        out[at + 2 * i + 1] = k_digits[data[i] & 0x0FU];
    }
}

std::string to_hex(const unsigned char* data, std::size_t size) {
    std::string out;
    append_hex_of(data, size, out);
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

namespace {

// RFC 2104 HMAC with the two padded-key blocks hashed once per key: a digest then costs two state
// copies (plain structs) and two one-block compressions. Measured per 1M digests of short keys:
// OpenSSL's one-shot HMAC() 5.7 s, EVP contexts copied per digest (EVP_MD_CTX_copy_ex allocates)
// ~0.6 s, the SHA256_CTX structs below ~0.15 s: a purge digests every key it deletes. The
// low-level SHA-256 functions are deprecated in OpenSSL 3 in favour of EVP, which has no cheap
// context copy; they remain in 3.x and are the same implementation (SHA-NI where available).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
class KeyedSha256 {
public:
    explicit KeyedSha256(std::string_view key) : m_key(key) {
        constexpr std::size_t k_block = 64;
        std::array<unsigned char, k_block> block{};
        if (key.size() > k_block) {
            SHA256(bytes(key), key.size(), block.data());
        } else {
            std::copy(key.begin(), key.end(), block.begin());
        }
        std::array<unsigned char, k_block> pad{};
        for (std::size_t i = 0; i < k_block; ++i) {
            pad[i] = block[i] ^ 0x36U;
        }
        check(SHA256_Init(&m_inner), "SHA256_Init");
        check(SHA256_Update(&m_inner, pad.data(), pad.size()), "SHA256_Update");
        for (std::size_t i = 0; i < k_block; ++i) {
            pad[i] = block[i] ^ 0x5CU;
        }
        check(SHA256_Init(&m_outer), "SHA256_Init");
        check(SHA256_Update(&m_outer, pad.data(), pad.size()), "SHA256_Update");
        OPENSSL_cleanse(block.data(), block.size());
        OPENSSL_cleanse(pad.data(), pad.size());
    }
    ~KeyedSha256() {
        OPENSSL_cleanse(&m_inner, sizeof m_inner);
        OPENSSL_cleanse(&m_outer, sizeof m_outer);
    }
    KeyedSha256(const KeyedSha256&) = delete;
    KeyedSha256& operator=(const KeyedSha256&) = delete;

    bool same_key(std::string_view key) const { return key == m_key; }

    // The digest of first + second, its hex appended to `hex`.
    void append_hex(std::string_view first, std::string_view second, std::string& hex) const {
        std::array<unsigned char, SHA256_DIGEST_LENGTH> inner{};
        std::array<unsigned char, SHA256_DIGEST_LENGTH> out{};
        SHA256_CTX ctx = m_inner;
        check(SHA256_Update(&ctx, bytes(first), first.size()), "SHA256_Update");
        check(SHA256_Update(&ctx, bytes(second), second.size()), "SHA256_Update");
        check(SHA256_Final(inner.data(), &ctx), "SHA256_Final");
        ctx = m_outer;
        check(SHA256_Update(&ctx, inner.data(), inner.size()), "SHA256_Update");
        check(SHA256_Final(out.data(), &ctx), "SHA256_Final");
        OPENSSL_cleanse(&ctx, sizeof ctx);
        append_hex_of(out.data(), out.size(), hex);
    }

private:
    static void check(int ok, const char* what) {
        if (ok != 1) {
            throw std::runtime_error(std::string("HMAC-SHA256 failed (OpenSSL ") + what + ")");
        }
    }
    std::string m_key;
    SHA256_CTX m_inner{};
    SHA256_CTX m_outer{};
};
#pragma GCC diagnostic pop

} // namespace

namespace {

// Callers digest many values under one key (the audit key): that key's state is kept per thread.
const KeyedSha256& keyed(std::string_view key) {
    thread_local std::unique_ptr<KeyedSha256> t_keyed;
    if (!t_keyed || !t_keyed->same_key(key)) {
        t_keyed = std::make_unique<KeyedSha256>(key);
    }
    return *t_keyed;
}

} // namespace

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
    std::string hex;
    keyed(key).append_hex(data, {}, hex);
    return hex;
}

void append_hmac_sha256_hex(std::string_view key, std::string_view first, std::string_view second,
                            std::string& out) {
    keyed(key).append_hex(first, second, out);
}

std::string random_hex(std::size_t bytes_count) {
    std::vector<unsigned char> buf(bytes_count);
    if (bytes_count > 0 && RAND_bytes(buf.data(), static_cast<int>(bytes_count)) != 1) {
        throw std::runtime_error("random bytes unavailable (OpenSSL RAND_bytes)");
    }
    return to_hex(buf.data(), buf.size());
}

} // namespace retentiond
