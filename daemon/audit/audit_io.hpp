#pragma once
// File reading and writing shared by the audit log's file store and its readers: whole writes,
// fsync, lines forwards and backwards in bounded memory, the rotated files of a log. Private to
// daemon/audit/.

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace retentiond::audit_io {

extern const std::string k_zero_hash; // the prev of a chain's first line
constexpr std::size_t k_chunk = 1 << 20;

[[noreturn]] void throw_errno(const std::string& what, const std::string& path, int err);
std::string parent_dir(const std::string& path);
void write_all(int fd, std::string_view data, const std::string& path);
void fsync_or_throw(int fd, const std::string& path);
void pread_all(int fd, char* out, std::size_t n, off_t pos, const std::string& path);
// Offset just after the last "\n" of the first `size` bytes (0 when there is none): the end of
// the last complete line. Reads backwards, so it costs one chunk for a normal file.
off_t complete_end(int fd, off_t size, const std::string& path);
// Hands the complete lines of an audit log file to `visit`, newest first, while it returns true.
// A missing file has no lines.
void visit_lines_backwards(const std::string& file,
                           const std::function<bool(const std::string&)>& visit);
// The last complete line of a file; nullopt when the file does not exist or has no line.
std::optional<std::string> last_line_of(const std::string& path);
// A batch id as a file name.
std::string sanitize_file_name(std::string_view id);
// path.N ... path.1 (those that exist, oldest first), then path.
std::vector<std::string> log_files_oldest_first(const std::string& path);
// The file a log's first line chains to: log -> log.1, log.1 -> log.2, ...
std::string predecessor_of(const std::string& path);

// Complete lines of a file from a line boundary backwards, without "\n".
class ReverseLines {
public:
    ReverseLines(int fd, off_t end, std::string path)
        : m_fd(fd), m_pos(end), m_path(std::move(path)) {}

    bool previous(std::string& line) {
        for (;;) {
            // m_buf holds the unread bytes [m_pos, m_pos + size) and ends with "\n" when not empty.
            if (!m_buf.empty()) {
                const auto i =
                    m_buf.size() >= 2 ? m_buf.rfind('\n', m_buf.size() - 2) : std::string::npos;
                if (i != std::string::npos) {
                    line.assign(m_buf, i + 1, m_buf.size() - 2 - i);
                    m_buf.resize(i + 1);
                    return true;
                }
                if (m_pos == 0) {
                    line.assign(m_buf, 0, m_buf.size() - 1);
                    m_buf.clear();
                    return true;
                }
            } else if (m_pos == 0) {
                return false;
            }
            const auto n = static_cast<std::size_t>(std::min<off_t>(m_pos, k_chunk));
            m_pos -= static_cast<off_t>(n);
            std::string chunk(n, '\0');
            pread_all(m_fd, chunk.data(), n, m_pos, m_path);
            m_buf.insert(0, chunk);
        }
    }

private:
    int m_fd;
    off_t m_pos;
    std::string m_path;
    std::string m_buf;
};

// Lines of a file, forwards, in a reused buffer: memory is bounded by the longest line.
class ForwardLines {
public:
    ForwardLines(int fd, std::string path) : m_fd(fd), m_path(std::move(path)), m_buf(k_chunk) {}

    // terminated = false for a last line without "\n" (a torn or truncated write).
    bool next(std::string_view& line, bool& terminated) {
        for (;;) {
            const char* start = m_buf.data() + m_start;
            const void* nl = std::memchr(start, '\n', m_len - m_start);
            if (nl != nullptr) {
                const auto n = static_cast<std::size_t>(static_cast<const char*>(nl) - start);
                line = std::string_view(start, n);
                m_start += n + 1;
                terminated = true;
                return true;
            }
            if (m_eof) {
                if (m_start < m_len) {
                    line = std::string_view(start, m_len - m_start);
                    m_start = m_len;
                    terminated = false;
                    return true;
                }
                return false;
            }
            fill();
        }
    }

private:
    void fill() {
        if (m_start > 0) {
            std::memmove(m_buf.data(), m_buf.data() + m_start, m_len - m_start);
            m_len -= m_start;
            m_start = 0;
        }
        if (m_len == m_buf.size()) {
            m_buf.resize(m_buf.size() * 2); // a line longer than the buffer
        }
        for (;;) {
            const ssize_t n = ::read(m_fd, m_buf.data() + m_len, m_buf.size() - m_len);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                throw_errno("cannot read", m_path, errno);
            }
            if (n == 0) {
                m_eof = true;
            }
            m_len += static_cast<std::size_t>(n);
            return;
        }
    }

    int m_fd;
    std::string m_path;
    std::vector<char> m_buf;
    std::size_t m_start = 0;
    std::size_t m_len = 0;
    bool m_eof = false;
};

} // namespace retentiond::audit_io
