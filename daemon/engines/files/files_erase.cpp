// Erasure requests on files (Engine::erase_subject): the purge's one pass and commit phase with a
// Timing whose verdict is the subject's field rather than the clock, so the other records are
// copied byte-exact and every replaced file goes through the same checks as a purge's.
#include "files_engine.hpp"
#include "retentiond/engine_common.hpp"

namespace retentiond::files_detail {

RunResult FilesEngine::erase_subject(const Rule& rule, const SubjectQuery& query, RunContext& ctx,
                                     bool dry) {
    RunResult r;
    if (spec_of<FilesRule>(rule).format == FilesRule::Format::whole) {
        r.status = RunResult::Status::failed;
        r.message = "format: whole has no fields: a file is not one person's record";
        return r;
    }
    Timing t = make_timing(rule, zone(ctx));
    t.subject = &query;
    t.request = ctx.request;
    t.cutoff = t.now; // the intents' cutoff: the request is the reason, not the clock
    r.cutoff = t.now;
    std::vector<std::string> notes;
    const auto files = list(rule, notes);
    Pass pass;
    if (!scan_all(rule, files, t, ctx, pass)) {
        return stopped(r);
    }
    r.due = pass.total.due;
    r.counters["held"] = pass.total.held;
    r.counters["in_scope"] = pass.total.in_scope;
    r.counters["files"] = static_cast<std::int64_t>(files.size());
    if (!dry && r.due > 0) {
        ctx.phase("batches");
        if (!replace_all(rule, ctx, t, pass, r) || !retry_changed(rule, ctx, t, pass, r)) {
            return stopped(r);
        }
    }
    // A file that does not parse may hold the subject's records: the request cannot say done.
    fail_with(pass.failures, pass.unparseable, r);
    return r;
}

} // namespace retentiond::files_detail
