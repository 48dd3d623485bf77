// Coverage for postgres (Kind::scan_coverage): every table the role can read, judged by its
// columns' names and types and by a bounded sample of their values (TABLESAMPLE SYSTEM, a few
// dozen pages at most, LIMIT k_sample_rows, under a statement and a lock timeout). A partitioned
// table is judged once, as its parent. Covered: the table is a rule's target or dependent that
// deletes its rows, or the column is set to NULL / anonymized by one.
#include "pg_connect.hpp"
#include "pg_plan.hpp"
#include "postgres_kind.hpp"

#include "retentiond/coverage.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <map>
#include <set>

namespace retentiond {

namespace {

constexpr int k_sample_rows = 300;
constexpr double k_sample_pages = 30;      // SYSTEM sampling reads about this many pages
constexpr std::int64_t k_small_pages = 64; // up to this size every row is a candidate
constexpr const char* k_statement_timeout = "SET LOCAL statement_timeout = 5000";
constexpr const char* k_lock_timeout = "SET LOCAL lock_timeout = 1000";

// A flag or a time named after personal data ("email_verified", "last_reminder_email_sent") does
// not hold it.
const std::set<std::string> k_not_personal_types = {"bool", "timestamp", "timestamptz",
                                                    "time", "timetz",    "interval"};

struct Column {
    std::string name;
    std::string type;
    bool sampled = false; // text and JSON: its values are classified
    bool readable = true;
};

struct Table {
    std::uint32_t oid = 0;
    std::string name; // schema.table
    std::string quoted;
    std::int64_t pages = 0;
    bool readable = false;
    std::vector<Column> columns;
};

// What one rule does to one table's rows.
struct TableCover {
    std::string by;                // "dora-accounts (dependent, set_null creator_id)"
    bool all = false;              // its rows are deleted
    std::set<std::string> columns; // set to NULL or anonymized
};
using Covers = std::map<std::uint32_t, std::vector<TableCover>>;

std::set<std::string> anonymized(const std::vector<FieldStrategy>& fields) {
    std::set<std::string> out;
    for (const auto& f : fields) {
        out.insert(f.field);
    }
    return out;
}

// The table's oid (a partition's root: the parent is what the scan judges); 0 when missing.
std::uint32_t resolve(pqxx::transaction_base& tx, const std::string& table) {
    const auto r = tx.exec_params("SELECT coalesce(pg_partition_root(to_regclass($1)), "
                                  "to_regclass($1))::oid",
                                  table);
    return r[0][0].is_null() ? 0 : r[0][0].as<std::uint32_t>();
}

void add_dependents(pqxx::transaction_base& tx, const Rule& rule,
                    const std::vector<Dependent>& dependents, Covers& covers) {
    for (const auto& d : dependents) {
        TableCover cover;
        if (d.action == Dependent::Action::remove) {
            cover.by = rule.name + " (dependent, delete)";
            cover.all = true;
        } else if (d.action == Dependent::Action::set_null) {
            cover.by = rule.name + " (dependent, set_null " + d.column + ")";
            cover.columns = {d.column};
        } else {
            cover.by = rule.name + " (dependent, anonymize)";
            cover.columns = anonymized(d.anonymize);
        }
        if (const auto oid = resolve(tx, d.table)) {
            covers[oid].push_back(std::move(cover));
        }
        add_dependents(tx, rule, d.dependents, covers);
    }
}

Covers read_covers(pqxx::transaction_base& tx, const std::vector<const Rule*>& rules) {
    Covers covers;
    for (const Rule* rule : rules) {
        const auto& pg = spec_of<PostgresRule>(*rule);
        TableCover cover;
        cover.all = rule->action == Action::remove;
        cover.by = rule->name + " (target, " + std::string(to_string(rule->action)) + ")";
        if (!cover.all) {
            cover.columns = anonymized(rule->anonymize);
        }
        if (const auto oid = resolve(tx, pg.table)) {
            covers[oid].push_back(std::move(cover));
        }
        add_dependents(tx, *rule, pg.dependents, covers);
    }
    return covers;
}

std::vector<Table> read_tables(pqxx::transaction_base& tx) {
    const auto rows = tx.exec(R"(
        SELECT c.oid, n.nspname, c.relname, has_table_privilege(c.oid, 'SELECT'),
               (CASE WHEN c.relkind = 'p'
                     THEN (SELECT coalesce(sum(pg_relation_size(t.relid)), 0)
                             FROM pg_partition_tree(c.oid) t)
                     ELSE pg_relation_size(c.oid) END)::bigint
                 / current_setting('block_size')::bigint
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\_%'
           -- retentiond's own audit chain (daemon.audit_store): digests, and keys being deleted
           AND coalesce(obj_description(c.oid, 'pg_class'), '') NOT LIKE 'retentiond audit chain%'
         ORDER BY 2, 3)");
    std::vector<Table> tables;
    for (const auto& r : rows) {
        Table t;
        t.oid = r[0].as<std::uint32_t>();
        t.name = r[1].as<std::string>() + "." + r[2].as<std::string>();
        t.quoted =
            tx.quote_name(r[1].as<std::string>()) + "." + tx.quote_name(r[2].as<std::string>());
        t.readable = r[3].as<bool>();
        t.pages = r[4].as<std::int64_t>();
        tables.push_back(std::move(t));
    }
    return tables;
}

void read_columns(pqxx::transaction_base& tx, std::vector<Table>& tables) {
    std::map<std::uint32_t, Table*> by_oid;
    for (auto& t : tables) {
        by_oid[t.oid] = &t;
    }
    const auto rows = tx.exec(R"(
        SELECT a.attrelid::oid, a.attname, t.typname,
               t.typcategory = 'S' OR t.typname IN ('json', 'jsonb'),
               has_column_privilege(a.attrelid, a.attnum, 'SELECT')
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
               JOIN pg_class c ON c.oid = a.attrelid
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm')
           AND NOT c.relispartition
         ORDER BY a.attrelid, a.attnum)");
    for (const auto& r : rows) {
        const auto it = by_oid.find(r[0].as<std::uint32_t>());
        if (it == by_oid.end()) {
            continue;
        }
        Column c{r[1].as<std::string>(), r[2].as<std::string>(), r[3].as<bool>(), r[4].as<bool>()};
        it->second->readable = it->second->readable || c.readable;
        it->second->columns.push_back(std::move(c));
    }
}

// "TABLESAMPLE SYSTEM (0.03)": about k_sample_pages pages of a large table, never a full scan.
std::string sample_clause(std::int64_t pages) {
    if (pages <= k_small_pages) {
        return "TABLESAMPLE BERNOULLI (100)";
    }
    const double percent = std::max(0.0001, 100.0 * k_sample_pages / static_cast<double>(pages));
    return "TABLESAMPLE SYSTEM (" + std::to_string(std::min(percent, 100.0)) + ")";
}

// The sampled columns' value tallies, by column; nullopt (and a note) when the sample could
// not be read in time.
std::optional<std::map<std::string, ValueTally>> sample(pqxx::connection& conn, const Table& t,
                                                        std::vector<std::string>& notes) {
    std::vector<const Column*> cols;
    for (const auto& c : t.columns) {
        if (c.sampled && c.readable) {
            cols.push_back(&c);
        }
    }
    std::map<std::string, ValueTally> tallies;
    if (cols.empty()) {
        return tallies;
    }
    try {
        pqxx::read_transaction tx(conn);
        tx.exec0(k_statement_timeout);
        tx.exec0(k_lock_timeout);
        std::string sql = "SELECT ";
        for (std::size_t i = 0; i < cols.size(); ++i) {
            sql += (i == 0 ? "" : ", ") + tx.quote_name(cols[i]->name) + "::text";
        }
        sql += " FROM " + t.quoted + " " + sample_clause(t.pages) + " LIMIT " +
               std::to_string(k_sample_rows);
        for (const auto& row : tx.exec(sql)) {
            for (std::size_t i = 0; i < cols.size(); ++i) {
                if (!row[static_cast<int>(i)].is_null()) {
                    tallies[cols[i]->name].add(row[static_cast<int>(i)].c_str());
                }
            }
        }
    } catch (const pqxx::broken_connection&) {
        throw;
    } catch (const pqxx::sql_error& e) {
        // A timeout or a lock held: the table is judged by its names, and the output says so.
        notes.push_back(t.name + ": values not sampled (SQLSTATE " + e.sqlstate() +
                        "): judged by column names only");
        return std::nullopt;
    }
    return tallies;
}

void judge(const TableCover* all, const std::vector<TableCover>& covers, CoverageFinding& f) {
    if (all != nullptr) {
        f.covered_by = all->by;
        return;
    }
    std::string kept;
    for (const auto& c : covers) {
        if (c.columns.count(f.column) != 0) {
            f.covered_by = c.by;
            return;
        }
        kept += (kept.empty() ? "" : "; ") + c.by;
    }
    if (!kept.empty()) {
        f.note = "rows kept with this column by " + kept;
    }
}

void scan_table(pqxx::connection& conn, const std::string& store, const Table& t,
                const Covers& covers, CoverageScan& scan) {
    const auto tallies = sample(conn, t, scan.notes);
    const auto cover = covers.find(t.oid);
    const std::vector<TableCover> none;
    const auto& table_covers = cover == covers.end() ? none : cover->second;
    const auto all = std::find_if(table_covers.begin(), table_covers.end(),
                                  [](const TableCover& c) { return c.all; });
    for (const auto& c : t.columns) {
        CoverageFinding f;
        if (!k_not_personal_types.count(c.type)) {
            f.why = name_reasons(c.name);
        }
        if (c.type == "inet" || c.type == "cidr") {
            f.why.push_back("type: " + c.type);
        }
        if (tallies) {
            if (const auto it = tallies->find(c.name); it != tallies->end()) {
                const auto values = it->second.reasons();
                f.why.insert(f.why.end(), values.begin(), values.end());
            }
        }
        if (f.why.empty()) {
            continue;
        }
        f.datastore = store;
        f.table = t.name;
        f.column = c.name;
        f.location = t.name + "." + c.name;
        judge(all == table_covers.end() ? nullptr : &*all, table_covers, f);
        scan.findings.push_back(std::move(f));
    }
}

} // namespace

CoverageScan scan_postgres_coverage(const Datastore& store, const std::vector<const Rule*>& rules) {
    const auto conninfo = pg::with_connection_defaults(spec_of<PostgresStore>(store).dsn.reveal());
    CoverageScan scan;
    try {
        auto conn = pg::open_connection(conninfo, {});
        std::vector<Table> tables;
        Covers covers;
        {
            pqxx::read_transaction tx(*conn);
            tx.exec0(k_statement_timeout);
            covers = read_covers(tx, rules);
            tables = read_tables(tx);
            read_columns(tx, tables);
        }
        std::vector<std::string> unreadable;
        for (const auto& t : tables) {
            if (!t.readable) {
                unreadable.push_back(t.name);
                continue;
            }
            scan_table(*conn, store.name, t, covers, scan);
        }
        if (!unreadable.empty()) {
            std::string names;
            for (const auto& n : unreadable) {
                names += (names.empty() ? "" : ", ") + n;
            }
            scan.notes.push_back(std::to_string(unreadable.size()) +
                                 " tables the role cannot read were not scanned: " + names);
            scan.partial = true;
        }
    } catch (const pqxx::broken_connection& e) {
        throw UnavailableError("datastore \"" + store.name + "\": " + pg::first_line(e.what()));
    }
    return scan;
}

} // namespace retentiond
