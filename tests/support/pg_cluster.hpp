#pragma once

#include <memory>
#include <string>

namespace retentiond::test {

// A throwaway PostgreSQL 15 cluster: initdb into a temp dir (as the `postgres` system user when
// running as root, since PostgreSQL refuses root), fsync=off, listening only on a Unix socket in
// that dir. Torn down (pg_ctl stop -m immediate, dir removed) by the destructor. Throws when the
// server cannot start: a test that needs it fails, it is never skipped.
class PgCluster {
public:
    PgCluster();
    ~PgCluster();
    PgCluster(const PgCluster&) = delete;
    PgCluster& operator=(const PgCluster&) = delete;

    // "host=/tmp/... port=5432 dbname=postgres user=postgres"
    std::string dsn(const std::string& dbname = "postgres") const;
    // Creates a fresh database and returns its DSN: one per test keeps tests independent.
    std::string create_database(const std::string& name);
    void stop();  // immediate shutdown, for outage tests
    void start(); // after stop()
    const std::string& socket_dir() const { return m_dir; }
    int port() const { return m_port; }

    // One cluster per test process, started on first use.
    static PgCluster& shared();

private:
    std::string m_dir;
    int m_port = 5432;
    bool m_running = false;
};

// Runs SQL (several statements allowed) on a DSN; throws on error.
void pg_exec(const std::string& dsn, const std::string& sql);
// First column of the first row as text ("" for NULL); throws when there is no row.
std::string pg_scalar(const std::string& dsn, const std::string& sql);

} // namespace retentiond::test
