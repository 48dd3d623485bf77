#pragma once

// Files engine, file I/O: descriptors, the temp copy beside a file, the directory fsync, the glob.
// Private to the files engine.

#include "csv.hpp"
#include "files_kind.hpp"
#include "files_writer.hpp"
#include "retentiond/anonymize.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/crypto.hpp"
#include "retentiond/engine.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/escape.hpp"
#include "retentiond/fd.hpp"
#include "retentiond/timestamp_memo.hpp"
#include "retentiond/timeutil.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace retentiond::files_detail {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline constexpr std::size_t k_write_block = std::size_t{1} << 20;
inline constexpr std::size_t k_max_line = csv::Reader::k_max_record; // JSON Lines: the same
inline constexpr std::size_t k_max_notes = 200;

[[noreturn]] inline void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

// A path the glob matched that is not a regular file when opened (a FIFO, a socket, a device
// swapped in after the listing): refused for that file, never read.
class NotRegularFile : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Opens a file to read, never waiting: O_NONBLOCK, so that a FIFO swapped in after the listing
// cannot block the open (a FIFO without a writer would hold the run for good), then fstat on the
// descriptor: anything but a regular file throws NotRegularFile. O_NONBLOCK is cleared once the
// file is known to be regular (it means nothing for regular files, but the reads expect none).
inline Fd open_read(const fs::path& p) {
    Fd fd(::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (fd.get() < 0) {
        throw_errno("open");
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw_errno("stat");
    }
    if (!S_ISREG(st.st_mode)) {
        throw NotRegularFile(S_ISFIFO(st.st_mode)   ? "a FIFO, not a regular file"
                             : S_ISSOCK(st.st_mode) ? "a socket, not a regular file"
                             : S_ISDIR(st.st_mode)  ? "a directory, not a regular file"
                                                    : "a device, not a regular file");
    }
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
        throw_errno("fcntl");
    }
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
    return fd;
}

// Whether an error is the kernel refusing access (EACCES, EPERM): a permission problem of the
// datastore, not a record that does not parse.
inline bool permission_denied(const std::exception& e) {
    const auto* se = dynamic_cast<const std::system_error*>(&e);
    return se != nullptr && (se->code() == std::errc::permission_denied ||
                             se->code() == std::errc::operation_not_permitted);
}

// Thrown out of a pass over a file when a stop (SIGTERM) is requested: not an std::exception, so
// that no "cannot read" handler takes it for a failure. Whatever was staged is dropped.
struct StopRequested {};

// Polls the run's stop request while a file is read, every 4096 records or 8 MiB: a large file
// is not read to its end before a SIGTERM is seen.
class StopPoll {
public:
    explicit StopPoll(const RunContext& ctx) : m_ctx(ctx) {}
    void tick(std::size_t bytes) {
        m_bytes += bytes;
        if (++m_records < 4096 && m_bytes < (std::size_t{8} << 20)) {
            return;
        }
        m_records = 0;
        m_bytes = 0;
        if (stop_requested(m_ctx)) {
            throw StopRequested{};
        }
    }

private:
    const RunContext& m_ctx;
    std::size_t m_records = 0;
    std::size_t m_bytes = 0;
};

// True when `path` is a temp copy no live rewrite holds (its lock is free), and it was removed.
inline bool remove_if_stale(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        return false;
    }
    Fd guard(fd);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        return false; // a rewrite in progress
    }
    return ::unlink(path.c_str()) == 0;
}

// The temp file beside the original: removed unless committed.
class TempFile {
public:
    explicit TempFile(const fs::path& original) {
        const auto dir = original.parent_path();
        for (int attempt = 0; attempt < 8; ++attempt) {
            m_path = dir /
                     ("." + original.filename().string() + ".retentiond-" + random_hex(6) + ".tmp");
            const int fd =
                ::open(m_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (fd >= 0) {
                m_fd = Fd(fd);
                // Held while we write: a later run tells a killed rewrite's leftover (lock free)
                // from a rewrite in progress (locked) by this lock.
                ::flock(fd, LOCK_EX | LOCK_NB);
                return;
            }
            if (errno != EEXIST) {
                throw_errno("create temp file");
            }
        }
        throw std::runtime_error("cannot create a temp file");
    }
    ~TempFile() {
        m_fd.reset();
        if (!m_committed) {
            ::unlink(m_path.c_str());
        }
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    int fd() const { return m_fd.get(); }
    const fs::path& path() const { return m_path; }
    void close() {
        const int fd = m_fd.release();
        if (fd >= 0 && ::close(fd) != 0) {
            throw_errno("close temp file");
        }
    }
    void committed() { m_committed = true; }

private:
    fs::path m_path;
    Fd m_fd;
    bool m_committed = false;
};

using files::Writer;

// Copies the first n bytes of in (read at explicit offsets: in's file offset does not move) to
// out's current offset: in the kernel when it can (copy_file_range), else through a buffer.
inline void copy_prefix(int in, int out, off_t n) {
    off_t off = 0;
    bool kernel = true;
    std::vector<char> buf;
    while (off < n) {
        if (kernel) {
            loff_t from = off;
            const ssize_t got =
                ::copy_file_range(in, &from, out, nullptr, static_cast<std::size_t>(n - off), 0);
            if (got > 0) {
                off += got;
                continue;
            }
            if (got < 0 && errno == EINTR) {
                continue;
            }
            if (got < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
                            errno == EINVAL || errno == EBADF)) {
                kernel = false;
                buf.resize(k_write_block);
                continue;
            }
            if (got == 0) {
                throw std::runtime_error("the file shrank while it was read");
            }
            throw_errno("copy_file_range");
        }
        const ssize_t got = ::pread(in, buf.data(), std::min<off_t>(n - off, buf.size()), off);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("read");
        }
        if (got == 0) {
            throw std::runtime_error("the file shrank while it was read");
        }
        for (ssize_t done = 0; done < got;) {
            const ssize_t w = ::write(out, buf.data() + done, static_cast<std::size_t>(got - done));
            if (w < 0) {
                if (errno == EINTR) {
                    continue;
                }
                throw_errno("write");
            }
            done += w;
        }
        off += got;
    }
}

// --- glob ----------------------------------------------------------------------------------

inline std::vector<std::string> split(std::string_view s, char sep) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;) {
        const auto at = s.find(sep, start);
        parts.emplace_back(s.substr(start, at - start));
        if (at == std::string_view::npos) {
            return parts;
        }
        start = at + 1;
    }
}

// Segment-wise glob: `**` spans any number of directories, other segments go through fnmatch
// (a leading dot must be matched explicitly, which also hides our own temp files). With
// prefix = true, tells whether a directory may contain matches, to prune the walk.
inline bool glob_match(const std::vector<std::string>& pat, std::size_t pi,
                       const std::vector<std::string>& path, std::size_t si, bool prefix) {
    if (pi == pat.size()) {
        return si == path.size();
    }
    if (pat[pi] == "**") {
        if (prefix) {
            return true;
        }
        for (std::size_t k = si; k <= path.size(); ++k) {
            if (glob_match(pat, pi + 1, path, k, false)) {
                return true;
            }
        }
        return false;
    }
    if (si == path.size()) {
        return prefix;
    }
    if (::fnmatch(pat[pi].c_str(), path[si].c_str(), FNM_PERIOD) != 0) {
        return false;
    }
    return glob_match(pat, pi + 1, path, si + 1, prefix);
}

} // namespace retentiond::files_detail
