#include "retentiond/fd.hpp"

#include <cerrno>
#include <fcntl.h>
#include <system_error>
#include <unistd.h>

namespace retentiond {

void Fd::reset() {
    if (m_fd >= 0) {
        ::close(m_fd);
        m_fd = -1;
    }
}

void fsync_dir(const std::filesystem::path& dir) {
    const Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) {
        throw std::system_error(errno, std::generic_category(),
                                "cannot open directory " + dir.string());
    }
    if (::fsync(fd.get()) != 0) {
        throw std::system_error(errno, std::generic_category(), "cannot fsync " + dir.string());
    }
}

} // namespace retentiond
