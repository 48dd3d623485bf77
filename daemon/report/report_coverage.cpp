// The DPO report's section "personal data without a rule": see report_coverage.hpp. The locations
// no rule covers come first, then the acknowledged ones with their reasons, then what the scans
// could not see; locations a rule covers are only counted.
#include "retentiond/report_coverage.hpp"

#include "retentiond/escape.hpp"

#include <algorithm>
#include <vector>

namespace retentiond {
namespace {

struct CoverageTexts {
    const char* title;
    const char* label;
    const char* complete;
    const char* incomplete; // "%1 ..." the number of uncovered locations
    const char* counts;     // covered / acknowledged
    const char* location;
    const char* why;
    const char* state;
    const char* no_rule;
    const char* acknowledged;
    const char* unavailable;
    const char* notes;
    const char* stale;
    const char* sep; // ": " or " : "
};

constexpr CoverageTexts k_fr{
    "Données personnelles sans règle",
    "Couverture",
    "complète : tout ce qui semble personnel est couvert par une règle ou reconnu",
    "%1 emplacement(s) semblent contenir des données personnelles qu'aucune règle ne couvre",
    "couverts par une règle : %1 ; reconnus : %2",
    "Emplacement",
    "Pourquoi il semble personnel",
    "Statut",
    "aucune règle",
    "reconnu",
    "injoignable : non analysé",
    "Limites de l'analyse",
    "Reconnaissances qui ne correspondent plus à rien",
    " : ",
};

constexpr CoverageTexts k_en{
    "Personal data without a rule",
    "Coverage",
    "complete: everything that looks personal is covered by a rule or acknowledged",
    "%1 location(s) look personal and no rule covers them",
    "covered by a rule: %1; acknowledged: %2",
    "Location",
    "Why it looks personal",
    "Status",
    "no rule",
    "acknowledged",
    "unavailable: not scanned",
    "What the scan could not see",
    "Acknowledgements that no longer match anything",
    ": ",
};

const CoverageTexts& texts(std::string_view lang) {
    return lang == "fr" ? k_fr : k_en;
}

std::string fill(std::string pattern, std::int64_t a, std::int64_t b = 0) {
    for (const auto& [key, n] : {std::pair{"%1", a}, std::pair{"%2", b}}) {
        if (const auto at = pattern.find(key); at != std::string::npos) {
            pattern.replace(at, 2, std::to_string(n));
        }
    }
    return pattern;
}

std::string joined(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& p : parts) {
        out += (out.empty() ? "" : "; ") + p;
    }
    return out;
}

// The findings the section lists: not covered first, then acknowledged.
std::vector<const CoverageFinding*> listed(const CoverageReport& c) {
    std::vector<const CoverageFinding*> out;
    for (const auto& store : c.stores) {
        for (const auto& f : store.scan.findings) {
            if (f.covered_by.empty()) {
                out.push_back(&f);
            }
        }
    }
    std::stable_sort(out.begin(), out.end(), [](const auto* a, const auto* b) {
        return a->acknowledged.empty() && !b->acknowledged.empty();
    });
    return out;
}

std::string state_text(const CoverageFinding& f, const CoverageTexts& t) {
    return f.acknowledged.empty() ? t.no_rule
                                  : std::string(t.acknowledged) + t.sep + f.acknowledged;
}

// What the scans could not see: stores down, notes, stale acknowledgements.
std::vector<std::string> limits(const CoverageReport& c, const CoverageTexts& t) {
    std::vector<std::string> out;
    for (const auto& store : c.stores) {
        if (store.unavailable || !store.error.empty()) {
            out.push_back(store.datastore + t.sep + t.unavailable);
        }
        for (const auto& note : store.scan.notes) {
            out.push_back(store.datastore + t.sep + note);
        }
    }
    return out;
}

} // namespace

std::string coverage_status_label(std::string_view lang) {
    return texts(lang).label;
}

std::string coverage_status_text(const CoverageReport& c, std::string_view lang) {
    const auto& t = texts(lang);
    const std::string head = c.complete() ? t.complete : fill(t.incomplete, c.uncovered());
    return head + " (" + fill(t.counts, c.covered(), c.acknowledged()) + ")";
}

std::string coverage_section_md(const CoverageReport& c, std::string_view lang) {
    const auto& t = texts(lang);
    std::string m = "\n## " + std::string(t.title) + "\n\n" + coverage_status_text(c, lang) + "\n";
    const auto rows = listed(c);
    if (!rows.empty()) {
        m += "\n| " + std::string(t.location) + " | " + t.why + " | " + t.state +
             " |\n|---|---|---|\n";
        for (const auto* f : rows) {
            m += "| " + md_table_cell(f->datastore + " " + f->location) + " | " +
                 md_table_cell(joined(f->why)) + " | " + md_table_cell(state_text(*f, t)) + " |\n";
        }
    }
    const auto seen = limits(c, t);
    if (!seen.empty()) {
        m += "\n" + std::string(t.notes) + t.sep + "\n\n";
        for (const auto& line : seen) {
            m += "- " + md_table_cell(line) + "\n";
        }
    }
    if (!c.stale.empty()) {
        m += "\n" + std::string(t.stale) + t.sep + "\n\n";
        for (const auto& s : c.stale) {
            m += "- " + md_table_cell(s.what) + "\n";
        }
    }
    return m;
}

std::string coverage_section_html(const CoverageReport& c, std::string_view lang) {
    const auto& t = texts(lang);
    std::string h = "<section class=\"rule\">\n<h2>" + html_escape(t.title) + "</h2>\n<p>" +
                    html_escape(coverage_status_text(c, lang)) + "</p>\n";
    const auto rows = listed(c);
    if (!rows.empty()) {
        h += "<table>\n<tr><th>" + html_escape(t.location) + "</th><th>" + html_escape(t.why) +
             "</th><th>" + html_escape(t.state) + "</th></tr>\n";
        for (const auto* f : rows) {
            h += "<tr><td class=\"mono\">" + html_escape(f->datastore + " " + f->location) +
                 "</td><td>" + html_escape(joined(f->why)) + "</td><td" +
                 (f->acknowledged.empty() ? " class=\"warn\"" : "") + ">" +
                 html_escape(state_text(*f, t)) + "</td></tr>\n";
        }
        h += "</table>\n";
    }
    for (const auto& [label, lines] :
         {std::pair{t.notes, limits(c, t)}, std::pair{t.stale, [&] {
                                                          std::vector<std::string> s;
                                                          for (const auto& a : c.stale) {
                                                              s.push_back(a.what);
                                                          }
                                                          return s;
                                                      }()}}) {
        if (lines.empty()) {
            continue;
        }
        h += "<p class=\"note\">" + html_escape(label) + html_escape(t.sep);
        for (const auto& line : lines) {
            h += "<br>" + html_escape(line);
        }
        h += "</p>\n";
    }
    return h + "</section>\n";
}

nlohmann::json coverage_json(const CoverageReport& c) {
    using nlohmann::json;
    json locations = json::array();
    for (const auto* f : listed(c)) {
        locations.push_back(
            {{"datastore", f->datastore},
             {"location", f->location},
             {"why", f->why},
             {"acknowledged", f->acknowledged.empty() ? json() : json(f->acknowledged)}});
    }
    json stale = json::array();
    for (const auto& s : c.stale) {
        stale.push_back(s.what);
    }
    json unavailable = json::array();
    for (const auto& store : c.stores) {
        if (store.unavailable || !store.error.empty()) {
            unavailable.push_back(store.datastore);
        }
    }
    return {{"complete", c.complete()},         {"uncovered", c.uncovered()},
            {"acknowledged", c.acknowledged()}, {"covered", c.covered()},
            {"partial", c.any_partial()},       {"not_scanned", unavailable},
            {"locations", locations},           {"stale_acknowledgements", stale}};
}

} // namespace retentiond
