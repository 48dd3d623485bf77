#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>

namespace retentiond::files {

struct WriterOptions {
    // Bytes per write(2): the buffer handed to the writer thread. A multiple of align.
    std::size_t block = std::size_t{1} << 20;
    // File offsets and lengths of O_DIRECT writes are multiples of this (a power of two, at most
    // 4096, the alignment of the buffers): 4096 suits every block device. A file system that
    // wants more answers EINVAL, and the rest of the file is written buffered.
    std::size_t align = 4096;
    // Once the output passes one block, write whole aligned blocks with O_DIRECT on ext2/3/4, XFS
    // and btrfs when the file system takes it (elsewhere, or on EINVAL, buffered writes with
    // early write-back).
    bool direct = true;
    // The input being rewritten, or -1. The writer thread drops the page cache of the input bytes
    // the caller has consumed (consumed()), a few MiB at a time: the old file is deleted by the
    // rename, which would otherwise evict its whole cache then, on the path of the run (0.15 s
    // a GiB here). A hint with no effect on what is read or written.
    int drop_behind_fd = -1;
};

// Buffered writes of a file's new content (the files engine's temp copy), at explicit offsets
// (pwrite), from `start` on: the bytes before it are already in the file.
//
// Once the output passes one block, the writes go to a thread of their own, so that they run on
// another core (or wait for the disk) while the next block is parsed: two blocks in flight at
// most. Those writes are O_DIRECT when the file system takes it: the data goes from our buffer
// to the disk without a copy into the page cache (on some machines as costly as all the
// parsing), and the final fsync has little left to do. The unaligned head (up to the first
// aligned offset after `start`) and tail (past the last whole aligned unit) go through the page
// cache; fsync covers both. Without O_DIRECT, the buffered writes start their write-back early
// (sync_file_range, a hint) for the same reason.
//
// Errors (ENOSPC, EFBIG, EIO) surface on the next write() or flush(); after one, the file's
// content is undefined and the caller drops it. The destructor waits for the thread: the fd must
// outlive the Writer, and gets its file status flags back (O_DIRECT off).
class Writer {
public:
    static constexpr std::size_t k_buffer_align = 4096;

    explicit Writer(int fd, off_t start = 0, WriterOptions options = {});
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    void write(std::string_view bytes);
    // The input bytes before `offset` are parsed and copied: their page cache may go.
    void consumed(off_t offset) { m_consumed.store(offset, std::memory_order_relaxed); }
    // Writes what is buffered and waits for the thread: every byte given is in the file (not
    // yet durable: the caller fsyncs).
    void flush();
    // Whether some block went out with O_DIRECT (tests, bench).
    bool wrote_direct() const { return m_wrote_direct; }

private:
    struct Block {
        char* data = nullptr; // aligned to k_buffer_align
        std::size_t len = 0;  // bytes in data, from its start
        std::size_t head = 0; // bytes at the front already in the file (first block only)
        off_t base = 0;       // the file offset of data[0]
    };
    struct Free {
        void operator()(char* p) const;
    };

    void hand_over();
    void wait_idle();
    void run();
    // Writes b.data[b.head, b.len) at b.base + b.head. One thread at a time: the writer thread
    // while busy, else the owner.
    void write_block(const Block& b);
    void pwrite_all(const char* p, std::size_t n, off_t off, bool direct);
    bool set_direct(bool on);
    void drop_behind();

    int m_fd;
    WriterOptions m_options;
    int m_flags = 0; // the fd's file status flags when we got it
    bool m_direct = false;
    bool m_direct_failed = false;
    bool m_wrote_direct = false;
    std::unique_ptr<char, Free> m_mem[2];
    Block m_fill;       // the block being filled (owner's)
    Block m_pending;    // the block the thread writes
    off_t m_kicked = 0; // buffered mode: write-back started up to here
    std::atomic<off_t> m_consumed{0};
    off_t m_dropped = 0; // the writer thread's: drop_behind_fd's cache dropped up to here
    std::thread m_thread;
    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_busy = false;
    bool m_stop = false;
    std::exception_ptr m_error;
};

} // namespace retentiond::files
