#pragma once
// A batch stream: batches over the page ranges it claims from the run's shared cursor, each batch
// applied by one statement shape (pg_statements.hpp), committed asynchronously while the next one
// runs (pipelined), its outcome journaled once the server has flushed the commit; failed batches
// are classified (pg_errors.hpp) and retried; the span follows the density of due rows
// (pg_span.hpp). Internal to the postgres engine.

#include "pg_connect.hpp"
#include "pg_plan.hpp"
#include "pg_sql.hpp"
#include "pg_statements.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/engine.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace retentiond::pg {

// What the streams of one run share: the plan, the page cursor, the totals.
struct StreamRun {
    StreamRun(Plan& p, RunContext& c) : plan(p), rule(*p.rule), ctx(c) {}

    Plan& plan;
    const Rule& rule;
    RunContext& ctx;
    BatchJournal* journal = nullptr; // thread-safe when several streams share it
    // The audit store is this datastore's database: each batch's intent and outcome lines are
    // written on its own transaction (pg_audit_tx.hpp), nothing goes through intent()/outcome().
    bool lines_in_tx = false;
    std::string datastore;
    TimePoint cutoff{};
    std::int64_t pages = 0;
    std::int64_t due = 0;
    // A keyset walk of the clock's index instead of the page walk (pg_paths.cpp).
    bool by_index = false;
    RunEvidence* evidence = nullptr; // what the run's batches saw, for its verification
    std::int64_t batch_size = 1;
    std::int64_t initial_span = 1;
    // A selection pass locks the rows first (dependents, client-side values).
    bool lock_first = false;
    // Batch i commits after batch i+1's statement ran (not with dependents).
    bool pipelined = true;
    std::function<pg::Connection()> connect;

    std::atomic<std::int64_t> processed{0}; // by every stream
    std::atomic<bool> abort{false};         // a sibling stream failed

    // Claims the next `span` pages: [first, end), first >= pages when none are left.
    std::pair<std::int64_t, std::int64_t> claim(std::int64_t span);
    // Adds a committed batch to the totals and reports progress, in order.
    void progress(std::int64_t done);

private:
    std::mutex m_mutex; // m_next_page, ctx.on_progress
    std::int64_t m_next_page = 0;
};

// A batch's transaction, applied, not yet committed: it waits on its connection for the intent.
struct OpenBatch {
    std::unique_ptr<pqxx::work> tx;
    std::future<std::string> intent; // the batch id, once the intent is durable
    // Or, with lines_in_tx, its two lines written on tx and tx committed, on the journal thread
    // (declared after tx: destroyed, waited for, before it).
    std::future<void> committed;
    int slot = 0;
    std::int64_t done = 0;
    bool counts = false; // selected rows: a batch for the summary
};

// Committed asynchronously: its outcome line waits until the server has flushed the commit.
struct UnsettledBatch {
    std::string batch_id;
    std::int64_t done = 0;
    std::optional<std::uint64_t> lsn; // WAL position past the commit record, once known
};

// Where the server's WAL stands: inserted (written into the buffers) and flushed (durable).
struct WalPosition {
    std::uint64_t inserted = 0;
    std::uint64_t flushed = 0;
};
// hmac / email_domain values computed here from the selected rows (columns 1.., after the ctid,
// as client_columns selects them): one vector per client-side field, one value per row. Throws
// PlanError without daemon.audit_key.
std::vector<std::vector<std::optional<std::string>>>
client_values(const Rule& rule, const RunContext& ctx, const pqxx::result& selected);

// "16/B374D848": high and low 32 bits in hex.
std::uint64_t parse_lsn(std::string_view text);

// One batch's fate.
struct Batch {
    bool by_range = false; // one statement over a page range, no selection pass
    // The index path's rows of a clock range [keyset, boundary) read from the index alone: one
    // DELETE, no selection pass; `last` when the range reaches the end of the due rows.
    bool by_clock = false;
    bool last = false;
    bool overflow = false; // that range held more than batch_size due rows: rolled back
    std::int64_t selected = 0;
    std::string last_tid;
    std::int64_t done = 0;
};

class BatchStream {
public:
    // `out` gets processed, batches, counters, and status and message when the stream stops or
    // fails; what the stream cannot handle (connection lost, commit outcome unknown, audit write
    // failure) is thrown.
    BatchStream(StreamRun& run, pg::Connection conn, RunResult& out);
    void run();

private:
    bool run_pages();
    bool run_index();
    bool stop_now();
    // The batch over [m_range_start, range_end) with its attempts; false when the stream failed.
    bool run_batch(std::int64_t range_end, Batch& batch);
    void attempt(int slot, std::int64_t range_end, bool conflicted, Batch& batch);
    // The rows of the next clock range; false when ties at the keyset's clock leave no range.
    bool clock_range(pqxx::work& tx, Params& m, Batch& batch, std::string& rows_sql);
    WalPosition begin(pqxx::work& tx);
    bool select_rows(pqxx::work& tx, std::int64_t range_end, Batch& batch, pqxx::result& selected);
    pqxx::result apply(pqxx::work& tx, pg_sql::Params& m, const std::string& rows_sql,
                       bool read_then_delete, const pqxx::result& selected,
                       const std::string& tid_array);
    pqxx::result read_then_delete(pqxx::work& tx, pg_sql::Params& m, const std::string& rows_sql);
    void open(std::unique_ptr<pqxx::work> tx, int slot, const Batch& batch,
              const pqxx::result& touched);
    // After a failed attempt: true to retry, false when the stream failed.
    bool stopped_in_flight(const std::string& sqlstate);
    bool retry_after(const std::exception& e, int attempt, bool& conflicted);
    void advance(const Batch& batch, std::int64_t range_end);
    void throttle(const Batch& batch);

    void finish_open();
    void settle(bool all);
    void make_durable();
    void journal_now(const std::string& type, nlohmann::json fields);
    void event(const std::string& type, nlohmann::json fields);
    void failed(std::string message);

    StreamRun& m_run;
    Plan& m_plan;
    const Rule& m_rule;
    RunResult& m_out;
    // Declared before m_open: an open transaction goes before its connection.
    std::array<pg::Connection, 2> m_conns;
    std::optional<OpenBatch> m_open;
    std::deque<UnsettledBatch> m_unsettled;
    WalPosition m_wal;
    bool m_need_sync = false; // commits the server may not have flushed yet
    bool m_pushed_xid = false;

    std::int64_t m_span = 1;
    std::int64_t m_range_start = 0;
    std::int64_t m_claim_end = 0; // this stream's pages: [m_range_start, m_claim_end)
    std::string m_after_tid;      // keyset within the current range
    IndexKeyset m_keyset;         // where the keyset walk of the clock's index stands
    bool m_force_select = false;  // a single page holds more than batch_size due rows
    bool m_first = true;
    bool m_clock_ranges = false; // the index path deletes clock ranges (see Batch::by_clock)
};

} // namespace retentiond::pg
