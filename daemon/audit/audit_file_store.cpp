// The file store of the audit chain (docs/audit-log.md, "Writing", "Rotation", "Torn last
// line"): one JSON Lines file appended with one write(2) per line, locked against a second
// writer, its rotated predecessors read in order; the raw keys of batches in flight in
// <log>.pending/ (0700), one 0600 file per batch.

#include "audit_io.hpp"

#include "retentiond/audit_store.hpp"
#include "retentiond/crypto.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/fd.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <fcntl.h>
#include <filesystem>
#include <stdexcept>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace retentiond {

using namespace audit_io;

namespace {

// The seq of a line, read cheaply: "seq" is a top-level integer key of every line.
std::optional<std::uint64_t> seq_of(const std::string& line) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("seq") || !j["seq"].is_number_unsigned()) {
        return std::nullopt;
    }
    return j["seq"].get<std::uint64_t>();
}

// A log file opened to be read from its start; throws naming it.
Fd open_log_for_reading(const std::string& file) {
    Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        throw_errno("cannot open audit log", file, errno);
    }
    return fd;
}

class FileLines final : public AuditLines {
public:
    FileLines(std::string path, bool with_rotated)
        : m_path(std::move(path)), m_with_rotated(with_rotated) {}

    std::string name() const override { return m_path; }

    // Only "no such file" means absent: a file that cannot be looked at is an error to report.
    bool written() const override {
        for (const auto& file : {m_path, m_path + ".1"}) {
            struct stat st {};
            if (::stat(file.c_str(), &st) == 0 || errno != ENOENT) {
                return true;
            }
        }
        return false;
    }

    void forward(const Visit& visit) const override {
        const auto files =
            m_with_rotated ? log_files_oldest_first(m_path) : std::vector<std::string>{m_path};
        for (const auto& file : files) {
            const Fd fd = open_log_for_reading(file);
            ForwardLines lines(fd.get(), file);
            std::string_view line;
            bool terminated = false;
            while (lines.next(line, terminated)) {
                if (!visit(line, terminated)) {
                    return;
                }
            }
        }
    }

    void backward(const std::function<bool(const std::string&)>& visit) const override {
        auto files =
            m_with_rotated ? log_files_oldest_first(m_path) : std::vector<std::string>{m_path};
        std::reverse(files.begin(), files.end());
        bool more = true;
        for (const auto& file : files) {
            if (!more) {
                return;
            }
            visit_lines_backwards(file, [&](const std::string& line) {
                more = visit(line);
                return more;
            });
        }
    }

    std::optional<Link> predecessor() const override {
        const std::string rotated = predecessor_of(m_path);
        return Link{rotated, last_line_of(rotated)};
    }

private:
    std::string m_path;
    bool m_with_rotated;
};

void make_pending_dir(const std::string& log_path, const std::string& dir) {
    if (::mkdir(dir.c_str(), 0700) == 0) {
        fsync_dir(parent_dir(log_path));
    } else if (errno != EEXIST) {
        throw_errno("cannot create", dir, errno);
    }
}

// Written to a temp file, fsynced, renamed and the directory fsynced: whole and durable.
void write_pending_file(const std::string& dir, const std::string& file, const std::string& text) {
    const std::string tmp = file + ".tmp";
    try {
        {
            Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
            if (fd.get() < 0) {
                throw_errno("cannot create", tmp, errno);
            }
            write_all(fd.get(), text, tmp);
            fsync_or_throw(fd.get(), tmp);
        }
        if (::rename(tmp.c_str(), file.c_str()) != 0) {
            throw_errno("cannot rename", tmp, errno);
        }
    } catch (const std::exception& e) {
        // A partly written temp may hold raw keys: it goes now, not at the next start.
        ::unlink(tmp.c_str());
        throw AuditWriteError(e.what());
    }
    fsync_dir(dir);
}

std::optional<std::string> read_whole(const std::string& file, const char* what) {
    Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ENOENT) {
            return std::nullopt; // settled meanwhile
        }
        throw_errno(what, file, errno);
    }
    std::string text;
    ForwardLines reader(fd.get(), file);
    std::string_view part;
    bool terminated = false;
    while (reader.next(part, terminated)) {
        text.append(part);
        if (terminated) {
            text += '\n';
        }
    }
    return text;
}

class FileStore final : public AuditStore {
public:
    explicit FileStore(std::string path) : m_path(std::move(path)) {}
    ~FileStore() override { close_log(); }
    FileStore(const FileStore&) = delete;
    FileStore& operator=(const FileStore&) = delete;

    // Returns the bytes of a torn last line it dropped.
    std::string open_log();

    std::string name() const override { return m_path; }
    AuditHead head() const override { return m_head; }
    std::unique_ptr<AuditLines> lines() const override {
        return std::make_unique<FileLines>(m_path, true);
    }
    AuditHead append(const Render& render, bool durable, bool& settled) override;
    void sync() override;

    void put_pending(const std::string& batch_id, const std::string& text) override {
        const std::string dir = pending_dir();
        make_pending_dir(m_path, dir);
        write_pending_file(dir, pending_file(batch_id), text);
    }
    void remove_pending(const std::string& batch_id) override {
        ::unlink(pending_file(batch_id).c_str());
    }
    std::optional<std::string> read_pending(const std::string& batch_id) const override {
        return read_whole(pending_file(batch_id), "cannot open pending batch file");
    }
    std::vector<PendingEntry> list_pending(const std::string& skip_prefix) override;

private:
    std::string pending_dir() const { return m_path + ".pending"; }
    std::string pending_file(const std::string& batch_id) const {
        return pending_dir() + "/" + sanitize_file_name(batch_id) + ".json";
    }
    void close_log() {
        if (m_fd >= 0) {
            ::close(m_fd);
            m_fd = -1;
        }
    }
    void lock_and_repair(std::string& dropped);
    void read_head();
    void reopen_if_rotated();

    std::string m_path;
    int m_fd = -1;
    off_t m_end = 0; // file size after our last write: a smaller file was truncated
    AuditHead m_head;
    bool m_unsynced = false; // lines written without their fsync yet
    bool m_broken = false;   // a write or fsync failed: never chain onto a possibly torn line
};

void FileStore::lock_and_repair(std::string& dropped) {
    const int fd = ::open(m_path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        throw_errno("cannot open audit log", m_path, errno);
    }
    m_fd = fd;
    // Two writers would each chain onto their own idea of the last line.
    if (::flock(m_fd, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        close_log();
        if (err == EWOULDBLOCK) {
            throw std::runtime_error("audit log " + m_path +
                                     " is in use by another writer (locked)");
        }
        throw_errno("cannot lock audit log", m_path, err);
    }
    struct stat st {};
    if (::fstat(m_fd, &st) != 0) {
        throw_errno("cannot stat audit log", m_path, errno);
    }
    if (st.st_size == 0) {
        fsync_dir(parent_dir(m_path)); // a new file: its fsynced lines need a durable name too
    }
    const off_t end = complete_end(m_fd, st.st_size, m_path);
    if (end < st.st_size) {
        // A line's single write() did not complete, so its fsync never returned and no batch was
        // applied on the strength of it: drop it (the caller says so in the chain).
        dropped.resize(static_cast<std::size_t>(st.st_size - end));
        pread_all(m_fd, dropped.data(), dropped.size(), end, m_path);
        if (::ftruncate(m_fd, end) != 0) {
            throw_errno("cannot truncate torn tail of audit log", m_path, errno);
        }
        fsync_or_throw(m_fd, m_path);
    }
    m_end = end;
}

void FileStore::read_head() {
    m_head = AuditHead{0, k_zero_hash};
    if (m_end == 0) {
        // New (or freshly rotated) file: continue the chain of the rotated one.
        const auto last = last_line_of(m_path + ".1");
        if (last) {
            m_head.sha256 = sha256_hex(*last);
        }
        return;
    }
    ReverseLines lines(m_fd, m_end, m_path);
    std::string last;
    lines.previous(last);
    m_head.sha256 = sha256_hex(last);
    if (const auto seq = seq_of(last)) {
        m_head.seq = *seq;
        return;
    }
    // An unreadable last line (verify will name it): count lines to keep seq right.
    const Fd rd = open_log_for_reading(m_path);
    ForwardLines all(rd.get(), m_path);
    std::string_view line;
    bool terminated = false;
    while (all.next(line, terminated) && terminated) {
        ++m_head.seq;
    }
}

std::string FileStore::open_log() {
    std::string dropped;
    try {
        lock_and_repair(dropped);
        read_head();
    } catch (...) {
        close_log();
        throw;
    }
    return dropped;
}

void FileStore::reopen_if_rotated() {
    struct stat ours {};
    struct stat named {};
    if (::fstat(m_fd, &ours) != 0) {
        throw_errno("cannot stat audit log", m_path, errno);
    }
    // Renamed away (logrotate create) or truncated (copytruncate): start the new file, chained to
    // path.1.
    const bool rotated = ::stat(m_path.c_str(), &named) != 0 || named.st_ino != ours.st_ino ||
                         named.st_dev != ours.st_dev || ours.st_size < m_end;
    if (!rotated) {
        return;
    }
    if (m_unsynced) {
        // The old file still holds lines not yet fsynced: make them durable there. A failed
        // fsync may have dropped them (a retry would wrongly succeed): stop the log.
        try {
            fsync_or_throw(m_fd, m_path);
        } catch (...) {
            m_broken = true;
            throw;
        }
        m_unsynced = false;
    }
    close_log();
    std::string dropped;
    lock_and_repair(dropped); // closed again by the destructor if this throws
    read_head();
}

AuditHead FileStore::append(const Render& render, bool durable, bool& settled) {
    settled = false;
    if (m_broken) {
        throw std::runtime_error("audit log " + m_path +
                                 ": an earlier write failed, refusing to chain onto it");
    }
    if (m_fd < 0) {
        throw std::runtime_error("audit log " + m_path + " is not open");
    }
    reopen_if_rotated();
    std::string text = render(m_head);
    text += '\n';
    try {
        // One write() per line: a crash leaves at most one torn line, at the end.
        write_all(m_fd, text, m_path);
    } catch (const std::exception& e) {
        // A full disk or a file-size limit (EFBIG) may have let part of the line through: cut
        // it off, so the log ends with its last whole line. If that fails too, stop the log.
        if (::ftruncate(m_fd, m_end) != 0) {
            m_broken = true;
        }
        throw AuditWriteError(e.what());
    }
    try {
        if (durable) {
            fsync_or_throw(m_fd, m_path);
        }
    } catch (const std::exception& e) {
        m_broken = true;
        throw AuditWriteError(e.what());
    }
    m_end += static_cast<off_t>(text.size());
    text.pop_back();
    m_head = AuditHead{m_head.seq + 1, sha256_hex(text)};
    m_unsynced = !durable;
    settled = durable; // an fsync covers every earlier write
    return m_head;
}

void FileStore::sync() {
    if (!m_unsynced) {
        return;
    }
    if (m_broken || m_fd < 0) {
        throw std::runtime_error("audit log " + m_path + ": cannot sync after a failed write");
    }
    try {
        fsync_or_throw(m_fd, m_path);
    } catch (...) {
        m_broken = true;
        throw;
    }
    m_unsynced = false;
}

std::vector<AuditStore::PendingEntry> FileStore::list_pending(const std::string& skip_prefix) {
    namespace fs = std::filesystem;
    std::vector<PendingEntry> out;
    const std::string dir = pending_dir();
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
        return out;
    }
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string file = entry.path().string();
        if (entry.path().filename().string().rfind(sanitize_file_name(skip_prefix), 0) == 0) {
            continue; // ours, possibly still being written by another thread
        }
        if (entry.path().extension() == ".tmp") {
            ::unlink(file.c_str()); // crashed before its rename: no intent can follow it
            continue;
        }
        if (entry.path().extension() != ".json") {
            continue;
        }
        auto text = read_whole(file, "cannot open pending batch file");
        if (!text) {
            continue; // settled meanwhile
        }
        const std::string stem = entry.path().stem().string();
        out.push_back({stem, file, std::move(*text)});
    }
    return out;
}

} // namespace

std::unique_ptr<AuditStore> open_file_audit_store(const std::string& path, std::string& dropped) {
    auto store = std::make_unique<FileStore>(path);
    dropped = store->open_log();
    return store;
}

std::unique_ptr<AuditLines> file_audit_lines(const std::string& path, bool with_rotated) {
    return std::make_unique<FileLines>(path, with_rotated);
}

} // namespace retentiond
