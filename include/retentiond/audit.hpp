#pragma once

#include "retentiond/config.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace retentiond {

// One batch about to be applied. keys are raw record keys: they never reach the audit log, only
// their HMAC digests do.
struct BatchIntent {
    std::string rule;
    std::string datastore;
    std::string target; // table, file path relative to the root, or key pattern
    std::string action; // delete | anonymize | set_null | expire | notice
    TimePoint cutoff{};
    std::vector<std::string> keys; // canonical keys (see canonical_key)
};

// Where engines report batches: the audit log in production, a recording fake in unit tests.
class BatchJournal {
public:
    virtual ~BatchJournal() = default;
    // Durable before the batch commits. Returns a batch id to pass to outcome().
    virtual std::string intent(const BatchIntent& batch) = 0;
    // committed = the datastore change is durable; count = records actually touched.
    virtual void outcome(const std::string& batch_id, bool committed, std::int64_t count) = 0;
    // A refusal (limits, holds, clock skew) or an error, with the numbers; never a key or value.
    virtual void event(const std::string& type, const nlohmann::json& fields) = 0;
};

// HMAC-SHA256(audit_key, rule + "\n" + key), hex. `audit prove` recomputes it.
std::string record_digest(const Secret& audit_key, std::string_view rule, std::string_view key);

// The append-only, hash-chained JSON Lines log (policy-format.md, "The audit log").
class AuditLog : public BatchJournal {
public:
    // Opens for appending; continues the chain from the last line (or from the last line of the
    // rotated file `path.1` when `path` is new). Throws std::runtime_error when the log cannot
    // be written, so a run stops before touching any datastore.
    AuditLog(std::string path, Secret audit_key, std::string run_id);
    ~AuditLog() override;
    AuditLog(const AuditLog&) = delete;
    AuditLog& operator=(const AuditLog&) = delete;

    std::string intent(const BatchIntent& batch) override;
    void outcome(const std::string& batch_id, bool committed, std::int64_t count) override;
    void event(const std::string& type, const nlohmann::json& fields) override;

    void run_start(const Config& config, const std::string& mode);
    void run_end(const std::string& status, const nlohmann::json& summary);

    // Unresolved intents left by a crash (from the pending-keys file beside the log).
    struct Pending {
        std::string batch_id;
        BatchIntent batch;
    };
    std::vector<Pending> pending() const;
    void resolve(const Pending& p, bool committed, const std::string& how);

    const std::string& path() const { return m_path; }

private:
    void append(nlohmann::json line);
    std::string m_path;
    Secret m_key;
    std::string m_run_id;
    std::string m_prev;
    int m_fd = -1;
    std::uint64_t m_seq = 0;
};

struct VerifyResult {
    bool ok = true;
    std::uint64_t lines = 0;
    std::uint64_t runs = 0;
    std::uint64_t records = 0;
    std::uint64_t bad_line = 0; // 1-based, when !ok
    std::string reason;
};
VerifyResult verify_audit_log(const std::string& path);

struct ProofEntry {
    std::string time;
    std::string run_id;
    std::string action;
    std::string cutoff;
    std::string target;
};
// Every committed batch whose digests include the record's digest; streamed, constant memory.
std::vector<ProofEntry> prove(const std::string& path, const Secret& audit_key,
                              std::string_view rule, std::string_view key);

} // namespace retentiond
