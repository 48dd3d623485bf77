// The DPO report's four renderings (html, md, json, csv) of one ReportData.
#include "retentiond/escape.hpp"
#include "retentiond/report.hpp"
#include "retentiond/report_coverage.hpp"
#include "retentiond/report_erasures.hpp"
#include "retentiond/report_errors.hpp"
#include "retentiond/timeutil.hpp"
#include "retentiond/version.hpp"

#include <date/tz.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <stdexcept>

namespace retentiond {
namespace {

// Every fixed text of the report, in both languages. The policy's own texts are never translated.
struct Texts {
    const char* lang;
    const char* title;
    const char* generated;
    const char* config;
    const char* services;
    const char* audit_log;
    const char* audit_missing;
    const char* audit_lines;
    const char* overall;
    const char* summary;
    const char* rule;
    const char* category;
    const char* legal_basis;
    const char* description;
    const char* retention;
    const char* action;
    const char* action_delete;
    const char* action_anonymize;
    const char* service;
    const char* schedule;
    const char* status;
    const char* in_scope;
    const char* due;
    const char* held;
    const char* no_clock;
    const char* unparseable;
    const char* oldest;
    const char* limit;
    const char* forecast;
    const char* forecast_cols; // "7 j / 30 j / 90 j"
    const char* last_success;
    const char* last_run;
    const char* never;
    const char* did;         // "%s records processed in %s batches"
    const char* purged_week; // chart title
    const char* purged_total;
    const char* age_chart;
    const char* age_caption;
    const char* limit_label;
    const char* no_data;
    const char* counters;
    const char* notes;
    const char* week_prefix;
    const char* day_unit;
    const char* hour_unit;
    const char* minute_unit;
    const char* status_words[5];
    const char* status_help[5];
    const char* why_compliant_none;
    const char* why_compliant_due;
    const char* why_overdue;
    const char* why_failing_refusal;
    const char* why_failing_error;
    const char* why_never;
    const char* why_unknown;
    const char* footer;
    const char* bucket;
    const char* records;
    const char* week;
    const char* yes;
    const char* no;
    char decimal_point;
    const char* thousands;      // separator
    const char* why_unreadable; // records whose clock cannot be read
};

constexpr Texts k_fr{
    "fr",
    "Rapport de conservation des données",
    "Généré le",
    "Configuration",
    "Services",
    "Journal d'audit",
    "introuvable ou illisible",
    "lignes",
    "Statut global",
    "Synthèse",
    "Règle",
    "Catégorie de données",
    "Base légale",
    "Description",
    "Durée de conservation",
    "Action",
    "suppression",
    "anonymisation",
    "Service",
    "Planification",
    "Statut",
    "Dans le périmètre",
    "Échus",
    "Échus mais gelés (conservation légale)",
    "Sans date de référence",
    "Illisibles",
    "Plus ancien enregistrement",
    "limite",
    "Arrivant à échéance",
    "sous 7 j / 30 j / 90 j",
    "Dernière exécution réussie",
    "Dernière exécution",
    "jamais",
    "%s enregistrement(s) traité(s) en %s lot(s)",
    "Enregistrements purgés par semaine",
    "purgés sur 12 semaines",
    "Âge des enregistrements",
    "âge en multiples de la durée de conservation",
    "limite",
    "pas de données",
    "Compteurs",
    "remarque(s) d'exploitation : voir retentiond purge --dry-run",
    "S",
    "j",
    "h",
    "min",
    {"conforme", "jamais exécutée", "en retard", "en échec", "inconnu"},
    {"rien n'est conservé au-delà de la durée promise",
     "aucune exécution de la règle dans le journal d'audit",
     "des enregistrements échus dépassent leur échéance de plus d'une période de planification : "
     "la promesse n'est pas tenue",
     "la dernière exécution a échoué ou a été refusée", "le service de données n'a pas pu être lu"},
    "Rien n'est échu.",
    "%s enregistrement(s) échu(s), en attente de la prochaine exécution (moins d'une période de "
    "planification de retard).",
    "%s enregistrement(s) échu(s) ; le plus ancien a %s pour une limite de %s : plus d'une "
    "période de planification (%s) de retard.",
    "Dernière exécution refusée (%s) : %s",
    "Dernière exécution en échec (%s) : %s",
    "Aucune exécution de cette règle dans le journal d'audit.",
    "Service injoignable : %s",
    "Généré par retentiond %s. Ce rapport ne contient aucune donnée personnelle : des nombres, "
    "des âges et des empreintes uniquement.",
    "Tranche d'âge",
    "Enregistrements",
    "Semaine",
    "oui",
    "non",
    ',',
    "\u202f",
    "%s enregistrement(s) dont la date de référence est illisible : leur échéance ne peut pas "
    "être jugée, la promesse ne peut donc pas être vérifiée (%s).",
};

constexpr Texts k_en{
    "en",
    "Data retention report",
    "Generated",
    "Configuration",
    "Services",
    "Audit log",
    "missing or unreadable",
    "lines",
    "Overall status",
    "Summary",
    "Rule",
    "Data category",
    "Legal basis",
    "Description",
    "Retention period",
    "Action",
    "deletion",
    "anonymization",
    "Service",
    "Schedule",
    "Status",
    "In scope",
    "Due",
    "Due but held (legal hold)",
    "Without a reference date",
    "Unparseable",
    "Oldest record",
    "limit",
    "Falling due",
    "within 7 d / 30 d / 90 d",
    "Last successful run",
    "Last run",
    "never",
    "%s record(s) processed in %s batch(es)",
    "Records purged per week",
    "purged over 12 weeks",
    "Age of the records",
    "age in multiples of the retention period",
    "limit",
    "no data",
    "Counters",
    "operational note(s): see retentiond purge --dry-run",
    "W",
    "d",
    "h",
    "min",
    {"compliant", "never run", "overdue", "failing", "unknown"},
    {"nothing is kept beyond the promised period", "no run of the rule in the audit log",
     "due records are more than one schedule period past their deadline: the promise is broken",
     "the last run failed or was refused", "the datastore could not be read"},
    "Nothing is due.",
    "%s record(s) due, waiting for the next run (less than one schedule period late).",
    "%s record(s) due; the oldest is %s old for a limit of %s: more than one schedule period "
    "(%s) late.",
    "Last run refused (%s): %s",
    "Last run failed (%s): %s",
    "No run of this rule in the audit log.",
    "Datastore unreachable: %s",
    "Generated by retentiond %s. This report holds no personal data: counts, ages and digests "
    "only.",
    "Age band",
    "Records",
    "Week",
    "yes",
    "no",
    '.',
    ",",
    "%s record(s) whose clock cannot be read: whether they are due cannot be judged, so the "
    "promise cannot be checked (%s).",
};

const Texts& texts(std::string_view lang) {
    return lang == "en" ? k_en : k_fr;
}

constexpr std::array<const char*, 5> k_status_color = {"#15803d", "#6b7280", "#c2410c", "#b91c1c",
                                                       "#6d28d9"};

std::size_t idx(RuleStatus s) {
    return static_cast<std::size_t>(s);
}

// printf with %s only, so translations can reorder nothing but stay simple and safe.
std::string fill(const char* pattern, std::initializer_list<std::string> args) {
    std::string out;
    auto arg = args.begin();
    for (const char* p = pattern; *p != '\0'; ++p) {
        if (p[0] == '%' && p[1] == 's') {
            out += arg != args.end() ? *arg++ : std::string{};
            ++p;
        } else {
            out += *p;
        }
    }
    return out;
}

std::string group(std::int64_t n, const Texts& t) {
    const bool negative = n < 0;
    std::string digits = std::to_string(negative ? -n : n);
    std::string out;
    const std::size_t first = digits.size() % 3 == 0 ? 3 : digits.size() % 3;
    out = digits.substr(0, first);
    for (std::size_t i = first; i < digits.size(); i += 3) {
        out += t.thousands;
        out += digits.substr(i, 3);
    }
    return negative ? "-" + out : out;
}

std::string compact(std::int64_t n, const Texts& t) {
    if (n < 10000) {
        return std::to_string(n);
    }
    const double v = static_cast<double>(n);
    char buf[32];
    if (n < 1000000) {
        std::snprintf(buf, sizeof buf, "%.0fk", v / 1e3);
    } else {
        std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
    }
    std::string s = buf;
    std::replace(s.begin(), s.end(), '.', t.decimal_point);
    return s;
}

std::string age_words(std::chrono::microseconds age, const Texts& t) {
    using namespace std::chrono;
    const auto minutes = duration_cast<std::chrono::minutes>(age).count();
    if (minutes < 120) {
        return std::to_string(std::max<std::int64_t>(minutes, 0)) + "\u00a0" + t.minute_unit;
    }
    if (minutes < 48 * 60) {
        return std::to_string(minutes / 60) + "\u00a0" + t.hour_unit;
    }
    return group(minutes / (24 * 60), t) + "\u00a0" + t.day_unit;
}

std::string period_words(std::chrono::seconds s, const Texts& t) {
    const auto n = s.count();
    if (n > 0 && n % 86400 == 0) {
        return group(n / 86400, t) + "\u00a0" + t.day_unit;
    }
    if (n > 0 && n % 3600 == 0) {
        return std::to_string(n / 3600) + "\u00a0" + t.hour_unit;
    }
    return std::to_string(n / 60) + "\u00a0" + t.minute_unit;
}

// Dates for people: in the daemon's time zone, day first in French.
std::string local_time(TimePoint t, const ReportData& data, const Texts& t_) {
    const auto* tz = zone_or_utc(data.timezone);
    const auto local = tz->to_local(date::floor<std::chrono::minutes>(t));
    const auto day = date::floor<date::days>(local);
    const date::year_month_day ymd{day};
    const date::hh_mm_ss hms{local - day};
    char buf[40];
    if (t_.lang == std::string_view("fr")) {
        std::snprintf(buf, sizeof buf, "%02u/%02u/%04d %02d:%02d", static_cast<unsigned>(ymd.day()),
                      static_cast<unsigned>(ymd.month()), static_cast<int>(ymd.year()),
                      static_cast<int>(hms.hours().count()),
                      static_cast<int>(hms.minutes().count()));
    } else {
        std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02d:%02d", static_cast<int>(ymd.year()),
                      static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                      static_cast<int>(hms.hours().count()),
                      static_cast<int>(hms.minutes().count()));
    }
    return buf;
}

std::string action_words(const RuleReport& r, const Texts& t) {
    return r.action == "anonymize" ? t.action_anonymize : t.action_delete;
}

// The retention period's exact length at the dry run's now (12 months = 365 or 366 days).
std::chrono::microseconds limit_of(const RuleReport& r) {
    return r.dry ? r.dry->now - r.dry->cutoff : r.retain_approx;
}

std::string oldest_words(const RuleReport& r, const Texts& t) {
    if (!r.oldest_age) {
        return "—";
    }
    std::string s = age_words(*r.oldest_age, t) + " (" + t.limit + " " + r.retain_words.get(t.lang);
    const auto limit = limit_of(r);
    if (limit.count() > 0) {
        const double ratio =
            static_cast<double>(r.oldest_age->count()) / static_cast<double>(limit.count());
        s += ", " + std::to_string(static_cast<long long>(std::lround(ratio * 100))) + "\u00a0%";
    }
    return s + ")";
}

std::string forecast_words(const RuleReport& r, const Texts& t) {
    if (!r.dry) {
        return "—";
    }
    return group(r.dry->due_7d, t) + " / " + group(r.dry->due_30d, t) + " / " +
           group(r.dry->due_90d, t);
}

std::string run_when(const std::optional<RunInfo>& run, const ReportData& data, const Texts& t) {
    if (!run) {
        return t.never;
    }
    return run->at ? local_time(*run->at, data, t) : run->run_id;
}

std::string run_did(const RunInfo& run, const Texts& t) {
    return fill(t.did, {group(run.processed, t), group(run.batches, t)});
}

// Why the rule has its status, in one sentence.
std::string status_reason(const RuleReport& r, const ReportData& data, const Texts& t) {
    switch (r.status) {
    case RuleStatus::unknown:
        if (r.dry) { // the store was read, but some records' clocks could not be
            return fill(t.why_unreadable,
                        {group(r.dry->unparseable, t), error_for_report(r.error_code, t.lang)});
        }
        return fill(t.why_unknown, {error_for_report(r.error_code, t.lang)});
    case RuleStatus::failing:
        return fill(
            r.last_run->failure == "refusal" ? t.why_failing_refusal : t.why_failing_error,
            {run_when(r.last_run, data, t), error_for_report(r.last_run->error_code, t.lang)});
    case RuleStatus::overdue:
        return fill(t.why_overdue,
                    {group(r.dry->due, t), age_words(*r.oldest_age, t), r.retain_words.get(t.lang),
                     period_words(r.schedule_period, t)});
    case RuleStatus::never_run:
        return t.why_never;
    case RuleStatus::compliant:
        return r.dry->due == 0 ? t.why_compliant_none
                               : fill(t.why_compliant_due, {group(r.dry->due, t)});
    }
    return {};
}

// People read the problems first; json and csv keep the configuration's order for tools.
std::vector<std::reference_wrapper<const RuleReport>> worst_first(const ReportData& data) {
    std::vector<std::reference_wrapper<const RuleReport>> out(data.rules.begin(), data.rules.end());
    std::stable_sort(out.begin(), out.end(),
                     [](const RuleReport& a, const RuleReport& b) { return a.status > b.status; });
    return out;
}

std::string week_label(const std::string& iso, const Texts& t) {
    // "2026-W33" -> "S33" / "W33"
    const auto w = iso.find('W');
    return std::string(t.week_prefix) + (w == std::string::npos ? iso : iso.substr(w + 1));
}

// --- html ----------------------------------------------------------------------------------

std::string esc(std::string_view s) {
    return html_escape(s);
}

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}

constexpr const char* k_css = R"(
@page { size: A4; margin: 12mm 11mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 9.5pt;
  color: #1f2937; margin: 0 auto; max-width: 200mm; padding: 6mm 4mm; line-height: 1.35; }
h1 { font-size: 16pt; margin: 0 0 6px; }
h2 { font-size: 12.5pt; margin: 0 0 4px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0; table-layout: fixed; }
th, td { text-align: left; padding: 2px 5px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
td { overflow-wrap: anywhere; }
th { color: #4b5563; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { width: 30%; }
table.kv.numbers th { width: 55%; }
.summary table { font-size: 8.5pt; }
.badge { display: inline-block; padding: 0 7px; border-radius: 8px; color: #fff;
  font-size: 8.5pt; font-weight: 600; white-space: nowrap; vertical-align: 1px; }
header { border-bottom: 3px solid #1f2937; padding-bottom: 6px; margin-bottom: 8px; }
.mono { font-family: "DejaVu Sans Mono", monospace; font-size: 8.5pt; }
.legend { font-size: 8.5pt; color: #4b5563; margin: 4px 0 0; padding-left: 18px; }
section.rule { border: 1px solid #d1d5db; border-left-width: 6px; border-radius: 4px;
  padding: 6px 10px; margin: 10px 0; page-break-inside: avoid; break-inside: avoid; }
.why { margin: 2px 0 4px; font-weight: 600; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.charts { display: grid; grid-template-columns: 3fr 2fr; gap: 14px; margin-top: 4px; }
.charts figure { margin: 0; }
.note { font-size: 8.5pt; color: #4b5563; margin: 2px 0; }
figcaption { font-size: 8.5pt; color: #4b5563; font-weight: 600; }
svg { width: 100%; height: auto; display: block; }
footer { margin-top: 12px; font-size: 8pt; color: #6b7280; border-top: 1px solid #e5e7eb;
  padding-top: 4px; }
.warn { color: #b91c1c; font-weight: 600; }
@media print { body { padding: 0; max-width: none; } }
)";

std::string badge(RuleStatus s, const Texts& t) {
    return "<span class=\"badge\" style=\"background:" + std::string(k_status_color[idx(s)]) +
           "\">" + esc(t.status_words[idx(s)]) + "</span>";
}

// Age histogram: 17 buckets of an eighth of the retention period, the limit as a dashed line at
// 8/8 and the buckets past it in red, so the overdue tail shows even when it is small.
std::string age_svg(const RuleReport& r, const Texts& t) {
    constexpr double k_w = 520;
    constexpr double k_h = 190;
    constexpr double k_x0 = 8;
    constexpr double k_x1 = 512;
    constexpr double k_top = 36;
    constexpr double k_base = 150;
    std::string s = "<svg viewBox=\"0 0 " + num(k_w) + " " + num(k_h) +
                    "\" role=\"img\" font-family=\"DejaVu Sans, Arial, sans-serif\">";
    if (!r.dry || r.dry->age_buckets.empty()) {
        s += "<text x=\"" + num(k_w / 2) + "\" y=\"" + num(k_h / 2) +
             "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#6b7280\">" + esc(t.no_data) +
             "</text></svg>";
        return s;
    }
    const auto& b = r.dry->age_buckets;
    const std::size_t n = b.size();
    const double bw = (k_x1 - k_x0) / static_cast<double>(n);
    const double limit_x = k_x0 + bw * 8;
    const std::int64_t max = std::max<std::int64_t>(1, *std::max_element(b.begin(), b.end()));
    s += "<rect x=\"" + num(limit_x) + "\" y=\"" + num(k_top - 22) + "\" width=\"" +
         num(k_x1 - limit_x) + "\" height=\"" + num(k_base - k_top + 22) + "\" fill=\"#fdecec\"/>";
    for (std::size_t i = 0; i < n; ++i) {
        const double h = b[i] == 0 ? 0
                                   : std::max(2.0, (k_base - k_top) * static_cast<double>(b[i]) /
                                                       static_cast<double>(max));
        const double x = k_x0 + bw * static_cast<double>(i) + 1.5;
        const char* fill_color = i >= 8 ? "#dc2626" : "#2563eb";
        s += "<rect x=\"" + num(x) + "\" y=\"" + num(k_base - h) + "\" width=\"" + num(bw - 3) +
             "\" height=\"" + num(h) + "\" fill=\"" + fill_color + "\"/>";
        if (b[i] != 0) {
            s += "<text x=\"" + num(x + (bw - 3) / 2) + "\" y=\"" + num(k_base - h - 3) +
                 "\" text-anchor=\"middle\" font-size=\"9\" fill=\"#374151\">" +
                 esc(compact(b[i], t)) + "</text>";
        }
    }
    s += "<line x1=\"" + num(k_x0) + "\" y1=\"" + num(k_base) + "\" x2=\"" + num(k_x1) +
         "\" y2=\"" + num(k_base) + "\" stroke=\"#9ca3af\"/>";
    s += "<line x1=\"" + num(limit_x) + "\" y1=\"" + num(k_top - 30) + "\" x2=\"" + num(limit_x) +
         "\" y2=\"" + num(k_base + 4) +
         "\" stroke=\"#b91c1c\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>";
    s += "<text x=\"" + num(limit_x + 4) + "\" y=\"" + num(k_top - 20) +
         "\" font-size=\"11\" font-weight=\"bold\" fill=\"#b91c1c\">" + esc(t.limit_label) + " " +
         esc(r.retain_words.get(t.lang)) + "</text>";
    const std::array<std::pair<std::size_t, const char*>, 5> ticks = {
        {{0, "0"}, {4, "0,5×"}, {8, "1×"}, {12, "1,5×"}, {16, "≥2×"}}};
    for (const auto& [i, label] : ticks) {
        std::string text = label;
        if (t.decimal_point == '.') {
            std::replace(text.begin(), text.end(), ',', '.');
        }
        const double x = k_x0 + bw * static_cast<double>(i) + (i == 16 ? bw / 2 : 0);
        s += "<text x=\"" + num(x) + "\" y=\"" + num(k_base + 15) +
             "\" text-anchor=\"middle\" font-size=\"10\" fill=\"#374151\">" + esc(text) + "</text>";
    }
    s += "<text x=\"" + num(k_x0) + "\" y=\"" + num(k_base + 34) +
         "\" font-size=\"10\" fill=\"#6b7280\">" + esc(t.age_caption) + "</text>";
    s += "</svg>";
    return s;
}

std::string weeks_svg(const RuleReport& r, const Texts& t) {
    constexpr double k_w = 340;
    constexpr double k_h = 190;
    constexpr double k_x0 = 6;
    constexpr double k_x1 = 334;
    constexpr double k_top = 26;
    constexpr double k_base = 150;
    std::string s = "<svg viewBox=\"0 0 " + num(k_w) + " " + num(k_h) +
                    "\" role=\"img\" font-family=\"DejaVu Sans, Arial, sans-serif\">";
    const auto& w = r.purged_per_week;
    const std::size_t n = std::max<std::size_t>(1, w.size());
    const double bw = (k_x1 - k_x0) / static_cast<double>(n);
    std::int64_t max = 1;
    for (const auto& c : w) {
        max = std::max(max, c.count);
    }
    for (std::size_t i = 0; i < w.size(); ++i) {
        const double x = k_x0 + bw * static_cast<double>(i) + 2;
        const double h = w[i].count == 0
                             ? 0
                             : std::max(2.0, (k_base - k_top) * static_cast<double>(w[i].count) /
                                                 static_cast<double>(max));
        s += "<rect x=\"" + num(x) + "\" y=\"" + num(k_base - h) + "\" width=\"" + num(bw - 4) +
             "\" height=\"" + num(h) + "\" fill=\"#0f766e\"/>";
        if (w[i].count != 0) {
            s += "<text x=\"" + num(x + (bw - 4) / 2) + "\" y=\"" + num(k_base - h - 3) +
                 "\" text-anchor=\"middle\" font-size=\"9\" fill=\"#374151\">" +
                 esc(compact(w[i].count, t)) + "</text>";
        }
        s += "<text x=\"" + num(x + (bw - 4) / 2) + "\" y=\"" + num(k_base + 14) +
             "\" text-anchor=\"middle\" font-size=\"9\" fill=\"#374151\">" +
             esc(week_label(w[i].week, t)) + "</text>";
    }
    s += "<line x1=\"" + num(k_x0) + "\" y1=\"" + num(k_base) + "\" x2=\"" + num(k_x1) +
         "\" y2=\"" + num(k_base) + "\" stroke=\"#9ca3af\"/>";
    s += "<text x=\"" + num(k_x0) + "\" y=\"" + num(k_base + 34) +
         "\" font-size=\"10\" fill=\"#6b7280\">" + esc(group(r.purged_in_window, t)) + " " +
         esc(t.purged_total) + "</text>";
    s += "</svg>";
    return s;
}

std::string services_text(const ReportData& data) {
    std::string s;
    for (const auto& svc : data.services) {
        s += (s.empty() ? "" : ", ") + svc.name + " (" + svc.kind + ")";
    }
    return s;
}

// The HTML report's head, header (status, generation, services, config, audit log, coverage) and
// legend.
std::string html_head(const ReportData& data, const Texts& t) {
    const std::string lang = t.lang;
    std::string h;
    h += "<!DOCTYPE html>\n<html lang=\"" + lang + "\">\n<head>\n<meta charset=\"utf-8\">\n";
    h += "<title>" + esc(t.title) + " — retentiond</title>\n<style>" + std::string(k_css) +
         "</style>\n</head>\n<body>\n<header>\n";
    h += "<h1>" + esc(t.title) + "</h1>\n<table class=\"kv\">\n";
    h += "<tr><th>" + esc(t.overall) + "</th><td>" + badge(data.overall, t) + "</td></tr>\n";
    h += "<tr><th>" + esc(t.generated) + "</th><td>" + esc(local_time(data.generated_at, data, t)) +
         " (" + esc(data.timezone) + ")</td></tr>\n";
    h += "<tr><th>" + esc(t.services) + "</th><td>" + esc(services_text(data)) + "</td></tr>\n";
    h += "<tr><th>" + esc(t.config) + "</th><td>" + esc(data.config_file) +
         "<br><span class=\"mono\">sha256 " + esc(data.config_sha256) + "</span></td></tr>\n";
    h += "<tr><th>" + esc(t.audit_log) + "</th><td>" + esc(data.audit_log);
    if (data.audit_log_read) {
        h += " (" + esc(group(static_cast<std::int64_t>(data.audit_lines), t)) + " " +
             esc(t.audit_lines) + ")";
    } else {
        h += " — <span class=\"warn\">" + esc(t.audit_missing) + "</span>";
    }
    h += "</td></tr>\n";
    if (data.coverage) {
        h += "<tr><th>" + esc(coverage_status_label(lang)) + "</th><td>" +
             esc(coverage_status_text(*data.coverage, lang)) + "</td></tr>\n";
    }
    h += "</table>\n<ul class=\"legend\">\n";
    for (std::size_t i = 0; i < 5; ++i) {
        h += "<li><b>" + esc(t.status_words[i]) + "</b>" +
             (t.lang == std::string_view("fr") ? " : " : ": ") + esc(t.status_help[i]) + "</li>\n";
    }
    h += "</ul>\n</header>\n";
    return h;
}

// The HTML report's summary table, worst rule first.
std::string html_summary(const ReportData& data, const Texts& t) {
    std::string h;
    h += "<section class=\"summary\">\n<h2>" + esc(t.summary) +
         "</h2>\n<table>\n<colgroup><col style=\"width:18%\"><col style=\"width:21%\"><col "
         "style=\"width:14%\"><col style=\"width:11%\"><col style=\"width:8%\"><col "
         "style=\"width:16%\"><col style=\"width:12%\"></colgroup>\n<tr><th>" +
         esc(t.rule) + "</th><th>" + esc(t.category) + "</th><th>" + esc(t.status) +
         "</th><th class=\"n\">" + esc(t.in_scope) + "</th><th class=\"n\">" + esc(t.due) +
         "</th><th>" + esc(t.oldest) + "</th><th>" + esc(t.last_success) + "</th></tr>\n";
    for (const RuleReport& r : worst_first(data)) {
        h += "<tr><td><a href=\"#rule-" + esc(r.rule) + "\">" + esc(r.rule) + "</a></td><td>" +
             esc(r.category) + "</td><td>" + badge(r.status, t) + "</td><td class=\"n\">" +
             (r.dry ? esc(group(r.dry->in_scope, t)) : "—") + "</td><td class=\"n\">" +
             (r.dry ? esc(group(r.dry->due, t)) : "—") + "</td><td>" + esc(oldest_words(r, t)) +
             "</td><td>" + esc(run_when(r.last_success, data, t)) + "</td></tr>\n";
    }
    h += "</table>\n</section>\n";
    return h;
}

// One rule's section of the HTML report.
std::string html_rule(const RuleReport& r, const ReportData& data, const Texts& t) {
    const std::string lang = t.lang;
    std::string h;
    h += "<section class=\"rule\" id=\"rule-" + esc(r.rule) +
         "\" style=\"border-left-color:" + k_status_color[idx(r.status)] + "\">\n";
    h += "<h2>" + esc(r.rule) + " " + badge(r.status, t) + "</h2>\n";
    h += "<p class=\"why\">" + esc(status_reason(r, data, t)) + "</p>\n";
    h += "<div class=\"cols\"><div>\n<table class=\"kv\">\n";
    const auto kv = [&](const char* k, const std::string& v) {
        h += "<tr><th>" + esc(k) + "</th><td>" + esc(v) + "</td></tr>\n";
    };
    kv(t.category, r.category);
    kv(t.legal_basis, r.legal_basis);
    if (!r.description.empty()) {
        kv(t.description, r.description);
    }
    kv(t.retention, r.retention.get(lang));
    kv(t.action, action_words(r, t));
    kv(t.service, r.datastore + " (" + r.kind + ")");
    kv(t.schedule, r.schedule_text);
    h += "</table>\n</div><div>\n<table class=\"kv numbers\">\n";
    const auto kn = [&](const char* k, const std::string& v) {
        h += "<tr><th>" + esc(k) + "</th><td class=\"n\">" + esc(v) + "</td></tr>\n";
    };
    if (r.dry) {
        kn(t.in_scope, group(r.dry->in_scope, t));
        kn(t.due, group(r.dry->due, t));
        kn(t.held, group(r.dry->held, t));
        kn(t.no_clock, group(r.dry->no_clock, t));
        if (r.dry->unparseable != 0) {
            kn(t.unparseable, group(r.dry->unparseable, t));
        }
        kn(t.oldest, oldest_words(r, t));
        kn((std::string(t.forecast) + " " + t.forecast_cols).c_str(), forecast_words(r, t));
    }
    kn(t.last_success, run_when(r.last_success, data, t));
    if (r.last_success) {
        h += "<tr><td colspan=\"2\" class=\"n\">" + esc(run_did(*r.last_success, t)) +
             "</td></tr>\n";
    }
    h += "</table>\n</div></div>\n";
    if (r.dry && (!r.dry->counters.empty() || r.notes != 0)) {
        h += "<p class=\"note\">";
        if (!r.dry->counters.empty()) {
            h += esc(t.counters) + " :";
            for (const auto& [name, value] : r.dry->counters) {
                h += " <span class=\"mono\">" + esc(name) + "</span> = " + esc(group(value, t)) +
                     ";";
            }
        }
        if (r.notes != 0) {
            h += " " + esc(std::to_string(r.notes)) + " " + esc(t.notes);
        }
        h += "</p>\n";
    }
    // A store that could not be read has no ages to chart; its past purges still count.
    if (r.dry || r.purged_in_window != 0) {
        h += "<div class=\"charts\">\n<figure class=\"age\"><figcaption>" + esc(t.age_chart) +
             "</figcaption>" + age_svg(r, t) + "</figure>\n<figure class=\"weeks\"><figcaption>" +
             esc(t.purged_week) + "</figcaption>" + weeks_svg(r, t) + "</figure>\n</div>\n";
    }
    h += "</section>\n";
    return h;
}

std::string render_html(const ReportData& data, const Texts& t) {
    const std::string lang = t.lang;
    std::string h = html_head(data, t) + html_summary(data, t);
    for (const RuleReport& r : worst_first(data)) {
        h += html_rule(r, data, t);
    }
    if (data.coverage) {
        h += coverage_section_html(*data.coverage, lang);
    }
    if (data.erasures) {
        h += erasures_section_html(*data.erasures, data.generated_at, lang);
    }
    h += "<footer>" + esc(fill(t.footer, {k_version})) + "</footer>\n</body>\n</html>\n";
    return h;
}

// --- md ------------------------------------------------------------------------------------

// A table cell: no line breaks, no pipes, no raw HTML.
std::string cell(std::string_view s) {
    return md_table_cell(s);
}

// The Markdown report's header, legend and summary table.
std::string md_head(const ReportData& data, const Texts& t) {
    const std::string lang = t.lang;
    std::string m = "# " + std::string(t.title) + "\n\n";
    m += "| | |\n|---|---|\n";
    m += "| " + std::string(t.overall) + " | **" + t.status_words[idx(data.overall)] + "** |\n";
    m += "| " + std::string(t.generated) + " | " + local_time(data.generated_at, data, t) + " (" +
         cell(data.timezone) + ") |\n";
    m += "| " + std::string(t.services) + " | " + cell(services_text(data)) + " |\n";
    m += "| " + std::string(t.config) + " | " + cell(data.config_file) + " (sha256 `" +
         cell(data.config_sha256) + "`) |\n";
    m += "| " + std::string(t.audit_log) + " | " + cell(data.audit_log) +
         (data.audit_log_read ? " (" + group(static_cast<std::int64_t>(data.audit_lines), t) + " " +
                                    t.audit_lines + ")"
                              : std::string(" — ") + t.audit_missing) +
         " |\n";
    if (data.coverage) {
        m += "| " + cell(coverage_status_label(lang)) + " | " +
             cell(coverage_status_text(*data.coverage, lang)) + " |\n";
    }
    m += "\n";
    for (std::size_t i = 0; i < 5; ++i) {
        m += "- **" + std::string(t.status_words[i]) + "**: " + t.status_help[i] + "\n";
    }
    m += "\n## " + std::string(t.summary) + "\n\n";
    m += "| " + std::string(t.rule) + " | " + t.category + " | " + t.status + " | " + t.in_scope +
         " | " + t.due + " | " + t.oldest + " | " + t.last_success + " |\n";
    m += "|---|---|---|---:|---:|---|---|\n";
    for (const RuleReport& r : worst_first(data)) {
        m += "| " + cell(r.rule) + " | " + cell(r.category) + " | **" +
             t.status_words[idx(r.status)] + "** | " + (r.dry ? group(r.dry->in_scope, t) : "—") +
             " | " + (r.dry ? group(r.dry->due, t) : "—") + " | " + oldest_words(r, t) + " | " +
             run_when(r.last_success, data, t) + " |\n";
    }
    return m;
}

// One rule's section of the Markdown report.
std::string md_rule(const RuleReport& r, const ReportData& data, const Texts& t) {
    const std::string lang = t.lang;
    std::string m;
    m += "\n## " + cell(r.rule) + " — " + t.status_words[idx(r.status)] + "\n\n";
    m += cell(status_reason(r, data, t)) + "\n\n";
    m += "| | |\n|---|---|\n";
    const auto kv = [&](const char* k, const std::string& v) {
        m += "| " + std::string(k) + " | " + cell(v) + " |\n";
    };
    kv(t.category, r.category);
    kv(t.legal_basis, r.legal_basis);
    if (!r.description.empty()) {
        kv(t.description, r.description);
    }
    kv(t.retention, r.retention.get(lang));
    kv(t.action, action_words(r, t));
    kv(t.service, r.datastore + " (" + r.kind + ")");
    kv(t.schedule, r.schedule_text);
    if (r.dry) {
        kv(t.in_scope, group(r.dry->in_scope, t));
        kv(t.due, group(r.dry->due, t));
        kv(t.held, group(r.dry->held, t));
        kv(t.no_clock, group(r.dry->no_clock, t));
        if (r.dry->unparseable != 0) {
            kv(t.unparseable, group(r.dry->unparseable, t));
        }
        kv(t.oldest, oldest_words(r, t));
        kv((std::string(t.forecast) + " " + t.forecast_cols).c_str(), forecast_words(r, t));
        for (const auto& [name, value] : r.dry->counters) {
            kv((std::string(t.counters) + ": " + name).c_str(), group(value, t));
        }
        if (r.notes != 0) {
            kv(t.notes, std::to_string(r.notes));
        }
    }
    kv(t.last_success, run_when(r.last_success, data, t) +
                           (r.last_success ? " — " + run_did(*r.last_success, t) : std::string{}));
    if (r.dry && !r.dry->age_buckets.empty()) {
        m += "\n" + std::string(t.age_chart) + " (" + t.age_caption + "; " + t.limit_label + " = " +
             cell(r.retain_words.get(lang)) + "):\n\n| " + t.bucket + " | " + t.records +
             " |\n|---|---:|\n";
        const auto& b = r.dry->age_buckets;
        for (std::size_t i = 0; i < b.size(); ++i) {
            char band[64];
            if (i + 1 == b.size()) {
                std::snprintf(band, sizeof band, "≥ %zu/8", i);
            } else {
                std::snprintf(band, sizeof band, "%zu/8 – %zu/8", i, i + 1);
            }
            m += "| " + std::string(band) + (i >= 8 ? " ⚠" : "") + " | " + group(b[i], t) + " |\n";
        }
    }
    m += "\n" + std::string(t.purged_week) + ":\n\n| " + t.week + " | " + t.records +
         " |\n|---|---:|\n";
    for (const auto& w : r.purged_per_week) {
        m += "| " + w.week + " | " + group(w.count, t) + " |\n";
    }
    return m;
}

std::string render_md(const ReportData& data, const Texts& t) {
    const std::string lang = t.lang;
    std::string m = md_head(data, t);
    for (const RuleReport& r : worst_first(data)) {
        m += md_rule(r, data, t);
    }
    if (data.coverage) {
        m += coverage_section_md(*data.coverage, lang);
    }
    if (data.erasures) {
        m += erasures_section_md(*data.erasures, data.generated_at, lang);
    }
    m += "\n---\n" + fill(t.footer, {k_version}) + "\n";
    return m;
}

// --- json ----------------------------------------------------------------------------------

// An error as the report shows it: its code's message in the report's language (the English
// detail is in the log), null when there is none.
nlohmann::json coded_error(bool present, const std::string& code, std::string_view lang) {
    return present ? nlohmann::json(error_for_report(code, lang)) : nlohmann::json();
}

nlohmann::json run_json(const std::optional<RunInfo>& run, std::string_view lang) {
    if (!run) {
        return nullptr;
    }
    return {{"run_id", run->run_id},
            {"at", run->at ? nlohmann::json(format_utc_seconds(*run->at)) : nlohmann::json()},
            {"ok", run->ok},
            {"processed", run->processed},
            {"batches", run->batches},
            {"failure", run->failure.empty() ? nlohmann::json() : nlohmann::json(run->failure)},
            {"message", coded_error(!run->ok && !run->failure.empty(), run->error_code, lang)},
            {"error_code", !run->ok && !run->failure.empty()
                               ? nlohmann::json(error_text(run->error_code).code)
                               : nlohmann::json()}};
}

// A rule's dry-run figures in the JSON report (null when the rule's store was not read).
nlohmann::json dry_json(const RuleReport& r) {
    using nlohmann::json;
    if (!r.dry) {
        return nullptr;
    }
    return {{"now", format_utc_seconds(r.dry->now)},
            {"cutoff", format_utc_seconds(r.dry->cutoff)},
            {"in_scope", r.dry->in_scope},
            {"due", r.dry->due},
            {"held", r.dry->held},
            {"no_clock", r.dry->no_clock},
            {"unparseable", r.dry->unparseable},
            {"oldest_clock",
             r.dry->oldest_clock ? json(format_utc_seconds(*r.dry->oldest_clock)) : json()},
            {"oldest_age_seconds",
             r.oldest_age
                 ? json(std::chrono::duration_cast<std::chrono::seconds>(*r.oldest_age).count())
                 : json()},
            {"oldest_past_grace", r.oldest_past_grace},
            {"forecast", {{"7d", r.dry->due_7d}, {"30d", r.dry->due_30d}, {"90d", r.dry->due_90d}}},
            {"age_buckets", r.dry->age_buckets},
            {"counters", r.dry->counters},
            {"notes", r.notes}};
}

// One rule of the JSON report.
nlohmann::json rule_json(const RuleReport& r, const ReportData& data, const Texts& t) {
    using nlohmann::json;
    const std::string lang = t.lang;
    json weeks = json::array();
    for (const auto& w : r.purged_per_week) {
        weeks.push_back({{"week", w.week}, {"count", w.count}});
    }
    return {
        {"name", r.rule},
        {"datastore", r.datastore},
        {"kind", r.kind},
        {"action", r.action},
        {"category", r.category},
        {"legal_basis", r.legal_basis},
        {"description", r.description},
        {"retain",
         {{"text", r.retain_text},
          {"approx_seconds",
           std::chrono::duration_cast<std::chrono::seconds>(r.retain_approx).count()},
          {"words", r.retention.get(lang)}}},
        {"schedule", {{"text", r.schedule_text}, {"period_seconds", r.schedule_period.count()}}},
        {"status", std::string(to_string(r.status))},
        {"status_text", t.status_words[idx(r.status)]},
        {"status_reason", status_reason(r, data, t)},
        {"error", coded_error(!r.error.empty(), r.error_code, lang)},
        {"error_code", r.error.empty() ? json() : json(error_text(r.error_code).code)},
        {"dry_run", dry_json(r)},
        {"last_run", run_json(r.last_run, lang)},
        {"last_success", run_json(r.last_success, lang)},
        {"purged_per_week", weeks},
        {"purged_in_window", r.purged_in_window}};
}

std::string render_json(const ReportData& data, const Texts& t) {
    using nlohmann::json;
    const std::string lang = t.lang;
    json services = json::array();
    for (const auto& s : data.services) {
        services.push_back({{"name", s.name}, {"kind", s.kind}, {"rules", s.rules}});
    }
    json counts = json::object();
    for (std::size_t i = 0; i < 5; ++i) {
        counts[std::string(to_string(static_cast<RuleStatus>(i)))] = 0;
    }
    json rules = json::array();
    for (const auto& r : data.rules) {
        ++counts[std::string(to_string(r.status))].get_ref<json::number_integer_t&>();
        rules.push_back(rule_json(r, data, t));
    }
    json doc = {{"schema_version", k_report_schema_version},
                {"generator", std::string("retentiond ") + k_version},
                {"generated_at", format_utc_seconds(data.generated_at)},
                {"lang", lang},
                {"timezone", data.timezone},
                {"config", {{"file", data.config_file}, {"sha256", data.config_sha256}}},
                {"services", services},
                {"audit_log",
                 {{"path", data.audit_log},
                  {"read", data.audit_log_read},
                  {"error", data.audit_log_error.empty() ? json() : json(data.audit_log_error)},
                  {"lines", data.audit_lines},
                  {"bad_lines", data.audit_bad_lines}}},
                {"weeks", data.weeks},
                {"overall_status", std::string(to_string(data.overall))},
                {"status_counts", counts},
                {"rules", rules}};
    if (data.coverage) {
        doc["coverage"] = coverage_json(*data.coverage);
    }
    if (data.erasures) {
        doc["erasure_requests"] = erasures_json(*data.erasures, data.generated_at);
    }
    return doc.dump(2) + "\n";
}

// --- csv -----------------------------------------------------------------------------------

constexpr std::array<const char*, 27> k_csv_columns = {"rule",
                                                       "datastore",
                                                       "kind",
                                                       "action",
                                                       "category",
                                                       "legal_basis",
                                                       "retention",
                                                       "retain",
                                                       "status",
                                                       "status_text",
                                                       "in_scope",
                                                       "due",
                                                       "held",
                                                       "no_clock",
                                                       "unparseable",
                                                       "oldest_clock",
                                                       "oldest_age_days",
                                                       "retain_days",
                                                       "due_7d",
                                                       "due_30d",
                                                       "due_90d",
                                                       "last_run_at",
                                                       "last_run_ok",
                                                       "last_success_at",
                                                       "last_success_processed",
                                                       "purged_in_window",
                                                       "error"};

std::string days_decimal(std::chrono::microseconds d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(d.count()) / 86400e6);
    return buf;
}

std::string render_csv(const ReportData& data, const Texts& t) {
    const std::string lang = t.lang;
    std::string out;
    const auto row = [&out](const std::vector<std::string>& fields) {
        for (std::size_t i = 0; i < fields.size(); ++i) {
            if (i != 0) {
                out += ',';
            }
            csv::append_field(out, fields[i], ',');
        }
        out += "\r\n";
    };
    row(std::vector<std::string>(k_csv_columns.begin(), k_csv_columns.end()));
    for (const auto& r : data.rules) {
        const auto n = [&r](std::int64_t DryRun::*field) {
            return r.dry ? std::to_string((*r.dry).*field) : std::string{};
        };
        row({r.rule,
             r.datastore,
             r.kind,
             r.action,
             r.category,
             r.legal_basis,
             r.retention.get(lang),
             r.retain_text,
             std::string(to_string(r.status)),
             t.status_words[idx(r.status)],
             n(&DryRun::in_scope),
             n(&DryRun::due),
             n(&DryRun::held),
             n(&DryRun::no_clock),
             n(&DryRun::unparseable),
             r.dry && r.dry->oldest_clock ? format_utc_seconds(*r.dry->oldest_clock) : "",
             r.oldest_age ? days_decimal(*r.oldest_age) : "",
             days_decimal(limit_of(r)),
             n(&DryRun::due_7d),
             n(&DryRun::due_30d),
             n(&DryRun::due_90d),
             r.last_run && r.last_run->at ? format_utc_seconds(*r.last_run->at) : "",
             r.last_run ? (r.last_run->ok ? "true" : "false") : "",
             r.last_success && r.last_success->at ? format_utc_seconds(*r.last_success->at) : "",
             r.last_success ? std::to_string(r.last_success->processed) : "",
             std::to_string(r.purged_in_window),
             r.error.empty() ? std::string() : error_for_report(r.error_code, t.lang)});
    }
    return out;
}

} // namespace

std::string render_report(const ReportData& data, std::string_view format, std::string_view lang) {
    if (lang != "fr" && lang != "en") {
        throw std::invalid_argument("report language must be fr or en, not \"" + std::string(lang) +
                                    "\"");
    }
    const Texts& t = texts(lang);
    if (format == "html") {
        return render_html(data, t);
    }
    if (format == "md") {
        return render_md(data, t);
    }
    if (format == "json") {
        return render_json(data, t);
    }
    if (format == "csv") {
        return render_csv(data, t);
    }
    throw std::invalid_argument("report format must be html, md, json or csv, not \"" +
                                std::string(format) + "\"");
}

} // namespace retentiond
