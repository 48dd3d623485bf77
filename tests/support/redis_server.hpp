#pragma once

#include <string>
#include <vector>

namespace retentiond::test {

// A throwaway redis-server on 127.0.0.1 (a free port) and a Unix socket in a temp dir; no
// persistence. Torn down by the destructor. Throws when it cannot start.
class RedisServer {
public:
    RedisServer();
    ~RedisServer();
    RedisServer(const RedisServer&) = delete;
    RedisServer& operator=(const RedisServer&) = delete;

    std::string url(int db = 0) const; // redis://127.0.0.1:PORT/DB
    const std::string& socket_path() const { return m_socket; }
    int port() const { return m_port; }
    void stop();
    void start();                     // same port and socket
    int pid() const { return m_pid; } // to freeze it (SIGSTOP) in a test

    static RedisServer& shared();

private:
    std::string m_dir;
    std::string m_socket;
    int m_port = 0;
    int m_pid = -1;
};

// redis-cli style helper: runs one command (arguments, no shell quoting) and returns the reply
// as text ("" for nil; integers as decimal; arrays joined by '\n').
std::string redis_cmd(const RedisServer& server, const std::vector<std::string>& args, int db = 0);

} // namespace retentiond::test
