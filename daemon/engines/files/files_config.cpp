// Kind files: reading its datastore sections (root) and its rules (files, format, clock, hold,
// delimiter, key_field), with the same positions and messages as the rest of the file.
#include "files_kind.hpp"

#include <filesystem>
#include <regex>

namespace retentiond {

namespace {

namespace fs = std::filesystem;

bool escapes_root(std::string_view pattern) {
    if (!pattern.empty() && pattern.front() == '/') {
        return true;
    }
    std::size_t start = 0;
    while (start <= pattern.size()) {
        const auto end = std::min(pattern.find('/', start), pattern.size());
        if (pattern.substr(start, end - start) == "..") {
            return true;
        }
        start = end + 1;
    }
    return false;
}

void read_clock_spec(ConfigReader& in, const ConfigNode& node, FilesClock& clock) {
    const ConfigNode* v = &node;
    if (v->is_scalar()) {
        if (v->scalar() == "mtime") {
            clock.kind = FilesClock::Kind::mtime;
        } else {
            in.error(*v, "clock: expected \"mtime\", { field: NAME, format: ... } or "
                         "{ filename: REGEX, format: ... }, got " +
                             in_quotes(v->scalar()));
        }
    } else if (auto c = in.map(*v, "clock")) {
        in.check_keys(*c, {"field", "filename", "format"});
        const auto* field = c->get("field");
        const auto* filename = c->get("filename");
        if (field && filename) {
            in.error(*v, "clock: give either \"field\" or \"filename\", not both");
        } else if (field) {
            clock.kind = FilesClock::Kind::field;
            clock.field = in.string(*field, "clock.field").value_or("");
            if (clock.field.empty()) {
                in.error(*field, "clock.field: empty field name");
            }
        } else if (filename) {
            clock.kind = FilesClock::Kind::filename;
            if (auto re = in.string(*filename, "clock.filename")) {
                clock.filename = *re;
                try {
                    const std::regex compiled(*re);
                    if (compiled.mark_count() < 1) {
                        in.error(*filename,
                                 "clock.filename: the regex needs a capture group "
                                 "around the date, e.g. \"(\\\\d{4}-\\\\d{2}-\\\\d{2})\"");
                    }
                } catch (const std::regex_error& e) {
                    in.error(*filename, "clock.filename: invalid regex " +
                                            in_quotes(filename->scalar()) + ": " + e.what());
                }
            }
        } else {
            in.error(*v, "clock: needs \"field\" or \"filename\"");
        }
        if (const auto* fmt = c->get("format")) {
            clock.format = in.string(*fmt, "clock.format").value_or("");
        }
    }
}

void read_clock(ConfigReader& in, const ConfigNode& node, FilesRule& files) {
    const ConfigNode* v = &node;
    read_clock_spec(in, node, files.clock);
    const bool whole = files.format == FilesRule::Format::whole;
    const bool per_file_clock = files.clock.kind != FilesClock::Kind::field;
    if (whole && !per_file_clock) {
        in.error(*v, "clock: format: whole needs clock: mtime or { filename: ... }");
    } else if (!whole && per_file_clock) {
        in.error(*v, "clock: mtime and filename clocks need format: whole; csv and jsonl "
                     "records take their clock from a field");
    }
}

void read_hold(ConfigReader& in, const ConfigNode& node, FilesRule& files) {
    const ConfigNode* v = &node;
    if (auto h = in.map(*v, "hold")) {
        in.check_keys(*h, {"field", "equals"});
        in.require(*h, {"field", "equals"});
        FilesHold hold;
        if (const auto* x = h->get("field")) {
            hold.field = in.string(*x, "hold.field").value_or("");
        }
        if (const auto* x = h->get("equals")) {
            hold.equals = in.string(*x, "hold.equals").value_or("");
        }
        files.hold = hold;
        if (files.format == FilesRule::Format::whole) {
            in.error(*v, "hold: format: whole files have no fields to hold on");
        }
    }
}

void read_files(ConfigReader& in, const ConfigMap& f, FilesRule& files) {
    in.require(f, {"files"});
    if (const auto* v = f.get("files")) {
        if (auto s = in.string(*v, "files")) {
            if (auto problem = glob_problem(*s)) {
                in.error(*v, "files: " + *problem);
            } else if (escapes_root(*s)) {
                in.error(*v, "files: the glob " + in_quotes(v->scalar()) +
                                 " escapes the datastore root (no leading \"/\", no \"..\")");
            }
            files.files = *s;
        }
    }
    if (const auto* v = f.get("format")) {
        if (auto s = in.choice(*v, "format", {"csv", "jsonl", "whole"})) {
            files.format = *s == "csv"     ? FilesRule::Format::csv
                           : *s == "jsonl" ? FilesRule::Format::jsonl
                                           : FilesRule::Format::whole;
        }
    }
    if (const auto* v = f.get("clock")) {
        read_clock(in, *v, files);
    }
    if (const auto* v = f.get("hold")) {
        read_hold(in, *v, files);
    }
    if (const auto* v = f.get("delimiter")) {
        if (auto s = in.string(*v, "delimiter")) {
            if (s->size() != 1 || *s == "\"" || *s == "\n" || *s == "\r") {
                in.error(*v, "delimiter: expected one character such as \",\", \";\" or a tab");
            } else {
                files.delimiter = s->front();
            }
        }
        if (files.format != FilesRule::Format::csv) {
            in.error(*v, "delimiter: only meaningful with format: csv");
        }
    }
    if (const auto* v = f.get("key_field")) {
        files.key_field = in.string(*v, "key_field").value_or("");
    }
}

} // namespace

std::shared_ptr<const DatastoreSpec> read_files_datastore(ConfigReader& in,
                                                          const ConfigMap& section) {
    FilesStore store;
    const auto* value = section.get("root");
    if (!value) {
        in.error(section.node, "missing key \"root\"");
    } else if (auto s = in.string(*value, "root")) {
        if (s->empty()) {
            in.error(*value, "root: empty path");
        } else {
            fs::path root(*s);
            if (root.is_relative()) {
                root = fs::absolute(fs::path(in.main_dir()) / root);
            }
            store.root = root.lexically_normal().string();
            if (store.root.size() > 1 && store.root.back() == '/') {
                store.root.pop_back();
            }
        }
    }
    return spec_ptr(std::move(store));
}

std::shared_ptr<const RuleSpec> read_files_rule(ConfigReader& in, const ConfigMap& section,
                                                const Rule& rule) {
    FilesRule files;
    read_files(in, section, files);
    if (const auto* v = section.get("subject");
        v != nullptr && !rule.subjects.empty() && files.format == FilesRule::Format::whole) {
        in.error(*v, "subject: format: whole files have no fields to find a person in");
    }
    return spec_ptr(std::move(files));
}

} // namespace retentiond
