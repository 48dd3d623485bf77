#pragma once

#include <map>
#include <string>
#include <vector>

namespace retentiond::test {

struct ProcessResult {
    int exit_code = -1; // -1 when killed by a signal
    int signal = 0;
    std::string out;
    std::string err;
};

// Runs the built retentiond binary with these arguments and extra environment variables, stdin
// from /dev/null, and waits for it. Output is captured through temp files (no pipe deadlock).
ProcessResult run_retentiond(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env = {});

// A scratch directory removed (recursively) by the destructor.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return m_path; }
    std::string file(const std::string& name) const { return m_path + "/" + name; }
    // Writes a file (creating parent directories) and returns its path.
    std::string write(const std::string& name, const std::string& content) const;

private:
    std::string m_path;
};

std::string read_file(const std::string& path);

struct ShellOutput {
    int status = -1;  // pclose()'s wait status; -1 when the shell could not start
    std::string text; // stdout and stderr together: a warning on either is a finding
};
// Runs a /bin/sh command line and captures its output.
ShellOutput shell(const std::string& command);

} // namespace retentiond::test
