// The files engine's temp-file writer: O_DIRECT blocks with buffered head and tail, the buffered
// fallback, errors from the writer thread.
#include "files_writer.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace retentiond::files {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Deterministic bytes, with pieces of every size from 0 to well past a block.
std::vector<std::string> pieces(std::size_t total, std::size_t max_piece, std::uint32_t seed) {
    std::vector<std::string> out;
    std::size_t sum = 0;
    while (sum < total) {
        seed = seed * 1664525U + 1013904223U;
        const std::size_t n = (seed >> 8) % (max_piece + 1);
        std::string p(n, '\0');
        for (std::size_t i = 0; i < n; ++i) {
            p[i] = static_cast<char>('a' + (sum + i) % 26);
        }
        sum += n;
        out.push_back(std::move(p));
    }
    return out;
}

class FilesWriter : public ::testing::Test {
protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "retentiond-writer-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        m_dir = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(m_dir, ec);
    }
    // Opens a new file the way the engine opens its temp, with `prefix` already written.
    int open_with(const std::string& name, const std::string& prefix) {
        const auto path = m_dir / name;
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::write(fd, prefix.data(), prefix.size()), static_cast<ssize_t>(prefix.size()));
        return fd;
    }
    // Writes prefix + pieces through a Writer; returns what was expected in the file.
    std::string write_file(const std::string& name, const std::string& prefix,
                           const std::vector<std::string>& parts, WriterOptions options,
                           bool* direct = nullptr) {
        const int fd = open_with(name, prefix);
        std::string expected = prefix;
        {
            Writer w(fd, static_cast<off_t>(prefix.size()), options);
            for (const auto& p : parts) {
                w.write(p);
                expected += p;
            }
            w.flush();
            if (direct != nullptr) {
                *direct = w.wrote_direct();
            }
            EXPECT_EQ(::fcntl(fd, F_GETFL) & O_DIRECT, 0) << "flush gives the fd its flags back";
        }
        EXPECT_EQ(::fsync(fd), 0);
        EXPECT_EQ(::close(fd), 0);
        return expected;
    }
    // Whether this file system takes O_DIRECT, and is one where the writer uses it.
    bool direct_supported() {
        struct statfs sfs {};
        if (::statfs(m_dir.c_str(), &sfs) != 0 ||
            (sfs.f_type != EXT4_SUPER_MAGIC && sfs.f_type != XFS_SUPER_MAGIC &&
             sfs.f_type != BTRFS_SUPER_MAGIC)) {
            return false;
        }
        const int fd = open_with("probe", "");
        const int flags = ::fcntl(fd, F_GETFL);
        const bool ok = ::fcntl(fd, F_SETFL, flags | O_DIRECT) == 0;
        ::close(fd);
        fs::remove(m_dir / "probe");
        return ok;
    }

    fs::path m_dir;
};

TEST_F(FilesWriter, DirectBlocksWithUnalignedHeadAndTailAreByteExact) {
    WriterOptions o;
    o.block = 64 * 1024;
    const auto parts = pieces(std::size_t{1} << 20, 3 * o.block, 7); // some pieces span blocks
    for (const std::size_t head : {std::size_t{0}, std::size_t{1}, std::size_t{4095},
                                   std::size_t{4096}, std::size_t{70000}}) {
        const std::string name = "out" + std::to_string(head);
        bool direct = false;
        const auto expected = write_file(name, std::string(head, 'P'), parts, o, &direct);
        EXPECT_EQ(slurp(m_dir / name), expected) << "prefix " << head;
        if (direct_supported()) {
            EXPECT_TRUE(direct) << "past one block, whole blocks go O_DIRECT";
        }
    }
}

TEST_F(FilesWriter, OutputShorterThanABlockStaysBuffered) {
    WriterOptions o;
    o.block = 64 * 1024;
    bool direct = true;
    const auto expected = write_file("small", "hdr\n", pieces(60000, 500, 3), o, &direct);
    EXPECT_EQ(slurp(m_dir / "small"), expected);
    EXPECT_FALSE(direct);
}

TEST_F(FilesWriter, BufferedWhenDirectIsOff) {
    WriterOptions o;
    o.block = 64 * 1024;
    o.direct = false;
    bool direct = true;
    // Past the 8 MiB write-back step, so sync_file_range runs too.
    const auto expected =
        write_file("buffered", "x", pieces(std::size_t{9} << 20, 200000, 5), o, &direct);
    EXPECT_EQ(slurp(m_dir / "buffered"), expected);
    EXPECT_FALSE(direct);
}

// An alignment the file system refuses (ext4 wants its logical block size, 512 or more): the
// O_DIRECT write fails with EINVAL, writes nothing, and the rest goes through the page cache.
TEST_F(FilesWriter, AnAlignmentTheFileSystemRefusesFallsBackToBuffered) {
    WriterOptions o;
    o.block = 64 * 1024;
    o.align = 256;
    const auto parts = pieces(std::size_t{1} << 20, 100000, 11);
    for (const std::size_t head : {std::size_t{256}, std::size_t{300}, std::size_t{512}}) {
        const std::string name = "odd" + std::to_string(head);
        const auto expected = write_file(name, std::string(head, 'P'), parts, o);
        EXPECT_EQ(slurp(m_dir / name), expected) << "prefix " << head;
    }
}

// drop_behind_fd: the writer thread drops the cache of the consumed input (the file about to be
// replaced), never more than consumed, and changes no byte of either file.
TEST_F(FilesWriter, TheConsumedInputLeavesThePageCache) {
    const auto parts = pieces(std::size_t{24} << 20, 300000, 13);
    std::string input;
    for (const auto& p : parts) {
        input += p;
    }
    const int in = open_with("input", input);
    ASSERT_EQ(::fsync(in), 0); // clean pages: DONTNEED leaves dirty ones
    ::close(in);
    const int rd = ::open((m_dir / "input").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(rd, 0);
    const auto resident = [&](std::size_t from, std::size_t to) {
        void* map = ::mmap(nullptr, input.size(), PROT_READ, MAP_SHARED, rd, 0);
        EXPECT_NE(map, MAP_FAILED);
        std::vector<unsigned char> vec((input.size() + 4095) / 4096);
        EXPECT_EQ(::mincore(map, input.size(), vec.data()), 0);
        ::munmap(map, input.size());
        std::size_t n = 0;
        for (std::size_t i = from / 4096; i < to / 4096; ++i) {
            n += vec[i] & 1U;
        }
        return n;
    };
    EXPECT_EQ(slurp(m_dir / "input"), input); // now in the page cache
    const std::size_t cut = std::size_t{12} << 20;
    const bool cached_before = resident(0, cut) == cut / 4096;
    WriterOptions o;
    o.block = 256 * 1024;
    o.drop_behind_fd = rd;
    const int fd = open_with("out", "");
    std::string expected;
    {
        Writer w(fd, 0, o);
        std::size_t consumed = 0;
        for (const auto& p : parts) {
            w.write(p);
            expected += p;
            consumed += p.size();
            w.consumed(static_cast<off_t>(std::min(consumed, cut)));
        }
        w.flush();
    }
    ::close(fd);
    EXPECT_EQ(slurp(m_dir / "out"), expected);
    struct statfs sfs {};
    ASSERT_EQ(::fstatfs(rd, &sfs), 0);
    if (cached_before && sfs.f_type != TMPFS_MAGIC) {
        EXPECT_LT(resident(0, cut), cut / 4096 / 2) << "most of the consumed part dropped";
    }
    EXPECT_EQ(resident(cut + 4096, input.size() - 4096),
              (input.size() - 4096) / 4096 - (cut + 4096) / 4096)
        << "nothing past what was consumed";
    ::close(rd);
    EXPECT_EQ(slurp(m_dir / "input"), input);
}

TEST_F(FilesWriter, BadOptionsAreRefused) {
    const int fd = open_with("bad", "");
    WriterOptions o;
    o.block = 5000;
    EXPECT_THROW(Writer(fd, 0, o), std::invalid_argument);
    o.block = 8192;
    o.align = 8192;
    EXPECT_THROW(Writer(fd, 0, o), std::invalid_argument);
    o.align = 96;
    EXPECT_THROW(Writer(fd, 0, o), std::invalid_argument);
    ::close(fd);
}

// RLIMIT_FSIZE stands for a full disk: the write that crosses it is cut short (off the
// alignment when the limit is), the next fails with EFBIG. The error is the writer thread's; it
// reaches write() or flush() as std::system_error, and the fd is left without O_DIRECT.
TEST_F(FilesWriter, AWriteErrorOnTheThreadReachesTheCaller) {
    for (const bool direct : {true, false}) {
        for (const rlim_t limit : {rlim_t{3} << 20, (rlim_t{3} << 20) + 1234}) {
            const pid_t pid = ::fork();
            ASSERT_GE(pid, 0);
            if (pid == 0) {
                ::signal(SIGXFSZ, SIG_IGN);
                const int fd = open_with("full" + std::to_string(direct) + std::to_string(limit),
                                         std::string(100, 'P'));
                const rlimit lim{limit, limit};
                ::setrlimit(RLIMIT_FSIZE, &lim);
                int code = 1;
                {
                    WriterOptions o;
                    o.block = 256 * 1024;
                    o.direct = direct;
                    Writer w(fd, 100, o);
                    try {
                        const std::string chunk(100000, 'z');
                        for (int i = 0; i < 100; ++i) { // 10 MB, past the limit
                            w.write(chunk);
                        }
                        w.flush();
                    } catch (const std::system_error& e) {
                        code = e.code() == std::errc::file_too_large ? 0 : 2;
                    }
                }
                if ((::fcntl(fd, F_GETFL) & O_DIRECT) != 0) {
                    code = 3; // the destructor gives the flags back after an error too
                }
                ::_exit(code);
            }
            int status = 0;
            ASSERT_EQ(::waitpid(pid, &status, 0), pid);
            ASSERT_TRUE(WIFEXITED(status));
            EXPECT_EQ(WEXITSTATUS(status), 0) << "direct " << direct << ", limit " << limit;
        }
    }
}

} // namespace
} // namespace retentiond::files
