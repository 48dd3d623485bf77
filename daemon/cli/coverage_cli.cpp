// `retentiond coverage`: what looks personal in each datastore and which rule covers it, as a
// text table, JSON or Markdown; and the one line `check` prints. Never a value: the findings
// hold locations, pattern names and counts (coverage.hpp).
#include "coverage_cli.hpp"

#include "options.hpp"

#include "retentiond/errors.hpp"
#include "retentiond/kind.hpp"
#include "retentiond/registry.hpp"
#include "retentiond/report.hpp"

#include <nlohmann/json.hpp>

#include <ostream>

namespace retentiond {

namespace {

constexpr const char* k_help =
    R"(Usage: retentiond coverage [--format text|json|md] [--datastore NAME]

Finds what looks like personal data in each datastore (PostgreSQL columns by name and by a
bounded sample of values, files no rule's glob matches and the columns of CSV / JSON Lines files,
Redis key patterns from a bounded SCAN) and says which rule covers it. Acknowledge a location
that needs no rule in the configuration's `coverage: { ignore: [...] }`, with a reason.
No value is ever printed: locations, pattern names and counts only.

Exit codes: 0 everything that looks personal is covered or acknowledged, 1 otherwise (or a part
could not be scanned), 69 a datastore was unavailable, 78 configuration invalid, 64 usage error.
)";

std::string status_of(const CoverageFinding& f) {
    if (!f.covered_by.empty()) {
        return "covered";
    }
    return f.acknowledged.empty() ? "uncovered" : "acknowledged";
}

std::string joined(const std::vector<std::string>& items, const char* sep) {
    std::string out;
    for (const auto& item : items) {
        out += (out.empty() ? "" : sep) + item;
    }
    return out;
}

std::string verdict(const CoverageFinding& f) {
    if (!f.covered_by.empty()) {
        return "covered by " + f.covered_by;
    }
    if (!f.acknowledged.empty()) {
        return "acknowledged: " + f.acknowledged;
    }
    return "NOT COVERED" + (f.note.empty() ? "" : " (" + f.note + ")");
}

std::string kind_of(const Config& config, const std::string& store) {
    const auto& ds = config.datastores.at(store);
    return ds.kind != nullptr ? std::string(ds.kind->name()) : "";
}

void render_text(const Config& config, const CoverageReport& report, std::ostream& out) {
    for (const auto& s : report.stores) {
        out << "datastore " << s.datastore << " (" << kind_of(config, s.datastore) << ")\n";
        if (!s.error.empty()) {
            out << "  " << (s.unavailable ? "UNAVAILABLE: " : "ERROR: ") << s.error << '\n';
        }
        for (const auto& f : s.scan.findings) {
            out << "  " << f.location << "\n      " << verdict(f)
                << "\n      why: " << joined(f.why, "; ") << '\n';
        }
        for (const auto& n : s.scan.notes) {
            out << "  note: " << n << '\n';
        }
    }
    for (const auto& st : report.stale) {
        out << "stale acknowledgement: " << st.ignore.pos.file << ":" << st.ignore.pos.line << ": "
            << st.what << " matches nothing\n";
    }
    out << coverage_summary(report) << '\n';
}

nlohmann::json finding_json(const CoverageFinding& f) {
    nlohmann::json j = {{"location", f.location}, {"status", status_of(f)}, {"why", f.why}};
    if (!f.covered_by.empty()) {
        j["covered_by"] = f.covered_by;
    }
    if (!f.acknowledged.empty()) {
        j["acknowledged"] = f.acknowledged;
    }
    if (!f.note.empty()) {
        j["note"] = f.note;
    }
    return j;
}

void render_json(const Config& config, const CoverageReport& report, std::ostream& out) {
    nlohmann::json doc = {
        {"complete", report.complete()},         {"uncovered", report.uncovered()},
        {"acknowledged", report.acknowledged()}, {"covered", report.covered()},
        {"datastores", nlohmann::json::array()}, {"stale", nlohmann::json::array()}};
    for (const auto& s : report.stores) {
        nlohmann::json store = {
            {"name", s.datastore},          {"kind", kind_of(config, s.datastore)},
            {"unavailable", s.unavailable}, {"partial", s.scan.partial},
            {"notes", s.scan.notes},        {"findings", nlohmann::json::array()}};
        if (!s.error.empty()) {
            store["error"] = s.error;
        }
        for (const auto& f : s.scan.findings) {
            store["findings"].push_back(finding_json(f));
        }
        doc["datastores"].push_back(std::move(store));
    }
    for (const auto& st : report.stale) {
        doc["stale"].push_back(
            {{"where", st.ignore.pos.file + ":" + std::to_string(st.ignore.pos.line)},
             {"what", st.what},
             {"reason", st.ignore.reason}});
    }
    out << doc.dump(2) << '\n';
}

std::string md_cell(const std::string& text) {
    std::string out;
    for (const char c : text) {
        out += c == '|' ? std::string("\\|") : std::string(1, c);
    }
    return out;
}

void render_md(const Config& config, const CoverageReport& report, std::ostream& out) {
    out << "# Coverage: personal data and the rules\n\n" << coverage_summary(report) << "\n";
    for (const auto& s : report.stores) {
        out << "\n## " << s.datastore << " (" << kind_of(config, s.datastore) << ")\n\n";
        if (!s.error.empty()) {
            out << "**" << (s.unavailable ? "Unavailable" : "Error") << ":** " << md_cell(s.error)
                << "\n\n";
        }
        if (!s.scan.findings.empty()) {
            out << "| location | why it looks personal | covered |\n|---|---|---|\n";
        }
        for (const auto& f : s.scan.findings) {
            out << "| `" << md_cell(f.location) << "` | " << md_cell(joined(f.why, "; ")) << " | "
                << md_cell(verdict(f)) << " |\n";
        }
        for (const auto& n : s.scan.notes) {
            out << "\n- note: " << md_cell(n) << '\n';
        }
    }
    if (!report.stale.empty()) {
        out << "\n## Stale acknowledgements\n\n";
        for (const auto& st : report.stale) {
            out << "- " << st.ignore.pos.file << ":" << st.ignore.pos.line << ": " << st.what
                << " matches nothing\n";
        }
    }
}

} // namespace

std::string coverage_summary(const CoverageReport& report) {
    std::string line = "coverage: ";
    const auto uncovered = report.uncovered();
    if (uncovered > 0) {
        line += std::to_string(uncovered) + " location" + (uncovered == 1 ? "" : "s") +
                " look personal and no rule covers them";
    } else {
        line += "every location that looks personal is covered or acknowledged";
    }
    line += " (" + std::to_string(report.covered()) + " covered, " +
            std::to_string(report.acknowledged()) + " acknowledged";
    if (!report.stale.empty()) {
        line += ", " + std::to_string(report.stale.size()) + " stale acknowledgements";
    }
    line += ")";
    if (report.any_unavailable()) {
        line += "; a datastore was unavailable";
    } else if (report.any_partial()) {
        line += "; part of a datastore could not be scanned";
    }
    return line + (uncovered > 0 ? "; see retentiond coverage" : "");
}

int cmd_coverage(const std::string& config_path, const std::vector<std::string>& rest,
                 std::ostream& out, std::ostream& err) {
    OptionParser opts(rest, "coverage");
    if (opts.flag("--help") || opts.flag("-h")) {
        out << k_help;
        return k_exit_ok;
    }
    const auto format = opts.value("--format").value_or("text");
    const auto datastore = opts.value("--datastore");
    opts.finish();
    if (format != "text" && format != "json" && format != "md") {
        throw UsageError("coverage: --format must be text, json or md");
    }
    const Config config = load_config(config_path);
    for (const auto& w : config.warnings) {
        err << "warning: " << w.to_string() << '\n';
    }
    const auto report = collect_coverage(config, datastore);
    if (format == "json") {
        render_json(config, report, out);
    } else if (format == "md") {
        render_md(config, report, out);
    } else {
        render_text(config, report, out);
    }
    for (const auto& s : report.stores) {
        if (!s.error.empty()) {
            err << "retentiond: coverage: datastore \"" << s.datastore << "\": " << s.error << '\n';
        }
    }
    if (report.any_unavailable()) {
        return k_exit_unavailable;
    }
    return report.complete() ? k_exit_ok : 1;
}

} // namespace retentiond
