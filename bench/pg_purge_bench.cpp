// Bench driver for bench/pg_purge.sh: runs the postgres engine's purge once and prints the time.
// usage: pg_purge_bench DSN TABLE delete|anonymize BATCH_SIZE [JOURNAL [DIR [SLEEP_MS [PARALLEL]]]]
//   env: BENCH_COMPOSITE_KEY=1 (key id, last_login), PARTITION_DIGESTS=keys
//   JOURNAL: audit (default: the real AuditLog in DIR, fsyncs included, as the CLI runs it),
//            digest (in memory: HMAC digest of every key, no file I/O), none (no journal).
// Prints on one line: processed, batches, seconds, status, then the phases: time until the first
// batch's intent (counting + first statement) and seconds spent inside the journal. The engine
// writes a batch's intent on a journal thread while the next batch's statement runs, so journal
// time overlaps the database's: it only adds to the total when it exceeds it.
#include "engines/postgres/postgres_kind.hpp"
#include "retentiond/audit.hpp"
#include "retentiond/timeutil.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

// Forwards to the real journal (or digests the keys itself) and times every call.
class TimedJournal final : public retentiond::BatchJournal {
public:
    TimedJournal(retentiond::BatchJournal* inner, retentiond::Secret key, Clock::time_point start)
        : m_inner(inner), m_key(std::move(key)), m_start(start) {}

    std::string intent(const retentiond::BatchIntent& batch) override {
        const auto t0 = Clock::now();
        {
            const std::lock_guard<std::mutex> lock(m_mutex);
            if (!m_first_intent) {
                m_first_intent = std::chrono::duration<double>(t0 - m_start).count();
            }
        }
        std::string id;
        if (m_inner != nullptr) {
            id = m_inner->intent(batch);
        } else {
            char sink = 0;
            for (const auto& k : batch.keys) {
                sink ^= retentiond::record_digest(m_key, batch.rule, k).front();
            }
            const std::lock_guard<std::mutex> lock(m_mutex);
            m_sink ^= sink;
            id = std::to_string(++m_batches);
        }
        const std::lock_guard<std::mutex> lock(m_mutex);
        m_spent += Clock::now() - t0;
        return id;
    }
    void outcome(const std::string& batch_id, bool committed, std::int64_t count) override {
        const auto t0 = Clock::now();
        if (m_inner != nullptr) {
            m_inner->outcome(batch_id, committed, count);
        }
        const std::lock_guard<std::mutex> lock(m_mutex);
        m_spent += Clock::now() - t0;
    }
    void event(const std::string& type, const nlohmann::json& fields) override {
        if (m_inner != nullptr) {
            m_inner->event(type, fields);
        }
    }
    // The inner journal's digester: a whole partition's keys are digested as they are read (that
    // time is the engine's, not counted in spent()).
    Digester digester(const std::string& rule) const override {
        return m_inner != nullptr ? m_inner->digester(rule) : Digester{};
    }
    // Bookkeeping under its own lock; the inner journal decides (AuditLog is thread-safe).
    bool thread_safe() const override { return m_inner == nullptr || m_inner->thread_safe(); }
    double spent() const { return std::chrono::duration<double>(m_spent).count(); }
    double first_intent() const { return m_first_intent.value_or(0.0); }

private:
    retentiond::BatchJournal* m_inner;
    retentiond::Secret m_key;
    Clock::time_point m_start;
    Clock::duration m_spent{};
    std::optional<double> m_first_intent;
    std::uint64_t m_batches = 0;
    char m_sink = 0;
    std::mutex m_mutex;
};

} // namespace

int main(int argc, char** argv) {
    using namespace retentiond;
    if (argc < 5 || argc > 9) {
        std::fprintf(stderr,
                     "usage: %s DSN TABLE delete|anonymize BATCH_SIZE [audit|digest|none [DIR "
                     "[SLEEP_MS [PARALLEL]]]]\n",
                     argv[0]);
        return 64;
    }
    const std::string journal_kind = argc > 5 ? argv[5] : "audit";
    const std::string dir = argc > 6 ? argv[6] : "/tmp";
    Datastore store;
    store.name = "bench";
    store.spec = spec_ptr(PostgresStore(Secret(argv[1])));
    Config config;
    const auto engine = make_postgres_engine(store, config);

    Rule rule;
    rule.name = "bench";
    rule.retain = parse_duration("12 months");
    rule.batch_size = std::atoi(argv[4]);
    rule.limits = Limits{std::nullopt, 1.0};
    PostgresRule pg;
    pg.table = argv[2];
    pg.key = {"id"};
    pg.clock = {"last_login"};
    // The partitions bench: a composite key (id, last_login), and per-key digests on request.
    if (const char* key = std::getenv("BENCH_COMPOSITE_KEY"); key != nullptr && *key == '1') {
        pg.key = {"id", "last_login"};
    }
    if (const char* digests = std::getenv("PARTITION_DIGESTS"); digests != nullptr) {
        pg.partition_digests = std::string(digests) == "keys";
    }
    if (argc > 7) { // the rule's sleep_between_batches
        pg.sleep_between_batches = std::chrono::milliseconds(std::atoi(argv[7]));
    }
    if (argc > 8) { // the rule's parallel (streams)
        pg.parallel = std::atoi(argv[8]);
    }
    rule.spec = spec_ptr(pg);
    if (std::string(argv[3]) == "anonymize") {
        rule.action = Action::anonymize;
        Strategy null_value;
        Strategy fixed;
        fixed.kind = Strategy::Kind::fixed;
        rule.anonymize = {{"email", null_value, {}}, {"first_name", fixed, {}}};
    }
    const Secret key(std::string(32, 'k'));
    std::unique_ptr<AuditLog> audit;
    if (journal_kind == "audit") {
        audit = std::make_unique<AuditLog>(dir + "/bench-audit.jsonl", key, new_run_id());
    }
    RunContext ctx;
    ctx.run_id = "bench";
    ctx.tz = find_zone("UTC");
    ctx.audit_key = &key;
    const auto start = Clock::now();
    TimedJournal journal(audit.get(), key, start);
    if (journal_kind != "none") {
        ctx.journal = &journal;
    }
    const auto result = engine->purge(rule, ctx);
    const std::chrono::duration<double> took = Clock::now() - start;
    std::printf("processed %lld batches %lld seconds %.3f status %d journal %s first_intent %.3f "
                "journal_s %.3f (overlapped) path %s verification %s %s\n",
                static_cast<long long>(result.processed), static_cast<long long>(result.batches),
                took.count(), static_cast<int>(result.status), journal_kind.c_str(),
                journal.first_intent(), journal.spent(),
                result.path.empty() ? "-" : result.path.c_str(),
                result.counters.count("verification.proven_without_count") != 0 ? "proven"
                : result.counters.count("verification.remaining") != 0          ? "counted"
                                                                                : "-",
                result.message.c_str());
    return result.status == RunResult::Status::ok ? 0 : 1;
}
