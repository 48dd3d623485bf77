#include "pg_notice.hpp"
#include "pg_sql.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"
#include "retentiond/timeutil.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace retentiond::pg_notice {
namespace {

using pg_sql::array_literal;
using pg_sql::exec;
using pg_sql::Params;

void set_zone(pqxx::transaction_base& tx, const Target& t) {
    Params p;
    exec(tx, "SELECT set_config('TimeZone', " + p.add(t.tz) + ", true)", p);
}

// Records whose notice window has started, that are eligible and hold no notice for their
// current due date.
std::string candidates_where(const Rule& rule, const Target& t, Params& p, bool table_exists) {
    const auto& notice = *spec_of<PostgresRule>(rule).notice;
    const auto retain = p.add(rule.retain.to_pg_interval()) + "::interval";
    std::string where = t.clock + " IS NOT NULL AND (" + t.clock + " + " + retain + ") - " +
                        p.add(notice.before.to_pg_interval()) + "::interval <= now() AND (" +
                        t.eligible + ")";
    if (table_exists) {
        where += " AND NOT EXISTS (SELECT 1 FROM retentiond.notice rn WHERE rn.retentiond_rule = " +
                 p.add(rule.name) + " AND rn.retentiond_key = " + state_key_sql(t.keys) +
                 " AND rn.retentiond_due_at = (" + t.clock + " + " + retain + "))";
    }
    return where;
}

void ensure_state_table(pqxx::connection& conn) {
    pqxx::work tx(conn);
    if (state_table_exists(tx)) {
        return;
    }
    // Two daemons starting at once must not race on CREATE: serialize on an advisory lock.
    tx.exec("SELECT pg_advisory_xact_lock(7477696371302211373)");
    tx.exec("CREATE SCHEMA IF NOT EXISTS retentiond");
    tx.exec("CREATE TABLE IF NOT EXISTS retentiond.notice ("
            " retentiond_rule text NOT NULL,"
            " retentiond_key text NOT NULL,"
            " retentiond_due_at timestamptz NOT NULL,"
            " retentiond_noticed_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (retentiond_rule, retentiond_key))");
    tx.commit();
}

// A notice is void once its record is gone or its clock moved (the user came back).
std::int64_t drop_stale(pqxx::connection& conn, const Rule& rule, const Target& t) {
    pqxx::work tx(conn);
    set_zone(tx, t);
    Params p;
    const auto rule_param = p.add(rule.name);
    const auto r =
        exec(tx,
             "DELETE FROM retentiond.notice rn WHERE rn.retentiond_rule = " + rule_param +
                 " AND NOT EXISTS (SELECT 1 FROM " + t.table + " WHERE " + state_key_sql(t.keys) +
                 " = rn.retentiond_key AND (" + t.clock + " + " +
                 p.add(rule.retain.to_pg_interval()) + "::interval) = rn.retentiond_due_at)",
             p);
    tx.commit();
    return static_cast<std::int64_t>(r.affected_rows());
}

} // namespace

std::string state_key_sql(const std::vector<std::string>& quoted_keys) {
    if (quoted_keys.size() == 1) {
        return quoted_keys.front() + "::text";
    }
    std::string s = "('[' || ";
    for (std::size_t i = 0; i < quoted_keys.size(); ++i) {
        s += (i == 0 ? "" : " || ',' || ") + std::string("to_json(") + quoted_keys[i] +
             "::text)::text";
    }
    return s + " || ']')";
}

bool state_table_exists(pqxx::transaction_base& tx) {
    return !tx.exec("SELECT to_regclass('retentiond.notice')")[0][0].is_null();
}

bool run_notifier(const std::string& command, const std::string& input,
                  std::chrono::milliseconds timeout, std::string& error) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        error = std::string("pipe: ") + std::strerror(errno);
        return false;
    }
    const pid_t pid = fork();
    if (pid < 0) {
        error = std::string("fork: ") + std::strerror(errno);
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    if (pid == 0) {
        setpgid(0, 0); // its own group, so a timeout kills everything it started
        dup2(fds[0], STDIN_FILENO);
        execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    close(fds[0]);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const auto remaining_ms = [&] {
        return static_cast<int>(
            std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                          deadline - std::chrono::steady_clock::now())
                                          .count()));
    };
    // A notifier that stops reading must not hang the run: write with poll() and the deadline.
    std::size_t written = 0;
    bool write_failed = false;
    const auto old_pipe = signal(SIGPIPE, SIG_IGN);
    while (written < input.size()) {
        pollfd pfd{fds[1], POLLOUT, 0};
        const int ready = poll(&pfd, 1, remaining_ms());
        if (ready <= 0) {
            write_failed = true;
            error = "notifier did not read its input within " +
                    std::to_string(timeout.count() / 1000) + " s";
            break;
        }
        const auto n = write(fds[1], input.data() + written, input.size() - written);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            write_failed = true;
            error = std::string("notifier stopped reading its input: ") + std::strerror(errno);
            break;
        }
        written += static_cast<std::size_t>(n);
    }
    close(fds[1]);
    signal(SIGPIPE, old_pipe);
    int status = 0;
    for (;;) {
        const pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            error = "notifier timed out after " + std::to_string(timeout.count() / 1000) + " s";
            return false;
        }
        // Only while a notifier runs; the daemon never polls when idle.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (write_failed) {
        return false;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        return true;
    }
    error = WIFEXITED(status) ? "notifier exited with status " + std::to_string(WEXITSTATUS(status))
                              : "notifier killed by signal " + std::to_string(WTERMSIG(status));
    return false;
}

namespace {

// One batch of notices: the notifier's input, and the state and audit it leaves.
struct NoticeBatch {
    std::string input; // one JSON line per record
    std::vector<std::string> state_keys;
    std::vector<std::string> due_ats;
    BatchIntent intent;
};

// The next records to notice: due date (text, micros), key texts, the notice's fields.
pqxx::result select_candidates(pqxx::transaction_base& tx, const Rule& rule, const Target& t,
                               int batch_size) {
    Params p(t.params);
    const auto retain = p.add(rule.retain.to_pg_interval()) + "::interval";
    std::string fields;
    for (const auto& f : spec_of<PostgresRule>(rule).notice->fields) {
        fields += ", " + tx.quote_name(f) + "::text";
    }
    std::string keys;
    for (const auto& k : t.keys) {
        keys += ", " + k + "::text";
    }
    const auto where = candidates_where(rule, t, p, true);
    return exec(tx,
                "SELECT (" + t.clock + " + " + retain + ")::text, (extract(epoch FROM " + t.clock +
                    " + " + retain + ") * 1000000)::bigint" + keys + fields + " FROM " + t.table +
                    " WHERE " + where + " LIMIT " + p.add(std::to_string(batch_size)) + "::bigint",
                p);
}

NoticeBatch describe(const pqxx::result& rows, const Rule& rule, const Target& t,
                     const std::string& datastore) {
    const auto& notice = *spec_of<PostgresRule>(rule).notice;
    NoticeBatch batch;
    batch.intent.rule = rule.name;
    batch.intent.datastore = datastore;
    batch.intent.target = spec_of<PostgresRule>(rule).table;
    batch.intent.action = "notice";
    const int nkeys = static_cast<int>(t.keys.size());
    for (const auto& row : rows) {
        std::vector<std::string> key_values;
        for (int i = 0; i < nkeys; ++i) {
            key_values.emplace_back(row[2 + i].c_str());
        }
        const auto key = canonical_key(key_values);
        const auto due = TimePoint(std::chrono::microseconds(row[1].as<std::int64_t>()));
        nlohmann::json line = {{"rule", rule.name}, {"key", key}, {"due", format_utc_seconds(due)}};
        for (std::size_t f = 0; f < notice.fields.size(); ++f) {
            const auto field = row[2 + nkeys + static_cast<int>(f)];
            line[notice.fields[f]] =
                field.is_null() ? nlohmann::json(nullptr) : nlohmann::json(field.c_str());
        }
        batch.input += line.dump() + "\n";
        batch.state_keys.push_back(key);
        batch.due_ats.emplace_back(row[0].c_str());
        batch.intent.keys.push_back(key);
    }
    return batch;
}

// Marked in the batch's transaction, committed only if the notifier succeeds.
void mark_noticed(pqxx::transaction_base& tx, const Rule& rule, const NoticeBatch& batch) {
    Params ins;
    exec(tx,
         "INSERT INTO retentiond.notice (retentiond_rule, retentiond_key, retentiond_due_at) "
         "SELECT " +
             ins.add(rule.name) + ", k, d FROM unnest(" + ins.add(array_literal(batch.state_keys)) +
             "::text[], " + ins.add(array_literal(batch.due_ats)) +
             "::timestamptz[]) AS v(k, d) ON CONFLICT (retentiond_rule, retentiond_key) DO "
             "UPDATE SET retentiond_due_at = EXCLUDED.retentiond_due_at, "
             "retentiond_noticed_at = now()",
         ins);
}

// One batch: select, mark, notify, commit and journal. Returns how many records were noticed,
// or nullopt when the notifier failed (`outcome` says why, nothing marked).
std::optional<std::size_t> notice_batch(pqxx::connection& conn, const Rule& rule, const Target& t,
                                        RunContext& ctx, const std::string& datastore,
                                        int batch_size, Outcome& outcome) {
    const auto& notice = *spec_of<PostgresRule>(rule).notice;
    pqxx::work tx(conn);
    set_zone(tx, t);
    const auto rows = select_candidates(tx, rule, t, batch_size);
    if (rows.empty()) {
        tx.commit();
        return 0;
    }
    const auto batch = describe(rows, rule, t, datastore);
    mark_noticed(tx, rule, batch);
    std::string error;
    if (!run_notifier(notice.command, batch.input, notice.timeout, error)) {
        tx.abort();
        outcome.failed = true;
        outcome.message =
            error + "; " + std::to_string(rows.size()) + " notice(s) not marked, retried next run";
        journal_event(
            ctx.journal, rule, k_refusal_event,
            {{"reason", "notifier failed"}, {"message", error}, {"records", rows.size()}});
        return std::nullopt;
    }
    std::optional<std::string> batch_id;
    if (ctx.journal != nullptr) {
        batch_id = ctx.journal->intent(batch.intent);
    }
    tx.commit();
    if (batch_id) {
        ctx.journal->outcome(*batch_id, true, static_cast<std::int64_t>(rows.size()));
    }
    return rows.size();
}

} // namespace

Outcome send_notices(pqxx::connection& conn, const Rule& rule, const Target& t, RunContext& ctx,
                     const std::string& datastore) {
    Outcome outcome;
    ensure_state_table(conn);
    if (const auto stale = drop_stale(conn, rule, t); stale > 0) {
        spdlog::info("rule {}: {} notice(s) voided (record gone or clock moved)", rule.name, stale);
    }
    const auto batch_size = std::max(1, rule.batch_size);
    while (!stop_requested(ctx)) {
        const auto sent = notice_batch(conn, rule, t, ctx, datastore, batch_size, outcome);
        if (!sent) {
            return outcome;
        }
        outcome.sent += static_cast<std::int64_t>(*sent);
        if (*sent < static_cast<std::size_t>(batch_size)) {
            return outcome;
        }
    }
    return outcome;
}

Counts count(pqxx::transaction_base& tx, const Rule& rule, const Target& t) {
    Counts counts;
    const bool table_exists = state_table_exists(tx);
    set_zone(tx, t);
    Params p(t.params);
    const auto where = candidates_where(rule, t, p, table_exists);
    counts.to_send =
        exec(tx, "SELECT count(*) FROM " + t.table + " WHERE " + where, p)[0][0].as<std::int64_t>();
    if (table_exists) {
        Params w(t.params);
        const auto& notice = *spec_of<PostgresRule>(rule).notice;
        counts.waiting =
            exec(
                tx,
                "SELECT count(*) FROM " + t.table + " WHERE (" + t.eligible +
                    ") AND EXISTS (SELECT 1 FROM retentiond.notice rn WHERE rn.retentiond_rule = " +
                    w.add(rule.name) + " AND rn.retentiond_key = " + state_key_sql(t.keys) +
                    " AND rn.retentiond_due_at = (" + t.clock + " + " +
                    w.add(rule.retain.to_pg_interval()) +
                    "::interval) AND (rn.retentiond_due_at > now() OR "
                    "rn.retentiond_noticed_at > now() - " +
                    w.add(notice.before.to_pg_interval()) + "::interval))",
                w)[0][0]
                .as<std::int64_t>();
    }
    return counts;
}

} // namespace retentiond::pg_notice
