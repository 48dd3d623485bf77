#pragma once

// The keys the counting pass keeps for the purge. Private to the redis engine.

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond::redis_detail {

// The due keys and the keys to clamp found by the limits' pass, kept so that the purge needs no
// second scan, up to a budget of bytes (16 MiB, like the files engine's staged keys; past it the
// keys are dropped and the purge scans again). Chunks of 1 MiB, never reallocated, so the peak
// memory is the budget. Entry: kind ('n' '=' '-' a due key with its delete flag, 'i' a due key
// in idle mode, 'e' a key to clamp), the key's length (LEB128) and bytes, and for '=' the clock
// text the same way.
extern std::size_t g_remember_budget;

class Remembered {
public:
    // False once over the budget: everything is dropped and later adds are ignored.
    bool add(char kind, std::string_view key, std::string_view value) {
        if (m_overflow) {
            return false;
        }
        const std::size_t need = 1 + 10 + key.size() + (kind == '=' ? 10 + value.size() : 0);
        if (m_chunks.empty() || m_chunks.back().capacity() - m_chunks.back().size() < need) {
            const std::size_t size = std::max(need, k_chunk);
            if (m_bytes + size > g_remember_budget) {
                m_overflow = true;
                m_chunks = {};
                return false;
            }
            m_chunks.emplace_back().reserve(size);
            m_bytes += size;
        }
        auto& c = m_chunks.back();
        c += kind;
        put(c, key);
        if (kind == '=') {
            put(c, value);
        }
        return true;
    }
    bool overflowed() const { return m_overflow; }
    // f(kind, key, value) for every entry, in order, until it returns false.
    template <class F> void each(F&& f) const {
        for (const auto& c : m_chunks) {
            std::size_t at = 0;
            while (at < c.size()) {
                const char kind = c[at++];
                const auto key = get(c, at);
                const auto value = kind == '=' ? get(c, at) : std::string_view();
                if (!f(kind, key, value)) {
                    return;
                }
            }
        }
    }

private:
    static constexpr std::size_t k_chunk = std::size_t{1} << 20;
    static void put(std::string& c, std::string_view s) {
        auto n = s.size();
        do {
            c += static_cast<char>((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
            n >>= 7;
        } while (n != 0);
        c.append(s);
    }
    static std::string_view get(const std::string& c, std::size_t& at) {
        std::size_t n = 0;
        for (int shift = 0;; shift += 7) {
            const auto b = static_cast<unsigned char>(c[at++]);
            n |= static_cast<std::size_t>(b & 0x7f) << shift;
            if ((b & 0x80) == 0) {
                break;
            }
        }
        const std::string_view s(c.data() + at, n);
        at += n;
        return s;
    }
    std::vector<std::string> m_chunks;
    std::size_t m_bytes = 0;
    bool m_overflow = false;
};

} // namespace retentiond::redis_detail
