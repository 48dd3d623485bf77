#pragma once

// The files engine, in named parts (see files_engine.cpp for how a purge works):
// - files_engine.cpp: construction, check, dry run, records_present;
// - files_listing.cpp: the files a rule matches (list());
// - files_scan.cpp: the one pass over a file that counts and stages (scan());
// - files_commit.cpp: the purge: the limits over every file, then the commit phase (commit(),
//   install(), finish());
// - files_rewrite.cpp: the two-pass rewrite of a file that could not be staged (rewrite());
// - files_whole.cpp: format whole (a file is one record).
// Private to the files engine.

#include "files_staging.hpp"

#include <nlohmann/json.hpp>

#include <regex>

namespace retentiond::files_detail {

class FilesEngine : public Engine {
public:
    FilesEngine(const Datastore& store, const Config& config);

    std::vector<Diagnostic> check(const Rule& rule) override;
    DryRun dry_run(const Rule& rule, const RunContext& ctx) override;
    RunResult purge(const Rule& rule, RunContext& ctx) override;
    Presence records_present(const Rule& rule, const std::string& target,
                             const std::vector<std::string>& keys) override;
    // files_erase.cpp
    RunResult erase_subject(const Rule& rule, const SubjectQuery& query, RunContext& ctx,
                            bool dry) override;

private:
    enum class Rewrite { rewritten, deleted, changed };

    // What the one pass over every file found (purge).
    struct Pass {
        StagingBudget staging; // outlives scans: their key arenas give their bytes back to it
        std::vector<Scan> scans;
        DryRun total;
        std::vector<std::string> unparseable;
        std::vector<std::string> failures; // files refused, unreadable, or whose rewrite failed
        // Files that changed between their read and their replacement, with their due records.
        std::vector<std::pair<Match, std::int64_t>> changed;
        std::uint64_t bits_budget = k_due_bits_budget;
    };
    // Reads and replacements of a file that keeps changing, in one run, before the rule fails.
    static constexpr int k_change_attempts = 4;

    const date::time_zone* zone(const RunContext& ctx) const {
        return ctx.tz != nullptr ? ctx.tz : m_tz;
    }
    fs::path canonical_root() const;
    static void note(std::vector<std::string>& notes, std::string n);
    static void event(const RunContext& ctx, const std::string& type, const nlohmann::json& f);

    // files_listing.cpp
    std::vector<Match> list(const Rule& rule, std::vector<std::string>& notes,
                            bool sweep_stale_temps = false) const;
    static bool readable(const fs::path& p, int mode);
    static bool temp_copy(const fs::path& path, const std::string& rel,
                          const std::vector<std::string>& parts,
                          const std::vector<std::string>& pattern, std::vector<std::string>& notes,
                          bool sweep);
    void refuse_denied(const std::vector<std::string>& denied) const;

    // files_scan.cpp
    Scan scan(const Rule& rule, const Match& f, const Timing& t, const RunContext& ctx,
              std::uint64_t* bits_budget = nullptr, StagingBudget* staging = nullptr) const;
    void scan_file(const Rule& rule, const Match& f, const Timing& t, const RunContext& ctx,
                   std::uint64_t*& bits_budget, StagingBudget* staging, Scan& s) const;

    // files_commit.cpp
    static RunResult& stopped(RunResult& r);
    bool scan_all(const Rule& rule, const std::vector<Match>& files, const Timing& t,
                  const RunContext& ctx, Pass& pass) const;
    bool replace_all(const Rule& rule, RunContext& ctx, const Timing& t, Pass& pass,
                     RunResult& r) const;
    bool retry_changed(const Rule& rule, RunContext& ctx, const Timing& t, Pass& pass,
                       RunResult& r) const;
    static bool pause(const RunContext& ctx, std::chrono::milliseconds d);
    Rewrite replace(const Rule& rule, RunContext& ctx, const Timing& t, const Scan& s,
                    RunResult& r) const;
    static void fail_with(const std::vector<std::string>& failures,
                          const std::vector<std::string>& unparseable, RunResult& r);
    bool refuse(const Rule& rule, const RunContext& ctx, std::int64_t due, std::int64_t in_scope,
                RunResult& r) const;
    Rewrite commit(const Rule& rule, RunContext& ctx, const Timing& t, const Scan& s,
                   RunResult& r) const;
    BatchIntent batch_base(const Rule& rule, const Timing& t, const Scan& s) const;
    static bool install(const Scan& s, const struct stat& st, TempFile* tmp);
    static Rewrite finish(const Scan& s, bool remove_file, std::int64_t touched, Batcher& batches,
                          RunResult& r);

    // files_rewrite.cpp
    Rewrite rewrite(const Rule& rule, RunContext& ctx, const Timing& t, const Scan& s,
                    RunResult& r) const;
    static std::uint64_t rewrite_records(RecordParser& p, const Rule& rule, const Timing& t,
                                         const Scan& s, std::optional<Writer>& out,
                                         Batcher& batches, std::int64_t& touched, StopPoll& poll);

    // files_whole.cpp: whole files; the clock is the mtime or a date in the file name; hold
    // does not apply.
    struct WholeClock {
        const FilesClock& clock;
        std::optional<std::regex> re;
        const date::time_zone* tz;
        WholeClock(const Rule& rule, const date::time_zone* zone)
            : clock(spec_of<FilesRule>(rule).clock), tz(zone) {
            if (clock.kind == FilesClock::Kind::filename) {
                re.emplace(clock.filename);
            }
        }
    };
    static std::optional<TimePoint> whole_clock(const WholeClock& wc, const Match& f,
                                                const struct stat& st);
    static std::optional<Verdict> scan_whole(const WholeClock& wc, const Match& f, const Timing& t,
                                             DryRun& d, struct stat* out_st);
    RunResult purge_whole(const Rule& rule, RunContext& ctx, const Timing& t,
                          const std::vector<Match>& files, RunResult& r) const;
    void delete_whole_batch(const Rule& rule, RunContext& ctx, const Timing& t,
                            const std::vector<std::pair<const Match*, FileIdentity>>& due,
                            std::size_t start, std::size_t end, RunResult& r) const;

    std::string m_name;
    fs::path m_root;
    const date::time_zone* m_tz = nullptr;
};

} // namespace retentiond::files_detail
