#include "support/pg_cluster.hpp"

#include <pqxx/pqxx>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace retentiond::test {
namespace {

const char* const k_bin = "/usr/lib/postgresql/15/bin/";

// PostgreSQL refuses to run as root: when we are root, every server command runs as `postgres`.
bool running_as_root() {
    return ::geteuid() == 0;
}

// Runs argv (no shell), output appended to log; throws with the log's tail on failure.
void run(const std::vector<std::string>& argv, const std::string& log) {
    std::vector<std::string> full;
    if (running_as_root()) {
        full = {"/usr/sbin/runuser", "-u", "postgres", "--"};
    }
    full.insert(full.end(), argv.begin(), argv.end());
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
        const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::close(fd);
        }
        std::vector<char*> args;
        for (auto& a : full) {
            args.push_back(a.data());
        }
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::ifstream in(log);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (text.size() > 2000) {
            text = text.substr(text.size() - 2000);
        }
        throw std::runtime_error("PgCluster: " + argv.front() + " failed:\n" + text);
    }
}

void give_to_postgres(const std::string& path) {
    if (!running_as_root()) {
        return;
    }
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) {
        throw std::runtime_error("PgCluster: no `postgres` system user");
    }
    if (::chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        throw std::runtime_error("PgCluster: chown " + path + " failed");
    }
}

} // namespace

PgCluster::PgCluster() {
    std::string templ = "/tmp/retentiond-pg-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) {
        throw std::runtime_error("PgCluster: mkdtemp failed");
    }
    m_dir = templ;
    // The server (another user when we are root) needs to traverse the dir for its socket.
    ::chmod(m_dir.c_str(), 0755);
    give_to_postgres(m_dir);
    const std::string data = m_dir + "/data";
    const std::string log = m_dir + "/setup.log";
    try {
        run({std::string(k_bin) + "initdb", "-D", data, "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"},
            log);
        std::ofstream conf(data + "/postgresql.conf", std::ios::app);
        // autovacuum off: an ANALYZE of its own takes a transaction id, which would make the
        // engine's proof that nothing else wrote during a run (pg_targets.cpp) fail at random.
        // The tests ANALYZE what they need themselves.
        conf
            << "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nautovacuum = off\n"
            << "listen_addresses = ''\nunix_socket_directories = '" << m_dir << "'\n"
            << "port = " << m_port << "\nmax_connections = 100\nshared_buffers = 64MB\n";
        conf.close();
        start();
    } catch (...) {
        std::filesystem::remove_all(m_dir);
        throw;
    }
}

PgCluster::~PgCluster() {
    try {
        stop();
    } catch (...) {
        // Best effort: the dir goes anyway.
    }
    if (std::getenv("RETENTIOND_KEEP_PG") != nullptr) {
        return; // debugging: keep data/server.log
    }
    std::error_code ec;
    std::filesystem::remove_all(m_dir, ec);
}

void PgCluster::start() {
    if (m_running) {
        return;
    }
    run({std::string(k_bin) + "pg_ctl", "-D", m_dir + "/data", "-l", m_dir + "/data/server.log",
         "-w", "-t", "60", "start"},
        m_dir + "/ctl.log");
    m_running = true;
}

void PgCluster::stop() {
    if (!m_running) {
        return;
    }
    m_running = false;
    run({std::string(k_bin) + "pg_ctl", "-D", m_dir + "/data", "-m", "immediate", "-w", "stop"},
        m_dir + "/ctl.log");
}

std::string PgCluster::dsn(const std::string& dbname) const {
    return "host=" + m_dir + " port=" + std::to_string(m_port) + " dbname=" + dbname +
           " user=postgres";
}

std::string PgCluster::create_database(const std::string& name) {
    pqxx::connection conn(dsn());
    pqxx::nontransaction tx(conn);
    tx.exec0("CREATE DATABASE " + tx.quote_name(name));
    return dsn(name);
}

PgCluster& PgCluster::shared() {
    static PgCluster cluster;
    return cluster;
}

void pg_exec(const std::string& dsn, const std::string& sql) {
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    tx.exec(sql);
}

std::string pg_scalar(const std::string& dsn, const std::string& sql) {
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    const auto r = tx.exec(sql);
    if (r.empty() || r.columns() == 0) {
        throw std::runtime_error("pg_scalar: no row");
    }
    return r[0][0].is_null() ? std::string() : r[0][0].c_str();
}

} // namespace retentiond::test
