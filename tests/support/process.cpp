#include "support/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace retentiond::test {

TempDir::TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "retentiond-test-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
        throw std::runtime_error("mkdtemp failed");
    }
    m_path = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
    const auto path = std::filesystem::path(m_path) / name;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out << content;
    if (!out) {
        throw std::runtime_error("cannot write " + path.string());
    }
    return path.string();
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

ShellOutput shell(const std::string& command) {
    ShellOutput out;
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((command + " 2>&1").c_str(), "r"), pclose);
    if (!pipe) {
        return out;
    }
    std::array<char, 4096> buf{};
    while (fgets(buf.data(), static_cast<int>(buf.size()), pipe.get()) != nullptr) {
        out.text += buf.data();
    }
    out.status = pclose(pipe.release());
    return out;
}

ProcessResult run_retentiond(const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env) {
    TempDir io;
    const auto out_path = io.file("stdout");
    const auto err_path = io.file("stderr");
    const pid_t pid = fork();
    if (pid < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
        const int in = open("/dev/null", O_RDONLY);
        const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        unsetenv("RETENTIOND_CONFIG");
        unsetenv("JOURNAL_STREAM");
        for (const auto& [name, value] : env) {
            setenv(name.c_str(), value.c_str(), 1);
        }
        std::vector<char*> argv;
        std::string binary = RETENTIOND_BINARY;
        argv.push_back(binary.data());
        std::vector<std::string> copy = args;
        for (auto& a : copy) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        execv(binary.c_str(), argv.data());
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ProcessResult result;
    if (WIFEXITED(status)) {
        result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        result.signal = WTERMSIG(status);
    }
    result.out = read_file(out_path);
    result.err = read_file(err_path);
    return result;
}

namespace {

// In the forked child: its limits, its user, its files, then the binary. Never returns.
[[noreturn]] void exec_child(std::vector<std::string> full, const std::string& out,
                             const std::string& err, const ChildOptions& options) {
    if (options.fsize_limit) {
        const rlimit lim{static_cast<rlim_t>(*options.fsize_limit),
                         static_cast<rlim_t>(*options.fsize_limit)};
        ::setrlimit(RLIMIT_FSIZE, &lim);
    }
    const int in = ::open("/dev/null", O_RDONLY);
    const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err_fd =
        err.empty() ? out_fd : ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(in, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    if (options.uid && (::setgroups(0, nullptr) != 0 || ::setgid(*options.uid) != 0 ||
                        ::setuid(*options.uid) != 0)) {
        ::_exit(126);
    }
    std::vector<char*> argv;
    for (auto& a : full) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
}

} // namespace

ChildProcess::ChildProcess(const std::vector<std::string>& args, const std::string& out_file,
                           const std::string& err_file, const ChildOptions& options)
    : m_out(out_file), m_err(err_file) {
    std::vector<std::string> full = {RETENTIOND_BINARY};
    full.insert(full.end(), args.begin(), args.end());
    m_started = std::chrono::steady_clock::now();
    m_pid = ::fork();
    if (m_pid == 0) {
        exec_child(std::move(full), m_out, m_err, options);
    }
    if (m_pid < 0) {
        throw std::runtime_error("fork failed");
    }
}

ChildProcess::ChildProcess(const std::vector<std::string>& args, const TempDir& dir,
                           const ChildOptions& options)
    : ChildProcess(args, dir.file("child.out"), dir.file("child.err"), options) {}

ChildProcess::~ChildProcess() {
    if (m_pid > 0 && !m_reaped) {
        ::kill(m_pid, SIGKILL);
        ::waitpid(m_pid, nullptr, 0);
    }
}

void ChildProcess::signal(int sig) const {
    ::kill(m_pid, sig);
}

void ChildProcess::kill() const {
    signal(SIGKILL);
}

void ChildProcess::term() const {
    signal(SIGTERM);
}

void ChildProcess::reaped(int status, long max_rss_kib) {
    m_reaped = true;
    m_ended = std::chrono::steady_clock::now();
    m_max_rss_kib = max_rss_kib;
    m_status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int ChildProcess::wait() {
    if (!m_reaped) {
        int status = 0;
        rusage ru{};
        ::wait4(m_pid, &status, 0, &ru);
        reaped(status, ru.ru_maxrss);
    }
    return m_status;
}

std::optional<int> ChildProcess::wait_for(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!m_reaped) {
        int status = 0;
        rusage ru{};
        if (::wait4(m_pid, &status, WNOHANG, &ru) == m_pid) {
            reaped(status, ru.ru_maxrss);
        } else if (std::chrono::steady_clock::now() >= until) {
            kill();
            wait();
            return std::nullopt;
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    return m_status;
}

double ChildProcess::seconds() const {
    return std::chrono::duration<double>(m_ended - m_started).count();
}

std::string ChildProcess::output() const {
    return read_file(m_out) + (m_err.empty() ? std::string() : read_file(m_err));
}

} // namespace retentiond::test
