#pragma once

// Files engine: the read buffer of the CSV and JSON Lines readers. Private to the files engine.

#include <sys/mman.h>

#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

namespace retentiond::files_detail {

// Bytes in an anonymous mapping that grows in place or moves with mremap(2): growing it copies
// nothing and never holds the old and the new size at once, so a long record costs its size once
// (a std::vector doubling to 16 MiB held 8 + 16 MiB while it copied). Pages count in memory only
// once touched.
class GrowBuffer {
public:
    explicit GrowBuffer(std::size_t size) : m_size(size) { m_data = map(size); }
    ~GrowBuffer() {
        if (m_data != nullptr) {
            ::munmap(m_data, m_size);
        }
    }
    GrowBuffer(const GrowBuffer&) = delete;
    GrowBuffer& operator=(const GrowBuffer&) = delete;
    GrowBuffer(GrowBuffer&& o) noexcept
        : m_data(std::exchange(o.m_data, nullptr)), m_size(std::exchange(o.m_size, 0)) {}
    GrowBuffer& operator=(GrowBuffer&&) = delete;

    char* data() { return m_data; }
    const char* data() const { return m_data; }
    std::size_t size() const { return m_size; }
    // Grows to n bytes (never shrinks), keeping the content.
    void resize(std::size_t n) {
        if (n <= m_size) {
            return;
        }
        void* p = ::mremap(m_data, m_size, n, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
            throw std::bad_alloc();
        }
        m_data = static_cast<char*>(p);
        m_size = n;
    }
    char& operator[](std::size_t i) { return m_data[i]; }
    const char& operator[](std::size_t i) const { return m_data[i]; }

private:
    static char* map(std::size_t n) {
        void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            throw std::bad_alloc();
        }
        return static_cast<char*>(p);
    }

    char* m_data = nullptr;
    std::size_t m_size = 0;
};

} // namespace retentiond::files_detail
