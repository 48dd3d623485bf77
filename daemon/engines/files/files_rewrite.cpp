#include "files_engine.hpp"

namespace retentiond::files_detail {

// The two-pass way, for a file its scan could not stage: reads it again and writes the records
// that stay into a temp copy, journaling the due records' keys in batches, then installs it.
FilesEngine::Rewrite FilesEngine::rewrite(const Rule& rule, RunContext& ctx, const Timing& t,
                                          const Scan& s, RunResult& r) const {
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
    Batcher batches(ctx.journal, batch_base(rule, t, s), static_cast<std::size_t>(rule.batch_size));
    std::int64_t touched = 0;
    try {
        const Secret empty;
        const RuleView view{rule, spec_of<FilesRule>(rule), ctx.audit_key ? *ctx.audit_key : empty,
                            zone(ctx), t.subject};
        auto p = make_parser(csv::fd_reader(in.get()), view);
        StopPoll poll(ctx);
        const auto index = rewrite_records(*p, rule, t, s, out, batches, touched, poll);
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

// The second read: copies every record that stays to `out` (none when the file is to be
// removed), anonymizes the due ones with action anonymize, and adds the due records' keys to
// batches (touched counts them). Returns the records read.
std::uint64_t FilesEngine::rewrite_records(RecordParser& p, const Rule& rule, const Timing& t,
                                           const Scan& s, std::optional<Writer>& out,
                                           Batcher& batches, std::int64_t& touched,
                                           StopPoll& poll) {
    std::optional<TimePoint> clock;
    std::string changed;
    std::uint64_t index = 0; // records so far
    for (;;) {
        // Records pass 1 kept are only delimited and copied; the others are decided again, so
        // a record is never dropped on pass 1's word alone.
        const bool known_kept = index < s.bits.covered() && !s.bits.due(index);
        if (!(known_kept ? p.skip() : p.next())) {
            break;
        }
        poll.tick(p.raw().size());
        const bool is_record = p.record();
        index += is_record ? 1 : 0;
        if (!is_record || known_kept || decide(p, t, rule, clock) != Verdict::due) {
            if (out) {
                out->write(p.raw());
            }
            continue;
        }
        ++touched;
        batches.add(p.key());
        if (rule.action == Action::anonymize && out) {
            changed.clear();
            // decide() said it changes; never drop a record on a disagreement.
            out->write(p.anonymize(&changed) ? std::string_view(changed) : p.raw());
        }
    }
    return index;
}

} // namespace retentiond::files_detail
