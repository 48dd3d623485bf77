// Running a purge's batch streams and merging their results. Parallel streams (`parallel: N`)
// only for deletes without dependents or client-side values: an anonymized row may move to a page
// another stream reads, and dependents could deadlock on each other's locks. Each stream claims
// the next pages from one shared cursor, so streams share the work wherever the due rows lie.
#include "postgres_engine.hpp"

#include "pg_audit_tx.hpp"
#include "pg_batch_stream.hpp"
#include "pg_span.hpp"

#include "retentiond/audit.hpp"
#include "retentiond/engine_common.hpp"

#include <mutex>
#include <thread>

namespace retentiond::pg {
namespace {

// Serializes the calls to a journal that is not thread-safe, for parallel streams.
class LockedJournal final : public BatchJournal {
public:
    explicit LockedJournal(BatchJournal* inner) : m_inner(inner) {}
    std::string intent(const BatchIntent& batch) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        return m_inner->intent(batch);
    }
    void outcome(const std::string& batch_id, bool committed, std::int64_t count) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        m_inner->outcome(batch_id, committed, count);
    }
    void outcome_except(const std::string& batch_id, std::int64_t count,
                        const std::vector<std::string>& unapplied_keys) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        m_inner->outcome_except(batch_id, count, unapplied_keys);
    }
    void event(const std::string& type, const nlohmann::json& fields) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        m_inner->event(type, fields);
    }
    bool in_transaction(const std::string& datastore) const override {
        return m_inner->in_transaction(datastore);
    }
    // Its lines are written on the batch's transaction, outside this lock: write() takes the
    // chain's lock in the database, which a batch committing on another stream may hold.
    std::unique_ptr<TxLines> lines_for(const BatchIntent& batch, std::int64_t count) override {
        const std::lock_guard<std::mutex> lock(m_mutex);
        return m_inner->lines_for(batch, count);
    }

private:
    BatchJournal* m_inner;
    std::mutex m_mutex;
};

// How many streams the rule runs.
int stream_count(const StreamRun& run) {
    const bool parallel_ok = run.rule.action == Action::remove && run.pipelined &&
                             !run.plan.client_side && !run.by_index;
    return parallel_ok ? std::max(1, spec_of<PostgresRule>(run.rule).parallel) : 1;
}

// One thread per stream; the first stream keeps the run's connection. A failing stream makes the
// others finish their batch and stop; the first exception (in stream order) is rethrown.
void run_parallel(StreamRun& run, pg::Connection conn, std::vector<RunResult>& parts) {
    std::vector<std::exception_ptr> errors(parts.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        threads.emplace_back([&, i, own = i == 0 ? std::move(conn) : nullptr]() mutable {
            try {
                if (!own) {
                    own = run.connect();
                }
                BatchStream(run, std::move(own), parts[i]).run();
            } catch (...) {
                errors[i] = std::current_exception();
            }
            if (errors[i] || parts[i].status == RunResult::Status::failed) {
                run.abort = true;
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    for (const auto& e : errors) {
        if (e) {
            std::rethrow_exception(e);
        }
    }
}

// Sums the streams' figures into `result`; the first failed stream, else the first stopped one,
// gives the status.
void merge(const std::vector<RunResult>& parts, RunResult& result) {
    const RunResult* failed = nullptr;
    const RunResult* stopped = nullptr;
    for (const auto& part : parts) {
        result.processed += part.processed;
        result.batches += part.batches;
        for (const auto& [name, n] : part.counters) {
            result.counters[name] += n;
        }
        if (part.status == RunResult::Status::failed && failed == nullptr) {
            failed = &part;
        } else if (part.status == RunResult::Status::stopped && stopped == nullptr) {
            stopped = &part;
        }
    }
    if (failed != nullptr) {
        result.status = failed->status;
        result.message = failed->message;
    } else if (stopped != nullptr) {
        result.status = stopped->status;
        // The streams' total, and what the stream said after it ("; the batch in flight ...").
        const auto detail = stopped->message.find(';');
        result.message = stopped_message(result.processed, "rows") +
                         (detail == std::string::npos ? "" : stopped->message.substr(detail));
    }
}

} // namespace

void PostgresEngine::run_streams(PreparedRun& prepared, RunContext& ctx, pg::Connection conn,
                                 RunResult& result) const {
    StreamRun run(prepared.plan, ctx);
    run.datastore = m_name;
    run.cutoff = result.cutoff;
    run.pages = prepared.pages;
    run.due = result.due;
    run.by_index = prepared.by_index;
    run.evidence = prepared.evidence.get();
    run.batch_size = std::max(1, run.rule.batch_size);
    run.initial_span = initial_span(run.batch_size, run.pages, run.due);
    run.lock_first = !prepared.plan.dependents.empty() || prepared.plan.client_side;
    // Not with dependents: a referencing row may point at the parents of two batches, and the
    // second batch would wait on the first's row locks.
    run.pipelined = prepared.plan.dependents.empty();
    run.connect = [this] { return connect(); };
    const int streams = stream_count(run);
    LockedJournal locked_journal(ctx.journal);
    run.journal = streams > 1 && ctx.journal != nullptr && !ctx.journal->thread_safe()
                      ? &locked_journal
                      : ctx.journal;
    run.lines_in_tx = lines_in_transaction(run.journal, m_name);

    std::vector<RunResult> parts(static_cast<std::size_t>(streams));
    if (streams == 1) {
        BatchStream(run, std::move(conn), parts[0]).run();
    } else {
        run_parallel(run, std::move(conn), parts);
    }
    merge(parts, result);
}

} // namespace retentiond::pg
