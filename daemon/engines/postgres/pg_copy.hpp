#pragma once
// Rows read with COPY ... TO STDOUT: they arrive as the server makes them, one line at a time, and
// none is held. A plain query's result is held whole by libpq before its first row can be read,
// and the server waits for nothing while the client works on the rows it has. Used to digest
// every key of a whole partition (partition_digests: keys): millions of rows, read and digested
// side by side. Internal to the postgres engine.

#include <pqxx/transaction_base>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond::pg {

// One row in COPY's text format, decoded. A NULL is an empty field with null[i] set.
struct CopyRow {
    std::vector<std::string> fields;
    std::vector<char> null;
};

// Decodes one line of COPY's text format (tab-separated, backslash escapes, \N for NULL; without
// its newline) into `row`, reusing its strings. Throws std::runtime_error on a malformed line.
void decode_copy_line(std::string_view line, CopyRow& row);

// Streams the rows of `select` (a SELECT, with the session's output formats: the same text as
// the columns' ::text in a plain query) to `on_row`, in the order the server sends them. Returns
// the rows read.
std::int64_t copy_rows(pqxx::transaction_base& tx, const std::string& select,
                       const std::function<void(const CopyRow&)>& on_row);

} // namespace retentiond::pg
