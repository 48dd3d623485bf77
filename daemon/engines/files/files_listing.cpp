#include "files_engine.hpp"

namespace retentiond::files_detail {

// Regular files under the root matching the glob, sorted. Symbolic links are never followed:
// a link's target may be outside the root, and renaming over a link would replace the link.
std::vector<Match> FilesEngine::list(const Rule& rule, std::vector<std::string>& notes,
                                     bool sweep_stale_temps) const {
    const auto root = canonical_root();
    const auto pattern = split(spec_of<FilesRule>(rule).files, '/');
    std::vector<Match> out;
    std::vector<std::string> denied; // directories and files the daemon's user cannot read
    std::error_code ec;
    if (!readable(root, R_OK | X_OK)) {
        refuse_denied({root.string()});
    }
    // Not skip_permission_denied: a directory that cannot be listed fails the rule, never hides
    // its files (those that may hold matches are checked before the walk enters them).
    fs::recursive_directory_iterator it(root, ec);
    if (ec) {
        throw UnavailableError("datastore \"" + m_name + "\": cannot list " + root.string() + ": " +
                               ec.message());
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
                // Resolved from the link's text: a dangling link's own path is "inside".
                auto target = fs::read_symlink(entry.path(), sec);
                target = fs::weakly_canonical(entry.path().parent_path() / target, sec);
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
            } else if (!readable(entry.path(), R_OK | X_OK)) {
                denied.push_back(rel + "/");
                it.disable_recursion_pending();
            }
            continue;
        }
        const bool whole = spec_of<FilesRule>(rule).format == FilesRule::Format::whole;
        if (!entry.is_regular_file(sec) && (whole || !glob_match(pattern, 0, parts, 0, false))) {
            if (whole && glob_match(pattern, 0, parts, 0, false)) {
                note(notes, rel + ": not a regular file, skipped");
            }
            continue; // a matched FIFO, socket or device of a csv/jsonl rule: refused by scan()
        }
        if (temp_copy(entry.path(), rel, parts, pattern, notes, sweep_stale_temps)) {
            continue;
        }
        if (!glob_match(pattern, 0, parts, 0, false)) {
            continue;
        }
        if (!readable(entry.path(), R_OK)) {
            denied.push_back(rel);
            continue;
        }
        out.push_back({entry.path(), rel});
    }
    if (ec) {
        throw UnavailableError("datastore \"" + m_name + "\": cannot list " + root.string() + ": " +
                               ec.message());
    }
    refuse_denied(denied);
    std::sort(out.begin(), out.end(), [](const Match& a, const Match& b) { return a.rel < b.rel; });
    return out;
}

// Whether `path` is the temp copy of a rewrite of a file the glob matches. A rewrite killed
// before its rename leaves its temp copy, which holds the export's kept records outside every
// rule's glob: with sweep, it is removed once no process holds its lock (a dry run changes
// nothing and only reports it).
bool FilesEngine::temp_copy(const fs::path& path, const std::string& rel,
                            const std::vector<std::string>& parts,
                            const std::vector<std::string>& pattern,
                            std::vector<std::string>& notes, bool sweep) {
    const auto name = path.filename().string();
    const auto mark = name.find(".retentiond-");
    if (mark == std::string::npos || name.size() <= 1 || name[0] != '.' ||
        !name.ends_with(".tmp")) {
        return false;
    }
    auto original = parts;
    original.back() = name.substr(1, mark - 1);
    if (glob_match(pattern, 0, original, 0, false)) {
        if (!sweep) {
            note(notes, rel + ": temp copy of an interrupted rewrite (removed on purge)");
        } else if (remove_if_stale(path)) {
            note(notes, rel + ": removed the temp copy of an interrupted rewrite");
        }
    }
    return true;
}

// Whether the daemon's user may access `p` as `mode` (effective ids, ACLs included). Only a
// refusal (EACCES, EPERM) says no: a path gone since the listing is the scan's business.
bool FilesEngine::readable(const fs::path& p, int mode) {
    return ::faccessat(AT_FDCWD, p.c_str(), mode, AT_EACCESS) == 0 ||
           (errno != EACCES && errno != EPERM);
}

// A directory that may hold matches, or a matched file, that the daemon's user cannot read: the
// rule cannot see every record it must purge, so it fails whole with a permission error (exit
// 69, as a root that cannot be read), in check, the dry run and the purge, touching nothing.
void FilesEngine::refuse_denied(const std::vector<std::string>& denied) const {
    if (denied.empty()) {
        return;
    }
    std::string msg = "datastore \"" + m_name + "\": permission denied: ";
    for (std::size_t i = 0; i < denied.size() && i < 5; ++i) {
        msg += (i > 0 ? ", " : "") + denied[i];
    }
    if (denied.size() > 5) {
        msg += " and " + std::to_string(denied.size() - 5) + " more";
    }
    throw UnavailableError(msg + " (not readable by the daemon's user; nothing touched)");
}

} // namespace retentiond::files_detail
