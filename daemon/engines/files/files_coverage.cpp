// Coverage for files (Kind::scan_coverage): every file under the root that no rule's glob matches
// is a location no rule governs; CSV and JSON Lines files (matched or not) are read for their first
// k_head_bytes only, and their columns / keys judged by name and by value patterns.
#include "csv.hpp"
#include "files_io.hpp"
#include "files_kind.hpp"

#include "retentiond/coverage.hpp"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <filesystem>
#include <map>

namespace retentiond {

namespace {

namespace fs = std::filesystem;
using files_detail::glob_match;
using files_detail::split;

constexpr std::size_t k_head_bytes = 256 * 1024;
constexpr std::size_t k_max_files = 100000;
constexpr int k_sample_lines = 200;

// The first bytes of a file, cut after its last complete line; "" when unreadable.
std::string read_head(const fs::path& path) {
    try {
        const Fd fd = files_detail::open_read(path);
        std::string head(k_head_bytes, '\0');
        std::size_t got = 0;
        while (got < head.size()) {
            const auto n = ::read(fd.get(), head.data() + got, head.size() - got);
            if (n <= 0) {
                break;
            }
            got += static_cast<std::size_t>(n);
        }
        head.resize(got);
        if (got == k_head_bytes) {
            head.resize(head.rfind('\n') == std::string::npos ? 0 : head.rfind('\n') + 1);
        }
        return head;
    } catch (const std::exception&) {
        return {};
    }
}

using Columns = std::map<std::string, ValueTally>; // header or key -> its values' tally

void tally_csv(const std::string& head, Columns& columns) {
    csv::Reader reader(csv::string_reader(head));
    csv::Record rec;
    std::vector<std::string> header;
    try {
        if (!reader.next(rec)) {
            return;
        }
        for (std::size_t i = 0; i < rec.size(); ++i) {
            header.push_back(rec.value(i));
            columns[header.back()];
        }
        for (int line = 0; line < k_sample_lines && reader.next(rec); ++line) {
            for (std::size_t i = 0; i < rec.size() && i < header.size(); ++i) {
                std::string scratch;
                const auto v = rec.value(i, scratch);
                if (!v.empty()) {
                    columns[header[i]].add(v);
                }
            }
        }
    } catch (const csv::ParseError&) {
        // Judged on what parsed before the bad record.
    }
}

void tally_jsonl(const std::string& head, Columns& columns) {
    std::size_t start = 0;
    for (int line = 0; line < k_sample_lines && start < head.size(); ++line) {
        const auto end = head.find('\n', start);
        const auto text = head.substr(start, end == std::string::npos ? end : end - start);
        start = end == std::string::npos ? head.size() : end + 1;
        const auto j = nlohmann::json::parse(text, nullptr, false);
        if (!j.is_object()) {
            continue;
        }
        for (const auto& [key, value] : j.items()) {
            auto& tally = columns[key];
            if (!value.is_null()) {
                tally.add(value.is_string() ? value.get<std::string>() : value.dump());
            }
        }
    }
}

// "Email: name: e-mail, values: e-mail 3/3": the columns or keys that look personal.
std::vector<std::string> content_reasons(const fs::path& path, FilesRule::Format format) {
    Columns columns;
    const auto head = read_head(path);
    if (format == FilesRule::Format::csv) {
        tally_csv(head, columns);
    } else {
        tally_jsonl(head, columns);
    }
    std::vector<std::string> out;
    for (const auto& [name, tally] : columns) {
        auto why = name_reasons(name);
        const auto values = tally.reasons();
        why.insert(why.end(), values.begin(), values.end());
        if (why.empty()) {
            continue;
        }
        std::string text = "column " + safe_name(name) + " (";
        for (std::size_t i = 0; i < why.size(); ++i) {
            text += (i == 0 ? "" : "; ") + why[i];
        }
        out.push_back(text + ")");
    }
    return out;
}

std::optional<FilesRule::Format> format_by_name(const std::string& rel) {
    const auto ext = fs::path(rel).extension().string();
    if (ext == ".csv" || ext == ".CSV") {
        return FilesRule::Format::csv;
    }
    if (ext == ".jsonl" || ext == ".ndjson" || ext == ".json") {
        return FilesRule::Format::jsonl;
    }
    return std::nullopt;
}

const Rule* matching_rule(const std::vector<const Rule*>& rules, const std::string& rel) {
    const auto parts = split(rel, '/');
    for (const Rule* rule : rules) {
        if (glob_match(split(spec_of<FilesRule>(*rule).files, '/'), 0, parts, 0, false)) {
            return rule;
        }
    }
    return nullptr;
}

void judge_file(const fs::path& path, const std::string& rel, const std::string& store,
                const std::vector<const Rule*>& rules, CoverageScan& scan) {
    CoverageFinding f;
    f.datastore = store;
    f.location = safe_path(rel);
    f.file = rel; // matched by acknowledgements, never shown
    const Rule* rule = matching_rule(rules, rel);
    auto format = format_by_name(rel);
    if (rule != nullptr) {
        f.covered_by = rule->name + " (files " + spec_of<FilesRule>(*rule).files + ")";
        const auto rule_format = spec_of<FilesRule>(*rule).format;
        format =
            rule_format == FilesRule::Format::whole ? std::nullopt : std::optional(rule_format);
    } else {
        f.why.push_back("no rule's glob matches");
    }
    if (format) {
        const auto content = content_reasons(path, *format);
        f.why.insert(f.why.end(), content.begin(), content.end());
    } else if (rule == nullptr) {
        f.why.push_back("content not classified");
    }
    if (rule == nullptr || f.why.size() > 0) {
        scan.findings.push_back(std::move(f));
    }
}

} // namespace

CoverageScan scan_files_coverage(const Datastore& store, const std::vector<const Rule*>& rules) {
    const fs::path root = spec_of<FilesStore>(store).root;
    std::error_code ec;
    if (!fs::is_directory(root, ec)) {
        throw UnavailableError("datastore \"" + store.name + "\": root " + root.string() +
                               " is not a readable directory");
    }
    CoverageScan scan;
    std::size_t files = 0;
    std::size_t hidden = 0;
    const auto options = fs::directory_options::skip_permission_denied;
    for (auto it = fs::recursive_directory_iterator(root, options, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const auto name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {
            ++hidden; // dot files: never matched by a rule's glob, nor ours (temp copies)
            if (it->is_directory(ec)) {
                it.disable_recursion_pending();
            }
            continue;
        }
        if (!it->is_regular_file(ec)) {
            continue;
        }
        if (++files > k_max_files) {
            scan.notes.push_back("more than " + std::to_string(k_max_files) +
                                 " files: the rest were not judged");
            break;
        }
        const auto rel = it->path().lexically_relative(root).string();
        judge_file(it->path(), rel, store.name, rules, scan);
    }
    if (ec) {
        scan.notes.push_back("the walk stopped early: " + ec.message());
        scan.partial = true;
    }
    if (hidden > 0) {
        scan.notes.push_back(std::to_string(hidden) + " hidden entries (names starting with a "
                                                      "dot) were not judged");
    }
    return scan;
}

} // namespace retentiond
