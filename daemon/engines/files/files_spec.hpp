#pragma once

// Kind files: what its datastore sections and rules hold (read by files_config.cpp). Private to
// engines/files/ and its tests; core code never needs it.

#include "retentiond/config.hpp"

#include <optional>
#include <string>

namespace retentiond {

struct FilesStore : DatastoreSpec {
    std::string root; // absolute (relative in the file: to the main config file's directory)
    FilesStore() = default;
    explicit FilesStore(std::string r) : root(std::move(r)) {}
};

struct FilesClock {
    enum class Kind { field, mtime, filename };
    Kind kind = Kind::field;
    std::string field;    // CSV column or dotted JSON path
    std::string format;   // strptime-style; empty = ISO 8601 / Tally default
    std::string filename; // regex with one capture group, for Kind::filename
};

struct FilesHold {
    std::string field;
    std::string equals;
};

struct FilesRule : RuleSpec {
    enum class Format { csv, jsonl, whole };
    std::string files; // glob under the datastore root, ** allowed
    Format format = Format::csv;
    FilesClock clock;
    std::optional<FilesHold> hold;
    char delimiter = 0;    // 0 = detect from the header (',' or ';')
    std::string key_field; // audit digests: defaults to the first CSV column / "id"
};

} // namespace retentiond
