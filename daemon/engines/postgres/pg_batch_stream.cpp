// A batch stream: see pg_batch_stream.hpp. Commits are asynchronous (synchronous_commit off): a
// batch's outcome line is written only once the server's flushed WAL position passes its commit,
// and the stream ends with one synchronous commit, so a purge that returned is durable and the log
// never claims a commit a crash undid.
#include "pg_batch_stream.hpp"

#include "pg_audit_tx.hpp"
#include "pg_errors.hpp"
#include "pg_span.hpp"
#include "pg_statements.hpp"

#include "retentiond/anonymize.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"

#include <thread>

namespace retentiond::pg {

using pg_sql::array_literal;
using pg_sql::exec;

namespace {

constexpr int k_max_attempts = 5;
constexpr std::chrono::milliseconds k_first_backoff{100};
constexpr std::chrono::milliseconds k_max_backoff{5000};

// A batch that could not commit (its lines or its commit refused): rolled back, the stream ends.
class CommitRefused : public std::runtime_error {
public:
    CommitRefused(const std::string& what, std::string sqlstate)
        : std::runtime_error(what), m_sqlstate(std::move(sqlstate)) {}
    const std::string& sqlstate() const { return m_sqlstate; }

private:
    std::string m_sqlstate;
};

// A batch's transaction: deferrable constraints checked at each statement, timeouts, time zone,
// and an asynchronous commit (a batch's outcome line waits until the server has flushed its
// commit, see WalPosition). Returns the WAL position, read in the same round trip as the settings,
// and records the transaction's id in the run's evidence.
WalPosition begin_batch(pqxx::transaction_base& tx, const Plan& plan, RunEvidence* evidence) {
    const auto& pg = spec_of<PostgresRule>(*plan.rule);
    // Django creates its foreign keys DEFERRABLE INITIALLY DEFERRED: a reference the dependents
    // missed would only fail at COMMIT, after the batch's statements, on the pipelined path even
    // while the next batch runs. Checked at each statement instead, it fails the batch there,
    // naming the constraint, and the batch rolls back whole. (One round trip, about 17 us on a
    // Unix socket: a utility statement cannot share the parameterized one below.)
    tx.exec0("SET CONSTRAINTS ALL IMMEDIATE");
    Params p;
    const auto row = exec(
        tx,
        "SELECT set_config('lock_timeout', " + p.add(ms(pg.lock_timeout)) +
            ", true), set_config('statement_timeout', " + p.add(ms(pg.statement_timeout)) +
            ", true), set_config('TimeZone', " + p.add(plan.tz) +
            ", true), set_config('synchronous_commit', " + p.add(plan.async_commit ? "off" : "on") +
            ", true), pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text, "
            "pg_current_xact_id()::text",
        p)[0];
    if (evidence != nullptr) {
        evidence->add_xid(std::stoull(row[6].c_str()));
    }
    return WalPosition{parse_lsn(row[4].c_str()), parse_lsn(row[5].c_str())};
}

// The audit's intent for the rows a batch touched (their keys, canonical form).
BatchIntent make_intent(const StreamRun& run, const pqxx::result& touched) {
    BatchIntent intent;
    intent.rule = run.rule.name;
    intent.datastore = run.datastore;
    intent.target = spec_of<PostgresRule>(run.rule).table;
    intent.action = run.rule.action == Action::anonymize ? "anonymize" : "delete";
    intent.cutoff = run.cutoff;
    intent.keys.reserve(touched.size());
    const std::size_t n_keys = run.plan.keys.size();
    for (const auto& row : touched) {
        if (n_keys == 1) { // its canonical form: itself
            intent.keys.emplace_back(row[0].c_str(), row[0].size());
            continue;
        }
        std::vector<std::string> values;
        for (std::size_t i = 0; i < n_keys; ++i) {
            values.emplace_back(row[static_cast<int>(i)].c_str());
        }
        intent.keys.push_back(canonical_key(values));
    }
    return intent;
}

} // namespace

std::vector<std::vector<std::optional<std::string>>>
client_values(const Rule& rule, const RunContext& ctx, const pqxx::result& selected) {
    std::vector<std::vector<std::optional<std::string>>> out;
    int column = 1;
    for (const auto& fs : rule.anonymize) {
        if (!needs_client(fs.strategy)) {
            continue;
        }
        if (ctx.audit_key == nullptr || ctx.audit_key->empty()) {
            throw PlanError("strategy hmac/email_domain needs daemon.audit_key");
        }
        std::vector<std::optional<std::string>> values;
        for (const auto& row : selected) {
            const auto f = row[column];
            values.push_back(f.is_null()
                                 ? std::nullopt
                                 : anonymize_text(fs.strategy, f.c_str(), *ctx.audit_key, ctx.tz));
        }
        out.push_back(std::move(values));
        ++column;
    }
    return out;
}

namespace {

// A batch whose lines go on its own transaction (lines_in_tx): both lines, then the commit. A
// line that cannot be written (the chain's lock timed out, a privilege is missing) rolls the
// batch back with it and fails the stream: its rows stay, and the run says so. A lost connection
// leaves the batch and its lines together, committed or not.
void write_lines_and_commit(BatchJournal& journal, const BatchIntent& intent, std::int64_t done,
                            pqxx::work& tx) {
    const auto lines = journal.lines_for(intent, done);
    try {
        write_lines(*lines, tx);
    } catch (const pqxx::broken_connection&) {
        throw;
    } catch (const std::exception& e) {
        throw CommitRefused("its audit lines could not be written: " + first_line(e.what()),
                            classify(e).sqlstate);
    }
    try {
        tx.commit();
    } catch (const pqxx::broken_connection&) {
        throw;
    } catch (const pqxx::in_doubt_error&) {
        throw;
    } catch (const std::exception& e) {
        throw CommitRefused(first_line(e.what()), classify(e).sqlstate);
    }
}

} // namespace

std::uint64_t parse_lsn(std::string_view text) {
    const auto slash = text.find('/');
    if (slash == std::string_view::npos) {
        throw std::runtime_error("unexpected LSN from the server: " + std::string(text));
    }
    return (std::stoull(std::string(text.substr(0, slash)), nullptr, 16) << 32U) |
           std::stoull(std::string(text.substr(slash + 1)), nullptr, 16);
}

std::pair<std::int64_t, std::int64_t> StreamRun::claim(std::int64_t span) {
    const std::lock_guard<std::mutex> lock(m_mutex);
    const std::int64_t first = m_next_page;
    m_next_page = std::min(pages, m_next_page + span);
    return {first, m_next_page};
}

void StreamRun::progress(std::int64_t done) {
    const std::lock_guard<std::mutex> lock(m_mutex); // totals reported in order
    const std::int64_t total = processed += done;
    if (ctx.on_progress) {
        ctx.on_progress(total, due);
    }
}

BatchStream::BatchStream(StreamRun& run, pg::Connection conn, RunResult& out)
    : m_run(run), m_plan(run.plan), m_rule(run.rule), m_out(out), m_conns{std::move(conn), nullptr},
      m_span(run.initial_span) {
    // Clock ranges need a DELETE that judges every row of the range by itself: no dependents, no
    // value computed here, no lock taken first, one clock column whose NULLs are not due.
    m_clock_ranges = run.by_index && m_rule.action == Action::remove && m_plan.dependents.empty() &&
                     !m_plan.client_side && !run.lock_first && !m_plan.subject &&
                     !m_rule.clock_null_due && spec_of<PostgresRule>(m_rule).clock.size() == 1;
}

void BatchStream::run() {
    try {
        // A failed batch has already made the stream durable and said why.
        if (m_run.by_index ? run_index() : run_pages()) {
            make_durable();
        }
    } catch (const CommitRefused& e) {
        if (stop_requested(m_run.ctx)) {
            stopped_in_flight(e.sqlstate()); // the stop watch cancelled the lines or the commit
            return;
        }
        failed("commit on " + spec_of<PostgresRule>(m_rule).table + " refused: " + e.what() +
               "; stopped after " + std::to_string(m_run.processed.load()) + " rows");
        journal_now("error", {{"processed", m_run.processed.load()}});
    }
}

// Page ranges claimed from the run's cursor until the heap ends; false when a batch failed.
bool BatchStream::run_pages() {
    for (;;) {
        if (m_range_start >= m_claim_end) {
            std::tie(m_range_start, m_claim_end) = m_run.claim(m_span);
        }
        if (m_range_start >= m_run.pages || stop_now()) {
            return true;
        }
        const std::int64_t range_end = std::min(m_claim_end, m_range_start + m_span);
        Batch batch;
        if (!run_batch(range_end, batch)) {
            return false;
        }
        advance(batch, range_end);
    }
}

// The next due rows in (clock, ctid) order until a batch finds fewer than batch_size (or a clock
// range reaches the end); false when a batch failed. A clock range [keyset, boundary) whose
// boundary is the clock batch_size rows on, read from the index alone, holds fewer than
// batch_size rows and is deleted by one statement that reads the heap in physical order like
// the plain DELETE, instead of a selection in index order (a heap page per row) and a DELETE of
// the selected tids; ties at the keyset's clock leave no range, and that batch is selected.
bool BatchStream::run_index() {
    while (!stop_now()) {
        Batch batch;
        if (!run_batch(0, batch)) {
            return false;
        }
        if (batch.selected > 0) {
            m_first = false;
        }
        if (batch.by_clock ? batch.last : batch.selected < m_run.batch_size) {
            return true;
        }
        throttle(batch);
    }
    return true;
}

// Another stream failed, or the run was asked to stop (after a first batch): the stream ends
// durable, status stopped.
bool BatchStream::stop_now() {
    if (m_run.abort) {
        m_out.status = RunResult::Status::stopped;
        return true;
    }
    if (!m_first && stop_requested(m_run.ctx)) {
        m_out.status = RunResult::Status::stopped;
        m_out.message = stopped_message(m_run.processed.load(), "rows");
        return true;
    }
    return false;
}

bool BatchStream::run_batch(std::int64_t range_end, Batch& batch) {
    // The connection the open batch does not hold.
    const int slot = m_open ? 1 - m_open->slot : 0;
    if (!m_conns[slot]) {
        m_conns[slot] = m_run.connect();
    }
    // A row changed under a REPEATABLE READ batch: the retry deletes in READ COMMITTED (DELETE
    // ... RETURNING, which re-judges a changed row without failing), so a busy table cannot use
    // up the attempts.
    bool conflicted = false;
    // Without dependents or client-side values, a batch works on a page range, reading it like
    // the plain DELETE. Otherwise (or when one page overflows batch_size) a selection pass picks
    // the next due rows in physical order.
    batch.by_range = !m_run.by_index && !m_run.lock_first && m_after_tid.empty() && !m_force_select;
    batch.by_clock = m_clock_ranges;
    const IndexKeyset keyset = m_keyset; // a failed attempt's selection does not count
    for (int n = 1;; ++n) {
        m_pushed_xid = false;
        try {
            attempt(slot, range_end, conflicted, batch);
            return true;
        } catch (const CommitRefused&) {
            throw;
        } catch (const AuditWriteError&) {
            throw; // the batch rolled back; the run stops before touching more
        } catch (const std::exception& e) {
            if (classify(e).kind == ErrorClass::unavailable) {
                throw; // outcome unknown: crash recovery resolves the intents
            }
            if (m_pushed_xid) {
                m_plan.own_xids.pop_back();
            }
            m_keyset = keyset;
            if (stop_requested(m_run.ctx)) {
                // cancelled by the stop watch, or failing anyway
                return stopped_in_flight(classify(e).sqlstate);
            }
            if (!retry_after(e, n, conflicted)) {
                return false;
            }
        }
    }
}

void BatchStream::attempt(int slot, std::int64_t range_end, bool conflicted, Batch& batch) {
    if (conflicted && m_run.evidence != nullptr) {
        m_run.evidence->kept(); // the retry judges rows again: some may stay
    }
    auto tx = std::make_unique<pqxx::work>(*m_conns[slot]);
    // Deletes by page range read the keys, then delete, in one REPEATABLE READ snapshot.
    const bool read_then_delete = batch.by_range && m_rule.action == Action::remove && !conflicted;
    if (read_then_delete) {
        tx->exec0("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
    }
    m_wal = begin(*tx);
    Params m;
    std::string rows_sql;
    std::string tid_array;
    pqxx::result selected;
    if (batch.by_range) {
        rows_sql = page_range_sql(m, m_range_start, range_end);
    } else if (!(batch.by_clock && clock_range(*tx, m, batch, rows_sql))) {
        batch.by_clock = false;
        if (!select_rows(*tx, range_end, batch, selected)) {
            tx->commit();
            return;
        }
        std::vector<std::string> tids;
        tids.reserve(selected.size());
        for (const auto& row : selected) {
            tids.emplace_back(row[0].c_str());
        }
        tid_array = array_literal(tids);
        if (!m_plan.dependents.empty()) {
            apply_batch_dependents(*tx, m_plan, tid_array, m_out.counters);
        }
        if (!m_plan.client_side) { // the client path joins on its own tid list
            rows_sql = "ctid = ANY(" + m.add(tid_array) + "::tid[])";
        }
    }
    const auto touched = apply(*tx, m, rows_sql, read_then_delete, selected, tid_array);
    batch.done = static_cast<std::int64_t>(touched.size());
    if (batch.by_range) {
        if (batch.done > m_run.batch_size) {
            batch.overflow = true; // rolled back by tx's destructor
            if (m_pushed_xid) {
                m_plan.own_xids.pop_back();
                m_pushed_xid = false;
            }
            return;
        }
        batch.selected = batch.done;
    } else if (batch.by_clock) {
        batch.selected = batch.done; // every due row of the range, judged by the DELETE itself
    } else if (batch.done < batch.selected && m_run.evidence != nullptr) {
        m_run.evidence->kept(); // a selected row changed, or its delete was cancelled
    }
    // The previous batch commits now that this one's statement has run.
    finish_open();
    open(std::move(tx), slot, batch, touched);
    if (!m_run.pipelined) {
        finish_open();
    }
}

// The batch's settings and WAL position; an anonymize without mark remembers its xid.
WalPosition BatchStream::begin(pqxx::work& tx) {
    const WalPosition wal = begin_batch(tx, m_plan, m_run.evidence);
    for (auto& u : m_unsettled) {
        if (!u.lsn) {
            u.lsn = wal.inserted; // its commit returned before this point
        }
    }
    if (m_rule.action == Action::anonymize && !m_plan.mark) {
        m_plan.own_xids.push_back(
            std::to_string(tx.exec("SELECT pg_current_xact_id()::text::bigint % 4294967296")[0][0]
                               .as<std::int64_t>()));
        m_pushed_xid = true;
    }
    return wal;
}

// The next clock range's rows in `rows_sql`, the keyset moved to its boundary (run_batch restores
// it if the attempt fails); false when the boundary is the keyset's own clock (ties).
bool BatchStream::clock_range(pqxx::work& tx, Params& m, Batch& batch, std::string& rows_sql) {
    Params b;
    const auto boundary = exec(tx, index_boundary_sql(m_plan, b, m_keyset, m_run.batch_size), b);
    std::optional<std::string> below;
    if (!boundary.empty()) {
        below = boundary[0][0].c_str();
        if (m_keyset.clock && *m_keyset.clock == *below) {
            return false;
        }
    }
    rows_sql = clock_range_sql(m_plan, m, m_keyset, below);
    batch.last = !below;
    if (below) {
        m_keyset = IndexKeyset{*below, "(0,0)"}; // every row of that clock is still to come
    }
    return true;
}

// The selection pass; false when the range holds no (more) due rows.
bool BatchStream::select_rows(pqxx::work& tx, std::int64_t range_end, Batch& batch,
                              pqxx::result& selected) {
    Params s;
    const auto sql =
        m_run.by_index
            ? select_index_batch_sql(m_plan, tx, s, m_keyset, m_run.batch_size, m_run.lock_first)
            : select_batch_sql(m_plan, tx, s, m_range_start, range_end, m_after_tid,
                               m_run.batch_size, m_run.lock_first);
    selected = exec(tx, sql, s);
    batch.selected = static_cast<std::int64_t>(selected.size());
    if (selected.empty()) {
        return false;
    }
    const auto last = selected[selected.size() - 1];
    batch.last_tid = last[0].c_str();
    if (m_run.by_index) { // restored by run_batch when this attempt fails
        m_keyset = IndexKeyset{std::string(last[last.size() - 1].c_str()), batch.last_tid};
    }
    return true;
}

// The statement of the batch's shape.
pqxx::result BatchStream::apply(pqxx::work& tx, Params& m, const std::string& rows_sql,
                                bool read_then_delete_batch, const pqxx::result& selected,
                                const std::string& tid_array) {
    if (read_then_delete_batch) {
        return read_then_delete(tx, m, rows_sql);
    }
    if (m_rule.action == Action::remove) {
        return exec(tx, keyed_delete_sql(m_plan, tx, m, rows_sql), m);
    }
    if (!m_plan.client_side) {
        return exec(tx, anonymize_update_sql(m_plan, tx, m, rows_sql), m);
    }
    const auto values = client_values(m_rule, m_run.ctx, selected);
    return exec(tx, client_anonymize_sql(m_plan, tx, m, tid_array, values), m);
}

// The keys the audit needs, then the same rows deleted, both in the batch's snapshot: two scans of
// the range cost the server less than `DELETE ... RETURNING`, which fetches every deleted row once
// more. A row changed after the snapshot (a login) makes the DELETE fail with 40001 and the batch
// is retried in a new snapshot, where it is judged again; so the DELETE removes exactly the rows
// the SELECT returned (checked). More rows than batch_size: nothing deleted (overflow).
pqxx::result BatchStream::read_then_delete(pqxx::work& tx, Params& m, const std::string& rows_sql) {
    const auto sql = read_then_delete_sql(m_plan, tx, m, rows_sql);
    auto touched = exec(tx, sql.read, m);
    if (static_cast<std::int64_t>(touched.size()) <= m_run.batch_size) {
        const auto deleted = exec(tx, sql.remove, m).affected_rows();
        if (deleted != touched.size()) {
            throw pqxx::sql_error("deleted " + std::to_string(deleted) + " rows of the " +
                                      std::to_string(touched.size()) + " read",
                                  "", "40001");
        }
    }
    return touched;
}

// The batch stays applied, uncommitted, while its intent is written on a journal thread.
void BatchStream::open(std::unique_ptr<pqxx::work> tx, int slot, const Batch& batch,
                       const pqxx::result& touched) {
    OpenBatch next;
    next.slot = slot;
    next.done = batch.done;
    next.counts = batch.selected > 0 || (batch.by_range && batch.done > 0);
    BatchJournal* const journal = m_run.journal;
    if (journal != nullptr && batch.done > 0 && m_run.lines_in_tx) {
        // Its lines and its commit on the journal thread, while the next batch's statement runs
        // on the other connection: tx is not touched here until finish_open waits for them.
        next.committed =
            std::async(std::launch::async,
                       [journal, t = tx.get(), b = make_intent(m_run, touched), done = batch.done] {
                           write_lines_and_commit(*journal, b, done, *t);
                       });
    } else if (journal != nullptr && batch.done > 0) {
        // A stream's journal calls come one at a time (finish_open waits for this task first);
        // streams share a thread-safe journal.
        next.intent = std::async(std::launch::async, [journal, b = make_intent(m_run, touched)] {
            return journal->intent(b);
        });
    }
    next.tx = std::move(tx);
    m_open = std::move(next);
}

// A stop request came while the batch ran, and it failed (k_cancel_after_stop after the request the
// statement in flight is cancelled, pg_connect.hpp): no retry, the run ends stopped, nothing of
// that batch applied.
bool BatchStream::stopped_in_flight(const std::string& state) {
    journal_now("error", {{"sqlstate", state}, {"processed", m_run.processed.load()}});
    m_out.status = RunResult::Status::stopped;
    m_out.message = stopped_message(m_run.processed.load(), "rows") +
                    "; the batch in flight was cancelled (SQLSTATE " + state +
                    "), nothing of it applied";
    return false;
}

bool BatchStream::retry_after(const std::exception& e, int attempt, bool& conflicted) {
    const auto failure = classify(e);
    const std::string& state = failure.sqlstate;
    conflicted = conflicted || state == "40001";
    const auto& pg = spec_of<PostgresRule>(m_rule);
    const auto processed = std::to_string(m_run.processed.load());
    if (failure.kind != ErrorClass::retry) {
        const std::string what = first_line(e.what());
        journal_now("error", {{"sqlstate", state}, {"processed", m_run.processed.load()}});
        failed("batch on " + pg.table + " failed" +
               (state.empty() ? "" : " (SQLSTATE " + state + ")") + ": " + what +
               "; stopped after " + processed + " rows");
        return false;
    }
    make_durable(); // nothing stays open while this batch waits
    if (attempt >= k_max_attempts) {
        failed("batch on " + pg.table + " timed out " + std::to_string(attempt) +
               " times (lock_timeout " + ms(pg.lock_timeout) + ", statement_timeout " +
               ms(pg.statement_timeout) + ", SQLSTATE " + state + "); stopped after " +
               std::to_string(m_run.processed.load()) + " rows, nothing of that batch applied");
        event("error",
              {{"sqlstate", state}, {"attempts", attempt}, {"processed", m_run.processed.load()}});
        return false;
    }
    std::this_thread::sleep_for(std::min(k_max_backoff, k_first_backoff * (1 << (attempt - 1))));
    return true;
}

// The next range (or the rest of this one, or this one again smaller), then the throttle.
void BatchStream::advance(const Batch& batch, std::int64_t range_end) {
    if (batch.overflow) {
        const auto smaller = span_after_overflow(m_span);
        m_span = smaller.span;
        m_force_select = m_force_select || smaller.force_select;
        return; // the same range again, smaller
    }
    if (batch.selected > 0) {
        m_first = false;
    }
    if (!batch.by_range && batch.selected >= m_run.batch_size) {
        m_after_tid = batch.last_tid; // more in this range
    } else {
        m_range_start = range_end;
        m_after_tid.clear();
        m_force_select = false;
        if (batch.by_range) {
            m_span = next_span(m_span, batch.done, m_run.batch_size, m_run.pages);
        }
    }
    if (m_range_start < m_run.pages) {
        throttle(batch);
    }
}

// sleep_between_batches after a batch that found rows.
void BatchStream::throttle(const Batch& batch) {
    const auto pause = spec_of<PostgresRule>(m_rule).sleep_between_batches;
    if (batch.selected > 0 && pause.count() > 0) {
        make_durable(); // no row locks held, no outcome left waiting while throttled
        std::this_thread::sleep_for(pause);
    }
}

// Commits the open batch once its intent is durable. A refused commit fails the rule.
void BatchStream::finish_open() {
    if (!m_open) {
        return;
    }
    OpenBatch o = std::move(*m_open);
    m_open.reset();
    std::optional<std::string> batch_id;
    if (o.intent.valid()) {
        batch_id = o.intent.get(); // not durable: o.tx rolls back as the error unwinds
    }
    if (o.committed.valid()) {
        o.committed.get(); // its lines and its commit, done on the journal thread
    } else {
        try {
            o.tx->commit();
        } catch (const pqxx::broken_connection&) {
            throw; // outcome unknown: crash recovery resolves the intent
        } catch (const pqxx::in_doubt_error&) {
            throw;
        } catch (const std::exception& e) {
            if (batch_id) {
                m_run.journal->outcome(*batch_id, false, 0);
            }
            throw CommitRefused(first_line(e.what()), classify(e).sqlstate);
        }
    }
    m_need_sync = m_plan.async_commit;
    if (o.counts) {
        ++m_out.batches;
    }
    m_out.processed += o.done;
    // The journal thread is idle here: earlier batches the server has flushed get their outcome
    // lines.
    settle(false);
    if (batch_id && m_plan.async_commit) {
        m_unsettled.push_back({*batch_id, o.done, std::nullopt});
    } else if (batch_id) {
        m_run.journal->outcome(*batch_id, true, o.done); // flushed by its own commit
    }
    m_run.progress(o.done);
}

// Outcome lines only for commits the server has flushed (batches commit asynchronously).
void BatchStream::settle(bool all) {
    while (!m_unsettled.empty() &&
           (all || (m_unsettled.front().lsn && *m_unsettled.front().lsn <= m_wal.flushed))) {
        m_run.journal->outcome(m_unsettled.front().batch_id, true, m_unsettled.front().done);
        m_unsettled.pop_front();
    }
}

// Waits for the server to flush every commit so far (a synchronous commit flushes the WAL up to
// its own commit record, which follows all of ours), then writes their outcomes.
void BatchStream::make_durable() {
    finish_open();
    if (!m_need_sync) {
        settle(true); // nothing committed asynchronously since the last flush
        return;
    }
    pqxx::work tx(*m_conns[0]);
    // A transaction that writes no WAL of its own commits without a flush, whatever
    // synchronous_commit says: a transactional logical message (no table, any wal_level) is the
    // smallest record that makes this commit flush.
    const auto row = tx.exec("SELECT set_config('synchronous_commit', 'on', true), "
                             "pg_logical_emit_message(true, 'retentiond', 'durable'), "
                             "pg_current_xact_id()::text")[0];
    if (m_run.evidence != nullptr) {
        m_run.evidence->add_xid(std::stoull(row[2].c_str()));
    }
    tx.commit();
    m_need_sync = false;
    settle(true);
}

// The journal thread is idle and earlier lines come first.
void BatchStream::journal_now(const std::string& type, nlohmann::json fields) {
    make_durable();
    event(type, std::move(fields));
}

void BatchStream::event(const std::string& type, nlohmann::json fields) {
    journal_event(m_run.journal, m_rule, type, std::move(fields));
}

void BatchStream::failed(std::string message) {
    m_out.status = RunResult::Status::failed;
    m_out.message = std::move(message);
}

} // namespace retentiond::pg
