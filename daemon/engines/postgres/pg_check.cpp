// `retentiond check` for kind postgres: the rule's table and columns, their types, and that every
// foreign key into a table whose rows get deleted is handled (dependents, or the database's own
// ON DELETE CASCADE/SET NULL/SET DEFAULT).
#include "postgres_engine.hpp"

#include "pg_shape.hpp"
#include "pg_sql.hpp"

namespace retentiond::pg {

using pg_sql::exec;
using pg_sql::Params;

namespace {

// Collects a rule's diagnostics.
class Diagnostics {
public:
    Diagnostics(const Rule& rule, std::vector<Diagnostic>& out) : m_rule(rule), m_out(out) {}
    void operator()(std::string message) {
        m_out.push_back(Diagnostic{m_rule.pos, m_rule.name, std::move(message)});
    }

private:
    const Rule& m_rule;
    std::vector<Diagnostic>& m_out;
};

// The types an anonymized field's strategy works on.
void check_strategy(const FieldStrategy& fs, const std::string& type, Diagnostics& diag) {
    if (fs.strategy.kind == Strategy::Kind::date_trunc && !is_time_type(type)) {
        diag("date_trunc on " + fs.field + " of type " + type);
    }
    if (fs.strategy.kind == Strategy::Kind::drop_keys && type != "jsonb" && type != "json" &&
        !is_text_type(type)) {
        diag("drop_keys on " + fs.field + " of type " + type);
    }
}

// The rule's columns exist in the table, with types its clock, mark and strategies work on.
void check_columns(const Rule& rule, const Columns& columns, Diagnostics& diag) {
    const auto& pg = spec_of<PostgresRule>(rule);
    const auto need = [&](const std::string& column, const std::string& what) {
        if (columns.count(column) == 0) {
            diag(what + " column " + column + " not found in " + pg.table);
            return false;
        }
        return true;
    };
    for (const auto& k : pg.key) {
        need(k, "key");
    }
    for (const auto& c : pg.clock) {
        if (need(c, "clock") && !is_time_type(columns.at(c).type)) {
            diag("clock column " + pg.table + "." + c + " is of type " + columns.at(c).type +
                 ", not a timestamp, timestamptz or date");
        }
    }
    if (pg.hold) {
        need(pg.hold->column, "hold");
    }
    for (const auto& [kind, subject] : rule.subjects) {
        need(subject.field, "subject (" + kind + ")");
    }
    if (pg.mark && need(*pg.mark, "mark")) {
        const auto& type = columns.at(*pg.mark).type;
        if (type != "boolean" && !is_time_type(type)) {
            diag("mark column " + *pg.mark + " is of type " + type +
                 ", not boolean or a timestamp");
        }
    }
    for (const auto& fs : rule.anonymize) {
        if (need(fs.field, "anonymized")) {
            check_strategy(fs, columns.at(fs.field).type, diag);
        }
    }
}

// Whether one of `deps` is the foreign key `fk` (conname, table, confdeltype, columns, conrelid).
bool covered_by(pqxx::transaction_base& tx, const pqxx::row& fk,
                const std::vector<Dependent>& deps) {
    const std::string columns_text = fk[3].c_str();
    bool covered = false;
    for (const auto& d : deps) {
        Params q;
        const auto same = exec(tx,
                               "SELECT to_regclass(" + q.add(quote_table(tx.conn(), d.table)) +
                                   ")::oid = " + q.add(fk[4].c_str()) + "::oid",
                               q)[0][0];
        if (!same.is_null() && same.as<bool>() && d.column == columns_text) {
            covered = true;
        }
    }
    return covered;
}

// Every foreign key into `target` the database does not handle itself is covered by `deps`.
void check_foreign_keys(pqxx::transaction_base& tx, const std::string& target_quoted,
                        const std::string& target_name, const std::vector<Dependent>& deps,
                        Diagnostics& diag) {
    Params p;
    const auto fks = exec(tx,
                          "SELECT c.conname, c.conrelid::regclass::text, c.confdeltype, "
                          "array_to_string(ARRAY(SELECT a.attname FROM unnest(c.conkey) k JOIN "
                          "pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k), ','), "
                          "c.conrelid FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = "
                          "to_regclass(" +
                              p.add(target_quoted) + ") ORDER BY 1",
                          p);
    for (const auto& fk : fks) {
        const std::string action = fk[2].c_str();
        if (action == "c" || action == "n" || action == "d") {
            continue; // the database handles it
        }
        if (!covered_by(tx, fk, deps)) {
            diag("foreign key \"" + std::string(fk[0].c_str()) + "\" on table " + fk[1].c_str() +
                 " column " + fk[3].c_str() + " references " + target_name +
                 " but is neither covered by dependents nor ON DELETE CASCADE/SET NULL");
        }
    }
}

void check_dependents(pqxx::transaction_base& tx, const std::vector<Dependent>& deps,
                      Diagnostics& diag);

// The foreign keys into `target`, then its dependents, recursively for deleted dependents.
void cover(pqxx::transaction_base& tx, const std::string& target_quoted,
           const std::string& target_name, const std::vector<Dependent>& deps, Diagnostics& diag) {
    check_foreign_keys(tx, target_quoted, target_name, deps, diag);
    check_dependents(tx, deps, diag);
}

// One dependent's table and columns; false when they are missing.
bool check_dependent(pqxx::transaction_base& tx, const Dependent& d, const std::string& dq,
                     Diagnostics& diag) {
    if (!table_exists(tx, dq)) {
        diag("dependent table " + d.table + " does not exist");
        return false;
    }
    const auto dcols = read_columns(tx, dq);
    if (dcols.count(d.column) == 0) {
        diag("dependent column " + d.table + "." + d.column + " not found");
        return false;
    }
    if (d.action == Dependent::Action::set_null && dcols.at(d.column).not_null) {
        diag("dependent column " + d.table + "." + d.column +
             " is NOT NULL: set_null cannot apply");
    }
    for (const auto& fs : d.anonymize) {
        if (dcols.count(fs.field) == 0) {
            diag("dependent column " + d.table + "." + fs.field + " not found");
        }
        if (needs_client(fs.strategy)) {
            diag("hmac and email_domain are not supported on dependents (" + d.table + "." +
                 fs.field + ")");
        }
    }
    return true;
}

void check_dependents(pqxx::transaction_base& tx, const std::vector<Dependent>& deps,
                      Diagnostics& diag) {
    for (const auto& d : deps) {
        const auto dq = quote_table(tx.conn(), d.table);
        if (check_dependent(tx, d, dq, diag) && d.action == Dependent::Action::remove) {
            cover(tx, dq, d.table, d.dependents, diag);
        }
    }
}

} // namespace

namespace {

void dependent_tables(pqxx::connection& conn, const std::vector<Dependent>& deps,
                      std::vector<std::string>& out) {
    for (const auto& d : deps) {
        out.push_back(quote_table(conn, d.table));
        dependent_tables(conn, d.dependents, out);
    }
}

// The shapes that defeat or slow a purge (pg_shape.hpp): refusals fail `check`, the others are
// warnings. Read in a transaction of their own, after the rule itself was found sound.
void add_advisories(pqxx::connection& conn, const Rule& rule, std::vector<Diagnostic>& out) {
    const auto& pg = spec_of<PostgresRule>(rule);
    std::vector<std::string> dependents;
    dependent_tables(conn, pg.dependents, dependents);
    try {
        pqxx::read_transaction tx(conn);
        for (auto& a :
             pg_shape::advisories(tx, quote_table(conn, pg.table), dependents, pg.clock)) {
            out.push_back(Diagnostic{rule.pos, rule.name, std::move(a.message), !a.refusal});
        }
    } catch (const pqxx::sql_error& e) {
        out.push_back(Diagnostic{rule.pos, rule.name,
                                 "the table's shape could not be read (SQLSTATE " + e.sqlstate() +
                                     "): " + first_line(e.what()),
                                 true});
    }
}

} // namespace

std::vector<Diagnostic> PostgresEngine::check(const Rule& rule) {
    std::vector<Diagnostic> out;
    Diagnostics diag(rule, out);
    try {
        auto conn = connect();
        pqxx::read_transaction tx(*conn);
        const auto& pg = spec_of<PostgresRule>(rule);
        const auto table = quote_table(*conn, pg.table);
        if (!table_exists(tx, table)) {
            diag("table " + pg.table + " does not exist");
            return out;
        }
        check_columns(rule, read_columns(tx, table), diag);
        // Foreign key coverage: every FK into a table whose rows get deleted must be handled.
        if (rule.action == Action::remove) {
            cover(tx, table, pg.table, pg.dependents, diag);
        }
        tx.commit();
        if (out.empty()) {
            add_advisories(*conn, rule, out);
        }
    } catch (const pqxx::broken_connection& e) {
        unavailable(e);
    }
    return out;
}

} // namespace retentiond::pg
