#pragma once

// A file descriptor owned (closed once), and the directory fsync that makes an entry durable.
// One definition for the audit log and the files engine.

#include <filesystem>

namespace retentiond {

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : m_fd(fd) {}
    ~Fd() { reset(); }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd(Fd&& o) noexcept : m_fd(o.m_fd) { o.m_fd = -1; }
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            m_fd = o.m_fd;
            o.m_fd = -1;
        }
        return *this;
    }
    int get() const { return m_fd; }
    int release() {
        const int fd = m_fd;
        m_fd = -1;
        return fd;
    }
    void reset();

private:
    int m_fd = -1;
};

// Makes a directory entry change (create, rename, unlink) durable. Throws std::system_error
// ("cannot open directory DIR: ..." or "cannot fsync DIR: ...").
void fsync_dir(const std::filesystem::path& dir);

} // namespace retentiond
