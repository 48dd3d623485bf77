// kind: files (policy-format.md, "kind files"): CSV, JSON Lines and whole files under a root.
//
// A purge reads every matched file once (scan()): it parses and decides each record, counts it
// for the limits, and streams the new content into a temp file beside the old one, created at the
// first due record. Only once every file's pass is done and the limits allow the run are the temps
// committed (commit(): journal intents, fsync, the old one's mode and owner, rename over it, the
// directory fsynced, outcome). A refusal, a record that does not parse or any error drops the temp
// and leaves the file as it was. Past a staging budget (keys in memory, open temps, their size),
// or when a temp cannot be written, a file is only counted in its pass and rewritten afterwards
// by a second read (rewrite(), the two-pass path). Kept records are copied byte for byte from the
// input, so a rewritten file differs only by the records that were due.
#include "csv.hpp"
#include "files_kind.hpp"
#include "files_writer.hpp"
#include "retentiond/anonymize.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/crypto.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/escape.hpp"
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
#include <regex>
#include <set>
#include <system_error>
#include <unordered_set>

namespace retentiond {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::size_t k_write_block = std::size_t{1} << 20;
constexpr std::size_t k_max_line = std::size_t{64} << 20;
constexpr std::size_t k_max_notes = 200;

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

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
    void reset() {
        if (m_fd >= 0) {
            ::close(m_fd);
            m_fd = -1;
        }
    }

private:
    int m_fd = -1;
};

Fd open_read(const fs::path& p) {
    const int fd = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        throw_errno("open");
    }
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return Fd(fd);
}

void fsync_dir(const fs::path& dir) {
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.get() < 0 || ::fsync(d.get()) != 0) {
        throw_errno("fsync directory");
    }
}

// True when `path` is a temp copy no live rewrite holds (its lock is free), and it was removed.
bool remove_if_stale(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
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
void copy_prefix(int in, int out, off_t n) {
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

std::vector<std::string> split(std::string_view s, char sep) {
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
bool glob_match(const std::vector<std::string>& pat, std::size_t pi,
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

struct Match {
    fs::path abs;
    std::string rel;
};

// --- time ----------------------------------------------------------------------------------

struct Timing {
    TimePoint now{};
    TimePoint cutoff{};
    std::optional<Forecast> forecast; // due within 7 / 30 / 90 calendar days
    std::chrono::microseconds retain_approx{};
    bool null_due = false;
};

Timing make_timing(const Rule& rule, const date::time_zone* tz) {
    Timing t;
    t.now = now_utc();
    t.cutoff = subtract(t.now, rule.retain, tz);
    t.forecast.emplace(t.now, rule.retain, tz);
    t.retain_approx = rule.retain.approx();
    t.null_due = rule.clock_null_due;
    return t;
}

enum class Verdict { kept, due, held, no_clock };

Verdict classify(const Timing& t, const std::optional<TimePoint>& clock, bool held) {
    if (!clock) {
        if (!t.null_due) {
            return Verdict::no_clock;
        }
        return held ? Verdict::held : Verdict::due;
    }
    if (*clock <= t.cutoff) {
        return held ? Verdict::held : Verdict::due;
    }
    return Verdict::kept;
}

// Adds one record to the dry-run figures. verdict is final (an already anonymized record is kept).
void tally(DryRun& d, const Timing& t, const std::optional<TimePoint>& clock, Verdict v) {
    ++d.in_scope;
    switch (v) {
    case Verdict::due:
        ++d.due;
        break;
    case Verdict::held:
        ++d.held;
        break;
    case Verdict::no_clock:
        ++d.no_clock;
        break;
    case Verdict::kept:
        break;
    }
    if (!clock) {
        return;
    }
    if (!d.oldest_clock || *clock < *d.oldest_clock) {
        d.oldest_clock = clock;
    }
    if (v == Verdict::kept && *clock > t.cutoff) {
        t.forecast->count(*clock, d);
    }
    if (d.age_buckets.size() != 17) {
        d.age_buckets.assign(17, 0);
    }
    const auto age = t.now - *clock;
    std::size_t bucket = 16;
    if (age < 0us) {
        bucket = 0;
    } else if (t.retain_approx > 0us) {
        bucket = static_cast<std::size_t>(std::min<std::int64_t>(16, (age * 8) / t.retain_approx));
    }
    ++d.age_buckets[bucket];
}

void merge(DryRun& into, const DryRun& from) {
    into.in_scope += from.in_scope;
    into.due += from.due;
    into.held += from.held;
    into.no_clock += from.no_clock;
    into.due_7d += from.due_7d;
    into.due_30d += from.due_30d;
    into.due_90d += from.due_90d;
    if (from.oldest_clock && (!into.oldest_clock || *from.oldest_clock < *into.oldest_clock)) {
        into.oldest_clock = from.oldest_clock;
    }
    if (!from.age_buckets.empty()) {
        if (into.age_buckets.size() != 17) {
            into.age_buckets.assign(17, 0);
        }
        for (std::size_t i = 0; i < 17; ++i) {
            into.age_buckets[i] += from.age_buckets[i];
        }
    }
}

// --- anonymization idempotence -----------------------------------------------------------------

bool is_hex(std::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Whether a value already carries the strategy's output, so a second run leaves it (hmac and
// email_domain are not idempotent: re-applying them would change the value on every run).
bool looks_anonymized(const Strategy& s, std::string_view v, const Secret& key,
                      const date::time_zone* tz) {
    if (v.empty()) {
        return s.kind != Strategy::Kind::fixed || s.fixed_value.empty();
    }
    switch (s.kind) {
    case Strategy::Kind::null_value:
        return false;
    case Strategy::Kind::fixed:
        return v == s.fixed_value;
    case Strategy::Kind::hmac:
        return v.size() == 64 && is_hex(v);
    case Strategy::Kind::email_domain:
        return v.size() > 18 && v.substr(0, 5) == "anon-" && is_hex(v.substr(5, 12)) &&
               v[17] == '@';
    default: {
        const auto out = anonymize_text(s, v, key, tz);
        return out && *out == v;
    }
    }
}

// --- record parsers --------------------------------------------------------------------------

using csv::ParseError;

struct RuleView {
    const Rule& rule;
    const FilesRule& spec;
    const Secret& key;
    const date::time_zone* tz;
};

// One format's records, one at a time. Non-records (the CSV header, blank lines) are passed
// through: record() is false for them.
class RecordParser {
public:
    virtual ~RecordParser() = default;
    virtual bool next() = 0; // throws ParseError
    // The next record's raw bytes only, for a record pass 1 has already parsed and kept.
    virtual bool skip() { return next(); }
    virtual bool record() const = 0;
    virtual std::string_view raw() const = 0;
    virtual std::uint64_t line() const = 0;
    virtual std::optional<TimePoint> clock() = 0; // throws ParseError when it does not parse
    virtual bool held() = 0;
    virtual std::string key() = 0;
    // Whether anonymizing changes the record; with out, appends the new record bytes.
    virtual bool anonymize(std::string* out) = 0;
};

class CsvParser : public RecordParser {
public:
    CsvParser(csv::ReadFn read, const RuleView& v)
        : m_view(v), m_reader(std::move(read), v.spec.delimiter),
          m_time(v.spec.clock.format, v.tz) {}

    bool next() override {
        if (!m_reader.next(m_rec)) {
            return false;
        }
        if (m_header_fields == 0) {
            read_header();
            m_is_record = false;
            return true;
        }
        m_is_record = !m_rec.blank();
        if (m_is_record && m_rec.size() != m_header_fields) {
            throw ParseError(m_rec.line(), std::to_string(m_rec.size()) +
                                               " fields, the header has " +
                                               std::to_string(m_header_fields));
        }
        return true;
    }
    bool skip() override {
        if (m_header_fields == 0) {
            return next();
        }
        if (!m_reader.next_raw(m_rec)) {
            return false;
        }
        m_is_record = !m_rec.blank();
        return true;
    }
    bool record() const override { return m_is_record; }
    std::string_view raw() const override { return m_rec.raw(); }
    std::uint64_t line() const override { return m_rec.line(); }
    std::optional<TimePoint> clock() override {
        if (m_clock_col < 0) {
            return std::nullopt;
        }
        const auto text = value(m_clock_col);
        if (text.empty()) {
            return std::nullopt;
        }
        auto t = m_time.parse(text);
        if (!t) {
            throw ParseError(m_rec.line(),
                             "unparseable timestamp in column \"" + m_view.spec.clock.field + "\"");
        }
        return t;
    }
    bool held() override {
        return m_hold_col >= 0 && value(m_hold_col) == m_view.spec.hold->equals;
    }
    std::string key() override { return std::string(value(m_key_col)); }
    bool anonymize(std::string* out) override {
        bool changed = false;
        for (std::size_t i = 0; i < m_anon.size(); ++i) {
            const auto& [col, strategy] = m_anon[i];
            const auto v = value(col);
            m_new[i].reset();
            if (looks_anonymized(*strategy, v, m_view.key, m_view.tz)) {
                continue;
            }
            auto replaced = anonymize_text(*strategy, v, m_view.key, m_view.tz).value_or("");
            if (replaced != v) {
                m_new[i] = std::move(replaced);
                changed = true;
            }
        }
        if (!changed || out == nullptr) {
            return changed;
        }
        const char d = m_reader.delimiter();
        for (std::size_t f = 0; f < m_rec.size(); ++f) {
            if (f > 0) {
                out->push_back(d);
            }
            const std::string* repl = nullptr;
            for (std::size_t i = 0; i < m_anon.size(); ++i) {
                if (m_anon[i].first == static_cast<int>(f) && m_new[i]) {
                    repl = &*m_new[i];
                }
            }
            if (repl != nullptr) {
                csv::append_field(*out, *repl, d);
            } else {
                out->append(m_rec.raw_field(f)); // untouched fields keep their exact bytes
            }
        }
        out->append(m_rec.line_ending());
        return true;
    }

private:
    std::string_view value(int col) {
        return m_rec.value(static_cast<std::size_t>(col), m_scratch);
    }

    int column(const std::string& name) const {
        const auto it = std::find(m_names.begin(), m_names.end(), name);
        if (it == m_names.end()) {
            throw ParseError(m_rec.line(), "no column \"" + name + "\" in the header");
        }
        return static_cast<int>(it - m_names.begin());
    }

    void read_header() {
        m_header_fields = m_rec.size();
        for (std::size_t i = 0; i < m_rec.size(); ++i) {
            m_names.push_back(m_rec.value(i));
        }
        const auto& spec = m_view.spec;
        if (spec.clock.kind == FilesClock::Kind::field) {
            m_clock_col = column(spec.clock.field);
        }
        if (spec.hold) {
            m_hold_col = column(spec.hold->field);
        }
        m_key_col = spec.key_field.empty() ? 0 : column(spec.key_field);
        if (m_view.rule.action == Action::anonymize) {
            for (const auto& fsg : m_view.rule.anonymize) {
                m_anon.emplace_back(column(fsg.field), &fsg.strategy);
            }
            m_new.resize(m_anon.size());
        }
    }

    RuleView m_view;
    csv::Reader m_reader;
    TimestampMemo m_time;
    csv::Record m_rec;
    std::string m_scratch;
    std::vector<std::string> m_names;
    std::size_t m_header_fields = 0;
    bool m_is_record = false;
    int m_clock_col = -1;
    int m_hold_col = -1;
    int m_key_col = 0;
    std::vector<std::pair<int, const Strategy*>> m_anon;
    std::vector<std::optional<std::string>> m_new;
};

std::vector<std::string> dotted(std::string_view path) {
    return split(path, '.');
}

const nlohmann::json* lookup(const nlohmann::json& j, const std::vector<std::string>& path) {
    const nlohmann::json* node = &j;
    for (const auto& p : path) {
        if (!node->is_object()) {
            return nullptr;
        }
        const auto it = node->find(p);
        if (it == node->end()) {
            return nullptr;
        }
        node = &*it;
    }
    return node;
}

std::string scalar(const nlohmann::json& j) {
    return j.is_string() ? j.get<std::string>() : j.dump();
}

// JSON Lines: one object per line. A blank (whitespace-only) line is not a record: it is kept as
// is. The last line may lack its line ending.
class JsonlParser : public RecordParser {
public:
    JsonlParser(csv::ReadFn read, const RuleView& v)
        : m_view(v), m_read(std::move(read)), m_buf(csv::Reader::k_block),
          m_time(v.spec.clock.format, v.tz) {
        const auto& spec = v.spec;
        if (spec.clock.kind == FilesClock::Kind::field) {
            m_clock_path = dotted(spec.clock.field);
        }
        if (spec.hold) {
            m_hold_path = dotted(spec.hold->field);
        }
        m_key_path = dotted(spec.key_field.empty() ? "id" : spec.key_field);
    }

    bool next() override {
        m_pos += m_raw.size();
        m_line += m_raw.empty() ? 0 : 1;
        for (;;) {
            const void* nl = std::memchr(m_buf.data() + m_pos, '\n', m_len - m_pos);
            if (nl != nullptr || (m_eof && m_pos < m_len)) {
                const std::size_t end =
                    nl != nullptr
                        ? static_cast<std::size_t>(static_cast<const char*>(nl) - m_buf.data()) + 1
                        : m_len;
                m_raw = std::string_view(m_buf.data() + m_pos, end - m_pos);
                break;
            }
            if (m_eof) {
                return false;
            }
            fill();
        }
        auto body = m_raw;
        if (!body.empty() && body.back() == '\n') {
            body.remove_suffix(1);
        }
        if (!body.empty() && body.back() == '\r') {
            body.remove_suffix(1);
        }
        m_is_record = body.find_first_not_of(" \t\r") != std::string_view::npos;
        if (!m_is_record) {
            return true;
        }
        m_ending = m_raw.substr(body.size());
        m_anon_done = false;
        m_doc = nlohmann::json::parse(body, nullptr, false);
        if (m_doc.is_discarded()) {
            throw ParseError(line(), "invalid JSON");
        }
        if (!m_doc.is_object()) {
            throw ParseError(line(), "not a JSON object");
        }
        return true;
    }
    bool record() const override { return m_is_record; }
    std::string_view raw() const override { return m_raw; }
    std::uint64_t line() const override { return m_line; }
    std::optional<TimePoint> clock() override {
        if (m_clock_path.empty()) {
            return std::nullopt;
        }
        const auto* v = lookup(m_doc, m_clock_path);
        if (v == nullptr || v->is_null() || (v->is_string() && v->get<std::string>().empty())) {
            return std::nullopt;
        }
        std::optional<TimePoint> t;
        if (v->is_string()) {
            t = m_time.parse(v->get_ref<const std::string&>());
        } else if (v->is_number()) { // epoch seconds
            const double s = v->get<double>();
            if (std::isfinite(s)) {
                t = TimePoint(std::chrono::microseconds(std::llround(s * 1e6)));
            }
        }
        if (!t) {
            throw ParseError(line(),
                             "unparseable timestamp in \"" + m_view.spec.clock.field + "\"");
        }
        return t;
    }
    bool held() override {
        if (m_hold_path.empty()) {
            return false;
        }
        const auto* v = lookup(m_doc, m_hold_path);
        return v != nullptr && !v->is_null() && scalar(*v) == m_view.spec.hold->equals;
    }
    std::string key() override {
        const auto* v = lookup(m_doc, m_key_path);
        return v == nullptr ? std::string() : scalar(*v);
    }
    bool anonymize(std::string* out) override {
        // Works on a copy, once per record: the check (pass 1) and the rewrite must agree.
        if (!m_anon_done) {
            m_anon_done = true;
            m_anon_out.clear();
            nlohmann::json doc = m_doc;
            bool changed = false;
            for (const auto& fsg : m_view.rule.anonymize) {
                const auto path = dotted(fsg.field);
                const auto* before = lookup(doc, path);
                if (before == nullptr || before->is_null()) {
                    continue;
                }
                if (before->is_string() &&
                    looks_anonymized(fsg.strategy, before->get<std::string>(), m_view.key,
                                     m_view.tz)) {
                    continue;
                }
                const nlohmann::json copy = *before;
                anonymize_json(doc, fsg, m_view.key, m_view.tz);
                changed = changed || *lookup(doc, path) != copy;
            }
            if (changed) {
                m_anon_out = doc.dump();
                m_anon_out.append(m_ending);
            }
        }
        if (m_anon_out.empty()) {
            return false;
        }
        if (out != nullptr) {
            out->append(m_anon_out);
        }
        return true;
    }

private:
    void fill() {
        if (m_pos > 0) {
            std::memmove(m_buf.data(), m_buf.data() + m_pos, m_len - m_pos);
            m_len -= m_pos;
            m_pos = 0;
        }
        if (m_len == m_buf.size()) {
            if (m_buf.size() >= k_max_line) {
                throw ParseError(m_line, "line longer than 64 MiB");
            }
            m_buf.resize(std::min(m_buf.size() * 2, k_max_line));
        }
        const std::size_t got = m_read(m_buf.data() + m_len, m_buf.size() - m_len);
        m_eof = got == 0;
        m_len += got;
    }

    RuleView m_view;
    csv::ReadFn m_read;
    std::vector<char> m_buf;
    TimestampMemo m_time;
    std::size_t m_pos = 0;
    std::size_t m_len = 0;
    bool m_eof = false;
    std::string_view m_raw;
    std::string_view m_ending;
    std::uint64_t m_line = 1;
    bool m_is_record = false;
    nlohmann::json m_doc;
    bool m_anon_done = false;
    std::string m_anon_out;
    std::vector<std::string> m_clock_path;
    std::vector<std::string> m_hold_path;
    std::vector<std::string> m_key_path;
};

std::unique_ptr<RecordParser> make_parser(csv::ReadFn read, const RuleView& v) {
    if (v.spec.format == FilesRule::Format::jsonl) {
        return std::make_unique<JsonlParser>(std::move(read), v);
    }
    return std::make_unique<CsvParser>(std::move(read), v);
}

// Due, after holds and after "already anonymized" records.
Verdict decide(RecordParser& p, const Timing& t, const Rule& rule,
               std::optional<TimePoint>& clock) {
    clock = p.clock();
    Verdict v = classify(t, clock, p.held());
    if (v == Verdict::due && rule.action == Action::anonymize && !p.anonymize(nullptr)) {
        v = Verdict::kept;
    }
    return v;
}

// --- per-file state --------------------------------------------------------------------------

// What tells that a file changed since we read it. ctime is in it because a writer can put the
// mtime back (utimensat) but not the ctime: an edit in place that keeps the size and restores the
// mtime is still seen.
struct FileIdentity {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    timespec mtime{};
    timespec ctime{};
    bool operator==(const FileIdentity& o) const {
        return dev == o.dev && ino == o.ino && size == o.size && mtime.tv_sec == o.mtime.tv_sec &&
               mtime.tv_nsec == o.mtime.tv_nsec && ctime.tv_sec == o.ctime.tv_sec &&
               ctime.tv_nsec == o.ctime.tv_nsec;
    }
};

FileIdentity identity(const struct stat& st) {
    return {st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
}

// Which records pass 1 found due, one bit per record in file order, so that pass 2 only finds
// the boundaries of the kept ones. Bounded: records past the budget are decided again in pass 2.
class DueBits {
public:
    std::uint64_t covered() const { return m_covered; }
    bool due(std::uint64_t i) const { return (m_words[i / 64] >> (i % 64) & 1U) != 0; }
    // Returns false once the budget (records, shared by all files of a run) is spent.
    bool push(bool due, std::uint64_t& budget) {
        if (budget == 0) {
            return false;
        }
        --budget;
        if (m_covered % 64 == 0) {
            m_words.push_back(0);
        }
        if (due) {
            m_words.back() |= std::uint64_t{1} << (m_covered % 64);
        }
        ++m_covered;
        return true;
    }

private:
    std::vector<std::uint64_t> m_words;
    std::uint64_t m_covered = 0;
};

// 64 Mi records: 8 MiB of bits per run at most.
constexpr std::uint64_t k_due_bits_budget = std::uint64_t{64} << 20;

// What a purge may hold between the single pass over each file and the renames: the due keys
// (for the journal's intents, written only once the limits allow the run) and open temp copies.
// Past any of these, a file is only counted in its pass and rewritten later by the two-pass path
// (read again, one temp at a time), so memory and the disk space held by temps stay bounded
// whatever the number and size of the files.
struct StagingBudget {
    std::size_t key_bytes = std::size_t{16} << 20; // due keys of all staged files
    std::size_t files = 16;                        // open temp copies (an fd and a lock each)
    // Input bytes of the staged files: their temps are all on disk at once. The first file is
    // staged whatever its size (a rewrite needs that much room anyway).
    std::uint64_t bytes = std::uint64_t{4} << 30;
    std::size_t staged = 0;

    bool allows(std::uint64_t size) const { return files > 0 && (staged == 0 || size <= bytes); }
    void take(std::uint64_t size) {
        --files;
        ++staged;
        bytes -= std::min(size, bytes);
    }
};

// Due keys in file order, in chunks that are never reallocated (no copy, no doubling): each key
// is a varint length and its bytes. The chunks' capacity is charged to StagingBudget::key_bytes.
class KeyArena {
public:
    explicit KeyArena(std::size_t* budget) : m_budget(budget) {}
    ~KeyArena() { clear(); }
    KeyArena(const KeyArena&) = delete;
    KeyArena& operator=(const KeyArena&) = delete;

    // False (nothing added) once the budget is spent.
    bool add(std::string_view key) {
        char len[10];
        std::size_t n = 0;
        for (std::uint64_t v = key.size();; v >>= 7) {
            len[n++] = static_cast<char>((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
            if (v < 0x80) {
                break;
            }
        }
        const std::size_t need = n + key.size();
        if (m_chunks.empty() || m_chunks.back().capacity() - m_chunks.back().size() < need) {
            const std::size_t cap = std::max(k_chunk, need);
            if (*m_budget < cap) {
                return false;
            }
            *m_budget -= cap;
            m_charged += cap;
            m_chunks.emplace_back();
            m_chunks.back().reserve(cap);
        }
        m_chunks.back().append(len, n).append(key);
        ++m_count;
        return true;
    }
    template <class F> void for_each(F&& f) const {
        for (const auto& chunk : m_chunks) {
            std::size_t i = 0;
            while (i < chunk.size()) {
                std::uint64_t len = 0;
                for (int shift = 0;; shift += 7) {
                    const auto b = static_cast<unsigned char>(chunk[i++]);
                    len |= std::uint64_t{b & 0x7FU} << shift;
                    if ((b & 0x80U) == 0) {
                        break;
                    }
                }
                f(std::string_view(chunk).substr(i, len));
                i += len;
            }
        }
    }
    std::int64_t count() const { return m_count; }
    void clear() {
        *m_budget += m_charged;
        m_charged = 0;
        m_count = 0;
        m_chunks.clear();
    }

private:
    static constexpr std::size_t k_chunk = std::size_t{256} << 10;
    std::size_t* m_budget;
    std::size_t m_charged = 0;
    std::int64_t m_count = 0;
    std::vector<std::string> m_chunks;
};

// One file's single pass, ready to replace it: the temp copy already holds the new content
// (written, not yet fsynced), the keys are those of the records it leaves out or anonymizes.
struct Staged {
    explicit Staged(std::size_t* key_budget) : keys(key_budget) {}
    std::optional<TempFile> tmp; // empty when the file is to be deleted
    bool remove_file = false;
    struct stat st {}; // the original's, at the pass: mode and owner for the temp
    KeyArena keys;
};

struct Scan {
    Match file;
    FileIdentity id;
    DryRun figures;
    std::int64_t records = 0;
    std::int64_t due = 0;
    DueBits bits;                   // filled by purge's pass, for the two-pass path
    std::unique_ptr<Staged> staged; // the single pass's output; null: rewrite() reads again
    bool changed = false;           // the file moved while its pass read it
    std::string error;              // "rel:line: reason"
};

std::string describe(const std::exception& e) {
    if (const auto* se = dynamic_cast<const std::system_error*>(&e)) {
        return std::string(se->what());
    }
    return e.what();
}

// Collects due keys into journal batches of batch_size.
class Batcher {
public:
    Batcher(BatchJournal* journal, BatchIntent base, std::size_t size)
        : m_journal(journal), m_base(std::move(base)), m_size(std::max<std::size_t>(size, 1)) {}
    void add(std::string key) {
        m_base.keys.push_back(std::move(key));
        if (m_base.keys.size() >= m_size) {
            flush();
        }
    }
    void flush() {
        if (m_base.keys.empty()) {
            return;
        }
        const auto n = static_cast<std::int64_t>(m_base.keys.size());
        m_batches.emplace_back(m_journal != nullptr ? m_journal->intent(m_base) : std::string(), n);
        m_base.keys.clear();
    }
    void outcome(bool committed) {
        if (m_journal == nullptr) {
            return;
        }
        for (const auto& [id, n] : m_batches) {
            m_journal->outcome(id, committed, committed ? n : 0);
        }
    }
    std::int64_t batches() const { return static_cast<std::int64_t>(m_batches.size()); }

private:
    BatchJournal* m_journal;
    BatchIntent m_base;
    std::size_t m_size;
    std::vector<std::pair<std::string, std::int64_t>> m_batches;
};

class FilesEngine : public Engine {
public:
    FilesEngine(const Datastore& store, const Config& config) : m_name(store.name) {
        fs::path root(store.root);
        if (root.is_relative() && !config.main_file.empty()) {
            root = fs::path(config.main_file).parent_path() / root;
        }
        m_root = root;
        try {
            m_tz = find_zone(config.daemon.timezone);
        } catch (const std::exception&) {
            m_tz = find_zone("UTC");
        }
    }

    std::vector<Diagnostic> check(const Rule& rule) override {
        std::vector<Diagnostic> out;
        auto problem = [&](std::string msg) {
            out.push_back({rule.pos, rule.name, std::move(msg)});
        };
        std::error_code ec;
        if (!fs::is_directory(m_root, ec)) {
            problem("datastore \"" + m_name + "\": root " + m_root.string() +
                    " is not a readable directory");
        }
        const auto& spec = rule.files();
        if (spec.format == FilesRule::Format::whole) {
            if (spec.clock.kind == FilesClock::Kind::field) {
                problem("format whole takes clock: mtime or clock: { filename: ... }");
            }
            if (rule.action == Action::anonymize) {
                problem("format whole cannot anonymize: a whole file is one record, use delete");
            }
            if (spec.hold) {
                problem("format whole has no fields to hold on");
            }
        } else if (spec.clock.kind != FilesClock::Kind::field) {
            problem("format csv and jsonl take clock: { field: ... }");
        }
        if (spec.clock.kind == FilesClock::Kind::filename) {
            try {
                if (std::regex(spec.clock.filename).mark_count() < 1) {
                    problem("clock.filename needs one capture group");
                }
            } catch (const std::regex_error&) {
                problem("clock.filename is not a valid regular expression");
            }
        }
        return out;
    }

    DryRun dry_run(const Rule& rule, const RunContext& ctx) override {
        const auto* tz = zone(ctx);
        const Timing t = make_timing(rule, tz);
        DryRun d;
        d.now = t.now;
        d.cutoff = t.cutoff;
        d.age_buckets.assign(17, 0);
        const auto files = list(rule, d.notes);
        d.counters["files"] = static_cast<std::int64_t>(files.size());
        d.counters["files.unparseable"] = 0;
        if (rule.files().format == FilesRule::Format::whole) {
            const WholeClock wc(rule, tz);
            for (const auto& f : files) {
                scan_whole(wc, f, t, d, nullptr);
            }
            return d;
        }
        std::int64_t to_rewrite = 0;
        for (const auto& f : files) {
            const auto s = scan(rule, f, t, ctx);
            if (!s.error.empty()) {
                ++d.unparseable;
                ++d.counters["files.unparseable"];
                note(d.notes, s.error);
                continue;
            }
            merge(d, s.figures);
            to_rewrite += s.due > 0 ? 1 : 0;
            note(d.notes, f.rel + ": " + std::to_string(s.records) + " records, " +
                              std::to_string(s.figures.due) + " due, " +
                              std::to_string(s.figures.held) + " held, " +
                              std::to_string(s.figures.no_clock) + " without clock" +
                              (s.figures.oldest_clock
                                   ? ", oldest " + format_utc_seconds(*s.figures.oldest_clock)
                                   : std::string()));
        }
        d.counters["files.to_rewrite"] = to_rewrite;
        return d;
    }

    RunResult purge(const Rule& rule, RunContext& ctx) override {
        const auto* tz = zone(ctx);
        const Timing t = make_timing(rule, tz);
        RunResult r;
        r.cutoff = t.cutoff;
        std::vector<std::string> notes;
        const auto files = list(rule, notes, /*sweep_stale_temps=*/true);
        for (const auto& n : notes) {
            event(ctx, "skipped", {{"rule", rule.name}, {"reason", n}});
        }
        if (rule.files().format == FilesRule::Format::whole) {
            return purge_whole(rule, ctx, t, files, r);
        }

        // One pass over every file counts everything and stages the new content in temp
        // copies; the limits are checked over all files before any of them is replaced. A
        // refusal, an error or a stop drops the staged temps (their destructors unlink them).
        StagingBudget staging; // outlives scans: their key arenas give their bytes back to it
        std::vector<Scan> scans;
        DryRun total;
        std::vector<std::string> unparseable;
        std::uint64_t bits_budget = k_due_bits_budget;
        ctx.phase("counting");
        for (const auto& f : files) {
            auto s = scan(rule, f, t, ctx, &bits_budget, &staging);
            if (!s.error.empty()) {
                unparseable.push_back(s.error);
                event(ctx, "unparseable",
                      {{"rule", rule.name}, {"target", f.rel}, {"reason", s.error}});
                continue;
            }
            merge(total, s.figures);
            if (s.due > 0) {
                scans.push_back(std::move(s));
            }
        }
        r.due = total.due;
        r.counters["files"] = static_cast<std::int64_t>(files.size());
        r.counters["files.unparseable"] = static_cast<std::int64_t>(unparseable.size());
        if (refuse(rule, ctx, total.due, total.in_scope, r)) {
            return r;
        }

        // Replace the files that hold due records: staged ones by their temp, the others by a
        // second read (rewrite()).
        std::vector<std::string> failures;
        std::int64_t rewritten = 0;
        std::int64_t deleted = 0;
        ctx.phase("batches");
        for (auto& s : scans) {
            if (ctx.stop_requested && ctx.stop_requested()) {
                r.status = RunResult::Status::stopped;
                r.message = "stopped on request after " + std::to_string(r.processed) + " records";
                return r;
            }
            try {
                Rewrite outcome = Rewrite::changed;
                if (s.changed) {
                    outcome = Rewrite::changed;
                } else if (s.staged) {
                    outcome = commit(rule, ctx, t, s, r);
                } else {
                    // Past the staging budget, or its temp could not be written: read again.
                    r.counters["files.two_pass"] += 1;
                    outcome = rewrite(rule, ctx, t, s, r);
                }
                rewritten += outcome == Rewrite::rewritten ? 1 : 0;
                deleted += outcome == Rewrite::deleted ? 1 : 0;
                if (outcome == Rewrite::changed) {
                    r.counters["files.changed_during_rewrite"] += 1;
                    event(ctx, "skipped",
                          {{"rule", rule.name},
                           {"target", s.file.rel},
                           {"reason", "changed during rewrite, retried next run"}});
                }
            } catch (const ParseError& e) {
                unparseable.push_back(s.file.rel + ":" + std::to_string(e.line()) + ": " +
                                      e.reason());
            } catch (const std::exception& e) {
                failures.push_back(s.file.rel +
                                   ": rewrite failed, original left untouched: " + describe(e));
                event(ctx, "error",
                      {{"rule", rule.name}, {"target", s.file.rel}, {"reason", failures.back()}});
                break; // disk full or I/O errors: the next file would fail the same way
            }
            if (ctx.on_progress) {
                ctx.on_progress(r.processed, r.due);
            }
        }
        r.counters["files.rewritten"] = rewritten;
        r.counters["files.deleted"] = deleted;
        if (!failures.empty() || !unparseable.empty()) {
            r.status = RunResult::Status::failed;
            r.data_error = failures.empty();
            std::string msg;
            for (const auto& f : failures) {
                msg += (msg.empty() ? "" : "; ") + f;
            }
            if (!unparseable.empty()) {
                msg += (msg.empty() ? "" : "; ") + std::to_string(unparseable.size()) +
                       " file(s) left unchanged, a record does not parse: ";
                for (std::size_t i = 0; i < unparseable.size() && i < 5; ++i) {
                    msg += (i > 0 ? ", " : "") + unparseable[i];
                }
            }
            r.message = msg;
        }
        return r;
    }

    Presence records_present(const Rule& rule, const std::string& target,
                             const std::vector<std::string>& keys) override {
        const auto root = canonical_root();
        const auto& spec = rule.files();
        struct stat st {};
        if (spec.format == FilesRule::Format::whole) {
            for (const auto& k : keys) {
                if (::lstat((root / k).c_str(), &st) == 0) {
                    return Presence::present;
                }
            }
            return Presence::absent;
        }
        const auto path = root / target;
        if (::lstat(path.c_str(), &st) != 0) {
            return errno == ENOENT ? Presence::absent : Presence::unknown;
        }
        const std::unordered_set<std::string> wanted(keys.begin(), keys.end());
        try {
            Fd in = open_read(path);
            const Secret no_key;
            const RuleView view{rule, spec, no_key, m_tz};
            auto p = make_parser(csv::fd_reader(in.get()), view);
            while (p->next()) {
                if (!p->record() || wanted.count(p->key()) == 0) {
                    continue;
                }
                // Anonymized records stay: the batch committed when they carry the new values.
                if (rule.action == Action::remove || p->anonymize(nullptr)) {
                    return Presence::present;
                }
            }
        } catch (const std::exception&) {
            return Presence::unknown;
        }
        return Presence::absent;
    }

private:
    enum class Rewrite { rewritten, deleted, changed };

    const date::time_zone* zone(const RunContext& ctx) const {
        return ctx.tz != nullptr ? ctx.tz : m_tz;
    }

    fs::path canonical_root() const {
        std::error_code ec;
        auto root = fs::canonical(m_root, ec);
        if (ec || !fs::is_directory(root, ec)) {
            throw UnavailableError("datastore \"" + m_name + "\": root " + m_root.string() +
                                   " is not a readable directory");
        }
        return root;
    }

    static void note(std::vector<std::string>& notes, std::string n) {
        if (notes.size() < k_max_notes) {
            notes.push_back(std::move(n));
        } else if (notes.size() == k_max_notes) {
            notes.emplace_back("... more notes left out");
        }
    }

    static void event(const RunContext& ctx, const std::string& type, const nlohmann::json& f) {
        if (ctx.journal != nullptr) {
            ctx.journal->event(type, f);
        }
    }

    // Regular files under the root matching the glob, sorted. Symbolic links are never followed:
    // a link's target may be outside the root, and renaming over a link would replace the link.
    std::vector<Match> list(const Rule& rule, std::vector<std::string>& notes,
                            bool sweep_stale_temps = false) const {
        const auto root = canonical_root();
        const auto pattern = split(rule.files().files, '/');
        std::vector<Match> out;
        std::error_code ec;
        fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied,
                                            ec);
        if (ec) {
            throw UnavailableError("datastore \"" + m_name + "\": cannot list " + root.string());
        }
        for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (ec) {
                break;
            }
            const auto& entry = *it;
            const auto rel = entry.path().lexically_relative(root).generic_string();
            const auto parts = split(rel, '/');
            std::error_code sec;
            if (entry.is_symlink(sec)) {
                if (glob_match(pattern, 0, parts, 0, false)) {
                    const auto target = fs::weakly_canonical(entry.path(), sec);
                    const auto inside = !sec && target.lexically_relative(root).string().rfind(
                                                    "..", 0) == std::string::npos;
                    note(notes, rel + ": symbolic link " +
                                    (inside ? "not followed" : "out of the datastore root") +
                                    ", skipped");
                }
                continue;
            }
            if (entry.is_directory(sec)) {
                if (!glob_match(pattern, 0, parts, 0, true)) {
                    it.disable_recursion_pending();
                }
                continue;
            }
            if (!entry.is_regular_file(sec)) {
                continue;
            }
            const auto name = entry.path().filename().string();
            if (const auto mark = name.find(".retentiond-"); mark != std::string::npos &&
                                                             name.size() > 1 && name[0] == '.' &&
                                                             name.ends_with(".tmp")) {
                // A rewrite killed before its rename leaves its temp copy, which holds the
                // export's kept records outside every rule's glob: remove it once no process
                // holds its lock (a dry run changes nothing and only reports it).
                auto original = parts;
                original.back() = name.substr(1, mark - 1);
                if (glob_match(pattern, 0, original, 0, false)) {
                    if (!sweep_stale_temps) {
                        note(notes,
                             rel + ": temp copy of an interrupted rewrite (removed on purge)");
                    } else if (remove_if_stale(entry.path())) {
                        note(notes, rel + ": removed the temp copy of an interrupted rewrite");
                    }
                }
                continue;
            }
            if (!glob_match(pattern, 0, parts, 0, false)) {
                continue;
            }
            out.push_back({entry.path(), rel});
        }
        if (ec) {
            throw UnavailableError("datastore \"" + m_name + "\": cannot list " + root.string() +
                                   ": " + ec.message());
        }
        std::sort(out.begin(), out.end(),
                  [](const Match& a, const Match& b) { return a.rel < b.rel; });
        return out;
    }

    // Reads a file once: counts its records for the dry run and the limits, and, with a
    // staging budget (purge), streams the new content into a temp copy at the same time. The
    // temp is created at the first due record (the bytes before it are copied in the kernel), so
    // a file with nothing due costs a read only. Any parse error drops the temp (the file is left
    // as it is); a write error or a spent budget drops it too and leaves the file to the
    // two-pass rewrite(), which bits (the verdicts, while bits_budget lasts) speed up.
    Scan scan(const Rule& rule, const Match& f, const Timing& t, const RunContext& ctx,
              std::uint64_t* bits_budget = nullptr, StagingBudget* staging = nullptr) const {
        Scan s;
        s.file = f;
        std::uint64_t* const bits_owner = bits_budget;
        try {
            Fd in = open_read(f.abs);
            struct stat st {};
            if (::fstat(in.get(), &st) != 0) {
                throw_errno("stat");
            }
            s.id = identity(st);
            std::unique_ptr<Staged> staged;
            if (staging != nullptr && staging->allows(static_cast<std::uint64_t>(st.st_size))) {
                staged = std::make_unique<Staged>(&staging->key_bytes);
                staged->st = st;
            }
            std::optional<Writer> out;
            std::string changed;
            // Stops staging this file: it goes the two-pass way (the temp is removed).
            auto give_up = [&] {
                out.reset();
                staged.reset();
            };
            auto put = [&](std::string_view bytes) {
                try {
                    out->write(bytes);
                } catch (const std::exception&) {
                    give_up();
                }
            };
            const Secret empty;
            const RuleView view{rule, rule.files(), ctx.audit_key ? *ctx.audit_key : empty,
                                zone(ctx)};
            auto p = make_parser(csv::fd_reader(in.get()), view);
            std::optional<TimePoint> clock;
            std::uint64_t offset = 0; // input bytes before the current record
            while (p->next()) {
                const auto raw = p->raw();
                if (!p->record()) {
                    if (out) {
                        put(raw);
                    }
                    offset += raw.size();
                    continue;
                }
                const Verdict v = decide(*p, t, rule, clock);
                tally(s.figures, t, clock, v);
                ++s.records;
                s.due += v == Verdict::due ? 1 : 0;
                if (bits_budget != nullptr && !s.bits.push(v == Verdict::due, *bits_budget)) {
                    bits_budget = nullptr;
                }
                if (staged && v == Verdict::due && !out) {
                    try {
                        staged->tmp.emplace(f.abs);
                        copy_prefix(in.get(), staged->tmp->fd(), static_cast<off_t>(offset));
                        files::WriterOptions wo;
                        wo.drop_behind_fd = in.get(); // this file is being replaced
                        out.emplace(staged->tmp->fd(), static_cast<off_t>(offset), wo);
                    } catch (const std::exception&) {
                        give_up();
                    }
                }
                if (staged && v == Verdict::due && !staged->keys.add(p->key())) {
                    give_up();
                }
                if (out) {
                    if (v == Verdict::due && rule.action == Action::anonymize) {
                        changed.clear();
                        put(p->anonymize(&changed) ? std::string_view(changed) : raw);
                    } else if (v != Verdict::due) {
                        put(raw);
                    }
                    if (out) { // put() drops it on a write error
                        out->consumed(static_cast<off_t>(offset));
                    }
                }
                offset += raw.size();
            }
            if (out) {
                try {
                    out->flush();
                } catch (const std::exception&) {
                    give_up();
                }
                out.reset();
            }
            struct stat end_st {};
            if (::fstat(in.get(), &end_st) != 0) {
                throw_errno("stat");
            }
            if (!(identity(end_st) == s.id)) {
                s.changed = true; // what was read may mix two versions: nothing is staged
                staged.reset();
            }
            if (staged && s.due > 0) {
                if (rule.action == Action::remove && s.due == s.records) {
                    staged->remove_file = true;
                    staged->tmp.reset();
                }
                staging->take(static_cast<std::uint64_t>(st.st_size));
                s.staged = std::move(staged);
            }
        } catch (const ParseError& e) {
            s.error = f.rel + ":" + std::to_string(e.line()) + ": " + e.reason();
        } catch (const std::exception& e) {
            s.error = f.rel + ": cannot read: " + describe(e);
        }
        if (bits_owner != nullptr && (s.staged || s.due == 0 || !s.error.empty())) {
            *bits_owner += s.bits.covered(); // not needed: no second pass over this file
            s.bits = DueBits();
        }
        return s;
    }

    bool refuse(const Rule& rule, const RunContext& ctx, std::int64_t due, std::int64_t in_scope,
                RunResult& r) const {
        return refuse_over_limits(rule, ctx, {due, in_scope, "records", "in " + rule.files().files},
                                  r);
    }

    Rewrite rewrite(const Rule& rule, RunContext& ctx, const Timing& t, const Scan& s,
                    RunResult& r) const {
        Fd in = open_read(s.file.abs);
        struct stat st {};
        if (::fstat(in.get(), &st) != 0) {
            throw_errno("stat");
        }
        if (!(identity(st) == s.id)) {
            return Rewrite::changed;
        }
        const bool remove_file = rule.action == Action::remove && s.due == s.records;
        std::optional<TempFile> tmp;
        std::optional<Writer> out;
        if (!remove_file) {
            tmp.emplace(s.file.abs);
            out.emplace(tmp->fd());
        }
        Batcher batches(ctx.journal, batch_base(rule, t, s),
                        static_cast<std::size_t>(rule.batch_size));
        std::int64_t touched = 0;
        try {
            const Secret empty;
            const RuleView view{rule, rule.files(), ctx.audit_key ? *ctx.audit_key : empty,
                                zone(ctx)};
            auto p = make_parser(csv::fd_reader(in.get()), view);
            std::optional<TimePoint> clock;
            std::string changed;
            std::uint64_t index = 0; // records so far
            for (;;) {
                // Records pass 1 kept are only delimited and copied; the others are decided
                // again, so a record is never dropped on pass 1's word alone.
                const bool known_kept = index < s.bits.covered() && !s.bits.due(index);
                if (!(known_kept ? p->skip() : p->next())) {
                    break;
                }
                if (!p->record()) {
                    if (out) {
                        out->write(p->raw());
                    }
                    continue;
                }
                ++index;
                if (known_kept) {
                    if (out) {
                        out->write(p->raw());
                    }
                    continue;
                }
                if (decide(*p, t, rule, clock) == Verdict::due) {
                    ++touched;
                    batches.add(p->key());
                    if (rule.action == Action::anonymize && out) {
                        changed.clear();
                        // decide() said it changes; never drop a record on a disagreement.
                        out->write(p->anonymize(&changed) ? std::string_view(changed) : p->raw());
                    }
                    continue;
                }
                if (out) {
                    out->write(p->raw());
                }
            }
            batches.flush();
            if (touched != s.due || index != static_cast<std::uint64_t>(s.records)) {
                // the file changed between the passes
                batches.outcome(false);
                return Rewrite::changed;
            }
            if (out) {
                out->flush();
            }
            if (!install(s, st, tmp ? &*tmp : nullptr)) {
                batches.outcome(false);
                return Rewrite::changed;
            }
        } catch (...) {
            batches.outcome(false);
            throw;
        }
        return finish(s, remove_file, touched, batches, r);
    }

    // The single pass's temp replaces the file: intents for its keys (fsynced by the journal),
    // then the same steps as rewrite().
    Rewrite commit(const Rule& rule, RunContext& ctx, const Timing& t, const Scan& s,
                   RunResult& r) const {
        Staged& staged = *s.staged;
        Batcher batches(ctx.journal, batch_base(rule, t, s),
                        static_cast<std::size_t>(rule.batch_size));
        try {
            staged.keys.for_each([&](std::string_view key) { batches.add(std::string(key)); });
            batches.flush();
            if (!install(s, staged.st, staged.tmp ? &*staged.tmp : nullptr)) {
                batches.outcome(false);
                return Rewrite::changed;
            }
        } catch (...) {
            batches.outcome(false);
            throw;
        }
        return finish(s, staged.remove_file, staged.keys.count(), batches, r);
    }

    BatchIntent batch_base(const Rule& rule, const Timing& t, const Scan& s) const {
        BatchIntent base;
        base.rule = rule.name;
        base.datastore = m_name;
        base.target = s.file.rel;
        base.action = rule.action == Action::remove ? "delete" : "anonymize";
        base.cutoff = t.cutoff;
        return base;
    }

    // Makes the temp (written) durable with the original's mode and owner, and renames it over
    // the original; without a temp, unlinks the original. False, touching nothing, when the file
    // is no longer the one that was read (a writer appending meanwhile wins: retried next run).
    static bool install(const Scan& s, const struct stat& st, TempFile* tmp) {
        if (tmp != nullptr) {
            if (::fsync(tmp->fd()) != 0) {
                throw_errno("fsync");
            }
            struct stat tst {};
            if (::fstat(tmp->fd(), &tst) != 0) {
                throw_errno("stat temp file");
            }
            if ((tst.st_uid != st.st_uid || tst.st_gid != st.st_gid) &&
                ::fchown(tmp->fd(), st.st_uid, st.st_gid) != 0) {
                throw_errno("keep the owner");
            }
            if (::fchmod(tmp->fd(), st.st_mode & 07777) != 0) {
                throw_errno("keep the mode");
            }
            tmp->close();
        }
        // Last look before the switch.
        struct stat now_st {};
        if (::lstat(s.file.abs.c_str(), &now_st) != 0 || !(identity(now_st) == s.id)) {
            return false;
        }
        if (tmp == nullptr) {
            if (::unlink(s.file.abs.c_str()) != 0) {
                throw_errno("unlink");
            }
        } else {
            if (::rename(tmp->path().c_str(), s.file.abs.c_str()) != 0) {
                throw_errno("rename");
            }
            tmp->committed();
        }
        return true;
    }

    // After the rename or unlink: the change stands even if the directory sync fails.
    static Rewrite finish(const Scan& s, bool remove_file, std::int64_t touched, Batcher& batches,
                          RunResult& r) {
        try {
            fsync_dir(s.file.abs.parent_path());
        } catch (const std::exception&) {
            r.counters["files.dir_fsync_failed"] += 1;
        }
        batches.outcome(true);
        r.processed += touched;
        r.batches += batches.batches();
        return remove_file ? Rewrite::deleted : Rewrite::rewritten;
    }

    // Whole files: the clock is the mtime or a date in the file name; hold does not apply.
    struct WholeClock {
        const FilesClock& clock;
        std::optional<std::regex> re;
        const date::time_zone* tz;
        WholeClock(const Rule& rule, const date::time_zone* zone)
            : clock(rule.files().clock), tz(zone) {
            if (clock.kind == FilesClock::Kind::filename) {
                re.emplace(clock.filename);
            }
        }
    };

    static std::optional<TimePoint> whole_clock(const WholeClock& wc, const Match& f,
                                                const struct stat& st) {
        const auto& clock = wc.clock;
        const auto* tz = wc.tz;
        if (clock.kind != FilesClock::Kind::filename) {
            return TimePoint(std::chrono::seconds(st.st_mtim.tv_sec)) +
                   std::chrono::microseconds(st.st_mtim.tv_nsec / 1000);
        }
        std::smatch m;
        const auto name = f.abs.filename().string();
        if (!std::regex_search(name, m, *wc.re) || m.size() < 2) {
            return std::nullopt;
        }
        auto t = parse_timestamp(m[1].str(), clock.format, tz);
        if (!t) {
            throw ParseError(0, "unparseable date in the file name");
        }
        return t;
    }

    // Returns the verdict, or nullopt when the file vanished or its name does not parse.
    static std::optional<Verdict> scan_whole(const WholeClock& wc, const Match& f, const Timing& t,
                                             DryRun& d, struct stat* out_st) {
        struct stat st {};
        if (::lstat(f.abs.c_str(), &st) != 0) {
            return std::nullopt;
        }
        std::optional<TimePoint> clock;
        try {
            clock = whole_clock(wc, f, st);
        } catch (const ParseError& e) {
            ++d.unparseable;
            ++d.counters["files.unparseable"];
            note(d.notes, f.rel + ": " + e.reason());
            return std::nullopt;
        }
        const Verdict v = classify(t, clock, false);
        tally(d, t, clock, v);
        if (out_st != nullptr) {
            *out_st = st;
        }
        return v;
    }

    RunResult purge_whole(const Rule& rule, RunContext& ctx, const Timing& t,
                          const std::vector<Match>& files, RunResult& r) const {
        if (rule.action != Action::remove) {
            r.status = RunResult::Status::failed;
            r.message = "format whole cannot anonymize";
            return r;
        }
        DryRun d;
        const WholeClock wc(rule, zone(ctx));
        std::vector<std::pair<const Match*, FileIdentity>> due;
        ctx.phase("counting");
        for (const auto& f : files) {
            struct stat st {};
            if (scan_whole(wc, f, t, d, &st) == Verdict::due) {
                due.emplace_back(&f, identity(st));
            }
        }
        r.due = static_cast<std::int64_t>(due.size());
        r.counters["files"] = static_cast<std::int64_t>(files.size());
        r.counters["files.unparseable"] = d.unparseable;
        if (refuse(rule, ctx, d.due, d.in_scope, r)) {
            return r;
        }
        const auto size = static_cast<std::size_t>(std::max(rule.batch_size, 1));
        ctx.phase("batches");
        for (std::size_t start = 0; start < due.size(); start += size) {
            if (ctx.stop_requested && ctx.stop_requested()) {
                r.status = RunResult::Status::stopped;
                r.message = "stopped on request after " + std::to_string(r.processed) + " files";
                return r;
            }
            BatchIntent batch;
            batch.rule = rule.name;
            batch.datastore = m_name;
            batch.target = rule.files().files;
            batch.action = "delete";
            batch.cutoff = t.cutoff;
            const auto end = std::min(due.size(), start + size);
            for (std::size_t i = start; i < end; ++i) {
                batch.keys.push_back(due[i].first->rel);
            }
            const auto id = ctx.journal != nullptr ? ctx.journal->intent(batch) : std::string();
            std::int64_t count = 0;
            std::set<fs::path> dirs;
            for (std::size_t i = start; i < end; ++i) {
                const auto& path = due[i].first->abs;
                struct stat st {};
                // A session file written since the scan is in use again: leave it.
                if (::lstat(path.c_str(), &st) != 0 || !(identity(st) == due[i].second)) {
                    r.counters["files.changed_during_run"] += 1;
                    continue;
                }
                if (::unlink(path.c_str()) == 0) {
                    ++count;
                    dirs.insert(path.parent_path());
                } else {
                    r.counters["files.unlink_failed"] += 1;
                }
            }
            for (const auto& dir : dirs) {
                try {
                    fsync_dir(dir);
                } catch (const std::exception&) {
                    r.counters["files.dir_fsync_failed"] += 1;
                }
            }
            if (ctx.journal != nullptr) {
                ctx.journal->outcome(id, true, count);
            }
            r.processed += count;
            ++r.batches;
            if (ctx.on_progress) {
                ctx.on_progress(r.processed, r.due);
            }
        }
        if (r.counters["files.unlink_failed"] > 0) {
            r.status = RunResult::Status::failed;
            r.message =
                std::to_string(r.counters["files.unlink_failed"]) + " file(s) could not be deleted";
        }
        return r;
    }

    std::string m_name;
    fs::path m_root;
    const date::time_zone* m_tz = nullptr;
};

} // namespace

std::unique_ptr<Engine> make_files_engine(const Datastore& store, const Config& config) {
    return std::make_unique<FilesEngine>(store, config);
}

} // namespace retentiond
