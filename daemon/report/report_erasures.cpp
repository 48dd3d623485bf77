// The DPO report's section "erasure requests": see report_erasures.hpp. Shown: every open request
// (overdue first, then by deadline) and every request re-applied after a restore; the done ones
// are counted.
#include "retentiond/report_erasures.hpp"

#include "retentiond/escape.hpp"
#include "retentiond/timeutil.hpp"

#include <algorithm>

namespace retentiond {
namespace {

struct ErasureTexts {
    const char* title;
    const char* summary; // %1 open, %2 overdue, %3 done
    const char* none;
    const char* request;
    const char* received;
    const char* deadline;
    const char* status;
    const char* erased;
    const char* deferred;
    const char* reapplied;
    const char* overdue;
    const char* done;
    const char* deferred_status;
    const char* open; // a rule failed or its store was down
};

constexpr ErasureTexts k_fr{
    "Demandes d'effacement",
    "%1 demande(s) ouverte(s), dont %2 en retard ; %3 traitée(s)",
    "Aucune demande d'effacement enregistrée.",
    "Demande",
    "Reçue le",
    "Échéance",
    "Statut",
    "Effacés",
    "Différés (règle dont une retenue les garde)",
    "Réeffacés après restauration",
    "en retard",
    "traitée",
    "partiellement différée",
    "ouverte (une règle a échoué ou son service était injoignable)",
};

constexpr ErasureTexts k_en{
    "Erasure requests",
    "%1 open request(s), %2 of them overdue; %3 done",
    "No erasure request recorded.",
    "Request",
    "Received",
    "Deadline",
    "Status",
    "Erased",
    "Deferred (rule whose hold keeps them)",
    "Erased again after a restore",
    "overdue",
    "done",
    "partly deferred",
    "open (a rule failed or its datastore was down)",
};

const ErasureTexts& texts(std::string_view lang) {
    return lang == "fr" ? k_fr : k_en;
}

// The requests shown, in order: open (overdue first, then by deadline), then re-applied ones.
std::vector<const ErasureRequest*> shown(const std::vector<ErasureRequest>& ledger, TimePoint now) {
    std::vector<const ErasureRequest*> out;
    for (const auto& r : ledger) {
        if (r.open() || r.reapplied > 0) {
            out.push_back(&r);
        }
    }
    std::stable_sort(out.begin(), out.end(), [now](const auto* a, const auto* b) {
        const auto rank = [now](const ErasureRequest* r) {
            return r->overdue(now) ? 0 : r->open() ? 1 : 2;
        };
        return rank(a) != rank(b) ? rank(a) < rank(b) : a->deadline < b->deadline;
    });
    return out;
}

std::string summary(const std::vector<ErasureRequest>& ledger, TimePoint now,
                    const ErasureTexts& t) {
    std::int64_t open = 0;
    std::int64_t overdue = 0;
    for (const auto& r : ledger) {
        open += r.open() ? 1 : 0;
        overdue += r.overdue(now) ? 1 : 0;
    }
    std::string s = t.summary;
    const std::int64_t done = static_cast<std::int64_t>(ledger.size()) - open;
    for (const auto& [key, n] : {std::pair{"%1", open}, {"%2", overdue}, {"%3", done}}) {
        s.replace(s.find(key), 2, std::to_string(n));
    }
    return s;
}

std::string status_words(const ErasureRequest& r, TimePoint now, const ErasureTexts& t) {
    if (r.overdue(now)) {
        return t.overdue;
    }
    return r.status == "done" ? t.done : r.status == "deferred" ? t.deferred_status : t.open;
}

// "12 (dora-accounts: 1)": the deferred records and the rules that hold them.
std::string deferred_words(const ErasureRequest& r) {
    std::string by_rule;
    for (const auto& o : r.rules) {
        if (o.deferred > 0) {
            by_rule += (by_rule.empty() ? "" : ", ") + o.rule + ": " + std::to_string(o.deferred);
        }
    }
    return std::to_string(r.deferred()) + (by_rule.empty() ? "" : " (" + by_rule + ")");
}

std::vector<std::string> row(const ErasureRequest& r, TimePoint now, const ErasureTexts& t) {
    return {r.id,
            format_utc_seconds(r.received),
            format_utc_seconds(r.deadline),
            status_words(r, now, t),
            std::to_string(r.erased),
            deferred_words(r),
            std::to_string(r.reapplied)};
}

std::vector<std::string> header(const ErasureTexts& t) {
    return {t.request, t.received, t.deadline, t.status, t.erased, t.deferred, t.reapplied};
}

} // namespace

std::string erasures_section_md(const std::vector<ErasureRequest>& ledger, TimePoint now,
                                std::string_view lang) {
    const auto& t = texts(lang);
    std::string m = std::string("\n## ") + t.title + "\n\n";
    if (ledger.empty()) {
        return m + t.none + "\n";
    }
    m += summary(ledger, now, t) + "\n";
    const auto rows = shown(ledger, now);
    if (rows.empty()) {
        return m;
    }
    const auto line = [&m](const std::vector<std::string>& cells) {
        m += "|";
        for (const auto& c : cells) {
            m += " " + md_table_cell(c) + " |";
        }
        m += "\n";
    };
    m += "\n";
    line(header(t));
    line(std::vector<std::string>(header(t).size(), "---"));
    for (const auto* r : rows) {
        line(row(*r, now, t));
    }
    return m;
}

std::string erasures_section_html(const std::vector<ErasureRequest>& ledger, TimePoint now,
                                  std::string_view lang) {
    const auto& t = texts(lang);
    std::string h =
        std::string("<section class=\"erasures\">\n<h2>") + html_escape(t.title) + "</h2>\n<p>" +
        html_escape(ledger.empty() ? std::string(t.none) : summary(ledger, now, t)) + "</p>\n";
    const auto rows = shown(ledger, now);
    if (!rows.empty()) {
        h += "<table>\n<tr>";
        for (const auto& c : header(t)) {
            h += "<th>" + html_escape(c) + "</th>";
        }
        h += "</tr>\n";
        for (const auto* r : rows) {
            h += r->overdue(now) ? "<tr class=\"overdue\">" : "<tr>";
            for (const auto& c : row(*r, now, t)) {
                h += "<td>" + html_escape(c) + "</td>";
            }
            h += "</tr>\n";
        }
        h += "</table>\n";
    }
    return h + "</section>\n";
}

nlohmann::json erasures_json(const std::vector<ErasureRequest>& ledger, TimePoint now) {
    nlohmann::json requests = nlohmann::json::array();
    std::int64_t open = 0;
    std::int64_t overdue = 0;
    for (const auto& r : ledger) {
        open += r.open() ? 1 : 0;
        overdue += r.overdue(now) ? 1 : 0;
        nlohmann::json rules = nlohmann::json::object();
        for (const auto& o : r.rules) {
            rules[o.rule] = {{"status", o.status}, {"erased", o.erased}, {"deferred", o.deferred}};
        }
        requests.push_back({{"request", r.id},
                            {"received", format_utc_seconds(r.received)},
                            {"deadline", format_utc_seconds(r.deadline)},
                            {"status", r.overdue(now) ? "overdue" : r.status},
                            {"erased", r.erased},
                            {"deferred", r.deferred()},
                            {"reapplied", r.reapplied},
                            {"rules", std::move(rules)}});
    }
    return {{"open", open}, {"overdue", overdue}, {"requests", std::move(requests)}};
}

} // namespace retentiond
