#pragma once
// The SQL of a run: the conditions (due, held, unmarked), one builder per statement shape, and the
// dependents' statements. Values travel as parameters ($n of a Params). Internal to the engine.

#include "pg_notice.hpp"
#include "pg_plan.hpp"
#include "pg_sql.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace retentiond::pg {

using pg_sql::Params;

// --- conditions ---------------------------------------------------------------------------------

std::string not_held_sql(const Plan& plan, pqxx::transaction_base& tx, Params& p);
std::string held_sql(const Plan& plan, pqxx::transaction_base& tx, Params& p);
std::string unmarked_sql(const Plan& plan);
// Sets Plan::due_hi_text / due_lo_text (see pg_statements.cpp) for the transaction's now(), in
// the session's time zone (plan.tz, set before). `now` is that now() on the host's clock.
void read_due_bounds(pqxx::transaction_base& tx, Plan& plan, TimePoint now);
// How far clock + retain can go back while the clock goes forward, near the cutoff: the largest
// change of the zone's UTC offset around the dates the arithmetic touches, plus a day when
// adding the months clamps a day of the month there; as an interval ("3600 seconds").
std::string due_step_back(const std::string& tz, const Duration& retain, TimePoint now);
// clock + retain <= now, exactly.
std::string clock_due_sql(const Plan& plan, Params& p);
// An erasure request's rows: the subject column, normalized, is one of the request's values.
std::string subject_sql(const Plan& plan, Params& p);
// The subject column normalized as subject.hpp says (trimmed; ASCII lower case for email).
std::string subject_value_sql(const SubjectFilter& subject);
// Due, not held, not already processed (mark, or our own earlier batch this run), noticed.
std::string due_sql(const Plan& plan, pqxx::transaction_base& tx, Params& p);
// The rule's table as the notice code needs it; `eligible` = not held and not yet anonymized.
pg_notice::Target notice_target(const Plan& plan, pqxx::transaction_base& tx);
// "k1::text, k2::text", each prefixed with "alias." when given.
std::string keys_text_sql(const Plan& plan, const std::string& alias = "");
// "SET a = ..., b = ..." for anonymizing; client expressions are v.retentiond_f1... in order.
std::string set_list(const std::vector<FieldStrategy>& fields, const Columns& columns,
                     pqxx::transaction_base& tx, Params& p);

std::string ms(std::chrono::milliseconds d);
// Timeouts and time zone for the current transaction.
void set_local(pqxx::transaction_base& tx, const Plan& plan);

// --- one builder per statement shape -----------------------------------------------------------

// ", field::text" for every client-side field (hmac, email_domain), in order: what a selection
// reads for client_values (pg_batch_stream.hpp) to compute.
std::string client_columns(const Plan& plan, pqxx::transaction_base& tx);
// The rows of pages [start, end): a TID range scan.
std::string page_range_sql(Params& m, std::int64_t start, std::int64_t end);
// The selection pass: the next due rows of pages [start, end) in physical order (after
// `after_tid` when set), at most `limit`, locked when `lock`; selects ctid::text then the text of
// every client-side field.
std::string select_batch_sql(const Plan& plan, pqxx::transaction_base& tx, Params& s,
                             std::int64_t start, std::int64_t end, const std::string& after_tid,
                             std::int64_t limit, bool lock);
// Where a keyset walk of the clock's index stands: after the row (clock, tid); none at the start.
struct IndexKeyset {
    std::optional<std::string> clock; // the clock's text
    std::string tid;
};
// The keyset walk: the next due rows in (clock, ctid) order after `after`, at most `limit`, locked
// when `lock`; selects ctid::text, the text of every client-side field, then the clock's text.
std::string select_index_batch_sql(const Plan& plan, pqxx::transaction_base& tx, Params& s,
                                   const IndexKeyset& after, std::int64_t limit, bool lock);
// The index path's clock ranges (a DELETE of the due rows of [after, boundary), no selection
// pass): the clock's text of the row `limit` rows on from `after`'s clock among those that may be
// due, read from the clock's index alone (no row: fewer remain).
std::string index_boundary_sql(const Plan& plan, Params& s, const IndexKeyset& after,
                               std::int64_t limit);
// The rows after `after` whose clock is below `below` (none: no upper end but the due test's).
std::string clock_range_sql(const Plan& plan, Params& s, const IndexKeyset& after,
                            const std::optional<std::string>& below);
// Read-then-delete over a page range: the keys, then the same rows deleted (one snapshot).
struct ReadThenDelete {
    std::string read;
    std::string remove;
};
ReadThenDelete read_then_delete_sql(const Plan& plan, pqxx::transaction_base& tx, Params& m,
                                    const std::string& rows_sql);
// DELETE ... RETURNING the keys, for rows `rows_sql` selects (a page range or ctid = ANY).
std::string keyed_delete_sql(const Plan& plan, pqxx::transaction_base& tx, Params& m,
                             const std::string& rows_sql);
// UPDATE ... SET <strategies>, mark ... RETURNING the keys: every value computed by the server.
std::string anonymize_update_sql(const Plan& plan, pqxx::transaction_base& tx, Params& m,
                                 const std::string& rows_sql);
// The same with hmac/email_domain values computed here, joined back by ctid: `values[i]` holds
// the i-th client-side field's value for each tid.
std::string
client_anonymize_sql(const Plan& plan, pqxx::transaction_base& tx, Params& m,
                     const std::string& tid_array,
                     const std::vector<std::vector<std::optional<std::string>>>& values);

// --- dependents --------------------------------------------------------------------------------

// Applies the dependents of the rows whose referenced values `parent_set` selects, deepest first.
void apply_dependents(pqxx::transaction_base& tx, const std::vector<DepPlan>& deps,
                      const std::string& parent_set_sql, const Params& parent_params,
                      std::map<std::string, std::int64_t>& counters);
// The same for the parents of a batch, given as a tid array literal.
void apply_batch_dependents(pqxx::transaction_base& tx, const Plan& plan,
                            const std::string& tid_array,
                            std::map<std::string, std::int64_t>& counters);
std::int64_t count_dependents(pqxx::transaction_base& tx, const std::vector<DepPlan>& deps,
                              const std::string& parent_set_sql, const Params& parent_params,
                              std::map<std::string, std::int64_t>& counters);

} // namespace retentiond::pg
