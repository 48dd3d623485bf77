#include "audit_io.hpp"

#include "retentiond/fd.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace retentiond::audit_io {

const std::string k_zero_hash(64, '0');

[[noreturn]] void throw_errno(const std::string& what, const std::string& path, int err) {
    throw std::runtime_error(what + " " + path + ": " + std::strerror(err));
}

std::string parent_dir(const std::string& path) {
    auto parent = std::filesystem::path(path).parent_path();
    return parent.empty() ? std::string(".") : parent.string();
}

void write_all(int fd, std::string_view data, const std::string& path) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("cannot write", path, errno);
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

void fsync_or_throw(int fd, const std::string& path) {
    if (::fsync(fd) != 0) {
        throw_errno("cannot fsync", path, errno);
    }
}

void pread_all(int fd, char* out, std::size_t n, off_t pos, const std::string& path) {
    while (n > 0) {
        const ssize_t got = ::pread(fd, out, n, pos);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("cannot read", path, errno);
        }
        if (got == 0) {
            throw std::runtime_error("cannot read " + path + ": file shrank while reading");
        }
        out += got;
        n -= static_cast<std::size_t>(got);
        pos += got;
    }
}

// Offset just after the last "\n" of the first `size` bytes (0 when there is none): the end of
// the last complete line. Reads backwards, so it costs one chunk for a normal file.
off_t complete_end(int fd, off_t size, const std::string& path) {
    std::string buf;
    off_t pos = size;
    while (pos > 0) {
        const auto n = static_cast<std::size_t>(std::min<off_t>(pos, k_chunk));
        pos -= static_cast<off_t>(n);
        buf.resize(n);
        pread_all(fd, buf.data(), n, pos, path);
        const auto i = buf.rfind('\n');
        if (i != std::string::npos) {
            return pos + static_cast<off_t>(i) + 1;
        }
    }
    return 0;
}

// Hands the complete lines of an audit log file to `visit`, newest first, while it returns true.
// A missing file has no lines.
void visit_lines_backwards(const std::string& file,
                           const std::function<bool(const std::string&)>& visit) {
    Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ENOENT) {
            return;
        }
        throw_errno("cannot open audit log", file, errno);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw_errno("cannot stat audit log", file, errno);
    }
    ReverseLines lines(fd.get(), complete_end(fd.get(), st.st_size, file), file);
    std::string line;
    while (lines.previous(line) && visit(line)) {
    }
}

// The last complete line of a file; nullopt when the file does not exist or has no line.
std::optional<std::string> last_line_of(const std::string& path) {
    std::optional<std::string> last;
    visit_lines_backwards(path, [&](const std::string& line) {
        last = line;
        return false;
    });
    return last;
}

std::string sanitize_file_name(std::string_view id) {
    std::string out(id);
    for (char& c : out) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
        if (!ok) {
            c = '_';
        }
    }
    return out;
}

// path.N ... path.1 (those that exist, oldest first), then path.
std::vector<std::string> log_files_oldest_first(const std::string& path) {
    std::vector<std::string> files;
    for (int n = 1;; ++n) {
        const std::string rotated = path + "." + std::to_string(n);
        struct stat st {};
        if (::stat(rotated.c_str(), &st) != 0) {
            break;
        }
        files.push_back(rotated);
    }
    std::reverse(files.begin(), files.end());
    files.push_back(path);
    return files;
}

// The file a log's first line chains to: log -> log.1, log.1 -> log.2, ...
std::string predecessor_of(const std::string& path) {
    const auto dot = path.rfind('.');
    if (dot != std::string::npos && dot + 1 < path.size() && dot + 10 > path.size() &&
        std::all_of(path.begin() + static_cast<std::ptrdiff_t>(dot) + 1, path.end(),
                    [](char c) { return c >= '0' && c <= '9'; })) {
        return path.substr(0, dot + 1) + std::to_string(std::stoul(path.substr(dot + 1)) + 1);
    }
    return path + ".1";
}

} // namespace retentiond::audit_io
