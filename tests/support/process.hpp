#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
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

// How a ChildProcess starts, beyond its arguments.
struct ChildOptions {
    // RLIMIT_FSIZE, SIGXFSZ left at its default action (kill) as under systemd's LimitFSIZE=: the
    // binary itself must make writes past the limit fail with EFBIG.
    std::optional<long> fsize_limit;
    // Run as this user (and the group of the same id), without supplementary groups.
    std::optional<uid_t> uid;

    static ChildOptions file_size_limit(long bytes) {
        ChildOptions o;
        o.fsize_limit = bytes;
        return o;
    }
    static ChildOptions as_user(uid_t id) {
        ChildOptions o;
        o.uid = id;
        return o;
    }
};

// The built retentiond binary running while a test acts on it (signals, a stalled store, a kill):
// stdin from /dev/null, stdout and stderr to files. Still running at destruction: killed and
// reaped.
class ChildProcess {
public:
    // stdout to `out_file`, stderr too unless `err_file` is given.
    ChildProcess(const std::vector<std::string>& args, const std::string& out_file,
                 const std::string& err_file = "", const ChildOptions& options = {});
    // stdout and stderr to child.out and child.err in `dir`.
    ChildProcess(const std::vector<std::string>& args, const TempDir& dir,
                 const ChildOptions& options = {});
    ~ChildProcess();
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    pid_t pid() const { return m_pid; }
    void signal(int sig) const;
    void kill() const;
    void term() const;
    // Waits for the end: the exit code, or -signal.
    int wait();
    // The exit code (or -signal) if it ends within `limit`; nullopt (and SIGKILL) if not.
    std::optional<int> wait_for(std::chrono::milliseconds limit);
    // From the start to the end, in seconds; its peak resident memory (KiB) once it ended.
    double seconds() const;
    long max_rss_kib() const { return m_max_rss_kib; }
    // stdout, then stderr when it went to its own file.
    std::string output() const;

private:
    void reaped(int status, long max_rss_kib);

    pid_t m_pid = -1;
    bool m_reaped = false;
    int m_status = 0;
    long m_max_rss_kib = 0;
    std::chrono::steady_clock::time_point m_started;
    std::chrono::steady_clock::time_point m_ended;
    std::string m_out;
    std::string m_err;
};

struct ShellOutput {
    int status = -1;  // pclose()'s wait status; -1 when the shell could not start
    std::string text; // stdout and stderr together: a warning on either is a finding
};
// Runs a /bin/sh command line and captures its output.
ShellOutput shell(const std::string& command);

} // namespace retentiond::test
