#include "files_writer.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <system_error>

namespace retentiond::files {

namespace {

[[noreturn]] void throw_errno(const char* what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// Buffered mode: start the write-back every this many bytes.
constexpr off_t k_writeback_step = off_t{8} << 20;

// drop_behind_fd: drop the input's page cache this many bytes at a time.
constexpr off_t k_drop_step = off_t{8} << 20;

// Local block-device file systems, where O_DIRECT writes go from our buffer to the disk. Elsewhere
// the page cache stays: tmpfs copies anyway, and on NFS each O_DIRECT write would wait for the
// server, one at a time.
bool direct_gains(int fd) {
    struct statfs st {};
    if (::fstatfs(fd, &st) != 0) {
        return false;
    }
    switch (static_cast<unsigned long>(st.f_type)) {
    case EXT4_SUPER_MAGIC: // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
        return true;
    default:
        return false;
    }
}

// aligned_alloc wants a size that is a multiple of the alignment.
std::size_t round_up(std::size_t n) {
    return (n + Writer::k_buffer_align - 1) / Writer::k_buffer_align * Writer::k_buffer_align;
}

} // namespace

void Writer::Free::operator()(char* p) const {
    std::free(p);
}

Writer::Writer(int fd, off_t start, WriterOptions options)
    : m_fd(fd), m_options(options), m_kicked(start) {
    const std::size_t a = m_options.align;
    if (a == 0 || (a & (a - 1)) != 0 || a > k_buffer_align || m_options.block < a ||
        m_options.block % a != 0) {
        throw std::invalid_argument("Writer: block must be a multiple of align, a power of two");
    }
    m_flags = ::fcntl(fd, F_GETFL);
    if (m_flags < 0) {
        throw_errno("fcntl");
    }
    m_direct = (m_flags & O_DIRECT) != 0;
    if (m_options.direct && !direct_gains(fd)) {
        m_options.direct = false;
    }
    auto* mem = static_cast<char*>(std::aligned_alloc(k_buffer_align, round_up(m_options.block)));
    if (mem == nullptr) {
        throw std::bad_alloc();
    }
    m_mem[0].reset(mem);
    m_fill.data = mem;
    m_fill.base = start - start % static_cast<off_t>(a);
    m_fill.head = static_cast<std::size_t>(start - m_fill.base);
    m_fill.len = m_fill.head;
}

Writer::~Writer() {
    if (m_thread.joinable()) {
        {
            const std::lock_guard lock(m_mutex);
            m_stop = true;
        }
        m_cv.notify_all();
        m_thread.join();
    }
    // After an error (no flush): the caller still holds the fd.
    if (m_direct != ((m_flags & O_DIRECT) != 0)) {
        ::fcntl(m_fd, F_SETFL, m_flags);
    }
}

void Writer::write(std::string_view bytes) {
    while (!bytes.empty()) {
        const std::size_t n = std::min(bytes.size(), m_options.block - m_fill.len);
        std::memcpy(m_fill.data + m_fill.len, bytes.data(), n);
        m_fill.len += n;
        bytes.remove_prefix(n);
        if (m_fill.len == m_options.block) {
            hand_over();
        }
    }
}

void Writer::flush() {
    wait_idle();
    if (m_fill.len > m_fill.head) {
        write_block(m_fill);
    }
    const std::size_t rest = m_fill.len % m_options.align;
    m_fill.base += static_cast<off_t>(m_fill.len - rest);
    // Whatever comes next starts where this ended (no caller writes after flush() today).
    std::memmove(m_fill.data, m_fill.data + (m_fill.len - rest), rest);
    m_fill.head = m_fill.len = rest;
    // The fd's flags as they were: the caller may close it before destroying us.
    set_direct((m_flags & O_DIRECT) != 0);
}

// Gives the full block to the thread (started on first use) and fills the other one.
void Writer::hand_over() {
    if (!m_thread.joinable()) {
        auto* mem =
            static_cast<char*>(std::aligned_alloc(k_buffer_align, round_up(m_options.block)));
        if (mem == nullptr) {
            throw std::bad_alloc();
        }
        m_mem[1].reset(mem);
        m_thread = std::thread([this] { run(); });
    }
    wait_idle();
    Block next;
    next.data = m_fill.data == m_mem[0].get() ? m_mem[1].get() : m_mem[0].get();
    next.base = m_fill.base + static_cast<off_t>(m_fill.len); // aligned: the block was full
    {
        const std::lock_guard lock(m_mutex);
        m_pending = m_fill;
        m_busy = true;
    }
    m_cv.notify_all();
    m_fill = next;
}

// Waits until the thread has written what it was given; rethrows its error.
void Writer::wait_idle() {
    if (!m_thread.joinable()) {
        return;
    }
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [this] { return !m_busy; });
    if (m_error) {
        std::rethrow_exception(m_error);
    }
}

void Writer::run() {
    std::unique_lock lock(m_mutex);
    for (;;) {
        m_cv.wait(lock, [this] { return m_busy || m_stop; });
        if (m_stop) {
            return;
        }
        lock.unlock();
        std::exception_ptr error;
        try {
            write_block(m_pending);
            drop_behind();
        } catch (...) {
            error = std::current_exception();
        }
        lock.lock();
        m_error = error != nullptr ? error : m_error;
        m_busy = false;
        m_cv.notify_all();
    }
}

void Writer::drop_behind() {
    if (m_options.drop_behind_fd < 0) {
        return;
    }
    const off_t upto = m_consumed.load(std::memory_order_relaxed) & ~off_t{4095};
    if (upto - m_dropped >= k_drop_step) {
        ::posix_fadvise(m_options.drop_behind_fd, m_dropped, upto - m_dropped, POSIX_FADV_DONTNEED);
        m_dropped = upto;
    }
}

bool Writer::set_direct(bool on) {
    if (m_direct == on) {
        return true;
    }
    const int flags = ::fcntl(m_fd, F_GETFL);
    if (flags < 0 || ::fcntl(m_fd, F_SETFL, on ? flags | O_DIRECT : flags & ~O_DIRECT) != 0) {
        if (!on) {
            throw_errno("fcntl");
        }
        return false; // the file system does not take O_DIRECT (EINVAL)
    }
    m_direct = on;
    return true;
}

void Writer::write_block(const Block& b) {
    const char* p = b.data + b.head;
    std::size_t n = b.len - b.head;
    off_t off = b.base + static_cast<off_t>(b.head);
    // A block handed over (full) goes direct; so does the last one once some block went.
    const bool whole = b.len == m_options.block;
    if (m_options.direct && !m_direct_failed && (whole || m_wrote_direct)) {
        const auto align = static_cast<off_t>(m_options.align);
        const auto lead = std::min(n, static_cast<std::size_t>((align - off % align) % align));
        if (lead > 0) {
            pwrite_all(p, lead, off, false);
            p += lead;
            n -= lead;
            off += static_cast<off_t>(lead);
        }
        const std::size_t body = n - n % m_options.align;
        if (body > 0) {
            pwrite_all(p, body, off, true);
            p += body;
            n -= body;
            off += static_cast<off_t>(body);
        }
    }
    if (n > 0) {
        pwrite_all(p, n, off, false);
    }
}

void Writer::pwrite_all(const char* p, std::size_t n, off_t off, bool direct) {
    if (direct && !m_direct_failed && !set_direct(true)) {
        m_direct_failed = true;
    }
    direct = direct && !m_direct_failed;
    if (!direct) {
        set_direct(false);
    }
    while (n > 0) {
        const ssize_t w = ::pwrite(m_fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (direct && errno == EINVAL) {
                // An alignment this file system does not take: nothing was written by this
                // call; the rest of the file goes through the page cache.
                m_direct_failed = true;
                direct = false;
                set_direct(false);
                continue;
            }
            throw_errno("write");
        }
        p += w;
        n -= static_cast<std::size_t>(w);
        off += static_cast<off_t>(w);
        m_wrote_direct = m_wrote_direct || direct;
        if (direct && n > 0 && (off % static_cast<off_t>(m_options.align) != 0)) {
            direct = false; // a short write off the alignment: the rest of this block buffered
            set_direct(false);
        }
    }
    if (!direct && (m_direct_failed || !m_wrote_direct) && off - m_kicked >= k_writeback_step) {
        // Start the write-back of what is written so far, so that the disk works while we
        // parse and the final fsync has little left to do. A hint only: fsync reports errors.
        ::sync_file_range(m_fd, m_kicked, off - m_kicked, SYNC_FILE_RANGE_WRITE);
        m_kicked = off;
    }
}

} // namespace retentiond::files
