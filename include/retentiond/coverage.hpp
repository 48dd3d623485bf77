#pragma once

// Coverage: what looks like personal data in a datastore, and whether a rule covers it. Each kind
// scans its own stores (Kind::scan_coverage, engines/<kind>/<kind>_coverage.cpp); the
// classification they share (names in French and English, value patterns, JSON walked) and the
// acknowledgements are engines/common/coverage.cpp. Never a value: a finding holds locations,
// pattern names and counts only.

#include "retentiond/config.hpp"

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond {

// One location that looks personal: a column, a file (or a file's column), a key pattern.
struct CoverageFinding {
    std::string datastore;
    std::string location; // shown: "public.log.data", "exports/a.csv", "cache:*"
    // What acknowledgements match (the kind fills those that apply).
    std::string table;            // schema.table
    std::string column;           // a table's column, or a CSV header / JSON key of `file`
    std::string file;             // relative to the root
    std::string pattern;          // a key pattern
    std::vector<std::string> why; // "name: e-mail", "values: phone 40/200", "12 keys (hash)"
    std::string covered_by;       // "dora-accounts (target, delete)"; empty: not covered
    std::string note;             // why a rule on the table does not cover it
    std::string acknowledged;     // the acknowledgement's reason
    bool ok() const { return !covered_by.empty() || !acknowledged.empty(); }
};

struct CoverageScan {
    std::vector<CoverageFinding> findings;
    // What the scan could not see or bounded: "2 tables the role cannot read: ...",
    // "public.big: sample timed out, judged by names". Never a value.
    std::vector<std::string> notes;
    // A part could not be judged at all (a table the role cannot read, an error reply): coverage
    // cannot be called complete.
    bool partial = false;
};

// A datastore's scan, or why it could not be made.
struct StoreCoverage {
    std::string datastore;
    bool unavailable = false;
    std::string error;
    CoverageScan scan;
};

struct StaleAcknowledgement {
    CoverageIgnore ignore;
    std::string what; // "table public.gone column x"
};

struct CoverageReport {
    std::vector<StoreCoverage> stores;
    std::vector<StaleAcknowledgement> stale;
    std::int64_t uncovered() const;
    std::int64_t acknowledged() const;
    std::int64_t covered() const;
    bool any_partial() const;
    bool complete() const { return uncovered() == 0 && !any_partial() && !any_unavailable(); }
    bool any_unavailable() const;
};

// --- classification (engines/common/coverage.cpp) -------------------------------------------

// What a column name, CSV header or JSON key suggests, in French or English spelling:
// "e-mail", "phone", "name", "address", "IP address", "coordinates", "birth date", "IBAN",
// "national ID". Empty when nothing.
std::set<std::string> classify_name(std::string_view name);
// What one value holds: "e-mail", "phone" (French numbers), "IP address" (IPv4/IPv6),
// "coordinates" (a latitude/longitude pair), "IBAN" (checksum verified). A value that is a JSON
// object or array is walked: its keys through classify_name ("key: e-mail"), its strings through
// classify_value.
std::set<std::string> classify_value(std::string_view value);

// Counts of value patterns over a sample of one location.
class ValueTally {
public:
    void add(std::string_view value); // a NULL is not added
    std::int64_t sampled() const { return m_sampled; }
    // "values: e-mail 37/200", for the patterns frequent enough to call the location personal
    // (at least one value in 20 of the sample).
    std::vector<std::string> reasons() const;

private:
    std::int64_t m_sampled = 0;
    std::map<std::string, std::int64_t> m_hits;
};

// A column name, header, key or path segment as it may be shown: itself, or "<e-mail>" (its
// patterns) when it holds what looks like a value (a CSV without a header, a file named after a
// person).
std::string safe_name(std::string_view name);
// A relative path, each segment through safe_name.
std::string safe_path(std::string_view path);

// "name: e-mail, phone" or nothing.
std::vector<std::string> name_reasons(std::string_view name);

// --- acknowledgements -----------------------------------------------------------------------

// Marks the findings an acknowledgement matches (their reason copied in), and returns the
// acknowledgements of the scanned datastores that match nothing.
std::vector<StaleAcknowledgement> apply_acknowledgements(std::vector<StoreCoverage>& stores,
                                                         const std::vector<CoverageIgnore>& ignores,
                                                         bool every_store);

// "public.x.y", "exports/*.csv", "cache:*": what an acknowledgement names.
std::string describe(const CoverageIgnore& ignore);

} // namespace retentiond
