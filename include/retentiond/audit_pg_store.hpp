#pragma once

// The audit chain in PostgreSQL (extension `daemon.audit_store`, docs/audit-log.md "Store in
// PostgreSQL"): one chain for every host that writes to it. Tables, in `schema`:
//   audit_log (seq bigint PRIMARY KEY, line text NOT NULL)    the lines, exactly as a file holds
//   them in_flight (batch text PRIMARY KEY, body text NOT NULL)    raw keys of batches in flight
// created on first use. Each append takes a transaction-scoped advisory lock on the chain, reads
// the head, inserts the line chained on it and commits (synchronous_commit on), so concurrent
// writers (hosts, parallel streams) keep one linear chain. Implemented in
// daemon/audit/audit_pg_store.cpp, its own library (retentiond_audit_pg), which links libpqxx.
// A postgres rule on the store's own database writes its batches' lines on the batch's own
// transaction instead (AuditStore::append_on, through DatastoreTx).

#include "retentiond/audit_store.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace retentiond {

struct PgAuditTarget {
    std::string conninfo;  // libpq DSN or URI: a secret, never in a message
    std::string schema;    // a plain identifier (checked by the loader)
    std::string datastore; // its name in the config, for messages
    // The other datastores of the config with exactly the store's connection string: their
    // rules, like the store's own datastore's, write their batches' lines in the batches' own
    // transactions (AuditStore::shares_database).
    std::vector<std::string> same_database;
};

// Opens (and on first use creates) the store. Throws UnavailableError when the server cannot be
// reached, AuditWriteError when the tables cannot be created or the role lacks a privilege
// (the message names it).
std::unique_ptr<AuditStore> open_pg_audit_store(const PgAuditTarget& target);
// The store's lines, read over a connection of their own. Throws UnavailableError when the
// server cannot be reached; a store never created has no lines.
std::unique_ptr<AuditLines> pg_audit_lines(const PgAuditTarget& target);
// Moves a verified file log into an empty store: its lines first, with their own seq, the store's
// chain then continuing from its last line. Returns the lines imported. Throws
// std::runtime_error when the store already holds lines.
std::uint64_t import_into_pg_audit_store(const PgAuditTarget& target, const AuditLines& lines);

} // namespace retentiond
