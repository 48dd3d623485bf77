#include "retentiond/crypto.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <stdexcept>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
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

namespace {

using MdCtx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

MdCtx new_ctx() {
    MdCtx ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx) {
        throw std::runtime_error("HMAC-SHA256: out of memory (OpenSSL EVP_MD_CTX_new)");
    }
    return ctx;
}

void check(int ok, const char* what) {
    if (ok != 1) {
        throw std::runtime_error(std::string("HMAC-SHA256 failed (OpenSSL ") + what + ")");
    }
}

// RFC 2104 HMAC with the two padded-key blocks hashed once per key: a digest then costs two
// context copies and two short hashes. OpenSSL's one-shot HMAC() re-derives everything per call
// (5.7 us a key, most of a purge's time when every deleted key is digested).
class KeyedSha256 {
public:
    explicit KeyedSha256(std::string_view key)
        : m_key(key), m_inner(new_ctx()), m_outer(new_ctx()), m_scratch(new_ctx()) {
        constexpr std::size_t k_block = 64;
        std::array<unsigned char, k_block> block{};
        if (key.size() > k_block) {
            unsigned int size = 0;
            check(EVP_Digest(bytes(key), key.size(), block.data(), &size, EVP_sha256(), nullptr),
                  "EVP_Digest");
        } else {
            std::copy(key.begin(), key.end(), block.begin());
        }
        std::array<unsigned char, k_block> pad{};
        for (std::size_t i = 0; i < k_block; ++i) {
            pad[i] = block[i] ^ 0x36U;
        }
        check(EVP_DigestInit_ex(m_inner.get(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
        check(EVP_DigestUpdate(m_inner.get(), pad.data(), pad.size()), "EVP_DigestUpdate");
        for (std::size_t i = 0; i < k_block; ++i) {
            pad[i] = block[i] ^ 0x5CU;
        }
        check(EVP_DigestInit_ex(m_outer.get(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
        check(EVP_DigestUpdate(m_outer.get(), pad.data(), pad.size()), "EVP_DigestUpdate");
        OPENSSL_cleanse(block.data(), block.size());
        OPENSSL_cleanse(pad.data(), pad.size());
    }

    bool same_key(std::string_view key) const { return key == m_key; }

    std::string hex(std::string_view data) {
        std::array<unsigned char, EVP_MAX_MD_SIZE> inner{};
        std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
        unsigned int size = 0;
        check(EVP_MD_CTX_copy_ex(m_scratch.get(), m_inner.get()), "EVP_MD_CTX_copy_ex");
        check(EVP_DigestUpdate(m_scratch.get(), bytes(data), data.size()), "EVP_DigestUpdate");
        check(EVP_DigestFinal_ex(m_scratch.get(), inner.data(), &size), "EVP_DigestFinal_ex");
        check(EVP_MD_CTX_copy_ex(m_scratch.get(), m_outer.get()), "EVP_MD_CTX_copy_ex");
        check(EVP_DigestUpdate(m_scratch.get(), inner.data(), size), "EVP_DigestUpdate");
        check(EVP_DigestFinal_ex(m_scratch.get(), out.data(), &size), "EVP_DigestFinal_ex");
        return to_hex(out.data(), size);
    }

private:
    std::string m_key;
    MdCtx m_inner;
    MdCtx m_outer;
    MdCtx m_scratch;
};

} // namespace

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
    // Callers digest many values under one key (the audit key): keep that key's state per thread.
    thread_local std::unique_ptr<KeyedSha256> t_keyed;
    if (!t_keyed || !t_keyed->same_key(key)) {
        t_keyed = std::make_unique<KeyedSha256>(key);
    }
    return t_keyed->hex(data);
}

std::string random_hex(std::size_t bytes_count) {
    std::vector<unsigned char> buf(bytes_count);
    if (bytes_count > 0 && RAND_bytes(buf.data(), static_cast<int>(bytes_count)) != 1) {
        throw std::runtime_error("random bytes unavailable (OpenSSL RAND_bytes)");
    }
    return to_hex(buf.data(), buf.size());
}

} // namespace retentiond
