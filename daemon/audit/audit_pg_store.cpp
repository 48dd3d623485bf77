// The audit chain in a PostgreSQL table (audit_pg_store.hpp). Its own library: the only file of
// daemon/audit/ that includes libpqxx (ARCHITECTURE.md, "Dependency rules").

#include "retentiond/audit_pg_store.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/errors.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <functional>
#include <limits>
#include <mutex>
#include <stdexcept>

namespace retentiond {

namespace {

const std::string k_zero_hash(64, '0');
// Two processes creating the tables at once would race on the catalog: one waits for the other.
constexpr std::int64_t k_setup_lock = 7477696371302211391;
// Rows per round trip when reading: an intent line can be a few hundred kilobytes.
constexpr int k_read_rows = 64;
// The start of the tables' comment (pg_coverage.cpp leaves such tables out of its scan).
constexpr std::string_view k_table_comment = "retentiond audit chain";

// The chain's lock: one key per schema, so two chains in one database do not wait on each other.
std::int64_t chain_lock_key(const std::string& schema) {
    const std::string h = sha256_hex("retentiond audit chain " + schema);
    return static_cast<std::int64_t>(std::stoull(h.substr(0, 15), nullptr, 16));
}

std::string describe(const PgAuditTarget& t) {
    return "audit store " + t.datastore + " (" + t.schema + ".audit_log)";
}

std::string privileges_needed(const std::string& s) {
    return "it needs USAGE on schema " + s + ", SELECT and INSERT on " + s +
           ".audit_log, SELECT, INSERT and DELETE on " + s +
           ".in_flight (and, to create them on first use, CREATE on the database or on schema " +
           s + ")";
}

std::unique_ptr<pqxx::connection> connect(const PgAuditTarget& t) {
    try {
        auto c = std::make_unique<pqxx::connection>(t.conninfo);
        pqxx::nontransaction tx(*c);
        // Every line is durable when its append returns, whatever the role's default.
        tx.exec("SET synchronous_commit TO on");
        tx.exec("SET application_name TO 'retentiond-audit'");
        tx.exec("SET statement_timeout TO '60s'");
        return c;
    } catch (const pqxx::broken_connection& e) {
        throw UnavailableError(describe(t) + ": cannot connect: " + e.what());
    }
}

// A failure of the store as the error the run stops on: the server gone is unavailability, a
// privilege missing says which.
[[noreturn]] void rethrow_as_audit_error(const PgAuditTarget& t, const std::string& what) {
    try {
        throw;
    } catch (const pqxx::broken_connection& e) {
        throw UnavailableError(describe(t) + ": " + what + ": " + e.what());
    } catch (const pqxx::insufficient_privilege& e) {
        throw AuditWriteError(describe(t) + ": " + what + ": " + e.what() + "; " +
                              privileges_needed(t.schema));
    } catch (const pqxx::sql_error& e) {
        throw AuditWriteError(describe(t) + ": " + what + ": " + e.what());
    } catch (const pqxx::failure& e) {
        throw AuditWriteError(describe(t) + ": " + what + ": " + e.what());
    }
}

bool exists(pqxx::work& tx, const std::string& fn, const std::string& name) {
    return tx.exec_params1("SELECT " + fn + "($1) IS NOT NULL", name)[0].as<bool>();
}

// CREATE ... IF NOT EXISTS needs the CREATE privilege even when the object exists: look first.
void create_tables(pqxx::connection& c, const std::string& s) {
    pqxx::work tx(c);
    tx.exec_params("SELECT pg_advisory_xact_lock($1)", k_setup_lock);
    const std::string q = tx.quote_name(s);
    if (!exists(tx, "to_regnamespace", s)) {
        tx.exec("CREATE SCHEMA " + q);
    }
    if (!exists(tx, "to_regclass", s + ".audit_log")) {
        tx.exec("CREATE TABLE " + q + ".audit_log (seq bigint PRIMARY KEY, line text NOT NULL)");
        tx.exec("REVOKE ALL ON " + q + ".audit_log FROM PUBLIC");
        // Hex digests barely compress: storing them as they are spares each append the attempt.
        tx.exec("ALTER TABLE " + q + ".audit_log ALTER line SET STORAGE EXTERNAL");
        // The coverage scan knows retentiond's own tables by this comment (digests, no data).
        tx.exec("COMMENT ON TABLE " + q + ".audit_log IS '" + std::string(k_table_comment) +
                ": the lines, digests only'");
    }
    if (!exists(tx, "to_regclass", s + ".in_flight")) {
        // Raw keys: readable by the role that writes them only.
        tx.exec("CREATE TABLE " + q +
                ".in_flight (batch text PRIMARY KEY, body text NOT NULL, writer bigint NOT NULL,"
                " written_at timestamptz NOT NULL DEFAULT now())");
        tx.exec("REVOKE ALL ON " + q + ".in_flight FROM PUBLIC");
        tx.exec("COMMENT ON TABLE " + q + ".in_flight IS '" + std::string(k_table_comment) +
                ": raw keys of the batches in flight, removed at their outcome'");
    }
    tx.commit();
}

// The privileges an append and recovery need, checked once at open: a missing one is refused now,
// before any datastore is touched, rather than at the first batch.
void check_privileges(pqxx::connection& c, const std::string& s) {
    pqxx::work tx(c);
    const auto r =
        tx.exec_params1("SELECT has_schema_privilege($1, 'USAGE'),"
                        " has_table_privilege($2, 'SELECT'), has_table_privilege($2, 'INSERT'),"
                        " has_table_privilege($3, 'SELECT'), has_table_privilege($3, 'INSERT'),"
                        " has_table_privilege($3, 'DELETE')",
                        s, s + ".audit_log", s + ".in_flight");
    const char* names[] = {"USAGE on schema",     "SELECT on audit_log", "INSERT on audit_log",
                           "SELECT on in_flight", "INSERT on in_flight", "DELETE on in_flight"};
    std::string missing;
    for (int i = 0; i < 6; ++i) {
        if (!r[i].as<bool>()) {
            missing += (missing.empty() ? "" : ", ") + std::string(names[i]);
        }
    }
    if (!missing.empty()) {
        throw AuditWriteError("the role lacks " + missing + " (schema " + s + "); " +
                              privileges_needed(s));
    }
}

class PgLines final : public AuditLines {
public:
    explicit PgLines(PgAuditTarget t) : m_t(std::move(t)) {}
    std::string name() const override { return describe(m_t); }

    void forward(const Visit& visit) const override {
        read(false, [&](const std::string& line) { return visit(line, true); });
    }
    void backward(const std::function<bool(const std::string&)>& visit) const override {
        read(true, visit);
    }

private:
    // Pages of k_read_rows rows by seq, each in a transaction of its own (a long read holds no
    // snapshot while the daemon appends).
    void read(bool newest_first, const std::function<bool(const std::string&)>& visit) const {
        std::unique_ptr<pqxx::connection> c = connect(m_t);
        const std::string table = pqxx::work(*c).quote_name(m_t.schema) + ".audit_log";
        const std::string sql =
            newest_first
                ? "SELECT seq, line FROM " + table + " WHERE seq < $1 ORDER BY seq DESC LIMIT " +
                      std::to_string(k_read_rows)
                : "SELECT seq, line FROM " + table + " WHERE seq > $1 ORDER BY seq LIMIT " +
                      std::to_string(k_read_rows);
        std::int64_t cursor = newest_first ? std::numeric_limits<std::int64_t>::max()
                                           : std::numeric_limits<std::int64_t>::min();
        try {
            if (!table_exists(*c)) {
                return; // never written: no lines
            }
            for (;;) {
                pqxx::result page;
                {
                    pqxx::work tx(*c);
                    page = tx.exec_params(sql, cursor);
                    tx.commit();
                }
                for (const auto& row : page) {
                    cursor = row[0].as<std::int64_t>();
                    if (!visit(row[1].as<std::string>())) {
                        return;
                    }
                }
                if (page.size() < static_cast<std::size_t>(k_read_rows)) {
                    return;
                }
            }
        } catch (const pqxx::broken_connection& e) {
            throw UnavailableError(describe(m_t) + ": " + e.what());
        } catch (const pqxx::sql_error& e) {
            throw std::runtime_error(describe(m_t) + ": cannot read: " + e.what());
        }
    }

    bool table_exists(pqxx::connection& c) const {
        pqxx::work tx(c);
        return exists(tx, "to_regclass", m_t.schema + ".audit_log");
    }

    PgAuditTarget m_t;
};

class PgStore final : public AuditStore {
public:
    explicit PgStore(PgAuditTarget t)
        : m_t(std::move(t)), m_lock(chain_lock_key(m_t.schema)),
          m_writer(static_cast<std::int64_t>(std::stoull(random_hex(7), nullptr, 16))) {
        try {
            m_conn = connect(m_t);
            create_tables(*m_conn, m_t.schema);
            check_privileges(*m_conn, m_t.schema);
            pqxx::work tx(*m_conn);
            m_table = tx.quote_name(m_t.schema) + ".audit_log";
            m_in_flight = tx.quote_name(m_t.schema) + ".in_flight";
            m_head = read_head(tx, AuditHead{});
        } catch (const UnavailableError&) {
            throw;
        } catch (const AuditWriteError&) {
            throw;
        } catch (const std::exception&) {
            rethrow_as_audit_error(m_t, "cannot open");
        }
    }

    std::string name() const override { return describe(m_t); }
    AuditHead head() const override { return m_head; }
    std::unique_ptr<AuditLines> lines() const override { return std::make_unique<PgLines>(m_t); }

    AuditHead append(const Render& render, bool /*durable*/, bool& settled) override {
        append_in_tx(render, {}, {});
        settled = true; // committed with synchronous_commit on
        return m_head;
    }
    // A batch's keys and its intent line in one commit; its outcome line and the keys' removal in
    // one commit: two commits per batch, and a crash leaves both or neither.
    bool keys_with_lines() const override { return true; }
    AuditHead append_with_keys(const Render& render, const std::string& batch_id,
                               const std::string& text) override {
        append_in_tx(render,
                     [&](pqxx::work& tx) {
                         tx.exec_params(
                             "INSERT INTO " + m_in_flight +
                                 " (batch, body, writer) VALUES ($1, $2, $3) ON CONFLICT (batch) "
                                 "DO UPDATE SET body = excluded.body, writer = excluded.writer",
                             batch_id, text, writer_key());
                     },
                     {});
        return m_head;
    }
    AuditHead append_settling(const Render& render, const std::string& batch_id) override {
        append_in_tx(render, {}, [&](pqxx::work& tx) {
            tx.exec_params("DELETE FROM " + m_in_flight + " WHERE batch = $1", batch_id);
            // As the file's outcome lines, not flushed by themselves: the next synchronous commit
            // on the server (the next intent, rule_end, run_end, any host's) flushes the WAL up
            // to it. A crash before that loses the line and the keys' delete together, and
            // recovery settles the batch like any batch without an outcome.
            tx.exec("SET LOCAL synchronous_commit TO off");
        });
        return m_head;
    }

    void sync() override {} // every append is durable when it returns

    bool shares_database(const std::string& datastore) const override {
        return datastore == m_t.datastore ||
               std::find(m_t.same_database.begin(), m_t.same_database.end(), datastore) !=
                   m_t.same_database.end();
    }
    // The batch's lines on the batch's own transaction, in one INSERT after the chain's lock and
    // the head. The head is read over this store's own connection, not on tx: tx may be
    // REPEATABLE READ with a snapshot older than the last line, and no writer can commit a line
    // while tx holds the lock, so a fresh read after the lock is the head. Its SHA-256 is
    // computed by the server (the head line may be another writer's intent, hundreds of
    // kilobytes).
    AuditHead append_on(DatastoreTx& tx, const std::vector<Render>& renders) override {
        tx.query("SELECT pg_advisory_xact_lock($1)", {std::to_string(m_lock)});
        AuditHead head = committed_head();
        std::string sql = "INSERT INTO " + m_table + " (seq, line) VALUES ";
        std::vector<std::string> params;
        for (const auto& render : renders) {
            std::string text = render(head);
            sql += (params.empty() ? "($" : ", ($") + std::to_string(params.size() + 1) +
                   "::bigint, $" + std::to_string(params.size() + 2) + ")";
            head = AuditHead{head.seq + 1, sha256_hex(text)};
            params.push_back(std::to_string(head.seq));
            params.push_back(std::move(text));
        }
        tx.query(sql, params);
        return head;
    }

    void put_pending(const std::string& batch_id, const std::string& text) override {
        pending_tx([&](pqxx::work& tx) {
            tx.exec_params("INSERT INTO " + m_in_flight +
                               " (batch, body, writer) VALUES ($1, $2, $3) ON CONFLICT (batch) "
                               "DO UPDATE SET body = excluded.body, writer = excluded.writer",
                           batch_id, text, m_writer);
        });
    }
    void remove_pending(const std::string& batch_id) override {
        try {
            pending_tx([&](pqxx::work& tx) {
                tx.exec_params("DELETE FROM " + m_in_flight + " WHERE batch = $1", batch_id);
            });
        } catch (const std::exception&) {
            // Best effort: the next recovery removes a leftover whose outcome is in the chain.
        }
    }
    std::optional<std::string> read_pending(const std::string& batch_id) const override {
        const auto r =
            pending_query("SELECT body FROM " + m_in_flight + " WHERE batch = $1", batch_id);
        if (r.empty()) {
            return std::nullopt;
        }
        return r[0][0].as<std::string>();
    }
    // Only the batches of writers that are gone: a live writer (another host, another
    // process) holds its session lock, and its batches in flight are not crash leftovers.
    std::vector<PendingEntry> list_pending(const std::string& skip_prefix) override {
        const auto r = pending_query(
            "SELECT batch, body FROM " + m_in_flight +
                " WHERE left(batch, length($1)) <> $1 AND pg_try_advisory_xact_lock(writer)"
                " ORDER BY batch",
            skip_prefix);
        std::vector<PendingEntry> out;
        for (const auto& row : r) {
            const auto id = row[0].as<std::string>();
            out.push_back({id, m_t.schema + ".in_flight row " + id, row[1].as<std::string>()});
        }
        return out;
    }

private:
    // One line in one transaction: `before` (unlocked), the chain lock, the head, the line,
    // `after`, commit.
    void append_in_tx(const Render& render, const std::function<void(pqxx::work&)>& before,
                      const std::function<void(pqxx::work&)>& after) {
        try {
            if (!m_conn || !m_conn->is_open()) {
                m_conn = connect(m_t);
            }
            pqxx::work tx(*m_conn);
            if (before) {
                before(tx);
            }
            // One writer at a time on the chain, across hosts, until this line commits.
            tx.exec_params("SELECT pg_advisory_xact_lock($1)", m_lock);
            const AuditHead head = read_head(tx, m_head);
            std::string text = render(head);
            tx.exec_params("INSERT INTO " + m_table + " (seq, line) VALUES ($1, $2)",
                           static_cast<std::int64_t>(head.seq + 1), text);
            if (after) {
                after(tx);
            }
            tx.commit();
            m_head = AuditHead{head.seq + 1, sha256_hex(text)};
        } catch (const std::logic_error&) {
            throw;
        } catch (const std::exception&) {
            m_conn.reset(); // reconnect for the next line; its head is read again then
            rethrow_as_audit_error(m_t, "cannot append");
        }
    }

    // The writer lock (held by the pending keys' session) that marks this process's rows.
    std::int64_t writer_key() {
        const std::lock_guard lock(m_pending_mutex);
        ensure_pending_conn();
        return m_writer;
    }

    // The chain's head under the lock: the cached one when no other writer appended since.
    AuditHead read_head(pqxx::work& tx, const AuditHead& cached) const {
        const auto r = tx.exec("SELECT seq FROM " + m_table + " ORDER BY seq DESC LIMIT 1");
        if (r.empty()) {
            return AuditHead{0, k_zero_hash};
        }
        const auto seq = r[0][0].as<std::uint64_t>();
        if (seq == cached.seq && !cached.sha256.empty()) {
            return cached;
        }
        const auto line = tx.exec_params1("SELECT line FROM " + m_table + " WHERE seq = $1",
                                          static_cast<std::int64_t>(seq))[0]
                              .as<std::string>();
        return AuditHead{seq, sha256_hex(line)};
    }

    // The pending keys go over a connection of their own: they are written from any thread,
    // beside an append.
    void pending_tx(const std::function<void(pqxx::work&)>& body) {
        const std::lock_guard lock(m_pending_mutex);
        try {
            ensure_pending_conn();
            pqxx::work tx(*m_pending_conn);
            body(tx);
            tx.commit();
        } catch (const std::exception&) {
            m_pending_conn.reset();
            rethrow_as_audit_error(m_t, "cannot write the keys in flight");
        }
    }
    // The head as committed now, over the pending keys' connection (outside any batch's
    // snapshot), its line hashed by the server.
    AuditHead committed_head() const {
        const std::lock_guard lock(m_pending_mutex);
        try {
            ensure_pending_conn();
            pqxx::nontransaction tx(*m_pending_conn);
            const auto r =
                tx.exec("SELECT seq, encode(sha256(convert_to(line, 'UTF8')), 'hex') FROM " +
                        m_table + " ORDER BY seq DESC LIMIT 1");
            if (r.empty()) {
                return AuditHead{0, k_zero_hash};
            }
            return AuditHead{r[0][0].as<std::uint64_t>(), r[0][1].as<std::string>()};
        } catch (const std::exception&) {
            m_pending_conn.reset();
            rethrow_as_audit_error(m_t, "cannot read the chain's head");
        }
    }
    pqxx::result pending_query(const std::string& sql, const std::string& a) const {
        const std::lock_guard lock(m_pending_mutex);
        try {
            ensure_pending_conn();
            pqxx::work tx(*m_pending_conn);
            auto r = tx.exec_params(sql, a);
            tx.commit();
            return r;
        } catch (const std::exception&) {
            m_pending_conn.reset();
            rethrow_as_audit_error(m_t, "cannot read the keys in flight");
        }
    }
    // The session that writes the pending keys holds this writer's lock for as long as the
    // process lives: recovery elsewhere leaves its batches alone.
    void ensure_pending_conn() const {
        if (!m_pending_conn || !m_pending_conn->is_open()) {
            m_pending_conn = connect(m_t);
            pqxx::nontransaction tx(*m_pending_conn);
            tx.exec_params("SELECT pg_advisory_lock($1)", m_writer);
        }
    }

    PgAuditTarget m_t;
    std::int64_t m_lock;
    std::int64_t m_writer; // this process's writer lock (random), in each of its in_flight rows
    std::unique_ptr<pqxx::connection> m_conn;
    std::string m_table;
    std::string m_in_flight;
    AuditHead m_head;
    mutable std::mutex m_pending_mutex;
    mutable std::unique_ptr<pqxx::connection> m_pending_conn;
};

} // namespace

std::unique_ptr<AuditStore> open_pg_audit_store(const PgAuditTarget& target) {
    return std::make_unique<PgStore>(target);
}

std::unique_ptr<AuditLines> pg_audit_lines(const PgAuditTarget& target) {
    return std::make_unique<PgLines>(target);
}

std::uint64_t import_into_pg_audit_store(const PgAuditTarget& target, const AuditLines& lines) {
    PgStore store(target); // creates the tables, checks the privileges
    auto c = connect(target);
    std::uint64_t imported = 0;
    try {
        pqxx::work tx(*c);
        tx.exec_params("SELECT pg_advisory_xact_lock($1)", chain_lock_key(target.schema));
        const std::string table = tx.quote_name(target.schema) + ".audit_log";
        const auto held = tx.exec1("SELECT count(*) FROM " + table)[0].as<std::int64_t>();
        if (held != 0) {
            throw std::runtime_error(describe(target) + " already holds " + std::to_string(held) +
                                     " lines: a file log is imported into an empty store only "
                                     "(its lines come first)");
        }
        lines.forward([&](std::string_view line, bool terminated) {
            if (!terminated) {
                throw std::runtime_error("the log's last line is incomplete: verify it first");
            }
            const auto j = nlohmann::json::parse(line, nullptr, false);
            if (!j.is_object() || !j.contains("seq") || !j["seq"].is_number_unsigned()) {
                throw std::runtime_error("line " + std::to_string(imported + 1) +
                                         " has no seq: verify the log first");
            }
            tx.exec_params("INSERT INTO " + table + " (seq, line) VALUES ($1, $2)",
                           j["seq"].get<std::int64_t>(), std::string(line));
            ++imported;
            return true;
        });
        tx.commit(); // all or nothing
    } catch (const pqxx::failure&) {
        rethrow_as_audit_error(target, "cannot import");
    }
    return imported;
}

} // namespace retentiond
