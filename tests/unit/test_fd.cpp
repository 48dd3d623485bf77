// The owned descriptor and the directory fsync shared by the audit log, the files engine and the
// report's output (util/fd.cpp).
#include "retentiond/fd.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <system_error>
#include <unistd.h>
#include <utility>

namespace retentiond {
namespace {

bool is_open(int fd) {
    return ::fcntl(fd, F_GETFD) != -1;
}

TEST(Fd, ClosesOnceWhenDestroyedAndFollowsAMove) {
    const int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(raw, 0);
    {
        Fd a(raw);
        Fd b(std::move(a));
        EXPECT_EQ(a.get(), -1);
        EXPECT_EQ(b.get(), raw);
        Fd c;
        c = std::move(b);
        EXPECT_EQ(c.get(), raw);
        EXPECT_TRUE(is_open(raw));
    }
    EXPECT_FALSE(is_open(raw));
}

TEST(Fd, ReleaseHandsTheDescriptorBack) {
    const int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(raw, 0);
    {
        Fd a(raw);
        EXPECT_EQ(a.release(), raw);
    }
    EXPECT_TRUE(is_open(raw));
    ::close(raw);
}

TEST(FsyncDir, SyncsADirectoryAndNamesAMissingOne) {
    EXPECT_NO_THROW(fsync_dir(::testing::TempDir()));
    const std::string missing = ::testing::TempDir() + "/retentiond-no-such-dir";
    try {
        fsync_dir(missing);
        FAIL() << "no error for a missing directory";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
        // The audit log's message, as before the helper was shared.
        EXPECT_EQ(std::string(e.what()),
                  "cannot open directory " + missing + ": " + std::strerror(ENOENT));
    }
}

} // namespace
} // namespace retentiond
