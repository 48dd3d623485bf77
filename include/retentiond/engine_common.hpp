#pragma once

// What every datastore kind does the same way: journal events, the limits check and its refusal
// event, stop requests, the dry run's forecast. One definition each, so the kinds cannot drift; the
// contract suite (tests/contract) checks the names and fields.

#include "retentiond/engine.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace retentiond {

// Journals one event of a rule's run, with "rule" and "datastore" added to the fields. No journal
// (tests, dry runs): nothing.
void journal_event(BatchJournal* journal, const Rule& rule, std::string_view type,
                   nlohmann::json fields);

// What the limits are checked against, in the kind's own words.
struct LimitScope {
    std::int64_t due = 0;      // due and not held
    std::int64_t in_scope = 0; // every record the rule looks at
    std::string_view noun;     // "rows", "records", "keys"
    std::string target;        // "in accounts", "under exports/*.csv", "matching session:*"
};

// The name of the event a refusal journals, for every kind.
inline constexpr std::string_view k_refusal_event = "refusal";

// Checks rule.limits (max_rows, then max_fraction) unless ctx.force or nothing is due. When they
// refuse: result.status = refused, result.message says why with the numbers ("refused: 10 of 10
// rows due (100%) exceed max_fraction 0.5 in accounts; use --force to proceed"), and one "refusal"
// event is journaled with the fields due, rows (in scope), limit and max_rows or max_fraction.
// Returns whether the run was refused.
bool refuse_over_limits(const Rule& rule, const RunContext& ctx, const LimitScope& scope,
                        RunResult& result);

// Whether the run was asked to stop (SIGTERM): finish the current batch, then return.
bool stop_requested(const RunContext& ctx);
// The message of a run that stopped on request, for every kind.
std::string stopped_message(std::int64_t processed, std::string_view noun);

// The dry run's forecast: a record not due now falls due within N days when
// clock + retain <= now + N calendar days (days in the run's time zone, as retain itself).
class Forecast {
public:
    Forecast(TimePoint now, const Duration& retain, const date::time_zone* tz);
    // Adds a record that is not due now to due_7d / due_30d / due_90d.
    void count(TimePoint clock, DryRun& dry) const;

private:
    TimePoint m_7d{};
    TimePoint m_30d{};
    TimePoint m_90d{};
};

// The dry run's age histogram: bucket i counts the records whose age is in [i/8, (i+1)/8) x retain,
// the last one everything from 2x retain up; a clock in the future counts in bucket 0.
inline constexpr std::size_t k_age_buckets = 17;

// A record of a dry run as its kind judged it. not_due: kept (not due yet, or already anonymized).
enum class DryVerdict { due, held, not_due, no_clock, unparseable };

// The dry run's counters, for every kind: in scope, the verdicts, the records without a clock, the
// oldest clock, the age histogram and the forecast.
class DryRunTally {
public:
    // now and cutoff: the run's (DryRun::now, DryRun::cutoff).
    DryRunTally(TimePoint now, TimePoint cutoff, const Duration& retain, const date::time_zone* tz);
    // Counts one record in scope; `clock` is its clock when it has one that parses. A record
    // without a clock counts in no_clock whatever its verdict (with `clock_null: due` it is due
    // too), as PostgreSQL counts `clock IS NULL`; an unparseable clock is not a missing one. A
    // record not due whose clock is past the cutoff counts in the forecast.
    void add(DryRun& dry, DryVerdict verdict, const std::optional<TimePoint>& clock) const;
    // The clock alone: oldest_clock and the age bucket (age_buckets sized on first use).
    void add_age(DryRun& dry, TimePoint clock) const;

private:
    TimePoint m_now{};
    TimePoint m_cutoff{};
    std::chrono::microseconds m_retain{};
    Forecast m_forecast;
};

// Adds the counters of `from` to `into` (a kind that tallies part by part: the files engine's
// files).
void merge_dry_run(DryRun& into, const DryRun& from);

} // namespace retentiond
