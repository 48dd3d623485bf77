#include "files_engine.hpp"
#include "retentiond/engine_common.hpp"

#include <thread>

namespace retentiond::files_detail {

RunResult FilesEngine::purge(const Rule& rule, RunContext& ctx) {
    const auto* tz = zone(ctx);
    const Timing t = make_timing(rule, tz);
    RunResult r;
    r.cutoff = t.cutoff;
    std::vector<std::string> notes;
    const auto files = list(rule, notes, /*sweep_stale_temps=*/true);
    for (const auto& n : notes) {
        event(ctx, "skipped", {{"rule", rule.name}, {"reason", n}});
    }
    if (spec_of<FilesRule>(rule).format == FilesRule::Format::whole) {
        return purge_whole(rule, ctx, t, files, r);
    }

    // One pass over every file counts everything and stages the new content in temp copies;
    // the limits are checked over all files before any of them is replaced. A refusal, an error
    // or a stop drops the staged temps (their destructors unlink them).
    Pass pass;
    ctx.phase("counting");
    if (!scan_all(rule, files, t, ctx, pass)) {
        return stopped(r);
    }
    r.due = pass.total.due;
    r.counters["files"] = static_cast<std::int64_t>(files.size());
    r.counters["files.unparseable"] = static_cast<std::int64_t>(pass.unparseable.size());
    if (refuse(rule, ctx, pass.total.due, pass.total.in_scope, r)) {
        return r;
    }
    ctx.phase("batches");
    if (!replace_all(rule, ctx, t, pass, r) || !retry_changed(rule, ctx, t, pass, r)) {
        return stopped(r);
    }
    fail_with(pass.failures, pass.unparseable, r);
    return r;
}

RunResult& FilesEngine::stopped(RunResult& r) {
    r.status = RunResult::Status::stopped;
    r.message = stopped_message(r.processed, "records");
    return r;
}

// The one pass: scans every file, keeps the scans of files with due records. False when a stop
// was requested (between files or within one).
bool FilesEngine::scan_all(const Rule& rule, const std::vector<Match>& files, const Timing& t,
                           const RunContext& ctx, Pass& pass) const {
    for (const auto& f : files) {
        if (stop_requested(ctx)) {
            return false;
        }
        std::optional<Scan> s;
        try {
            s.emplace(scan(rule, f, t, ctx, &pass.bits_budget, &pass.staging));
        } catch (const StopRequested&) {
            return false;
        }
        if (!s->error.empty() || !s->failure.empty()) {
            const auto& why = s->error.empty() ? s->failure : s->error;
            (s->error.empty() ? pass.failures : pass.unparseable).push_back(why);
            event(ctx, s->error.empty() ? "error" : "unparseable",
                  {{"rule", rule.name}, {"target", f.rel}, {"reason", why}});
            continue;
        }
        merge_dry_run(pass.total, s->figures);
        if (s->due > 0) {
            pass.scans.push_back(std::move(*s));
        }
    }
    return true;
}

// The commit phase: replaces the files that hold due records, staged ones by their temp, the
// others by a second read (rewrite()). A file that changed since its read is left as it is and
// noted in pass.changed. False when it stopped on request.
bool FilesEngine::replace_all(const Rule& rule, RunContext& ctx, const Timing& t, Pass& pass,
                              RunResult& r) const {
    auto& rewritten = r.counters["files.rewritten"];
    auto& deleted = r.counters["files.deleted"];
    for (auto& s : pass.scans) {
        if (stop_requested(ctx)) {
            return false;
        }
        try {
            const Rewrite outcome = replace(rule, ctx, t, s, r);
            rewritten += outcome == Rewrite::rewritten ? 1 : 0;
            deleted += outcome == Rewrite::deleted ? 1 : 0;
            if (outcome == Rewrite::changed) {
                pass.changed.emplace_back(s.file, s.due);
            }
        } catch (const StopRequested&) {
            return false;
        } catch (const ParseError& e) {
            pass.unparseable.push_back(s.file.rel + ":" + std::to_string(e.line()) + ": " +
                                       e.reason());
        } catch (const std::exception& e) {
            pass.failures.push_back(s.file.rel +
                                    ": rewrite failed, original left untouched: " + describe(e));
            event(ctx, "error",
                  {{"rule", rule.name}, {"target", s.file.rel}, {"reason", pass.failures.back()}});
            break; // disk full or I/O errors: the next file would fail the same way
        }
        if (ctx.on_progress) {
            ctx.on_progress(r.processed, r.due);
        }
    }
    pass.scans.clear(); // drops what is left staged (after a break)
    return true;
}

// A file that changed between its read and its replacement (a writer appending) is read and
// replaced again, up to k_change_attempts in all with a short pause between; one still changing
// then fails the rule with the count of its due records: a run never says ok while due records
// remain. False when it stopped on request.
bool FilesEngine::retry_changed(const Rule& rule, RunContext& ctx, const Timing& t, Pass& pass,
                                RunResult& r) const {
    for (int attempt = 2; attempt <= k_change_attempts && !pass.changed.empty(); ++attempt) {
        if (!pause(ctx, std::chrono::milliseconds(100 * (attempt - 1)))) {
            return false;
        }
        std::vector<Match> files;
        for (const auto& [f, due] : pass.changed) {
            files.push_back(f);
        }
        Pass again;
        if (!scan_all(rule, files, t, ctx, again) || !replace_all(rule, ctx, t, again, r)) {
            return false;
        }
        pass.unparseable.insert(pass.unparseable.end(), again.unparseable.begin(),
                                again.unparseable.end());
        pass.failures.insert(pass.failures.end(), again.failures.begin(), again.failures.end());
        pass.changed = std::move(again.changed);
    }
    std::int64_t remaining = 0;
    for (const auto& [f, due] : pass.changed) {
        remaining += due;
        pass.failures.push_back(f.rel + ": changed during each of " +
                                std::to_string(k_change_attempts) + " attempts to rewrite it, " +
                                std::to_string(due) + " due record(s) remain");
        event(ctx, "error",
              {{"rule", rule.name}, {"target", f.rel}, {"reason", pass.failures.back()}});
    }
    if (remaining > 0) {
        r.counters["verification.remaining"] = remaining;
    }
    return true;
}

// Waits `d`, or less when a stop is requested (false then).
bool FilesEngine::pause(const RunContext& ctx, std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
        if (stop_requested(ctx)) {
            return false;
        }
        std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(d, 20ms));
    }
    return !stop_requested(ctx);
}

// Replaces one file: by its staged temp, or by a second read when it could not be staged.
FilesEngine::Rewrite FilesEngine::replace(const Rule& rule, RunContext& ctx, const Timing& t,
                                          const Scan& s, RunResult& r) const {
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
    if (outcome == Rewrite::changed) {
        r.counters["files.changed_during_rewrite"] += 1;
        event(ctx, "skipped",
              {{"rule", rule.name},
               {"target", s.file.rel},
               {"reason", "changed during rewrite, read again"}});
    }
    return outcome;
}

// A run with failed rewrites or unparseable files fails, naming them.
void FilesEngine::fail_with(const std::vector<std::string>& failures,
                            const std::vector<std::string>& unparseable, RunResult& r) {
    if (failures.empty() && unparseable.empty()) {
        return;
    }
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

bool FilesEngine::refuse(const Rule& rule, const RunContext& ctx, std::int64_t due,
                         std::int64_t in_scope, RunResult& r) const {
    return refuse_over_limits(
        rule, ctx, {due, in_scope, "records", "in " + spec_of<FilesRule>(rule).files}, r);
}

// The single pass's temp replaces the file: intents for its keys (fsynced by the journal),
// then the same steps as rewrite().
FilesEngine::Rewrite FilesEngine::commit(const Rule& rule, RunContext& ctx, const Timing& t,
                                         const Scan& s, RunResult& r) const {
    Staged& staged = *s.staged;
    Batcher batches(ctx.journal, batch_base(rule, t, s), static_cast<std::size_t>(rule.batch_size));
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

BatchIntent FilesEngine::batch_base(const Rule& rule, const Timing& t, const Scan& s) const {
    BatchIntent base;
    base.rule = rule.name;
    base.datastore = m_name;
    base.target = s.file.rel;
    base.action = rule.action == Action::remove ? "delete" : "anonymize";
    base.cutoff = t.cutoff;
    base.request = t.request;
    return base;
}

// Makes the temp (written) durable with the original's mode and owner, and renames it over
// the original; without a temp, unlinks the original. False, touching nothing, when the file
// is no longer the one that was read (a writer appending meanwhile wins: retried next run).
bool FilesEngine::install(const Scan& s, const struct stat& st, TempFile* tmp) {
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
FilesEngine::Rewrite FilesEngine::finish(const Scan& s, bool remove_file, std::int64_t touched,
                                         Batcher& batches, RunResult& r) {
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

} // namespace retentiond::files_detail
