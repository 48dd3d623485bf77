#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace retentiond {

// sysexits(3)-style exit codes; the CLI's --help and the README list them.
enum ExitCode : int {
    k_exit_ok = 0,
    k_exit_usage = 64,       // EX_USAGE: bad command line
    k_exit_data = 65,        // EX_DATAERR: unparseable record, tampered audit log
    k_exit_unavailable = 69, // EX_UNAVAILABLE: a datastore cannot be reached
    k_exit_software = 70,    // EX_SOFTWARE: internal error, or a verb not built yet
    k_exit_ioerr = 74,       // EX_IOERR: the audit log (or an output file) cannot be written
    k_exit_partial = 75,     // EX_TEMPFAIL: a run partly failed or was refused by a limit
    k_exit_config = 78,      // EX_CONFIG: configuration invalid
};

// One position in a configuration file. line and column are 1-based; 0 means unknown.
struct SourcePos {
    std::string file;
    int line = 0;
    int column = 0;
};

// One configuration problem: "file:line:col: rule "x": message".
struct Diagnostic {
    SourcePos pos;
    std::string rule; // empty when not inside a rule
    std::string message;
    // An advisory (`check`): said, but the configuration stays valid and runs go on.
    bool warning = false;

    std::string to_string() const;
};

// A config rejected whole. what() joins every diagnostic, one per line.
class ConfigError : public std::runtime_error {
public:
    explicit ConfigError(std::vector<Diagnostic> diagnostics);
    const std::vector<Diagnostic>& diagnostics() const { return m_diagnostics; }

private:
    std::vector<Diagnostic> m_diagnostics;
};

// A value that does not parse (duration, schedule, timestamp...). The config loader turns it into a
// Diagnostic with the position of the offending node.
class ParseError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A datastore that cannot be reached or answers with a connection-level failure (exit 69).
class UnavailableError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The errors every verb reports the same way, each with its exit code (sysexits):
//   UsageError 64 (bad arguments), ConfigError 78 (invalid configuration), UnavailableError 69
//   (a datastore cannot be reached), IoError 74 (a file retentiond writes: the audit log, a
//   report), and 65 for data that does not parse, which a rule's run reports in
//   RunResult::data_error (the record named file:line), never as an exception: the other rules of
//   the run go on.

// Arguments the verb does not take, or a missing one (exit 64).
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A file retentiond writes cannot be written (exit 74).
class IoError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The audit log cannot be opened or written: the run stops before touching any datastore (74).
class AuditWriteError : public IoError {
public:
    using IoError::IoError;
};

} // namespace retentiond
