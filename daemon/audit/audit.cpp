#include "retentiond/audit.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/errors.hpp"
#include "retentiond/fd.hpp"
#include "retentiond/timeutil.hpp"
#include "retentiond/version.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <map>
#include <stdexcept>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace retentiond {

namespace {

using json = nlohmann::json;

const std::string k_zero_hash(64, '0');
constexpr std::size_t k_chunk = 1 << 20;
// With sorted keys, "type" and "v" are the last two keys of an outcome line (its other keys all
// sort before "type"), so an outcome is recognised without looking at the rest of the line.
constexpr std::string_view k_outcome_suffix = R"("type":"outcome","v":1})";
constexpr std::string_view k_digests_key = R"("digests":[)";

[[noreturn]] void throw_errno(const std::string& what, const std::string& path, int err) {
    throw std::runtime_error(what + " " + path + ": " + std::strerror(err));
}

// Invalid UTF-8 (a file name, a Redis key) must not make a line unwritable; it is replaced.
std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
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

// The top-level fields verify needs, read with the SAX interface so that an intent line's
// thousands of digests are checked as JSON without building a DOM.
class LineFields : public json::json_sax_t {
public:
    std::optional<std::int64_t> v;
    std::optional<std::uint64_t> seq;
    std::optional<std::int64_t> count;
    std::optional<std::string> ts;
    std::optional<std::string> type;
    std::optional<std::string> prev;
    std::optional<bool> committed;
    bool object = false;
    std::size_t error_pos = 0;

    bool null() override { return scalar(); }
    bool boolean(bool val) override {
        if (at_top() && m_key == "committed") {
            committed = val;
        }
        return scalar();
    }
    bool number_integer(number_integer_t val) override {
        if (at_top()) {
            set_number(val);
        }
        return scalar();
    }
    bool number_unsigned(number_unsigned_t val) override {
        if (at_top()) {
            if (m_key == "seq") {
                seq = val;
            } else if (val <= static_cast<number_unsigned_t>(INT64_MAX)) {
                set_number(static_cast<std::int64_t>(val));
            }
        }
        return scalar();
    }
    bool number_float(number_float_t /*val*/, const string_t& /*text*/) override {
        return scalar();
    }
    bool string(string_t& val) override {
        if (at_top()) {
            if (m_key == "ts") {
                ts = std::move(val);
            } else if (m_key == "type") {
                type = std::move(val);
            } else if (m_key == "prev") {
                prev = std::move(val);
            }
        }
        return scalar();
    }
    bool binary(binary_t& /*val*/) override { return scalar(); }
    bool start_object(std::size_t /*elements*/) override {
        if (m_depth == 0) {
            object = true;
        }
        ++m_depth;
        return true;
    }
    bool key(string_t& val) override {
        if (m_depth == 1) {
            m_key = std::move(val);
        }
        return true;
    }
    bool end_object() override {
        --m_depth;
        return true;
    }
    bool start_array(std::size_t /*elements*/) override {
        ++m_depth;
        return true;
    }
    bool end_array() override {
        --m_depth;
        return true;
    }
    bool parse_error(std::size_t position, const std::string& /*last_token*/,
                     const nlohmann::detail::exception& /*ex*/) override {
        error_pos = position; // the token itself may be record data: never reported
        return false;
    }

private:
    bool at_top() const { return m_depth == 1; }
    bool scalar() { return true; }
    void set_number(std::int64_t val) {
        if (m_key == "v") {
            v = val;
        } else if (m_key == "count") {
            count = val;
        } else if (m_key == "seq" && val >= 0) {
            seq = static_cast<std::uint64_t>(val);
        }
    }
    int m_depth = 0;
    std::string m_key;
};

bool is_lower_hex(std::string_view s) {
    for (const char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

// The [start, end) of the elements of a "digests" array in its fixed layout ("<64 hex>" joined by
// commas), or nullopt when the line has no such array or lays it out any other way.
std::optional<std::pair<std::size_t, std::size_t>> digest_elements(std::string_view line) {
    const auto at = line.find(k_digests_key);
    if (at == std::string_view::npos) {
        return std::nullopt;
    }
    const std::size_t start = at + k_digests_key.size();
    std::size_t p = start;
    for (;;) {
        if (p + 67 > line.size() || line[p] != '"' || line[p + 65] != '"' ||
            !is_lower_hex(line.substr(p + 1, 64))) {
            return std::nullopt;
        }
        p += 66;
        if (line[p] == ']') {
            return std::pair{start, p};
        }
        if (line[p] != ',') {
            return std::nullopt;
        }
        ++p;
    }
}

// Parses a line's top-level fields. An intent's digests, once checked to be well-formed hex
// strings, are left out of the JSON parse: replacing one well-formed array by [] changes neither
// the line's validity nor its other fields, and the parse is then a few hundred bytes instead of
// hundreds of kilobytes.
bool parse_fields(std::string_view line, LineFields& fields) {
    std::string elided;
    std::size_t removed_at = std::string_view::npos;
    std::size_t removed = 0;
    if (const auto range = digest_elements(line)) {
        elided.reserve(line.size() - (range->second - range->first));
        elided.append(line.substr(0, range->first));
        elided.append(line.substr(range->second));
        removed_at = range->first;
        removed = range->second - range->first;
        line = elided;
    }
    const bool ok =
        json::sax_parse(line.data(), line.data() + line.size(), &fields) && fields.object;
    if (!ok && fields.error_pos > removed_at) {
        fields.error_pos += removed; // a position in the line as written
    }
    return ok;
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

std::string to_hex(std::string_view bytes) {
    static constexpr char k_digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) {
        const auto u = static_cast<unsigned char>(c);
        out += k_digits[u >> 4];
        out += k_digits[u & 0xf];
    }
    return out;
}

std::string from_hex(std::string_view hex) {
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        throw std::runtime_error("bad hex digit in pending batch file");
    };
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out += static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1]));
    }
    return out;
}

json parse_json(std::string_view text) {
    return json::parse(text.data(), text.data() + text.size());
}

// Whether an intent line holds `digest`. The digests array is written as fixed-width strings
// ("<64 hex>",) right after its key, so it is stepped through 67 bytes at a time; a line laid out
// any other way falls back to a plain search. The caller confirms a hit by parsing.
bool line_has_digest(std::string_view line, std::string_view digest, std::string_view quoted) {
    const auto at = line.find(k_digests_key);
    if (at == std::string_view::npos) {
        return false;
    }
    std::size_t p = at + k_digests_key.size();
    while (p < line.size()) {
        if (line[p] == ']') {
            return false;
        }
        if (p + 66 > line.size() || line[p] != '"' || line[p + 65] != '"') {
            break;
        }
        if (line.compare(p + 1, 64, digest) == 0) {
            return true;
        }
        p += 66;
        if (p < line.size() && line[p] == ',') {
            ++p;
        }
    }
    return line.find(quoted, at) != std::string_view::npos;
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

} // namespace

std::string record_digest(const Secret& audit_key, std::string_view rule, std::string_view key) {
    std::string data;
    data.reserve(rule.size() + 1 + key.size());
    data.append(rule);
    data += '\n';
    data.append(key);
    return hmac_sha256_hex(audit_key.reveal(), data);
}

std::string new_run_id() {
    std::string stamp = format_utc_seconds(now_utc());
    std::erase(stamp, '-');
    std::erase(stamp, ':');
    return stamp + "-" + random_hex(4);
}

// --- AuditLog ------------------------------------------------------------------------------

AuditLog::AuditLog(std::string path, Secret audit_key, std::string run_id)
    : m_path(std::move(path)), m_key(std::move(audit_key)), m_run_id(std::move(run_id)) {
    if (m_key.empty()) {
        throw std::runtime_error("audit log " + m_path +
                                 ": no audit_key, record digests would be unverifiable");
    }
    try {
        open_log();
    } catch (...) {
        close_log(); // no destructor runs for a constructor that throws
        throw;
    }
}

AuditLog::~AuditLog() {
    try {
        sync();
    } catch (const std::exception&) {
        // The pending files stay: the next start settles those batches against the datastore.
    }
    close_log();
}

void AuditLog::close_log() {
    if (m_fd >= 0) {
        ::close(m_fd);
        m_fd = -1;
    }
}

void AuditLog::open_log() {
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
    std::string dropped;
    if (end < st.st_size) {
        // A line's single write() did not complete, so its fsync never returned and no batch was
        // applied on the strength of it: drop it, and say so in the chain.
        dropped.resize(static_cast<std::size_t>(st.st_size - end));
        pread_all(m_fd, dropped.data(), dropped.size(), end, m_path);
        if (::ftruncate(m_fd, end) != 0) {
            throw_errno("cannot truncate torn tail of audit log", m_path, errno);
        }
        fsync_or_throw(m_fd, m_path);
    }
    m_end = end;
    m_seq = 0;
    if (end == 0) {
        // New (or freshly rotated) file: continue the chain of the rotated one.
        const auto last = last_line_of(m_path + ".1");
        m_prev = last ? sha256_hex(*last) : k_zero_hash;
    } else {
        ReverseLines lines(m_fd, end, m_path);
        std::string last;
        lines.previous(last);
        m_prev = sha256_hex(last);
        LineFields fields;
        if (parse_fields(last, fields) && fields.seq) {
            m_seq = *fields.seq;
        } else {
            // An unreadable last line (verify will name it): count lines to keep seq right.
            Fd rd(::open(m_path.c_str(), O_RDONLY | O_CLOEXEC));
            if (rd.get() < 0) {
                throw_errno("cannot open audit log", m_path, errno);
            }
            ForwardLines all(rd.get(), m_path);
            std::string_view line;
            bool terminated = false;
            while (all.next(line, terminated) && terminated) {
                ++m_seq;
            }
        }
    }
    if (!dropped.empty()) {
        append(json{{"type", "torn_tail_repaired"},
                    {"bytes_dropped", dropped.size()},
                    {"dropped_sha256", sha256_hex(dropped)}});
    }
}

void AuditLog::reopen_if_rotated() {
    struct stat ours {};
    struct stat named {};
    if (::fstat(m_fd, &ours) != 0) {
        throw_errno("cannot stat audit log", m_path, errno);
    }
    // Renamed away (logrotate create) or truncated (copytruncate): start the new file, chained to
    // path.1.
    const bool rotated = ::stat(m_path.c_str(), &named) != 0 || named.st_ino != ours.st_ino ||
                         named.st_dev != ours.st_dev || ours.st_size < m_end;
    if (rotated) {
        if (!m_lazy_outcomes.empty()) {
            // The old file still holds outcome lines not yet fsynced: make them durable there.
            // A failed fsync may have dropped them (a retry would wrongly succeed): stop the log.
            try {
                fsync_or_throw(m_fd, m_path);
            } catch (...) {
                m_broken = true;
                throw;
            }
            settle_lazy_outcomes();
        }
        close_log();
        try {
            open_log();
        } catch (...) {
            close_log();
            throw;
        }
    }
}

void AuditLog::append(json line, std::string_view digests, bool sync) {
    if (m_broken) {
        throw std::runtime_error("audit log " + m_path +
                                 ": an earlier write failed, refusing to chain onto it");
    }
    if (m_fd < 0) {
        throw std::runtime_error("audit log " + m_path + " is not open");
    }
    reopen_if_rotated();
    line["v"] = 1;
    line["seq"] = m_seq + 1;
    line["ts"] = format_utc(now_utc());
    line["run"] = m_run_id;
    line["prev"] = m_prev;
    std::string text = dump(line);
    if (!digests.empty()) {
        // Thousands of fixed-width hex strings need no escaping: rendered directly, in exactly
        // the layout dump() would give and prove() steps through.
        const auto at = text.find(std::string(k_digests_key) + "]");
        if (at == std::string::npos) {
            throw std::logic_error("audit line without an empty digests array");
        }
        text.insert(at + k_digests_key.size(), digests);
    }
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
        if (sync) {
            fsync_or_throw(m_fd, m_path);
        }
    } catch (const std::exception& e) {
        m_broken = true;
        throw AuditWriteError(e.what());
    }
    m_end += static_cast<off_t>(text.size());
    text.pop_back();
    m_prev = sha256_hex(text);
    ++m_seq;
    if (sync) {
        settle_lazy_outcomes();
    }
}

void AuditLog::settle_lazy_outcomes() {
    // Their outcome lines are durable now (an fsync covers every earlier write): the raw keys
    // kept for crash recovery can go.
    for (const auto& id : m_lazy_outcomes) {
        remove_pending(id);
    }
    m_lazy_outcomes.clear();
}

void AuditLog::sync() {
    const std::lock_guard lock(m_mutex);
    if (m_lazy_outcomes.empty()) {
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
    settle_lazy_outcomes();
}

std::string AuditLog::pending_file(const std::string& batch_id) const {
    return pending_dir() + "/" + sanitize_file_name(batch_id) + ".json";
}

void AuditLog::remove_pending(const std::string& batch_id) const {
    // Best effort: a leftover whose outcome is in the log is cleaned up by pending().
    ::unlink(pending_file(batch_id).c_str());
}

namespace {

json partition_json(const PartitionBatch& p) {
    json j{{"parent", p.parent},
           {"to", p.to},
           {"to_us", p.to_us},
           {"rows", p.rows},
           {"key_index", p.key_index},
           {"key_columns", p.key_columns},
           {"disposition", p.disposition}};
    if (p.from_us) {
        j["from"] = p.from;
        j["from_us"] = *p.from_us;
    }
    return j;
}

// The intent's digests, rendered as the body of a JSON array of hex strings.
std::string batch_digests(const Secret& audit_key, const BatchIntent& batch) {
    std::string digests;
    digests.reserve(batch.keys.size() * 67);
    for (const auto& key : batch.keys) {
        if (!digests.empty()) {
            digests += ',';
        }
        digests += '"';
        digests += record_digest(audit_key, batch.rule, key);
        digests += '"';
    }
    return digests;
}

void make_pending_dir(const std::string& log_path, const std::string& dir) {
    if (::mkdir(dir.c_str(), 0700) == 0) {
        fsync_dir(parent_dir(log_path));
    } else if (errno != EEXIST) {
        throw_errno("cannot create", dir, errno);
    }
}

// Appends `keys` as a JSON array body. Strict: a key that is not UTF-8 must survive byte for
// byte, so json::type_error is thrown for it. By hand: a batch holds thousands of keys, mostly
// plain ASCII, and a json array of them costs an allocation per key to build and to free.
void append_keys_strict(std::string& text, const std::vector<std::string>& keys) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
        const auto& key = keys[i];
        if (i > 0) {
            text += ',';
        }
        if (std::all_of(key.begin(), key.end(),
                        [](char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; })) {
            text += '"';
            text += key;
            text += '"';
        } else {
            text += json(key).dump();
        }
    }
}

// The pending-keys file's content: the batch and its raw keys (as hex when not UTF-8).
std::string pending_text(const std::string& id, const BatchIntent& batch,
                         const std::string& cutoff) {
    json pending{{"batch", id},
                 {"rule", batch.rule},
                 {"datastore", batch.datastore},
                 {"target", batch.target},
                 {"action", batch.action},
                 {"cutoff", cutoff},
                 {"cutoff_us", batch.cutoff.time_since_epoch().count()}};
    try {
        std::string text = pending.dump();
        text.pop_back(); // '}'
        text += ",\"keys\":[";
        append_keys_strict(text, batch.keys);
        text += "]}";
        return text;
    } catch (const json::type_error&) {
        // Not UTF-8: what recovery hands back to the engine is kept as hex, exactly.
        json hex = json::array();
        for (const auto& key : batch.keys) {
            hex.push_back(to_hex(key));
        }
        pending["keys_hex"] = std::move(hex);
        pending["target_hex"] = to_hex(batch.target);
        return dump(pending);
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

json intent_line(const std::string& id, const BatchIntent& batch, const std::string& cutoff) {
    json line{{"type", "intent"},       {"batch", id},
              {"rule", batch.rule},     {"datastore", batch.datastore},
              {"target", batch.target}, {"action", batch.action},
              {"cutoff", cutoff},       {"count", batch.keys.size()}};
    if (batch.partition) {
        line["count"] = batch.partition->rows;
        line["partition"] = partition_json(*batch.partition);
    }
    if (!batch.request.empty()) {
        line["request"] = batch.request;
    }
    line["digests"] = json::array();
    return line;
}

} // namespace

std::string AuditLog::intent(const BatchIntent& batch) {
    std::string id;
    {
        const std::lock_guard lock(m_mutex);
        id = m_run_id + "-" + std::to_string(++m_batches);
    }
    const std::string digests = batch_digests(m_key, batch);
    const std::string cutoff = format_utc(batch.cutoff);

    // The raw keys go beside the log, never into it: crash recovery needs them to ask the
    // datastore whether the batch committed. Durable before the intent line.
    const std::string dir = pending_dir();
    make_pending_dir(m_path, dir);
    write_pending_file(dir, pending_file(id), pending_text(id, batch, cutoff));

    // If this throws, the pending file stays: the next start resolves it against the datastore.
    json line = intent_line(id, batch, cutoff);
    const std::lock_guard lock(m_mutex);
    append(std::move(line), digests);
    m_in_flight[id] = {batch.rule, batch.datastore};
    return id;
}

void AuditLog::outcome(const std::string& batch_id, bool committed, std::int64_t count) {
    // Not fsynced by itself: the next intent, event or run_end line (or sync()) makes it durable,
    // and until then the pending file stays, so a crash in between is settled by recovery like
    // any batch without an outcome. This saves one fsync per batch.
    const std::lock_guard lock(m_mutex);
    append(
        json{{"type", "outcome"}, {"batch", batch_id}, {"committed", committed}, {"count", count}},
        {}, false);
    m_in_flight.erase(batch_id);
    m_lazy_outcomes.push_back(batch_id);
}

void AuditLog::outcome_except(const std::string& batch_id, std::int64_t count,
                              const std::vector<std::string>& unapplied_keys) {
    if (unapplied_keys.empty()) {
        outcome(batch_id, true, count);
        return;
    }
    const std::lock_guard lock(m_mutex);
    const auto rule = m_in_flight.find(batch_id);
    if (rule == m_in_flight.end()) {
        throw std::invalid_argument("audit: outcome for unknown batch " + batch_id);
    }
    json unapplied = json::array();
    for (const auto& key : unapplied_keys) {
        unapplied.push_back(record_digest(m_key, rule->second.rule, key));
    }
    append(json{{"type", "outcome"},
                {"batch", batch_id},
                {"committed", true},
                {"count", count},
                {"kept", std::move(unapplied)}},
           {}, false);
    m_in_flight.erase(rule);
    m_lazy_outcomes.push_back(batch_id);
}

void AuditLog::event(const std::string& type, const json& fields) {
    if (type == "intent" || type == "outcome" || type == "run_start" || type == "run_end") {
        throw std::invalid_argument("audit event type \"" + type + "\" is reserved");
    }
    json line = fields.is_object() ? fields : json::object();
    if (!fields.is_object() && !fields.is_null()) {
        line["detail"] = fields;
    }
    line["type"] = type;
    const std::lock_guard lock(m_mutex);
    append(std::move(line));
}

void AuditLog::run_start(const Config& config, const std::string& mode) {
    json rules = json::array();
    for (const auto& rule : config.rules) {
        rules.push_back(rule.name);
    }
    const std::lock_guard lock(m_mutex);
    append(json{{"type", "run_start"},
                {"config_sha256", config.sha256},
                {"config_files", config.files},
                {"version", k_version},
                {"mode", mode},
                {"rules", std::move(rules)}});
}

void AuditLog::run_end(const std::string& status, const json& summary) {
    const std::lock_guard lock(m_mutex);
    append(json{{"type", "run_end"}, {"status", status}, {"summary", summary}});
}

namespace {

// One pending-keys file (written to a temp file and renamed, so whole). False when it is gone.
bool read_pending_file(const std::string& file, AuditLog::Pending& out) {
    Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ENOENT) {
            return false; // settled meanwhile
        }
        throw_errno("cannot open pending batch file", file, errno);
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
    try {
        const json j = parse_json(text);
        out.batch_id = j.at("batch").get<std::string>();
        BatchIntent& b = out.batch;
        b.rule = j.at("rule").get<std::string>();
        b.datastore = j.at("datastore").get<std::string>();
        b.target = j.contains("target_hex") ? from_hex(j.at("target_hex").get<std::string>())
                                            : j.at("target").get<std::string>();
        b.action = j.at("action").get<std::string>();
        b.cutoff = TimePoint(std::chrono::microseconds(j.at("cutoff_us").get<std::int64_t>()));
        if (j.contains("keys_hex")) {
            for (const auto& h : j.at("keys_hex")) {
                b.keys.push_back(from_hex(h.get<std::string>()));
            }
        } else {
            b.keys = j.at("keys").get<std::vector<std::string>>();
        }
    } catch (const json::exception&) {
        // Written to a temp file and renamed, so this is damage, not a crash: a human must
        // look (the file holds keys, so its content is not quoted here).
        throw std::runtime_error("unreadable pending batch file " + file);
    }
    return true;
}

// A pending-keys file left by another process, and what its log says about the batch.
struct PendingCandidate {
    std::string file;
    AuditLog::Pending pending;
    std::string needle; // "batch":"<id>" as it appears in a line
    bool intent = false;
    bool outcome = false;
};

// The pending files in `dir` not written by this process (batch ids starting `own_prefix`).
// Temp files left by a crash before their rename are removed: no intent can follow them.
std::vector<PendingCandidate> pending_candidates(const std::string& dir,
                                                 const std::string& own_prefix) {
    namespace fs = std::filesystem;
    std::vector<PendingCandidate> candidates;
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string file = entry.path().string();
        if (entry.path().filename().string().rfind(sanitize_file_name(own_prefix), 0) == 0) {
            continue; // ours, possibly still being written by another thread
        }
        if (entry.path().extension() == ".tmp") {
            ::unlink(file.c_str()); // crashed before its rename: no intent can follow it
            continue;
        }
        if (entry.path().extension() != ".json") {
            continue;
        }
        PendingCandidate c;
        c.file = file;
        if (!read_pending_file(file, c.pending)) {
            continue; // settled meanwhile
        }
        if (c.pending.batch_id.rfind(own_prefix, 0) == 0) {
            continue;
        }
        c.needle = R"("batch":)" + json(c.pending.batch_id).dump();
        candidates.push_back(std::move(c));
    }
    return candidates;
}

// Marks which candidates have an intent line and an outcome line in the log at `log_path`.
void find_intents_and_outcomes(const std::string& log_path,
                               std::vector<PendingCandidate>& candidates) {
    // Newest lines first: a crash leftover's intent is normally near the end of the log.
    auto unresolved = candidates.size();
    // Rotated files too, in case the log was rotated between the crash and this start.
    auto files = log_files_oldest_first(log_path);
    std::reverse(files.begin(), files.end());
    for (const auto& file : files) {
        if (unresolved == 0) {
            break;
        }
        visit_lines_backwards(file, [&](const std::string& line) {
            for (auto& c : candidates) {
                if (c.intent || line.find(c.needle) == std::string::npos) {
                    continue;
                }
                LineFields fields;
                if (!parse_fields(line, fields) || !fields.type) {
                    continue;
                }
                if (*fields.type == "outcome") {
                    c.outcome = true;
                } else if (*fields.type == "intent") {
                    c.intent = true;
                    --unresolved;
                }
            }
            return unresolved > 0;
        });
    }
}

// The candidates with an intent and no outcome; the others' files are removed.
std::vector<AuditLog::Pending> unresolved_batches(const std::string& dir,
                                                  std::vector<PendingCandidate>& candidates) {
    std::vector<AuditLog::Pending> out;
    bool removed = false;
    for (auto& c : candidates) {
        if (c.intent && !c.outcome) {
            out.push_back(std::move(c.pending));
        } else {
            // No intent: the crash came before it, nothing was applied. An outcome: the crash came
            // after it, before the file's removal. Either way there is nothing to resolve.
            ::unlink(c.file.c_str());
            removed = true;
        }
    }
    if (removed) {
        fsync_dir(dir);
    }
    return out;
}

} // namespace

std::vector<AuditLog::Pending> AuditLog::pending() const {
    // Two threads recovering at once would race on removing the same leftovers.
    const std::lock_guard recovering(m_pending_mutex);
    // This process's own batches (in flight, or abandoned by an engine error) are not crash
    // leftovers. Every one of them carries this log's run id; another process never does.
    const std::string own_prefix = m_run_id + "-";
    const std::string dir = pending_dir();
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
        return {};
    }
    auto candidates = pending_candidates(dir, own_prefix);
    if (candidates.empty()) {
        return {};
    }
    find_intents_and_outcomes(m_path, candidates);
    return unresolved_batches(dir, candidates);
}

std::vector<AuditLog::Pending> AuditLog::abandoned(const std::string& datastore) {
    std::vector<std::string> ids;
    {
        const std::lock_guard lock(m_mutex);
        for (const auto& [id, batch] : m_in_flight) {
            if (batch.datastore == datastore) {
                ids.push_back(id);
            }
        }
    }
    std::vector<Pending> out;
    for (const auto& id : ids) {
        Pending p;
        if (read_pending_file(pending_file(id), p)) {
            out.push_back(std::move(p));
        }
    }
    return out;
}

void AuditLog::resolve(const Pending& p, bool committed, const std::string& how) {
    const auto count = committed ? static_cast<std::int64_t>(p.batch.keys.size()) : 0;
    const std::lock_guard lock(m_mutex);
    append(json{{"type", "outcome"},
                {"batch", p.batch_id},
                {"committed", committed},
                {"count", count},
                {"recovered", how}});
    m_in_flight.erase(p.batch_id);
    remove_pending(p.batch_id);
}

// --- verify --------------------------------------------------------------------------------

namespace {

// The first line where the chain breaks, and why.
struct ChainBreak {
    std::uint64_t line;
    std::string reason;
};

// Line `mismatch_at`'s prev did not match line mismatch_at - 1. If the next line's prev does not
// match line mismatch_at either, line mismatch_at itself was altered; otherwise the line before
// it was. `next` is that next line, `prev_hash` the SHA-256 of line mismatch_at.
ChainBreak altered_line(std::uint64_t mismatch_at, std::string_view next, bool terminated,
                        const std::string& prev_hash) {
    const std::string at = std::to_string(mismatch_at);
    const std::string before = std::to_string(mismatch_at - 1);
    LineFields f;
    if (terminated && parse_fields(next, f) && f.prev && *f.prev != prev_hash) {
        return {mismatch_at, "line " + at + " was altered: its prev does not match line " + before +
                                 " and its SHA-256 is not the prev of line " +
                                 std::to_string(mismatch_at + 1)};
    }
    return {mismatch_at - 1,
            "line " + before + " was altered: its SHA-256 is not the prev recorded in line " + at};
}

// What is wrong with line n on its own (framing, JSON, required fields, version, seq), if
// anything; `f` holds its fields when nothing is.
std::optional<ChainBreak> malformed_line(std::string_view line, bool terminated, std::uint64_t n,
                                         LineFields& f) {
    const std::string ln = std::to_string(n);
    if (!terminated) {
        return ChainBreak{n, "line " + ln +
                                 " is incomplete (no trailing newline): a torn or truncated write"};
    }
    if (!parse_fields(line, f)) {
        return ChainBreak{n, f.object || f.error_pos != 0
                                 ? "line " + ln + " is not valid JSON (at byte " +
                                       std::to_string(f.error_pos) + ")"
                                 : "line " + ln + " is not a JSON object"};
    }
    for (const auto& [name, present] :
         {std::pair{"v", f.v.has_value()}, std::pair{"seq", f.seq.has_value()},
          std::pair{"ts", f.ts.has_value()}, std::pair{"type", f.type.has_value()},
          std::pair{"prev", f.prev.has_value()}}) {
        if (!present) {
            return ChainBreak{n, "line " + ln + " has no valid \"" + name + "\""};
        }
    }
    if (*f.v != 1) {
        return ChainBreak{n,
                          "line " + ln + " has unsupported format version " + std::to_string(*f.v)};
    }
    if (*f.seq != n) {
        return ChainBreak{n, "line " + ln + " has seq " + std::to_string(*f.seq) + ", expected " +
                                 ln + ": a line was removed, inserted or moved"};
    }
    return std::nullopt;
}

// Line 1 of `path` chains to `prev`: the start of a chain, or the last line of the rotated file
// before it (checked when that file is present; result.note says which).
std::optional<ChainBreak> check_first_link(const std::string& path, const std::string& prev,
                                           VerifyResult& result) {
    if (prev == k_zero_hash) {
        return std::nullopt;
    }
    const std::string rotated = predecessor_of(path);
    const auto last = last_line_of(rotated);
    if (!last) {
        result.note = "line 1 chains to a rotated file (" + rotated +
                      ") that is not present; that link was not checked";
    } else if (sha256_hex(*last) != prev) {
        return ChainBreak{1, "line 1's prev is neither the start of a chain nor the SHA-256 of "
                             "the last line of " +
                                 rotated};
    } else {
        result.note = "line 1 chains to the last line of " + rotated;
    }
    return std::nullopt;
}

void count_line(const LineFields& f, VerifyResult& result) {
    if (*f.type == "run_start") {
        ++result.runs;
    } else if (*f.type == "outcome" && f.committed.value_or(false) && f.count) {
        result.records += static_cast<std::uint64_t>(std::max<std::int64_t>(*f.count, 0));
    }
}

} // namespace

VerifyResult verify_audit_log(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        throw_errno("cannot open audit log", path, errno);
    }
    VerifyResult result;
    auto fail = [&result](ChainBreak at) {
        result.ok = false;
        result.bad_line = at.line;
        result.reason = std::move(at.reason);
        return result;
    };
    ForwardLines lines(fd.get(), path);
    std::string_view line;
    bool terminated = false;
    std::uint64_t n = 0;
    std::string prev_hash;
    std::uint64_t mismatch_at = 0; // a line whose prev did not match: decided by the next line
    while (lines.next(line, terminated)) {
        ++n;
        if (mismatch_at != 0) {
            return fail(altered_line(mismatch_at, line, terminated, prev_hash));
        }
        LineFields f;
        if (auto broken = malformed_line(line, terminated, n, f)) {
            return fail(std::move(*broken));
        }
        if (n == 1) {
            if (auto broken = check_first_link(path, *f.prev, result)) {
                return fail(std::move(*broken));
            }
        } else if (*f.prev != prev_hash) {
            mismatch_at = n;
        }
        prev_hash = sha256_hex(line);
        count_line(f, result);
    }
    if (mismatch_at != 0) {
        return fail({mismatch_at - 1, "line " + std::to_string(mismatch_at - 1) +
                                          " does not hash to the prev recorded in line " +
                                          std::to_string(mismatch_at) +
                                          " (one of the two was altered)"});
    }
    result.lines = n;
    return result;
}

// --- prove ---------------------------------------------------------------------------------

namespace {

constexpr std::string_view k_partition_key = "\"partition\":{";

// The instant a key's partition column holds ("2024-01-15 10:00:00+00", as PostgreSQL prints it).
std::optional<std::int64_t> key_micros(std::string_view key, int index, int columns) {
    std::string text(key);
    if (columns > 1) {
        const json j = json::parse(key, nullptr, false);
        if (!j.is_array() || static_cast<int>(j.size()) != columns || !j[index].is_string()) {
            return std::nullopt;
        }
        text = j[index].get<std::string>();
    }
    // PostgreSQL prints a whole-hour offset as "+00": RFC 3339 wants "+00:00".
    if (text.size() > 3 && (text[text.size() - 3] == '+' || text[text.size() - 3] == '-') &&
        std::isdigit(static_cast<unsigned char>(text.back())) != 0) {
        text += ":00";
    }
    const auto t = parse_timestamp(text, "", find_zone("UTC"));
    if (!t) {
        return std::nullopt;
    }
    return std::chrono::duration_cast<std::chrono::microseconds>(t->time_since_epoch()).count();
}

// An intent of `rule` that emptied a whole partition whose bounds hold the key's partition
// column: it proves the record went, without a digest per key.
std::optional<ProofEntry> partition_proof(std::string_view line, std::string_view rule,
                                          std::string_view key) {
    const json j = json::parse(line.data(), line.data() + line.size(), nullptr, false);
    if (!j.is_object() || j.value("type", "") != "intent" || j.value("rule", "") != rule ||
        !j.contains("partition") || !j["partition"].is_object()) {
        return std::nullopt;
    }
    const auto& p = j["partition"];
    const int index = p.value("key_index", -1);
    const auto t = index < 0 ? std::nullopt : key_micros(key, index, p.value("key_columns", 1));
    if (!t || *t >= p.value("to_us", std::int64_t{0}) ||
        (p.contains("from_us") && *t < p.value("from_us", std::int64_t{0}))) {
        return std::nullopt;
    }
    ProofEntry e;
    e.time = j.value("ts", "");
    e.run_id = j.value("run", "");
    e.action = j.value("action", "");
    e.cutoff = j.value("cutoff", "");
    e.target = j.value("target", "");
    e.batch = j.value("batch", "");
    return e;
}

} // namespace

std::vector<ProofEntry> prove(const std::string& path, const Secret& audit_key,
                              std::string_view rule, std::string_view key) {
    const std::string digest = record_digest(audit_key, rule, key);
    const std::string quoted = "\"" + digest + "\"";
    std::vector<ProofEntry> out;
    std::map<std::string, ProofEntry> waiting; // batch -> intent naming the record, no outcome yet
    for (const auto& file : log_files_oldest_first(path)) {
        Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0) {
            throw_errno("cannot open audit log", file, errno);
        }
        ForwardLines lines(fd.get(), file);
        std::string_view line;
        bool terminated = false;
        while (lines.next(line, terminated) && terminated) {
            if (line.ends_with(k_outcome_suffix)) {
                if (waiting.empty()) {
                    continue;
                }
                const json j = json::parse(line.data(), line.data() + line.size(), nullptr, false);
                if (!j.is_object() || !j.contains("batch") || !j["batch"].is_string()) {
                    continue;
                }
                const auto it = waiting.find(j["batch"].get<std::string>());
                if (it == waiting.end()) {
                    continue;
                }
                const bool left_alone =
                    j.contains("kept") && j["kept"].is_array() &&
                    std::find(j["kept"].begin(), j["kept"].end(), json(digest)) != j["kept"].end();
                if (j.value("committed", false) && !left_alone) {
                    it->second.committed_at = j.value("ts", "");
                    it->second.recovered = j.value("recovered", "");
                    out.push_back(std::move(it->second));
                }
                waiting.erase(it); // a rolled-back batch proves nothing
                continue;
            }
            if (line.find(k_partition_key) != std::string_view::npos) {
                if (auto e = partition_proof(line, rule, key)) {
                    waiting[e->batch] = std::move(*e);
                    continue;
                }
            }
            if (!line_has_digest(line, digest, quoted)) {
                continue;
            }
            const json j = json::parse(line.data(), line.data() + line.size(), nullptr, false);
            if (!j.is_object() || j.value("type", "") != "intent" || j.value("rule", "") != rule ||
                !j.contains("digests") || !j["digests"].is_array()) {
                continue;
            }
            const auto& digests = j["digests"];
            if (std::find(digests.begin(), digests.end(), json(digest)) == digests.end()) {
                continue;
            }
            ProofEntry e;
            e.time = j.value("ts", "");
            e.run_id = j.value("run", "");
            e.action = j.value("action", "");
            e.cutoff = j.value("cutoff", "");
            e.target = j.value("target", "");
            e.batch = j.value("batch", "");
            waiting[e.batch] = std::move(e);
        }
    }
    return out;
}

} // namespace retentiond

// --- last successes --------------------------------------------------------------------------

namespace retentiond {

std::map<std::string, TimePoint> last_successes(const std::string& path,
                                                const std::set<std::string>& rules) {
    std::map<std::string, TimePoint> found;
    const date::time_zone* utc = find_zone("UTC");
    // Newest first: the current file, then the file logrotate renamed it to. Older files are
    // normally compressed; a rule whose last success is that old runs at start anyway.
    for (const std::string& file : {path, path + ".1"}) {
        if (found.size() == rules.size()) {
            break;
        }
        visit_lines_backwards(file, [&](const std::string& line) {
            // Keys are sorted and compact: a cheap filter before parsing the few lines that
            // matter (intents with thousands of digests are never parsed).
            if (line.find(R"("type":"rule_end")") == std::string::npos ||
                line.find(R"("ok":true)") == std::string::npos) {
                return true;
            }
            const json j = json::parse(line, nullptr, false);
            if (!j.is_object() || j.value("type", "") != "rule_end" || !j.value("ok", false)) {
                return true;
            }
            const auto rule = j.value("rule", "");
            if (rules.count(rule) == 0 || found.count(rule) != 0) {
                return true;
            }
            if (const auto at = parse_timestamp(j.value("ts", ""), "", utc)) {
                found.emplace(rule, *at);
            }
            return found.size() < rules.size();
        });
    }
    return found;
}

void for_each_audit_line(const std::string& path,
                         const std::function<void(const nlohmann::json&)>& on_line) {
    for (const auto& file : log_files_oldest_first(path)) {
        Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0) {
            if (errno == ENOENT && file == path) {
                return; // no log yet: no lines
            }
            throw_errno("cannot open audit log", file, errno);
        }
        ForwardLines lines(fd.get(), file);
        std::string_view line;
        bool terminated = false;
        while (lines.next(line, terminated) && terminated) {
            const json j = json::parse(line.data(), line.data() + line.size(), nullptr, false);
            if (j.is_object()) {
                on_line(j);
            }
        }
    }
}

} // namespace retentiond
