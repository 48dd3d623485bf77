#pragma once

#include "retentiond/audit_store.hpp"
#include "retentiond/config.hpp"
#include "retentiond/coverage.hpp"
#include "retentiond/engine.hpp"
#include "retentiond/ledger.hpp"
#include "retentiond/runner.hpp"

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

// The DPO report (docs/report-schema.md). One data model, four renderings (html, md, json, csv).
// It holds counts, ages, durations and digests only: never a key, a field value or a secret.

// Ordered from best to worst: the overall status is the worst of the rules'.
enum class RuleStatus { compliant, never_run, overdue, failing, unknown };
std::string_view to_string(RuleStatus status); // "compliant", "never_run", ...

// One run of one rule, as the audit log tells it.
struct RunInfo {
    std::string run_id;
    std::optional<TimePoint> at; // time of its last line about the rule (run_end when present)
    bool ok = true;              // no error or refusal event, and run_end did not say otherwise
    std::int64_t processed = 0;  // records the rule deleted or anonymized (committed batches)
    std::int64_t batches = 0;    // committed batches of the rule's own records
    std::string failure;         // !ok: "refusal" or "error"
    std::string message;         // !ok: the event's message, e-mail addresses masked
    std::string error_code;      // !ok: report_errors.hpp's code of that event ("RD-LIMIT-...")
};

struct WeekCount {
    std::string week; // ISO 8601 week, "2026-W33"
    std::int64_t count = 0;
};

struct RuleReport {
    // The policy, as written.
    std::string rule;
    std::string datastore;
    std::string kind;   // postgres | files | redis
    std::string action; // delete | anonymize
    std::string category;
    std::string legal_basis;
    std::string description;
    std::string retain_text;    // `retain:` as written ("12 months")
    LocalizedText retention;    // retention_wording() in fr and en
    LocalizedText retain_words; // describe_duration(retain) in fr and en: "12 mois"
    std::chrono::microseconds retain_approx{0};
    std::string schedule_text;
    std::chrono::seconds schedule_period{0};

    RuleStatus status = RuleStatus::unknown;
    std::string error;      // unknown: why the store could not be read (e-mail addresses masked)
    std::string error_code; // unknown: report_errors.hpp's code of that error

    // The dry run (present unless status == unknown). notes are dropped: only their number is
    // kept, because a note is free text that the report cannot vouch for.
    std::optional<DryRun> dry;
    std::size_t notes = 0;
    // Age of the oldest record (dry->now - oldest_clock), when there is one.
    std::optional<std::chrono::microseconds> oldest_age;
    // The oldest record is older than cutoff - one schedule period (held records included).
    bool oldest_past_grace = false;

    // From the audit log.
    std::optional<RunInfo> last_run;
    std::optional<RunInfo> last_success;
    std::vector<WeekCount> purged_per_week; // the report's weeks, oldest first
    std::int64_t purged_in_window = 0;
};

struct ServiceInfo {
    std::string name; // datastore name (never its DSN or URL)
    std::string kind;
    std::size_t rules = 0;
};

struct ReportData {
    TimePoint generated_at{};
    std::string timezone = "UTC"; // daemon.timezone: dates are shown in it
    std::string config_file;
    std::string config_sha256;
    std::vector<ServiceInfo> services;
    std::string audit_log; // path
    bool audit_log_read = false;
    std::string audit_log_error; // why it could not be read (missing file: empty log)
    std::uint64_t audit_lines = 0;
    std::uint64_t audit_bad_lines = 0; // not JSON: skipped
    std::vector<std::string> weeks;    // ISO weeks shown, oldest first (k_report_weeks)
    std::vector<RuleReport> rules;
    RuleStatus overall = RuleStatus::compliant;
    // "Personal data without a rule" (coverage.hpp): absent when the report was built without it.
    std::optional<CoverageReport> coverage;
    // "Erasure requests" (ledger.hpp): absent when the report was built without the ledger.
    std::optional<std::vector<ErasureRequest>> erasures;
};

constexpr int k_report_weeks = 12;
constexpr int k_report_schema_version = 1;

// Builds the model from the config, a dry run of its rules (in the order given) and the audit log
// (read streaming, rotated files path.N ... path.1 first). A missing audit log is not an error:
// every rule is then "never run". now dates the report and ends the week window.
ReportData build_report_data(const Config& config, const std::vector<RuleDryRun>& dries,
                             const std::string& audit_log_path, TimePoint now);
// The same from any store's lines (a PostgreSQL table: daemon.audit_store); `name` is what the
// report calls them. lines = nullptr: no audit log ("not found").
ReportData build_report_data(const Config& config, const std::vector<RuleDryRun>& dries,
                             const AuditLines* lines, const std::string& name, TimePoint now);

// Scans every datastore (or only `datastore`) for what looks personal, through each kind's
// Kind::scan_coverage, then applies the configuration's acknowledgements. A store that cannot
// be reached is marked unavailable, never thrown. UsageError: an unknown datastore.
CoverageReport collect_coverage(const Config& config,
                                const std::optional<std::string>& datastore = std::nullopt);

// format: html | md | json | csv; lang: fr | en. Throws std::invalid_argument otherwise.
std::string render_report(const ReportData& data, std::string_view format, std::string_view lang);

// Masks e-mail addresses and URI passwords in free text that reaches the report (error messages).
std::string mask_personal(std::string_view text);

} // namespace retentiond
