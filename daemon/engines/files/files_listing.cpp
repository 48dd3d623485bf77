#include "files_engine.hpp"

namespace retentiond::files_detail {

// Regular files under the root matching the glob, sorted. Symbolic links are never followed:
// a link's target may be outside the root, and renaming over a link would replace the link.
std::vector<Match> FilesEngine::list(const Rule& rule, std::vector<std::string>& notes,
                                     bool sweep_stale_temps) const {
    const auto root = canonical_root();
    const auto pattern = split(spec_of<FilesRule>(rule).files, '/');
    std::vector<Match> out;
    std::error_code ec;
    fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
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
                    note(notes, rel + ": temp copy of an interrupted rewrite (removed on purge)");
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
        throw UnavailableError("datastore \"" + m_name + "\": cannot list " + root.string() + ": " +
                               ec.message());
    }
    std::sort(out.begin(), out.end(), [](const Match& a, const Match& b) { return a.rel < b.rel; });
    return out;
}

} // namespace retentiond::files_detail
