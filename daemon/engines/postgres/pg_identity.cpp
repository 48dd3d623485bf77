// The identity of a postgres datastore (Kind::store_identity): what changes when the database is
// restored from a backup, so that the daemon re-applies the erasure requests (docs/dpo-guide.md,
// "Restores"). A new cluster (a physical backup restored elsewhere, initdb + pg_restore) has a new
// system identifier; a database dropped and recreated, a new database oid; a pg_restore --clean
// into the same database recreates the tables (new oids), and a data-only reload after a TRUNCATE
// gives the table a new relfilenode. Not detected: rows re-inserted by hand or by a data-only
// reload into the same, never truncated, table. No personal data: catalog numbers only.
#include "pg_connect.hpp"
#include "pg_plan.hpp"
#include "postgres_kind.hpp"

#include "retentiond/errors.hpp"

#include <pqxx/pqxx>

#include <set>

namespace retentiond {

namespace {

// pg_control_system() needs no privilege on PostgreSQL 10+ unless an administrator revoked it:
// then the database and table numbers still tell a restore.
std::string system_identifier(pqxx::connection& conn) {
    try {
        pqxx::nontransaction tx(conn);
        return tx.exec1("SELECT system_identifier::text FROM pg_control_system()")[0].c_str();
    } catch (const pqxx::broken_connection&) {
        throw;
    } catch (const pqxx::sql_error&) {
        return "unknown";
    }
}

std::string table_identity(pqxx::connection& conn, const std::string& table) {
    pqxx::nontransaction tx(conn);
    const auto rows = tx.exec_params("SELECT c.oid::text, c.relfilenode::text FROM pg_class c "
                                     "WHERE c.oid = to_regclass($1)",
                                     table);
    if (rows.empty()) {
        return "absent";
    }
    return rows[0][0].c_str() + std::string("/") + rows[0][1].c_str();
}

} // namespace

std::string postgres_store_identity(const Datastore& store, const std::vector<const Rule*>& rules) {
    std::set<std::string> tables;
    for (const Rule* rule : rules) {
        tables.insert(spec_of<PostgresRule>(*rule).table);
    }
    try {
        auto conn = pg::open_connection(
            pg::with_connection_defaults(spec_of<PostgresStore>(store).dsn.reveal()), {});
        std::string id = "system_identifier=" + system_identifier(*conn);
        {
            pqxx::nontransaction tx(*conn);
            id += " database=" + std::string(tx.exec1("SELECT oid::text FROM pg_database "
                                                      "WHERE datname = current_database()")[0]
                                                 .c_str());
        }
        for (const auto& table : tables) {
            id += " " + table + "=" + table_identity(*conn, table);
        }
        return id;
    } catch (const pqxx::broken_connection& e) {
        throw UnavailableError("datastore \"" + store.name + "\": " + pg::first_line(e.what()));
    }
}

} // namespace retentiond
