#pragma once

// Where the audit chain's lines live. The chain itself (line format, `seq`, `prev` = SHA-256 of
// the previous line's bytes, digests) is AuditLog's and the readers' (audit.hpp); a store only
// keeps lines in order, appends one chained on its head, and holds the raw keys of the batches
// in flight. Two stores: the file (audit_file_store.cpp, the default) and a PostgreSQL table
// (audit_pg_store.cpp, `daemon.audit_store`).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace retentiond {

// The lines of a chain, oldest first or newest first, whatever holds them. Every reader (verify,
// prove, last successes, the report, crash recovery, export) reads through this.
class AuditLines {
public:
    // A line without its "\n"; terminated = false for a last line cut short (a torn write).
    // Return false to stop.
    using Visit = std::function<bool(std::string_view line, bool terminated)>;
    virtual ~AuditLines() = default;
    // What the lines are, for messages: the file's path, or the table and its datastore.
    virtual std::string name() const = 0;
    // Every line, oldest first (a file log: its rotated files path.N ... path.1, then path).
    virtual void forward(const Visit& visit) const = 0;
    // Every complete line, newest first.
    virtual void backward(const std::function<bool(const std::string&)>& visit) const = 0;
    // The line the first line chains to when it lives somewhere verify can look (a file log's
    // rotated predecessor): its name, and the line (nullopt when that place holds none).
    struct Link {
        std::string name;
        std::optional<std::string> line;
    };
    virtual std::optional<Link> predecessor() const { return std::nullopt; }
    // Whether the chain was ever written (a file log: the file or a rotated one is there). A
    // missing chain means no run yet: the ledger is then empty, while the readers that need lines
    // (verify, prove --key) still say they cannot open it.
    virtual bool written() const { return true; }
};

// The head of a chain: the last line's seq and SHA-256 (seq 0 and the zero hash when empty).
struct AuditHead {
    std::uint64_t seq = 0;
    std::string sha256;
};

// A transaction of a datastore's own connection, lent to the audit store so that a batch's lines
// commit with the batch (a postgres rule on the audit store's own database, docs/audit-log.md
// "Atomic with the deletion"). The datastore's engine implements it on its open transaction; the
// store writes its statements on it and the engine commits. Text parameters ($1, $2, ...); returns
// each row's first column (nullopt for NULL). Throws what the engine's client throws.
class DatastoreTx {
public:
    virtual ~DatastoreTx() = default;
    virtual std::vector<std::optional<std::string>>
    query(const std::string& sql, const std::vector<std::string>& params) = 0;
};

// A writable store, used by one AuditLog: append, sync and head under its lock (never by two
// threads at once); the pending keys' calls from any thread, beside an append (one batch's keys
// are written apart from its line, so parallel streams do not wait on each other's keys).
class AuditStore {
public:
    // The line to append, rendered on the head the store holds when it appends (its seq is
    // head.seq + 1 and its prev head.sha256), without "\n".
    using Render = std::function<std::string(const AuditHead& head)>;
    virtual ~AuditStore() = default;
    virtual std::string name() const = 0;
    // Appends one line chained on the head and returns the new head. durable = false lets the
    // store wait for a later durable line (or sync()); `settled` says whether the line is durable
    // on return. Throws AuditWriteError when the line could not be written.
    virtual AuditHead append(const Render& render, bool durable, bool& settled) = 0;
    // Makes every line appended so far durable.
    virtual void sync() = 0;
    // The head as last seen by this process.
    virtual AuditHead head() const = 0;
    // The lines of this store (a reader of its own, safe beside appends from another thread).
    virtual std::unique_ptr<AuditLines> lines() const = 0;

    // The raw keys of a batch in flight, kept (durable) before its intent line and removed once
    // its outcome is durable: crash recovery needs them to ask the datastore. `text` is JSON.
    virtual void put_pending(const std::string& batch_id, const std::string& text) = 0;
    // Best effort: a leftover whose outcome is in the chain is removed by the next recovery.
    virtual void remove_pending(const std::string& batch_id) = 0;
    virtual std::optional<std::string> read_pending(const std::string& batch_id) const = 0;
    // Every batch in flight but those whose id starts with `skip_prefix`: (id, where, text);
    // `where` names it in messages (a file, a row). Damaged leftovers of a crash that no intent
    // can follow (a file log's *.tmp) are removed.
    struct PendingEntry {
        std::string batch_id;
        std::string where;
        std::string text;
    };
    virtual std::vector<PendingEntry> list_pending(const std::string& skip_prefix) = 0;

    // Whether the store keeps a batch's keys in the same transaction as its intent line and drops
    // them in the same transaction as its outcome line (PostgreSQL): AuditLog then calls the two
    // below, one commit each, instead of put_pending / append / remove_pending.
    virtual bool keys_with_lines() const { return false; }
    virtual AuditHead append_with_keys(const Render& render, const std::string& batch_id,
                                       const std::string& text) {
        put_pending(batch_id, text);
        bool settled = false;
        return append(render, true, settled);
    }
    virtual AuditHead append_settling(const Render& render, const std::string& batch_id) {
        bool settled = false;
        const AuditHead head = append(render, true, settled);
        remove_pending(batch_id);
        return head;
    }

    // Whether the store lives in the database of the datastore named `datastore` (the PostgreSQL
    // store, for the datastore `daemon.audit_store` names): its batches' lines can then be written
    // on the batch's own transaction (append_on).
    virtual bool shares_database(const std::string& datastore) const {
        (void)datastore;
        return false;
    }
    // Appends the lines `renders` (each rendered on the head the one before it makes) on `tx`: the
    // chain's lock is taken on tx, so it is held until the caller commits or rolls back, and the
    // lines are in the chain iff tx commits. The head this store caches is left alone (tx may
    // still roll back). Throws what tx throws; std::logic_error on a store that cannot.
    virtual AuditHead append_on(DatastoreTx& tx, const std::vector<Render>& renders) {
        (void)tx;
        (void)renders;
        throw std::logic_error("audit store " + name() +
                               " cannot write on a datastore's transaction");
    }
};

// The file log at `path` (docs/audit-log.md): opened for appending, locked against a second
// writer, a torn last line repaired (the returned string is the dropped bytes, for the
// `torn_tail_repaired` line the caller appends). Throws std::runtime_error naming the path.
std::unique_ptr<AuditStore> open_file_audit_store(const std::string& path, std::string& dropped);
// The lines of the file log at `path`: with_rotated = its rotated files first (prove, the
// report, recovery, last successes); without, that one file (verify, which checks its first line
// against the rotated file before it).
std::unique_ptr<AuditLines> file_audit_lines(const std::string& path, bool with_rotated);

} // namespace retentiond
