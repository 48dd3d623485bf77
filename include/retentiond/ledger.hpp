#pragma once

// The erasure ledger: the `erasure_request` events of the audit log (docs/audit-log.md), read
// back. Every reader of the ledger is here (erase --status, audit prove --subject), and reads the
// chain through AuditLines (audit_store.hpp: the file log or the store). A request names its
// subject by digest only (subject.hpp): nothing here can tell who the person is.

#include "retentiond/audit_store.hpp"
#include "retentiond/config.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace retentiond {

// The ledger's event type.
inline constexpr std::string_view k_erasure_event = "erasure_request";

// A re-application of every request (`erase --reapply`, the daemon's): {reason, requests,
// reapplied, ok}; and a datastore's identity as the daemon last saw it (Kind::store_identity):
// {datastore, identity}. Catalog numbers and counts only.
inline constexpr std::string_view k_reapply_event = "erasure_reapply";
inline constexpr std::string_view k_store_identity_event = "store_identity";

// What one rule did for a request, as last recorded.
struct ErasureRuleOutcome {
    std::string rule;
    std::string status; // erased | deferred | none | failed | unavailable
    std::int64_t erased = 0;
    std::int64_t deferred = 0; // held records left for later
    std::string reason;        // failed / unavailable: why (never a value)
};

// One request, from its events: the first gives received and deadline, the last the status.
struct ErasureRequest {
    std::string id;      // the operator's request id (--request)
    std::string subject; // subject_digest of the normalized identifier
    std::string kind;    // the identifier's kind ("email")
    TimePoint received{};
    TimePoint deadline{};
    std::string status; // done | deferred | open (a rule failed or its store was down)
    std::string first_ts;
    std::string last_ts;
    std::string done_ts;        // when it was first recorded done ("" while open)
    std::int64_t erased = 0;    // records erased, over every event of the request
    std::int64_t reapplied = 0; // records erased again after a restore
    std::vector<ErasureRuleOutcome> rules;

    bool open() const { return status != "done"; }
    bool overdue(TimePoint now) const { return open() && now > deadline; }
    std::int64_t deferred() const;
};

// The line fields of a request's event (the writer's side: `event(k_erasure_event, ...)`).
nlohmann::json erasure_event_fields(const ErasureRequest& r);

// Every request of the chain, in the order first recorded; none when the chain was never written
// (AuditLines::written). Throws std::runtime_error when it exists and cannot be read.
std::vector<ErasureRequest> read_ledger(const AuditLines& lines);

// The ledger kept between reads of a chain that only grows (the daemon's erasure gauges, every
// few minutes): a refresh reads the lines added since the last one, from the end back to the line
// that chains to the last line it read (`prev`, across a rotation too), and the whole chain again
// only when that line is not found (a new or rewritten chain, another store). The first refresh
// reads it all, as read_ledger does.
class LedgerCache {
public:
    // follow = false: a single read (read_ledger), which keeps no anchor for a next one.
    explicit LedgerCache(bool follow = true) : m_follow(follow) {}
    const std::vector<ErasureRequest>& refresh(const AuditLines& lines);
    // The lines the last refresh read from the end (0 after a whole read), and the whole reads.
    std::size_t lines_read() const { return m_lines_read; }
    int whole_reads() const { return m_whole_reads; }

private:
    void add(std::string_view line);
    void reset();
    void read_whole(const AuditLines& lines);
    void anchor(const std::string& line);
    bool read_added(const AuditLines& lines, std::vector<std::string>& added) const;

    std::vector<ErasureRequest> m_requests;
    std::map<std::string, std::size_t> m_by_id;
    std::string m_name;   // the chain read (AuditLines::name)
    std::string m_sha256; // the anchor: the SHA-256 of the last complete line read
    std::size_t m_lines_read = 0;
    int m_whole_reads = 0;
    bool m_follow;
};

// What the daemon remembers from the chain across restarts (and ephemeral containers, the chain
// being in the audit store): the last identity recorded for each datastore and when every
// request was last re-applied successfully.
struct ErasureMemory {
    std::map<std::string, std::string> identities;
    std::optional<TimePoint> last_reapply;
};
ErasureMemory read_erasure_memory(const AuditLines& lines);

// The request still open for `subject`, if any (the latest).
std::optional<ErasureRequest> open_request_for(const std::vector<ErasureRequest>& ledger,
                                               const std::string& subject);

} // namespace retentiond
