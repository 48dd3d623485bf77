// The DPO report's data model: a dry run per rule plus what the audit log says about past runs.
#include "retentiond/report.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/kind.hpp"
#include "retentiond/policy_table.hpp"
#include "retentiond/report_errors.hpp"
#include "retentiond/timeutil.hpp"

#include <date/iso_week.h>
#include <date/tz.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <unordered_map>

namespace retentiond {

std::string_view to_string(RuleStatus status) {
    switch (status) {
    case RuleStatus::compliant:
        return "compliant";
    case RuleStatus::never_run:
        return "never_run";
    case RuleStatus::overdue:
        return "overdue";
    case RuleStatus::failing:
        return "failing";
    case RuleStatus::unknown:
        return "unknown";
    }
    return "unknown";
}

std::string mask_personal(std::string_view text) {
    // Error texts come from drivers and engines; they promise no values, but a driver message can
    // still quote a DSN or a constraint's detail. Bounded so the regexes stay cheap.
    constexpr std::size_t k_max = 500;
    std::string s(text.substr(0, k_max));
    if (text.size() > k_max) {
        s += "…";
    }
    static const std::regex k_uri_password(R"((://[^/\s:@]*):[^@\s/]*@)");
    static const std::regex k_kv_password(R"((password\s*=\s*)('[^']*'|\S+))", std::regex::icase);
    static const std::regex k_email(
        R"([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})");
    s = std::regex_replace(s, k_uri_password, "$1:<redacted>@");
    s = std::regex_replace(s, k_kv_password, "$1<redacted>");
    s = std::regex_replace(s, k_email, "<e-mail>");
    return s;
}

namespace {

std::string iso_week_of(TimePoint t, const date::time_zone* tz) {
    const auto local = tz->to_local(date::floor<std::chrono::seconds>(t));
    const iso_week::year_weeknum_weekday ywd{date::floor<date::days>(local)};
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04d-W%02u", static_cast<int>(ywd.year()),
                  static_cast<unsigned>(ywd.weeknum()));
    return buf;
}

std::string str_field(const nlohmann::json& j, std::initializer_list<const char*> names) {
    for (const char* name : names) {
        const auto it = j.find(name);
        if (it != j.end() && it->is_string()) {
            return it->get<std::string>();
        }
    }
    return {};
}

std::int64_t int_field(const nlohmann::json& j, const char* name) {
    const auto it = j.find(name);
    return it != j.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

// What the scan keeps per rule: the latest run seen, the latest successful one, weekly counts.
struct RuleHistory {
    std::optional<RunInfo> current;
    std::optional<RunInfo> last_success;
    std::map<std::string, std::int64_t> weeks;

    // The run a line belongs to. A daemon writes every line under its one run id, so a rule's
    // runs are also told apart by a pause longer than half its schedule period.
    RunInfo& touch(const std::string& run_id, std::optional<TimePoint> at,
                   std::chrono::microseconds gap) {
        const bool paused = at && current && current->at && *at - *current->at > gap;
        if (current && (current->run_id != run_id || paused)) {
            if (current->ok) {
                last_success = std::move(*current);
            }
            current.reset();
        }
        if (!current) {
            current = RunInfo{};
            current->run_id = run_id;
        }
        if (at) {
            current->at = at;
        }
        return *current;
    }
};

struct PendingBatch {
    std::string rule;
    bool counts = false; // the rule's own records deleted or anonymized
};

class AuditScan {
public:
    AuditScan(const Config& config, const std::set<std::string>& window)
        : m_config(config), m_window(window) {
        for (const auto& rule : config.rules) {
            m_rules.emplace(rule.name, &rule);
        }
        m_tz = zone_or_utc(config.daemon.timezone);
    }

    void read_line(std::string_view line, ReportData& data) {
        if (line.empty()) {
            return;
        }
        ++data.audit_lines;
        nlohmann::json j = parse_audit_line(line); // its digests are not read
        if (j.is_discarded() || !j.is_object()) {
            ++data.audit_bad_lines;
            return;
        }
        handle(j);
    }

    std::map<std::string, RuleHistory>& histories() { return m_history; }

private:
    // Whether a batch touches the rule's own records, not a dependent table, a TTL or a notice.
    bool counts_as_purge(const Rule* rule, const std::string& action,
                         const std::string& target) const {
        if (!action.empty() && action != "delete" && action != "anonymize") {
            return false;
        }
        if (rule != nullptr && rule->kind != nullptr && !target.empty()) {
            return rule->kind->is_rule_target(*rule, target);
        }
        return true;
    }

    std::optional<TimePoint> ts_of(const nlohmann::json& j) const {
        const auto ts = str_field(j, {"ts", "time"});
        if (ts.empty()) {
            return std::nullopt;
        }
        return parse_timestamp(ts, "", m_tz);
    }

    // "max_rows (due 1200, max_rows 1000)": an event's own message, else its reason and numbers.
    static std::string event_message(const nlohmann::json& j) {
        auto text = str_field(j, {"message"});
        if (!text.empty()) {
            return mask_personal(text);
        }
        text = str_field(j, {"reason"});
        std::string details;
        for (const auto& [key, value] : j.items()) {
            if (value.is_number() && key != "seq" && key != "v") {
                details += (details.empty() ? "" : ", ") + key + " " + value.dump();
            }
        }
        if (!details.empty()) {
            text += (text.empty() ? "(" : " (") + details + ")";
        }
        return mask_personal(text);
    }

    RunInfo& touch(const std::string& rule, const std::string& run, std::optional<TimePoint> at) {
        std::chrono::microseconds gap = std::chrono::hours(12);
        if (const auto it = m_rules.find(rule); it != m_rules.end()) {
            gap = std::max<std::chrono::microseconds>(std::chrono::minutes(1),
                                                      it->second->schedule.period() / 2);
        }
        return m_history[rule].touch(run, at, gap);
    }

    void handle(const nlohmann::json& j) {
        const auto type = str_field(j, {"type"});
        const auto run = str_field(j, {"run", "run_id"});
        const auto at = ts_of(j);
        if (type == "run_start") {
            if (str_field(j, {"mode"}) == "daemon") {
                m_daemon_runs.insert(run);
            }
        } else if (type == "intent") {
            on_intent(j, run, at);
        } else if (type == "outcome") {
            on_outcome(j, run, at);
        } else if (type == "error" || type == "refusal" || type == "refused") {
            on_failure(j, type, run, at);
        } else if (type == "rule_end") {
            // One rule's run as a whole, when the writer records it (a daemon run has no
            // per-rule run_end otherwise).
            const auto rule = str_field(j, {"rule"});
            if (!rule.empty()) {
                apply_summary(touch(rule, run, at), j);
            }
        } else if (type == "run_end" && m_daemon_runs.count(run) == 0) {
            on_run_end(j, run, at); // a daemon's run_end sums its whole lifetime: skipped
        }
    }

    void on_intent(const nlohmann::json& j, const std::string& run, std::optional<TimePoint> at) {
        const auto batch = str_field(j, {"batch", "batch_id"});
        const auto rule = str_field(j, {"rule"});
        if (!batch.empty() && !rule.empty()) {
            const auto it = m_rules.find(rule);
            m_pending[batch] = PendingBatch{
                rule, counts_as_purge(it == m_rules.end() ? nullptr : it->second,
                                      str_field(j, {"action"}), str_field(j, {"target"}))};
        }
        if (!rule.empty()) {
            touch(rule, run, at);
        }
    }

    void on_outcome(const nlohmann::json& j, const std::string& run, std::optional<TimePoint> at) {
        const auto batch = str_field(j, {"batch", "batch_id"});
        auto rule = str_field(j, {"rule"});
        bool counts = true;
        const auto pending = m_pending.find(batch);
        if (pending != m_pending.end()) {
            rule = rule.empty() ? pending->second.rule : rule;
            counts = pending->second.counts;
            m_pending.erase(pending);
        } else if (j.contains("action") || j.contains("target")) {
            const auto it = m_rules.find(rule);
            counts = counts_as_purge(it == m_rules.end() ? nullptr : it->second,
                                     str_field(j, {"action"}), str_field(j, {"target"}));
        }
        if (rule.empty()) {
            return;
        }
        auto& info = touch(rule, run, at);
        const auto committed = j.find("committed");
        if (committed == j.end() || !committed->is_boolean() || !committed->get<bool>() ||
            !counts) {
            return;
        }
        const std::int64_t count = int_field(j, "count");
        info.processed += count;
        ++info.batches;
        if (at) {
            const auto week = iso_week_of(*at, m_tz);
            if (m_window.count(week) != 0) {
                m_history[rule].weeks[week] += count;
            }
        }
    }

    void on_failure(const nlohmann::json& j, const std::string& type, const std::string& run,
                    std::optional<TimePoint> at) {
        const auto rule = str_field(j, {"rule"});
        if (rule.empty()) {
            return;
        }
        auto& info = touch(rule, run, at);
        info.ok = false;
        info.failure = type == "error" ? "error" : "refusal";
        info.message = event_message(j);
        info.error_code = std::string(classify_event(j));
    }

    void on_run_end(const nlohmann::json& j, const std::string& run, std::optional<TimePoint> at) {
        const auto it = j.find("summary");
        if (it == j.end() || !it->is_array()) {
            return;
        }
        for (const auto& entry : *it) {
            const auto rule = entry.is_object() ? str_field(entry, {"rule"}) : "";
            if (!rule.empty()) {
                apply_summary(touch(rule, run, at), entry);
            }
        }
    }

    static void apply_summary(RunInfo& info, const nlohmann::json& entry) {
        const auto ok = entry.find("ok");
        if (ok != entry.end() && ok->is_boolean() && !ok->get<bool>()) {
            if (info.ok) {
                info.failure = "error";
            }
            info.ok = false;
        }
        info.processed = std::max(info.processed, int_field(entry, "processed"));
    }

    const Config& m_config;
    const std::set<std::string>& m_window;
    const date::time_zone* m_tz = nullptr;
    std::unordered_map<std::string, const Rule*> m_rules;
    std::map<std::string, RuleHistory> m_history;
    std::set<std::string> m_daemon_runs;
    // Intents without their outcome yet; an outcome erases its intent, so this stays small.
    std::unordered_map<std::string, PendingBatch> m_pending;
};

void scan_audit_log(const Config& config, const AuditLines& lines, ReportData& data,
                    std::map<std::string, RuleHistory>& out) {
    const std::set<std::string> window(data.weeks.begin(), data.weeks.end());
    AuditScan scan(config, window);
    try {
        // Oldest first (a file log: its rotated files first), as `audit prove` reads them.
        lines.forward([&](std::string_view line, bool /*terminated*/) {
            scan.read_line(line, data);
            return true;
        });
        data.audit_log_read = true;
    } catch (const std::exception& e) {
        data.audit_log_error = mask_personal(e.what());
    }
    out = std::move(scan.histories());
}

} // namespace

namespace {

// What the policy says of a rule: names, wording, schedule.
RuleReport describe_rule(const Rule& rule) {
    RuleReport r;
    r.rule = rule.name;
    r.datastore = rule.datastore;
    r.kind = rule.kind != nullptr ? std::string(rule.kind->name()) : std::string();
    r.action = std::string(to_string(rule.action));
    r.category = rule.category;
    r.legal_basis = rule.legal_basis;
    r.description = rule.description;
    r.retain_text = rule.retain.text;
    r.retention.fr = retention_wording(rule, "fr");
    r.retention.en = retention_wording(rule, "en");
    r.retain_words.fr = describe_duration(rule.retain, "fr");
    r.retain_words.en = describe_duration(rule.retain, "en");
    r.retain_approx = rule.retain.approx();
    r.schedule_text = rule.schedule.text;
    r.schedule_period = rule.schedule.period();
    return r;
}

// The dry run's figures, or the error that stood in their way (code and masked detail).
void add_dry_run(const RuleDryRun& dry, RuleReport& r) {
    if (dry.dry) {
        r.dry = *dry.dry;
        r.notes = r.dry->notes.size();
        r.dry->notes.clear();
        if (r.dry->oldest_clock) {
            r.oldest_age = r.dry->now - *r.dry->oldest_clock;
            r.oldest_past_grace = *r.dry->oldest_clock < r.dry->cutoff - r.schedule_period;
        }
        return;
    }
    r.error = mask_personal(dry.error.empty() ? "unavailable" : dry.error);
    r.error_code = std::string(classify_error(dry.error, dry.unavailable));
    // The report shows the code and its message in its language; the detail goes here.
    spdlog::warn("report: rule {}: {}: {}", r.rule, r.error_code, r.error);
}

// The audit log's history of the rule: its runs and its purges per week.
void add_history(const RuleHistory* history, const std::vector<std::string>& weeks, RuleReport& r) {
    if (history != nullptr) {
        r.last_run = history->current;
        r.last_success =
            history->current && history->current->ok ? history->current : history->last_success;
    }
    for (const auto& week : weeks) {
        std::int64_t count = 0;
        if (history != nullptr) {
            const auto w = history->weeks.find(week);
            count = w == history->weeks.end() ? 0 : w->second;
        }
        r.purged_per_week.push_back({week, count});
        r.purged_in_window += count;
    }
}

// Records whose clock cannot be read cannot be judged: the rule cannot be called compliant (nor
// merely never run) while the dry run finds any; it is unknown, with the code saying why.
RuleStatus status_of(RuleReport& r) {
    if (!r.dry) {
        return RuleStatus::unknown;
    }
    if (r.last_run && !r.last_run->ok) {
        return RuleStatus::failing;
    }
    if (r.dry->due > 0 && r.oldest_past_grace) {
        return RuleStatus::overdue;
    }
    if (r.dry->unparseable > 0) {
        r.error_code = "RD-DATA-UNPARSEABLE";
        return RuleStatus::unknown;
    }
    return r.last_run ? RuleStatus::compliant : RuleStatus::never_run;
}

} // namespace

ReportData build_report_data(const Config& config, const std::vector<RuleDryRun>& dries,
                             const std::string& audit_log_path, TimePoint now) {
    std::error_code ec;
    if (!std::filesystem::exists(audit_log_path, ec)) {
        return build_report_data(config, dries, nullptr, audit_log_path, now);
    }
    return build_report_data(config, dries, file_audit_lines(audit_log_path, true).get(),
                             audit_log_path, now);
}

ReportData build_report_data(const Config& config, const std::vector<RuleDryRun>& dries,
                             const AuditLines* lines, const std::string& audit_log_path,
                             TimePoint now) {
    ReportData data;
    data.generated_at = now;
    data.timezone = config.daemon.timezone;
    data.config_file = config.main_file;
    data.config_sha256 = config.sha256;
    data.audit_log = audit_log_path;

    const auto* tz = zone_or_utc(config.daemon.timezone);
    for (int i = k_report_weeks - 1; i >= 0; --i) {
        data.weeks.push_back(iso_week_of(now - date::days{7 * i}, tz));
    }

    std::map<std::string, RuleHistory> histories;
    if (lines == nullptr) {
        data.audit_log_error = "not found";
    } else {
        scan_audit_log(config, *lines, data, histories);
    }

    std::map<std::string, std::size_t> rules_per_store;
    for (const auto& dry : dries) {
        const Rule* rule = config.find_rule(dry.rule);
        if (rule == nullptr) {
            continue;
        }
        ++rules_per_store[rule->datastore];
        RuleReport r = describe_rule(*rule);
        add_dry_run(dry, r);
        const auto found = histories.find(rule->name);
        add_history(found != histories.end() ? &found->second : nullptr, data.weeks, r);
        r.status = status_of(r);
        data.overall = std::max(data.overall, r.status);
        data.rules.push_back(std::move(r));
    }

    for (const auto& [name, store] : config.datastores) {
        const auto n = rules_per_store.find(name);
        if (n == rules_per_store.end()) {
            continue; // only the services this report covers
        }
        data.services.push_back(
            {name, store.kind != nullptr ? std::string(store.kind->name()) : "", n->second});
    }
    return data;
}

} // namespace retentiond
