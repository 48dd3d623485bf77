#pragma once

// The batch sender of a redis purge: collects due keys and keys to clamp into batches, journals
// each batch's intent, sends its script once the intent is durable and settles its outcome.
// Private to the redis engine.

#include "redis_connection.hpp"
#include "redis_journal_worker.hpp"
#include "redis_reads.hpp"

#include <cstdint>
#include <future>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace retentiond::redis_detail {

// A batch of keys waiting for one script call.
struct Batch {
    std::vector<std::string> keys;
    std::string flags;               // delete, hash_field mode: 'n', '=' or '-' (k_delete_script)
    std::vector<std::string> expect; // the clock values of the '=' keys
    std::unordered_set<std::string> seen; // SCAN may return a key twice

    bool add(const std::string& key) { return seen.insert(key).second; }
    void clear() {
        keys.clear();
        flags.clear();
        expect.clear();
        seen.clear();
    }
};

// At most one batch is in flight: sent after its intent, settled (outcome journaled) before the
// next batch's intent, so on_progress and a stop request still fall between batches. Every
// journal call goes through one JournalWorker, so the scan goes on during the fsyncs.
class BatchSender {
public:
    // Loads the two scripts (SCRIPT LOAD) and starts the journal's worker.
    BatchSender(Connection& c, const Rule& rule, RunContext& ctx, const PurgeSetup& setup,
                RunResult& res);

    // A due key: its delete flag ('i' in idle mode; 'n', '=' or '-', see k_delete_script) and,
    // for '=', the clock text judged due. A full batch is queued.
    void add_due(std::string_view key, char flag, std::string_view expect);
    // A key whose TTL is to be clamped to max_ttl.
    void add_clamp(std::string_view key);
    // Between pages: sends the batch in flight if its intent is already durable.
    void poll() { launch(false); }
    // Whether a stop was requested (remembered once seen).
    bool stop_now();
    bool stopped() const { return m_stopped; }
    // Queues the partial batches, settles the last one (also after a stop) and waits for the
    // journal.
    void finish();

    std::int64_t found_due() const { return m_found_due; }
    std::int64_t held() const { return m_held; }
    std::int64_t skipped() const { return m_skipped; }
    std::int64_t expired() const { return m_expired; }

private:
    struct InFlight {
        Batch batch;
        std::string action;
        Script* script = nullptr;
        std::vector<std::string> head;   // ARGV before the per-key values
        std::future<std::string> intent; // the intent's batch id, once durable
        std::string id;
        bool sent = false;
        std::uint64_t seq = 0;
    };
    void send(InFlight& f, bool by_sha);
    void launch(bool wait);
    void settle();
    void record(const InFlight& f, std::string_view letters);
    void apply(Batch& b, const std::string& action, Script& script, std::vector<std::string> head);
    void flush_delete();
    void flush_expire();

    Connection& m_c;
    const Rule& m_rule;
    RunContext& m_ctx;
    RunResult& m_res;
    bool m_idle;
    TimePoint m_cutoff;
    std::string m_hold_field;
    std::string m_hold_value;
    std::string m_min_idle_text;
    std::string m_cutoff_s_text;
    std::string m_max_ttl_text;
    std::size_t m_batch_size;
    std::int64_t m_found_due = 0;
    std::int64_t m_held = 0;
    std::int64_t m_skipped = 0;
    std::int64_t m_expired = 0;
    bool m_stopped = false;
    Batch m_to_delete;
    Batch m_to_expire;
    std::vector<std::string_view> m_args;
    Script m_delete_script;
    Script m_expire_script;
    JournalWorker m_journal;
    std::optional<InFlight> m_in_flight; // last: settled or dropped before the journal's worker
};

} // namespace retentiond::redis_detail
