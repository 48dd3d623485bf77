#pragma once
// The rule resolved against the catalog (tables, columns, types, dependents), and the small helpers
// around it. Internal to the postgres engine.

#include "postgres_kind.hpp"
#include "retentiond/engine.hpp"

#include <pqxx/pqxx>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond::pg {

// A rule that does not match the database (missing table or column): the run fails, the store is
// up.
class PlanError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The first line of a server message, trailing blanks removed.
std::string first_line(std::string_view text);
// "public.users_user" -> "public"."users_user"; a name without a dot is quoted whole.
std::string quote_table(pqxx::connection_base& c, const std::string& name);
// The DSN with application_name=retentiond unless the operator chose one.
std::string with_application_name(const std::string& dsn);
bool is_time_type(const std::string& type);
bool is_text_type(const std::string& type);
bool is_numeric_type(const std::string& type);
// Strategies computed here rather than by the server (hmac, email_domain).
bool needs_client(const Strategy& s);
TimePoint from_micros(std::int64_t micros);

struct ColumnInfo {
    std::string type; // format_type(): "timestamp with time zone", "character varying(254)"...
    bool not_null = false;
};
using Columns = std::map<std::string, ColumnInfo>;

Columns read_columns(pqxx::transaction_base& tx, const std::string& quoted_table);
bool table_exists(pqxx::transaction_base& tx, const std::string& quoted_table);

// One dependent, resolved against the catalog.
struct DepPlan {
    const Dependent* dep = nullptr;
    std::string table;     // quoted
    std::string column;    // quoted referencing column
    std::string reference; // quoted column of the parent it references
    Columns columns;
    std::string counter; // "dependents.<table>.<action>"
    std::vector<DepPlan> children;
};

// An erasure request's rows (pg_erase.cpp): the subject column, normalized as subject.hpp says,
// is one of `values`.
struct SubjectFilter {
    std::string column; // quoted
    bool email = false; // ASCII letters lower-cased
    std::vector<std::string> values;
};

// Everything a run needs about its rule, resolved once.
struct Plan {
    const Rule* rule = nullptr;
    std::string table;             // quoted
    std::vector<std::string> keys; // quoted
    std::string clock;             // SQL expression
    Columns columns;
    std::optional<std::string> mark; // quoted
    bool mark_is_bool = false;
    std::string tz;
    std::string cutoff_text; // now() - retain, from the server: reported, and the index bound
    std::string now_text;    // the run's now(), the same for every batch
    // Bounds around the cutoff, computed once by the server: every due row has clock <= due_hi,
    // and every row with clock <= due_lo is due (empty: not proven, no shortcut).
    std::string due_hi_text;
    std::string due_lo_text;
    std::vector<DepPlan> dependents;
    bool client_side = false;          // some strategy computed here (hmac, email_domain)
    std::vector<std::string> own_xids; // anonymize without mark: our batches' xids
    bool notice_table = false;         // retentiond.notice exists (rules with `notice:`)
    bool async_commit = false;         // batches commit with synchronous_commit off
    // An erasure request: due_sql selects the subject's rows instead of the clock's (no notice).
    std::optional<SubjectFilter> subject;
};

// What the batches of a run saw, for the proof that no due row remains without counting them
// (PostgresEngine::verify_nothing_due): every transaction id the run's own transactions took, and
// whether a batch kept a row it had selected (a conflict, a cancelled delete). Shared by streams.
struct RunEvidence {
    std::mutex mutex;
    std::vector<std::uint64_t> xids;
    bool kept_selected = false;

    void add_xid(std::uint64_t xid) {
        const std::lock_guard<std::mutex> lock(mutex);
        xids.push_back(xid);
    }
    void kept() {
        const std::lock_guard<std::mutex> lock(mutex);
        kept_selected = true;
    }
};

// Resolves names and types; throws PlanError naming what is missing.
Plan make_plan(pqxx::transaction_base& tx, const Rule& rule, const std::string& tz);

} // namespace retentiond::pg
