#include "files_engine.hpp"
#include "retentiond/engine_common.hpp"

#include <set>

namespace retentiond::files_detail {

std::optional<TimePoint> FilesEngine::whole_clock(const WholeClock& wc, const Match& f,
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
std::optional<Verdict> FilesEngine::scan_whole(const WholeClock& wc, const Match& f,
                                               const Timing& t, DryRun& d, struct stat* out_st) {
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

RunResult FilesEngine::purge_whole(const Rule& rule, RunContext& ctx, const Timing& t,
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
        if (stop_requested(ctx)) {
            r.status = RunResult::Status::stopped;
            r.message = stopped_message(r.processed, "files");
            return r;
        }
        delete_whole_batch(rule, ctx, t, due, start, std::min(due.size(), start + size), r);
    }
    if (r.counters["files.unlink_failed"] > 0) {
        r.status = RunResult::Status::failed;
        r.message =
            std::to_string(r.counters["files.unlink_failed"]) + " file(s) could not be deleted";
    }
    return r;
}

// Deletes due[start, end) as one batch: its intent, the unlinks of the files that are still the
// ones judged due, the directories' fsyncs, its outcome.
void FilesEngine::delete_whole_batch(const Rule& rule, RunContext& ctx, const Timing& t,
                                     const std::vector<std::pair<const Match*, FileIdentity>>& due,
                                     std::size_t start, std::size_t end, RunResult& r) const {
    BatchIntent batch;
    batch.rule = rule.name;
    batch.datastore = m_name;
    batch.target = spec_of<FilesRule>(rule).files;
    batch.action = "delete";
    batch.cutoff = t.cutoff;
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

} // namespace retentiond::files_detail
