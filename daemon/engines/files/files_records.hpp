#pragma once

// Files engine, records: the rule's timing and verdicts, the CSV and JSON Lines record parsers and
// the decision on one record. Private to the files engine.

#include "files_io.hpp"
#include "json_scan.hpp"

#include "retentiond/subject.hpp"

namespace retentiond::files_detail {

struct Match {
    fs::path abs;
    std::string rel;
};

// --- time ----------------------------------------------------------------------------------

struct Timing {
    TimePoint now{};
    TimePoint cutoff{};
    std::optional<DryRunTally> dry; // the dry-run figures (engine_common.hpp)
    bool null_due = false;
    // An erasure request (erase_subject): the records whose subject field matches are due
    // whatever their clock, held ones are held; the others are kept. Its digest names the request
    // in the intent lines.
    const SubjectQuery* subject = nullptr;
    std::string request;
};

inline Timing make_timing(const Rule& rule, const date::time_zone* tz) {
    Timing t;
    t.now = now_utc();
    t.cutoff = subtract(t.now, rule.retain, tz);
    t.dry.emplace(t.now, t.cutoff, rule.retain, tz);
    t.null_due = rule.clock_null_due;
    return t;
}

enum class Verdict { kept, due, held, no_clock };

inline Verdict classify(const Timing& t, const std::optional<TimePoint>& clock, bool held) {
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
inline void tally(DryRun& d, const Timing& t, const std::optional<TimePoint>& clock, Verdict v) {
    DryVerdict dry = DryVerdict::not_due;
    switch (v) {
    case Verdict::due:
        dry = DryVerdict::due;
        break;
    case Verdict::held:
        dry = DryVerdict::held;
        break;
    case Verdict::no_clock:
        dry = DryVerdict::no_clock;
        break;
    case Verdict::kept:
        break;
    }
    t.dry->add(d, dry, clock);
}

// --- anonymization idempotence -----------------------------------------------------------------

inline bool is_hex(std::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Whether a value already carries the strategy's output, so a second run leaves it (hmac and
// email_domain are not idempotent: re-applying them would change the value on every run).
inline bool looks_anonymized(const Strategy& s, std::string_view v, const Secret& key,
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
    const SubjectQuery* subject = nullptr; // an erasure request: its field is read too
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
    // An erasure request's field (RuleView::subject); nullopt when the record has none.
    virtual std::optional<std::string> subject_value() = 0;
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
    std::optional<std::string> subject_value() override {
        if (m_subject_col < 0) {
            return std::nullopt;
        }
        return std::string(value(m_subject_col));
    }
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
        if (m_view.subject != nullptr) {
            m_subject_col = column(m_view.subject->field.field);
        }
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
    int m_subject_col = -1;
    std::vector<std::pair<int, const Strategy*>> m_anon;
    std::vector<std::optional<std::string>> m_new;
};

inline std::vector<std::string> dotted(std::string_view path) {
    return split(path, '.');
}

inline const nlohmann::json* lookup(const nlohmann::json& j, const std::vector<std::string>& path) {
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

inline std::string scalar(const nlohmann::json& j) {
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
            m_paths[k_clock] = dotted(spec.clock.field);
        }
        if (spec.hold) {
            m_paths[k_hold] = dotted(spec.hold->field);
        }
        m_paths[k_key] = dotted(spec.key_field.empty() ? "id" : spec.key_field);
        if (v.subject != nullptr) {
            m_paths[k_subject] = dotted(v.subject->field.field);
        }
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
        m_body = body;
        m_doc.reset();
        // Checked and read without a document: a long line costs its bytes once (the document
        // is built only to anonymize a due record).
        const JsonScan scanned = scan_json(body, m_paths, m_found);
        if (scanned == JsonScan::invalid) {
            throw ParseError(line(), "invalid JSON");
        }
        if (scanned == JsonScan::not_object) {
            throw ParseError(line(), "not a JSON object");
        }
        return true;
    }
    bool record() const override { return m_is_record; }
    std::string_view raw() const override { return m_raw; }
    std::uint64_t line() const override { return m_line; }
    std::optional<TimePoint> clock() override {
        if (m_paths[k_clock].empty() || !m_found[k_clock]) {
            return std::nullopt;
        }
        const auto raw = *m_found[k_clock];
        if (const auto s = plain_string(raw)) {
            if (s->empty()) {
                return std::nullopt;
            }
            return parsed_clock(m_time.parse(*s));
        }
        const auto v = nlohmann::json::parse(raw);
        if (v.is_null() || (v.is_string() && v.get_ref<const std::string&>().empty())) {
            return std::nullopt;
        }
        std::optional<TimePoint> t;
        if (v.is_string()) {
            t = m_time.parse(v.get_ref<const std::string&>());
        } else if (v.is_number()) { // epoch seconds
            const double s = v.get<double>();
            if (std::isfinite(s)) {
                t = TimePoint(std::chrono::microseconds(std::llround(s * 1e6)));
            }
        }
        return parsed_clock(t);
    }
    bool held() override {
        if (m_paths[k_hold].empty() || !m_found[k_hold]) {
            return false;
        }
        return *m_found[k_hold] != "null" && text(*m_found[k_hold]) == m_view.spec.hold->equals;
    }
    std::string key() override { return m_found[k_key] ? text(*m_found[k_key]) : std::string(); }
    std::optional<std::string> subject_value() override {
        if (m_paths[k_subject].empty() || !m_found[k_subject] || *m_found[k_subject] == "null") {
            return std::nullopt;
        }
        return text(*m_found[k_subject]);
    }
    bool anonymize(std::string* out) override {
        // Works on a copy, once per record: the check (pass 1) and the rewrite must agree.
        if (!m_anon_done) {
            m_anon_done = true;
            m_anon_out.clear();
            if (!m_doc) {
                m_doc = nlohmann::json::parse(m_body); // checked by scan_json
            }
            nlohmann::json doc = *m_doc;
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
    static constexpr std::size_t k_clock = 0;
    static constexpr std::size_t k_hold = 1;
    static constexpr std::size_t k_key = 2;
    static constexpr std::size_t k_subject = 3;

    // A JSON string's value when it holds no escape (most do): its inner bytes.
    static std::optional<std::string_view> plain_string(std::string_view raw) {
        if (raw.size() < 2 || raw.front() != '"' || raw.find('\\') != std::string_view::npos) {
            return std::nullopt;
        }
        return raw.substr(1, raw.size() - 2);
    }
    // A value as held and key compare it: a string's value, anything else as JSON text.
    static std::string text(std::string_view raw) {
        if (const auto s = plain_string(raw)) {
            return std::string(*s);
        }
        return scalar(nlohmann::json::parse(raw));
    }
    std::optional<TimePoint> parsed_clock(std::optional<TimePoint> t) const {
        if (!t) {
            throw ParseError(line(),
                             "unparseable timestamp in \"" + m_view.spec.clock.field + "\"");
        }
        return t;
    }

    void fill() {
        if (m_pos > 0) {
            std::memmove(m_buf.data(), m_buf.data() + m_pos, m_len - m_pos);
            m_len -= m_pos;
            m_pos = 0;
        }
        if (m_len == m_buf.size()) {
            if (m_buf.size() >= k_max_line) {
                throw ParseError(m_line, "line longer than " + std::to_string(k_max_line >> 20) +
                                             " MiB, the maximum record size");
            }
            m_buf.resize(std::min(m_buf.size() * 2, k_max_line));
        }
        const std::size_t got = m_read(m_buf.data() + m_len, m_buf.size() - m_len);
        m_eof = got == 0;
        m_len += got;
    }

    RuleView m_view;
    csv::ReadFn m_read;
    GrowBuffer m_buf;
    TimestampMemo m_time;
    std::size_t m_pos = 0;
    std::size_t m_len = 0;
    bool m_eof = false;
    std::string_view m_raw;
    std::string_view m_ending;
    std::uint64_t m_line = 1;
    bool m_is_record = false;
    std::string_view m_body;             // the line without its ending
    std::optional<nlohmann::json> m_doc; // parsed only to anonymize
    bool m_anon_done = false;
    std::string m_anon_out;
    std::vector<std::vector<std::string>> m_paths{4}; // clock, hold, key, subject (empty: not read)
    std::vector<std::optional<std::string_view>> m_found;
};

inline std::unique_ptr<RecordParser> make_parser(csv::ReadFn read, const RuleView& v) {
    if (v.spec.format == FilesRule::Format::jsonl) {
        return std::make_unique<JsonlParser>(std::move(read), v);
    }
    return std::make_unique<CsvParser>(std::move(read), v);
}

// Due, after holds and after "already anonymized" records.
inline Verdict decide(RecordParser& p, const Timing& t, const Rule& rule,
                      std::optional<TimePoint>& clock) {
    Verdict v = Verdict::kept;
    if (t.subject != nullptr) {
        clock.reset(); // an erasure request is the reason: the clock is not read
        const auto value = p.subject_value();
        if (value && t.subject->matches(*value)) {
            v = p.held() ? Verdict::held : Verdict::due;
        }
    } else {
        clock = p.clock();
        v = classify(t, clock, p.held());
    }
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

inline FileIdentity identity(const struct stat& st) {
    return {st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
}

} // namespace retentiond::files_detail
