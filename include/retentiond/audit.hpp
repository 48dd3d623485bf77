#pragma once

#include "retentiond/audit_store.hpp"
#include "retentiond/config.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace retentiond {

// One batch about to be applied. keys are raw record keys: they never reach the audit log, only
// their HMAC digests do.
// A whole partition emptied at once (postgres, an extension of the audit log): it stands for its
// rows' keys in the intent line, which then carries no digest unless the rule asked for them.
struct PartitionBatch {
    std::string parent; // the partitioned table, as the rule names it
    std::string from;   // the bounds as the server prints them; "" = MINVALUE
    std::string to;
    std::optional<std::int64_t> from_us; // the bounds in microseconds since the epoch
    std::int64_t to_us = 0;
    int key_index = -1;  // the key column holding the partition's clock (-1: not in the key)
    int key_columns = 1; // the key's columns
    std::int64_t rows = 0;
    bool rows_estimated = false; // rows is the planner's estimate, not a count (partition_rows)
    std::string disposition;     // dropped | detached
};

struct BatchIntent {
    std::string rule;
    std::string datastore;
    std::string target; // table, file path relative to the root, or key pattern
    std::string action; // delete | anonymize | set_null | expire | notice
    TimePoint cutoff{};
    std::vector<std::string> keys; // canonical keys (see canonical_key)
    // The digests array's body computed while the keys were read (BatchJournal::digester), in
    // place of `keys`: a whole partition's keys are digested as they arrive, none is held.
    std::optional<std::string> digests;
    std::optional<PartitionBatch> partition;
    // A batch of an erasure request: the request's id (the subject's digest, subject.hpp),
    // written as the intent line's "request"; empty for a retention run.
    std::string request;
};

// Where engines report batches: the audit log in production, a recording fake in unit tests.
class BatchJournal {
public:
    virtual ~BatchJournal() = default;
    // Durable before the batch commits. Returns a batch id to pass to outcome().
    virtual std::string intent(const BatchIntent& batch) = 0;
    // committed = the datastore change is durable; count = records actually touched.
    virtual void outcome(const std::string& batch_id, bool committed, std::int64_t count) = 0;
    // Committed, but these keys of the intent were left alone (re-checked and kept, e.g. a Redis
    // key touched since it was read): `audit prove` must not claim them.
    // The default (test journals) records a plain committed outcome.
    virtual void outcome_except(const std::string& batch_id, std::int64_t count,
                                const std::vector<std::string>& unapplied_keys) {
        (void)unapplied_keys;
        outcome(batch_id, true, count);
    }
    // A refusal (limits, holds, clock skew) or an error, with the numbers; never a key or value.
    virtual void event(const std::string& type, const nlohmann::json& fields) = 0;
    // Appends the digest of one key of `rule` to a digests array's body (BatchIntent::digests),
    // for an engine that digests keys as it reads them. Empty (the default, test journals): this
    // journal digests BatchIntent::keys itself, the engine passes them.
    using Digester = std::function<void(std::string_view key, std::string& digests)>;
    virtual Digester digester(const std::string& rule) const {
        (void)rule;
        return {};
    }
    // Whether several threads may call it at once (parallel batch streams); an engine serializes
    // the calls to a journal that is not.
    virtual bool thread_safe() const { return false; }

    // A batch's intent and outcome lines written in the batch's own transaction, when the journal
    // lives in the datastore's database (in_transaction): a crash leaves both lines and the
    // change, or neither, and the raw keys are never kept anywhere. Prepared first (the digests:
    // off the batch's thread if the engine likes), then written on the open transaction just
    // before the engine commits it.
    class TxLines {
    public:
        virtual ~TxLines() = default;
        // Writes both lines on tx (the chain's lock is then held until tx ends); returns the
        // batch id. The engine commits tx right after, without any other journal call between.
        virtual std::string write(DatastoreTx& tx) = 0;
    };
    // Whether batches of `datastore` go through lines_for() instead of intent() / outcome().
    virtual bool in_transaction(const std::string& datastore) const {
        (void)datastore;
        return false;
    }
    // The lines of a batch that committed `count` records (only when in_transaction()).
    virtual std::unique_ptr<TxLines> lines_for(const BatchIntent& batch, std::int64_t count) {
        (void)batch;
        (void)count;
        throw std::logic_error("this journal writes no lines in a datastore's transaction");
    }
};

// HMAC-SHA256(audit_key, rule + "\n" + key), hex. `audit prove` recomputes it.
std::string record_digest(const Secret& audit_key, std::string_view rule, std::string_view key);

// "20260814T112205Z-1a2b3c4d": UTC time of the run's start plus 4 random bytes. Batch ids are
// run id + "-" + counter, so they are unique across runs and safe as file names.
std::string new_run_id();

// The append-only, hash-chained JSON Lines log (policy-format.md, "The audit log"; the exact line
// format is in docs/audit-log.md), kept in an AuditStore (audit_store.hpp): a file, or a
// PostgreSQL table shared by several hosts.
class AuditLog : public BatchJournal {
public:
    // Opens the file log at `path` for appending; continues the chain from the last line (or from
    // the last line of the rotated file `path.1` when `path` is new). Throws std::runtime_error
    // when the log cannot be written, so a run stops before touching any datastore.
    AuditLog(std::string path, Secret audit_key, std::string run_id);
    // The same on any store (a torn tail the store dropped is recorded first).
    AuditLog(std::unique_ptr<AuditStore> store, Secret audit_key, std::string run_id,
             const std::string& dropped = {});
    ~AuditLog() override;
    AuditLog(const AuditLog&) = delete;
    AuditLog& operator=(const AuditLog&) = delete;

    std::string intent(const BatchIntent& batch) override;
    void outcome(const std::string& batch_id, bool committed, std::int64_t count) override;
    void outcome_except(const std::string& batch_id, std::int64_t count,
                        const std::vector<std::string>& unapplied_keys) override;
    void event(const std::string& type, const nlohmann::json& fields) override;
    Digester digester(const std::string& rule) const override;
    bool thread_safe() const override { return true; } // every line is chained under m_mutex
    // True for the datastore whose database holds the store (AuditStore::shares_database).
    bool in_transaction(const std::string& datastore) const override;
    std::unique_ptr<TxLines> lines_for(const BatchIntent& batch, std::int64_t count) override;

    // Outcome lines are written without their own fsync (the next line that is fsynced covers
    // them); sync() makes them durable now. Called by the destructor, best effort.
    void sync();

    void run_start(const Config& config, const std::string& mode);
    void run_end(const std::string& status, const nlohmann::json& summary);

    // Unresolved intents left by a crash (from the pending keys the store keeps).
    struct Pending {
        std::string batch_id;
        BatchIntent batch;
    };
    std::vector<Pending> pending() const;
    // This process's own batches of `datastore` whose intent was written and no outcome followed:
    // left by a run that lost its datastore mid-batch (pending() leaves them out: they carry this
    // log's run id). Call only when none of them can still be in flight: the daemon's worker of
    // that datastore, between two runs.
    std::vector<Pending> abandoned(const std::string& datastore);
    void resolve(const Pending& p, bool committed, const std::string& how);

    // The store's name: the file's path, or the table and its datastore.
    const std::string& path() const { return m_name; }
    const std::string& run_id() const { return m_run_id; }
    // SHA-256 of the last line written (or found on open): worth mirroring to the journal at run
    // end, because a hash chain cannot by itself reveal that trailing lines were cut off.
    std::string last_hash() const;
    // The seq of the last line (0 when the file is empty).
    std::uint64_t last_seq() const;
    // A file log's "<path>.pending": one file of raw keys per batch in flight (0700 directory,
    // 0600 files).
    std::string pending_dir() const { return m_name + ".pending"; }
    AuditStore& store() { return *m_store; }

private:
    // digests: pre-rendered array body spliced into the line's empty "digests" array.
    void append(nlohmann::json line, std::string_view digests = {}, bool sync = true);
    // The store's renderer of `line` on its head (seq, prev, ts), splicing in `digests`.
    AuditStore::Render render_on_head(nlohmann::json& line, std::string_view digests) const;
    // An outcome line: with its batch's keys dropped in the same commit when the store can,
    // else lazily (settled once the line is durable).
    void append_outcome(nlohmann::json line, const std::string& batch_id);
    void settle_lazy_outcomes();
    std::unique_ptr<AuditStore> m_store;
    std::string m_name;
    Secret m_key;
    std::string m_run_id;
    std::uint64_t m_batches = 0;
    struct InFlight {
        std::string rule; // for the digests of outcome_except
        std::string datastore;
    };
    std::map<std::string, InFlight> m_in_flight; // this process's batches without an outcome
    std::vector<std::string> m_lazy_outcomes;    // outcome written, not yet durable: keep pending
    // Appends come from several threads in the daemon (one worker per datastore): every line is
    // chained under this lock, so the chain stays linear.
    mutable std::mutex m_mutex;
    mutable std::mutex m_pending_mutex; // one pending() scan at a time
};

struct VerifyResult {
    bool ok = true;
    std::uint64_t lines = 0;
    std::uint64_t runs = 0;
    std::uint64_t records = 0;
    std::uint64_t bad_line = 0; // 1-based, when !ok
    std::string reason;
    // When ok: remarks that do not make the log invalid, e.g. the first line chains to a rotated
    // file that is not present to check against.
    std::string note;
};
// Verifies `path` (and, when its first line chains to a previous file, the last line of
// `path.1`). Streams the file: constant memory. Throws std::runtime_error when the file cannot be
// read (an I/O problem is not evidence of tampering).
VerifyResult verify_audit_log(const std::string& path);
// An anchor taken outside the store (the `audit head:` line a run logs): line `seq` must hash to
// `sha256`.
struct AuditHeadCheck {
    std::uint64_t seq = 0;
    std::string sha256;
};
// Verifies any lines (a file, a store's table, an export): every line's framing, fields and seq,
// the chain, and each head given (its line must be present and hash to it). The first line may
// chain to a line that is not present (a rotated file, an export's slice, an imported log): that
// is a note, with the seq it starts at.
VerifyResult verify_audit_lines(const AuditLines& lines,
                                const std::vector<AuditHeadCheck>& heads = {});

// Writes `lines` to the JSON Lines file `output` (a temp file fsynced, then renamed): every line,
// or the contiguous run from the first line whose ts is at or after `since` to the last before a
// line whose ts is after `until`. `audit verify --log` accepts it; a slice's first line chains to
// a line that is not in it (a note). Returns the lines written.
std::uint64_t export_audit_lines(const AuditLines& lines, const std::string& output,
                                 std::optional<TimePoint> since, std::optional<TimePoint> until);

// One audit line as JSON, its "digests" array read as empty when it is in its fixed layout: for
// readers of the other fields (reports, the erasure ledger). An intent of a whole partition with
// `partition_digests: keys` holds hundreds of thousands of digests, which a full parse would turn
// into as many strings for nothing. Discarded (is_discarded()) when the line is not JSON.
nlohmann::json parse_audit_line(std::string_view line);

struct ProofEntry {
    std::string time;
    std::string run_id;
    std::string action;
    std::string cutoff;
    std::string target;
    std::string batch;        // batch id
    std::string committed_at; // ts of the outcome line
    std::string recovered;    // non-empty when the outcome was settled by crash recovery: how
};
// Every committed batch whose digests include the record's digest; streamed, constant memory.
// Reads the rotated files path.N ... path.1 that exist (uncompressed), then path. time is the
// intent's ts (the commit happened between it and committed_at).
std::vector<ProofEntry> prove(const std::string& path, const Secret& audit_key,
                              std::string_view rule, std::string_view key);
std::vector<ProofEntry> prove(const AuditLines& lines, const Secret& audit_key,
                              std::string_view rule, std::string_view key);

// When each rule last succeeded: the `ts` of its newest `rule_end` line with `ok: true`, read
// backwards from the end of `path`, then of `path.1`; stops as soon as every rule is found, so a
// large log costs only its tail unless a rule never succeeded. Rules not found are absent.
std::map<std::string, TimePoint> last_successes(const std::string& path,
                                                const std::set<std::string>& rules);
std::map<std::string, TimePoint> last_successes(const AuditLines& lines,
                                                const std::set<std::string>& rules);

} // namespace retentiond
