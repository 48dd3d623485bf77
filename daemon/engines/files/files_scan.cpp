#include "files_engine.hpp"

namespace retentiond::files_detail {

namespace {

// The temp copy one scan streams a file's new content into, from its first due record on. A
// write error (or too many keys) drops it: the file then goes the two-pass way.
class Stager {
public:
    explicit Stager(std::unique_ptr<Staged> staged) : m_staged(std::move(staged)) {}

    bool staging() const { return m_staged != nullptr; }
    bool writing() const { return m_out.has_value(); }

    // Stops staging this file: it goes the two-pass way (the temp is removed).
    void give_up() {
        m_out.reset();
        m_staged.reset();
    }
    void put(std::string_view bytes) {
        try {
            m_out->write(bytes);
        } catch (const std::exception&) {
            give_up();
        }
    }
    // One record at `offset` (input bytes before it), judged v: the temp is created at the
    // first due record (the bytes before it are copied in the kernel), a due record's key is
    // kept, and the record is written as it stays (kept: its bytes, anonymized: its new bytes).
    void record(RecordParser& p, std::string_view raw, Verdict v, const Rule& rule, const Match& f,
                int in, std::uint64_t offset) {
        const bool due = v == Verdict::due;
        if (m_staged && due && !m_out) {
            start(f, in, offset);
        }
        if (m_staged && due && !m_staged->keys.add(p.key())) {
            give_up();
        }
        if (!m_out) {
            return;
        }
        if (due && rule.action == Action::anonymize) {
            m_changed.clear();
            put(p.anonymize(&m_changed) ? std::string_view(m_changed) : raw);
        } else if (!due) {
            put(raw);
        }
        if (m_out) { // put() drops it on a write error
            m_out->consumed(static_cast<off_t>(offset));
        }
    }
    void flush() {
        if (m_staged && !m_staged->keys.seal()) {
            give_up();
        }
        if (!m_out) {
            return;
        }
        try {
            m_out->flush();
        } catch (const std::exception&) {
            give_up();
        }
        m_out.reset();
    }
    std::unique_ptr<Staged> release() { return std::move(m_staged); }

private:
    void start(const Match& f, int in, std::uint64_t offset) {
        try {
            m_staged->tmp.emplace(f.abs);
            copy_prefix(in, m_staged->tmp->fd(), static_cast<off_t>(offset));
            files::WriterOptions wo;
            wo.drop_behind_fd = in; // this file is being replaced
            m_out.emplace(m_staged->tmp->fd(), static_cast<off_t>(offset), wo);
        } catch (const std::exception&) {
            give_up();
        }
    }

    std::unique_ptr<Staged> m_staged;
    std::optional<Writer> m_out; // destroyed before m_staged's temp
    std::string m_changed;
};

} // namespace

// Reads a file once: counts its records for the dry run and the limits, and, with a staging
// budget (purge), streams the new content into a temp copy at the same time. The temp is created
// at the first due record (the bytes before it are copied in the kernel), so a file with nothing
// due costs a read only. Any parse error drops the temp (the file is left as it is); a write
// error or a spent budget drops it too and leaves the file to the two-pass rewrite(), which bits
// (the verdicts, while bits_budget lasts) speed up.
Scan FilesEngine::scan(const Rule& rule, const Match& f, const Timing& t, const RunContext& ctx,
                       std::uint64_t* bits_budget, StagingBudget* staging) const {
    Scan s;
    s.file = f;
    std::uint64_t* const bits_owner = bits_budget;
    try {
        scan_file(rule, f, t, ctx, bits_budget, staging, s);
    } catch (const ParseError& e) {
        s.error = f.rel + ":" + std::to_string(e.line()) + ": " + e.reason();
    } catch (const NotRegularFile& e) {
        s.failure = f.rel + ": refused, " + e.what() + " (nothing read or written)";
    } catch (const std::exception& e) {
        if (permission_denied(e)) {
            // The rule cannot see every record it must purge: it fails whole (nothing touched).
            throw UnavailableError("datastore \"" + m_name + "\": permission denied: " + f.rel +
                                   " (" + describe(e) + ")");
        }
        s.failure = f.rel + ": cannot read: " + describe(e);
    }
    if (bits_owner != nullptr &&
        (s.staged || s.due == 0 || !s.error.empty() || !s.failure.empty())) {
        *bits_owner += s.bits.covered(); // not needed: no second pass over this file
        s.bits = DueBits();
    }
    return s;
}

// The pass itself; a parse or read error throws (the temp, if any, is dropped).
void FilesEngine::scan_file(const Rule& rule, const Match& f, const Timing& t,
                            const RunContext& ctx, std::uint64_t*& bits_budget,
                            StagingBudget* staging, Scan& s) const {
    Fd in = open_read(f.abs);
    struct stat st {};
    if (::fstat(in.get(), &st) != 0) {
        throw_errno("stat");
    }
    s.id = identity(st);
    std::unique_ptr<Staged> staged;
    if (staging != nullptr && staging->allows(static_cast<std::uint64_t>(st.st_size))) {
        staged = std::make_unique<Staged>(&staging->key_bytes, f.abs.parent_path());
        staged->st = st;
    }
    Stager stager(std::move(staged));
    const Secret empty;
    const RuleView view{rule, spec_of<FilesRule>(rule), ctx.audit_key ? *ctx.audit_key : empty,
                        zone(ctx), t.subject};
    auto p = make_parser(csv::fd_reader(in.get()), view);
    std::optional<TimePoint> clock;
    std::uint64_t offset = 0; // input bytes before the current record
    StopPoll poll(ctx);
    while (p->next()) {
        const auto raw = p->raw();
        poll.tick(raw.size());
        if (!p->record()) {
            if (stager.writing()) {
                stager.put(raw);
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
        stager.record(*p, raw, v, rule, f, in.get(), offset);
        offset += raw.size();
    }
    stager.flush();
    struct stat end_st {};
    if (::fstat(in.get(), &end_st) != 0) {
        throw_errno("stat");
    }
    if (!(identity(end_st) == s.id)) {
        s.changed = true; // what was read may mix two versions: nothing is staged
        stager.give_up();
    }
    if (stager.staging() && s.due > 0) {
        staged = stager.release();
        if (rule.action == Action::remove && s.due == s.records) {
            staged->remove_file = true;
            staged->tmp.reset();
        }
        staging->take(static_cast<std::uint64_t>(st.st_size));
        s.staged = std::move(staged);
    }
}

} // namespace retentiond::files_detail
