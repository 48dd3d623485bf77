#include "support/redis_server.hpp"

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <thread>

namespace retentiond::test {
namespace {

struct ContextFree {
    void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// The kernel picks a free port for a socket bound to port 0; redis-server gets it right after.
int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        throw std::runtime_error("socket(): " + std::string(std::strerror(errno)));
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        const std::string err = std::strerror(errno);
        ::close(fd);
        throw std::runtime_error("cannot find a free port: " + err);
    }
    ::close(fd);
    return ntohs(addr.sin_port);
}

ContextPtr connect_unix(const std::string& path) {
    ContextPtr c(redisConnectUnixWithTimeout(path.c_str(), timeval{2, 0}));
    if (!c || c->err != 0) {
        return nullptr;
    }
    return c;
}

ReplyPtr command(redisContext* c, const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    return ReplyPtr(static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
}

std::string reply_text(const redisReply* r) {
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        return std::string(r->str, r->len);
    case REDIS_REPLY_INTEGER:
        return std::to_string(r->integer);
    case REDIS_REPLY_NIL:
        return "";
    case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r->elements; ++i) {
            if (i > 0) {
                out += '\n';
            }
            out += reply_text(r->element[i]);
        }
        return out;
    }
    case REDIS_REPLY_ERROR:
        throw std::runtime_error("redis error: " + std::string(r->str, r->len));
    default:
        throw std::runtime_error("unexpected redis reply type");
    }
}

} // namespace

RedisServer::RedisServer() {
    std::string templ =
        (std::filesystem::temp_directory_path() / "retentiond-redis-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
        throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
    }
    m_dir = templ;
    m_socket = m_dir + "/redis.sock";
    m_port = free_port();
    try {
        start();
    } catch (...) {
        std::error_code ec;
        std::filesystem::remove_all(m_dir, ec);
        throw;
    }
}

RedisServer::~RedisServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(m_dir, ec);
}

std::string RedisServer::url(int db) const {
    return "redis://127.0.0.1:" + std::to_string(m_port) + "/" + std::to_string(db);
}

void RedisServer::start() {
    if (m_pid > 0) {
        return;
    }
    const std::vector<std::string> args = {
        "redis-server",
        "--port",
        std::to_string(m_port),
        "--bind",
        "127.0.0.1",
        "--unixsocket",
        m_socket,
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        m_dir,
        "--daemonize",
        "no",
        "--logfile",
        m_dir + "/redis.log",
    };
    std::vector<char*> argv;
    for (const auto& a : args) {
        argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);

    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
    }
    if (pid == 0) {
        // A crashed test process must not leave servers behind.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) {
            ::_exit(127);
        }
        const int devnull = ::open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            ::dup2(devnull, STDIN_FILENO);
            ::dup2(devnull, STDOUT_FILENO);
        }
        ::execvp("redis-server", argv.data());
        ::_exit(127);
    }
    m_pid = pid;

    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
            m_pid = -1;
            throw std::runtime_error("redis-server exited at startup; see " + m_dir + "/redis.log");
        }
        if (auto c = connect_unix(m_socket)) {
            auto r = command(c.get(), {"PING"});
            if (r && r->type == REDIS_REPLY_STATUS && std::string(r->str, r->len) == "PONG") {
                return;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stop();
    throw std::runtime_error("redis-server did not answer PING within 15 s");
}

void RedisServer::stop() {
    if (m_pid <= 0) {
        return;
    }
    ::kill(m_pid, SIGKILL);
    int status = 0;
    while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
    }
    m_pid = -1;
}

RedisServer& RedisServer::shared() {
    static RedisServer server;
    return server;
}

std::string redis_cmd(const RedisServer& server, const std::vector<std::string>& args, int db) {
    auto c = connect_unix(server.socket_path());
    if (!c) {
        throw std::runtime_error("cannot connect to the test redis-server");
    }
    if (db != 0) {
        auto r = command(c.get(), {"SELECT", std::to_string(db)});
        if (!r) {
            throw std::runtime_error("redis SELECT failed: " + std::string(c->errstr));
        }
        reply_text(r.get());
    }
    auto r = command(c.get(), args);
    if (!r) {
        throw std::runtime_error("redis command failed: " + std::string(c->errstr));
    }
    return reply_text(r.get());
}

} // namespace retentiond::test
