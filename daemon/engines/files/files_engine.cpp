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
#include "files_engine.hpp"
#include "files_kind.hpp"

namespace retentiond {
namespace files_detail {

FilesEngine::FilesEngine(const Datastore& store, const Config& config) : m_name(store.name) {
    fs::path root(spec_of<FilesStore>(store).root);
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

std::vector<Diagnostic> FilesEngine::check(const Rule& rule) {
    std::vector<Diagnostic> out;
    auto problem = [&](std::string msg) { out.push_back({rule.pos, rule.name, std::move(msg)}); };
    std::error_code ec;
    if (!fs::is_directory(m_root, ec)) {
        problem("datastore \"" + m_name + "\": root " + m_root.string() +
                " is not a readable directory");
    }
    if (fs::is_directory(m_root, ec)) {
        // A directory or matched file the daemon's user cannot read fails the rule as in a run
        // (UnavailableError, exit 69): check says so before the first run.
        std::vector<std::string> notes;
        list(rule, notes);
    }
    const auto& spec = spec_of<FilesRule>(rule);
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

DryRun FilesEngine::dry_run(const Rule& rule, const RunContext& ctx) {
    const auto* tz = zone(ctx);
    const Timing t = make_timing(rule, tz);
    DryRun d;
    d.now = t.now;
    d.cutoff = t.cutoff;
    d.age_buckets.assign(k_age_buckets, 0);
    const auto files = list(rule, d.notes);
    d.counters["files"] = static_cast<std::int64_t>(files.size());
    d.counters["files.unparseable"] = 0;
    if (spec_of<FilesRule>(rule).format == FilesRule::Format::whole) {
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
        if (!s.failure.empty()) {
            ++d.counters["files.unreadable"];
            note(d.notes, s.failure);
            continue;
        }
        merge_dry_run(d, s.figures);
        to_rewrite += s.due > 0 ? 1 : 0;
        note(d.notes,
             f.rel + ": " + std::to_string(s.records) + " records, " +
                 std::to_string(s.figures.due) + " due, " + std::to_string(s.figures.held) +
                 " held, " + std::to_string(s.figures.no_clock) + " without clock" +
                 (s.figures.oldest_clock ? ", oldest " + format_utc_seconds(*s.figures.oldest_clock)
                                         : std::string()));
    }
    d.counters["files.to_rewrite"] = to_rewrite;
    return d;
}

Presence FilesEngine::records_present(const Rule& rule, const std::string& target,
                                      const std::vector<std::string>& keys) {
    const auto root = canonical_root();
    const auto& spec = spec_of<FilesRule>(rule);
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

fs::path FilesEngine::canonical_root() const {
    std::error_code ec;
    auto root = fs::canonical(m_root, ec);
    if (ec || !fs::is_directory(root, ec)) {
        throw UnavailableError("datastore \"" + m_name + "\": root " + m_root.string() +
                               " is not a readable directory");
    }
    return root;
}

void FilesEngine::note(std::vector<std::string>& notes, std::string n) {
    if (notes.size() < k_max_notes) {
        notes.push_back(std::move(n));
    } else if (notes.size() == k_max_notes) {
        notes.emplace_back("... more notes left out");
    }
}

void FilesEngine::event(const RunContext& ctx, const std::string& type, const nlohmann::json& f) {
    if (ctx.journal != nullptr) {
        ctx.journal->event(type, f);
    }
}

} // namespace files_detail

std::unique_ptr<Engine> make_files_engine(const Datastore& store, const Config& config) {
    return std::make_unique<files_detail::FilesEngine>(store, config);
}

} // namespace retentiond
