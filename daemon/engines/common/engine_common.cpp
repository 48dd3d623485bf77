#include "retentiond/engine_common.hpp"

#include "retentiond/audit.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace retentiond {

void journal_event(BatchJournal* journal, const Rule& rule, std::string_view type,
                   nlohmann::json fields) {
    if (journal == nullptr) {
        return;
    }
    fields["rule"] = rule.name;
    fields["datastore"] = rule.datastore;
    journal->event(std::string(type), fields);
}

namespace {

// "12 of 20 rows due (60%) exceed max_fraction 0.5": the share rounded to a tenth of a percent.
std::string fraction_reason(const LimitScope& scope, double max_fraction) {
    const double share = static_cast<double>(scope.due) / static_cast<double>(scope.in_scope);
    std::ostringstream out;
    out << scope.due << " of " << scope.in_scope << " " << scope.noun << " due ("
        << std::round(1000.0 * share) / 10.0 << "%) exceed max_fraction " << max_fraction;
    return out.str();
}

} // namespace

bool refuse_over_limits(const Rule& rule, const RunContext& ctx, const LimitScope& scope,
                        RunResult& result) {
    if (ctx.force || scope.due == 0) {
        return false;
    }
    std::string why;
    nlohmann::json fields = {{"due", scope.due}, {"rows", scope.in_scope}};
    if (rule.limits.max_rows && scope.due > *rule.limits.max_rows) {
        why = std::to_string(scope.due) + " " + std::string(scope.noun) + " due exceed max_rows " +
              std::to_string(*rule.limits.max_rows);
        fields["limit"] = "max_rows";
        fields["max_rows"] = *rule.limits.max_rows;
    } else if (scope.in_scope > 0 &&
               static_cast<double>(scope.due) / static_cast<double>(scope.in_scope) >
                   rule.limits.max_fraction) {
        why = fraction_reason(scope, rule.limits.max_fraction);
        fields["limit"] = "max_fraction";
        fields["max_fraction"] = rule.limits.max_fraction;
    }
    if (why.empty()) {
        return false;
    }
    result.status = RunResult::Status::refused;
    result.message = "refused: " + why + " " + scope.target + "; use --force to proceed";
    journal_event(ctx.journal, rule, k_refusal_event, std::move(fields));
    return true;
}

bool stop_requested(const RunContext& ctx) {
    return ctx.stop_requested && ctx.stop_requested();
}

std::string stopped_message(std::int64_t processed, std::string_view noun) {
    return "stopped on request after " + std::to_string(processed) + " " + std::string(noun);
}

Forecast::Forecast(TimePoint now, const Duration& retain, const date::time_zone* tz) {
    const auto cutoff_in = [&](int days) {
        Duration ahead;
        ahead.days = days;
        return subtract(add(now, ahead, tz), retain, tz);
    };
    m_7d = cutoff_in(7);
    m_30d = cutoff_in(30);
    m_90d = cutoff_in(90);
}

void Forecast::count(TimePoint clock, DryRun& dry) const {
    dry.due_7d += clock <= m_7d ? 1 : 0;
    dry.due_30d += clock <= m_30d ? 1 : 0;
    dry.due_90d += clock <= m_90d ? 1 : 0;
}

DryRunTally::DryRunTally(TimePoint now, TimePoint cutoff, const Duration& retain,
                         const date::time_zone* tz)
    : m_now(now), m_cutoff(cutoff), m_retain(retain.approx()), m_forecast(now, retain, tz) {}

void DryRunTally::add(DryRun& dry, DryVerdict verdict,
                      const std::optional<TimePoint>& clock) const {
    ++dry.in_scope;
    switch (verdict) {
    case DryVerdict::due:
        ++dry.due;
        break;
    case DryVerdict::held:
        ++dry.held;
        break;
    case DryVerdict::unparseable:
        ++dry.unparseable;
        break;
    case DryVerdict::not_due:
    case DryVerdict::no_clock:
        break;
    }
    if (!clock) {
        dry.no_clock += verdict == DryVerdict::unparseable ? 0 : 1;
        return;
    }
    add_age(dry, *clock);
    if (verdict == DryVerdict::not_due && *clock > m_cutoff) {
        m_forecast.count(*clock, dry);
    }
}

void DryRunTally::add_age(DryRun& dry, TimePoint clock) const {
    if (!dry.oldest_clock || clock < *dry.oldest_clock) {
        dry.oldest_clock = clock;
    }
    if (dry.age_buckets.size() != k_age_buckets) {
        dry.age_buckets.assign(k_age_buckets, 0);
    }
    const auto age = m_now - clock;
    const auto last = static_cast<std::int64_t>(k_age_buckets - 1);
    std::int64_t bucket = last;
    if (age < std::chrono::microseconds::zero()) {
        bucket = 0;
    } else if (m_retain > std::chrono::microseconds::zero()) {
        bucket = std::min<std::int64_t>(last, (age * 8) / m_retain);
    }
    ++dry.age_buckets[static_cast<std::size_t>(bucket)];
}

void merge_dry_run(DryRun& into, const DryRun& from) {
    into.in_scope += from.in_scope;
    into.due += from.due;
    into.held += from.held;
    into.no_clock += from.no_clock;
    into.unparseable += from.unparseable;
    into.due_7d += from.due_7d;
    into.due_30d += from.due_30d;
    into.due_90d += from.due_90d;
    if (from.oldest_clock && (!into.oldest_clock || *from.oldest_clock < *into.oldest_clock)) {
        into.oldest_clock = from.oldest_clock;
    }
    if (from.age_buckets.empty()) {
        return;
    }
    if (into.age_buckets.size() != k_age_buckets) {
        into.age_buckets.assign(k_age_buckets, 0);
    }
    for (std::size_t i = 0; i < k_age_buckets && i < from.age_buckets.size(); ++i) {
        into.age_buckets[i] += from.age_buckets[i];
    }
}

} // namespace retentiond
