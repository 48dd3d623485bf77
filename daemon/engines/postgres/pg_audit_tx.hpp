#pragma once
// A batch's transaction lent to the audit store when the store is this datastore's database
// (BatchJournal::in_transaction, docs/audit-log.md "Atomic with the deletion"): the batch's intent
// and outcome lines are written on it just before it commits, so they commit with the change or
// not at all. Internal to the postgres engine.

#include "retentiond/audit.hpp"
#include "retentiond/audit_store.hpp"

#include <pqxx/pqxx>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace retentiond::pg {

class LentTx final : public DatastoreTx {
public:
    explicit LentTx(pqxx::transaction_base& tx) : m_tx(tx) {}
    std::vector<std::optional<std::string>> query(const std::string& sql,
                                                  const std::vector<std::string>& params) override {
        const auto r = m_tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
        std::vector<std::optional<std::string>> out;
        out.reserve(r.size());
        for (const auto& row : r) {
            out.push_back(
                row.empty() || row[0].is_null()
                    ? std::nullopt
                    : std::optional<std::string>(std::in_place, row[0].c_str(), row[0].size()));
        }
        return out;
    }

private:
    pqxx::transaction_base& m_tx;
};

// Whether the batches of `datastore` write their lines on their own transaction.
inline bool lines_in_transaction(const BatchJournal* journal, const std::string& datastore) {
    return journal != nullptr && journal->in_transaction(datastore);
}

// Writes `lines` on tx (the caller commits it next); returns the batch id.
inline std::string write_lines(BatchJournal::TxLines& lines, pqxx::transaction_base& tx) {
    LentTx lent(tx);
    return lines.write(lent);
}

} // namespace retentiond::pg
