#pragma once

// One connection to a redis datastore (AUTH and SELECT done), pipelined: commands are queued and
// each reply claimed by its sequence number. Private to the redis engine.

#include "redis_kind.hpp"
#include "redis_url.hpp"
#include "retentiond/engine.hpp"
#include "retentiond/errors.hpp"

#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <poll.h>
#include <pthread.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace retentiond::redis_detail {

struct ContextFree {
    void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// Every wait on the server is bounded: 5 s to connect, 15 s for each reply (a Lua batch script
// of 5000 keys takes milliseconds; a server that answers nothing for 15 s is unavailable) and for
// the server to read what is sent, and a stop request (SIGTERM) gives either wait 2 s more, then
// abandons it: the run ends as unavailable, the batch in flight (if any) applied atomically or
// not at all, its intent left to recovery. Writes wait for the socket in slices too: one write()
// blocks at most k_wait_slice (the socket's send timeout).
constexpr timeval k_connect_timeout{5, 0};
constexpr std::chrono::seconds k_reply_timeout{15};
constexpr std::chrono::seconds k_stop_grace{2};
constexpr std::chrono::milliseconds k_wait_slice{200};

// A command answered with an error reply that is not about availability.
class ReplyError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

inline std::string_view text_of(const redisReply* r) {
    return {r->str, r->len};
}

// Writing to a connection the server closed (a restart) raises SIGPIPE, whose default action
// kills the process; hiredis sends without MSG_NOSIGNAL. While a connection lives, SIGPIPE is
// blocked in this thread (the write then fails with EPIPE: UnavailableError), and a SIGPIPE left
// pending by such a write is consumed before the mask is restored.
class SigpipeBlock {
public:
    SigpipeBlock() {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe, &m_old);
    }
    ~SigpipeBlock() {
        if (sigismember(&m_old, SIGPIPE) == 1) {
            return; // blocked by someone else already: theirs to handle
        }
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        sigset_t pending;
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
            const timespec zero{};
            while (sigtimedwait(&pipe, nullptr, &zero) == SIGPIPE) {
            }
        }
        pthread_sigmask(SIG_SETMASK, &m_old, nullptr);
    }
    SigpipeBlock(const SigpipeBlock&) = delete;
    SigpipeBlock& operator=(const SigpipeBlock&) = delete;

private:
    sigset_t m_old{};
};

// One connection, AUTH and SELECT done. Every I/O failure throws UnavailableError, and so does a
// reply that does not come within k_reply_timeout, or within k_stop_grace of a stop request
// (`stop`, polled while waiting).
class Connection {
public:
    Connection(const RedisUrl& url, const std::string& store, std::function<bool()> stop = {})
        : m_stop(std::move(stop)) {
        m_where = "redis datastore \"" + store + "\" (" + url.describe() + ")";
        m_ctx.reset(url.socket_path.empty()
                        ? redisConnectWithTimeout(url.host.c_str(), url.port, k_connect_timeout)
                        : redisConnectUnixWithTimeout(url.socket_path.c_str(), k_connect_timeout));
        if (!m_ctx) {
            throw UnavailableError(m_where + ": cannot allocate a connection");
        }
        if (m_ctx->err != 0) {
            throw UnavailableError(m_where + ": cannot connect: " + m_ctx->errstr);
        }
        // One write() blocks at most a slice (flush() waits for room first, so it makes progress);
        // reads never block: wait_ready() comes first.
        redisSetTimeout(m_ctx.get(), timeval{0, k_wait_slice.count() * 1000});
        if (!url.password.empty()) {
            auto r = url.user.empty() ? call({"AUTH", url.password.reveal()})
                                      : call({"AUTH", url.user, url.password.reveal()});
            if (r->type == REDIS_REPLY_ERROR) {
                // The reply names no secret ("WRONGPASS invalid username-password pair").
                throw UnavailableError(m_where +
                                       ": authentication failed: " + std::string(text_of(r.get())));
            }
        }
        if (url.db != 0) {
            const auto db = std::to_string(url.db);
            auto r = call({"SELECT", db});
            if (r->type == REDIS_REPLY_ERROR) {
                throw UnavailableError(m_where +
                                       ": SELECT failed: " + std::string(text_of(r.get())));
            }
        }
    }

    const std::string& where() const { return m_where; }

    // Pipelining: append() queues a command and returns its sequence number; reply(seq) returns
    // that command's reply, reading (and keeping) the replies of earlier commands not claimed
    // yet. So a delete batch can be sent while a page's reads are still in flight, and each
    // consumer claims its own replies in any order.
    std::uint64_t append(std::initializer_list<std::string_view> args) {
        return append(args.begin(), args.size());
    }
    std::uint64_t append(const std::string_view* args, std::size_t n) {
        m_argv.clear();
        m_lens.clear();
        for (std::size_t i = 0; i < n; ++i) {
            m_argv.push_back(args[i].data());
            m_lens.push_back(args[i].size());
        }
        if (redisAppendCommandArgv(m_ctx.get(), static_cast<int>(n), m_argv.data(),
                                   m_lens.data()) != REDIS_OK) {
            lost();
        }
        return m_sent++;
    }
    std::uint64_t append(const std::vector<std::string_view>& args) {
        return append(args.data(), args.size());
    }
    // Sends what is queued without waiting for a reply: the server works while we do. A server
    // that reads nothing holds it at most k_reply_timeout, or k_stop_grace after a stop request.
    void flush() {
        auto deadline = std::chrono::steady_clock::now() + k_reply_timeout;
        while (sdslen(m_ctx->obuf) > 0) {
            wait_ready(POLLOUT, deadline);
            int done = 0;
            if (redisBufferWrite(m_ctx.get(), &done) != REDIS_OK) {
                lost();
            }
        }
    }
    // The reply to command `seq`; error replies are returned, except those meaning "not
    // available" (thrown as UnavailableError).
    ReplyPtr reply(std::uint64_t seq) {
        if (seq < m_base || seq >= m_sent) {
            throw std::logic_error("redis: reply " + std::to_string(seq) + " is not pending");
        }
        while (m_base + m_stash.size() <= seq) {
            m_stash.push_back(read_next());
        }
        ReplyPtr r = std::move(m_stash[seq - m_base]);
        if (!r) {
            throw std::logic_error("redis: reply " + std::to_string(seq) + " claimed twice");
        }
        while (!m_stash.empty() && !m_stash.front()) {
            m_stash.pop_front();
            ++m_base;
        }
        return r;
    }
    ReplyPtr call(std::initializer_list<std::string_view> args) { return reply(append(args)); }
    ReplyPtr call(const std::vector<std::string_view>& args) { return reply(append(args)); }
    // A reply that must not be an error.
    ReplyPtr call_ok(std::initializer_list<std::string_view> args) {
        auto r = call(args);
        if (r->type == REDIS_REPLY_ERROR) {
            throw ReplyError(std::string(*args.begin()) + ": " + std::string(text_of(r.get())));
        }
        return r;
    }

private:
    std::string timed_out(short events) const {
        const std::string s = std::to_string(k_reply_timeout.count());
        if (events == POLLOUT) {
            return m_stop_seen ? ": stop requested while sending"
                               : ": the server read nothing for " + s + " s (timed out)";
        }
        return m_stop_seen ? ": stop requested while waiting for a reply"
                           : ": no reply within " + s + " s (timed out)";
    }
    [[noreturn]] void lost() {
        throw UnavailableError(m_where + ": connection lost: " + m_ctx->errstr);
    }
    // Waits until the socket has something to read (POLLIN) or room to write (POLLOUT), in
    // slices; between slices (a reply slower than k_wait_slice: never for a server that answers)
    // polls the stop request. Throws UnavailableError past `deadline`, brought forward to
    // k_stop_grace after a stop request.
    void wait_ready(short events, std::chrono::steady_clock::time_point& deadline) {
        using std::chrono::steady_clock;
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - steady_clock::now());
            if (left.count() <= 0) {
                throw UnavailableError(m_where + timed_out(events));
            }
            pollfd p{m_ctx->fd, events, 0};
            const int n = ::poll(&p, 1, static_cast<int>(std::min(left, k_wait_slice).count()));
            if (n > 0) {
                return; // data, or the peer closed: redisBufferRead tells
            }
            if (n < 0 && errno != EINTR) {
                throw UnavailableError(m_where + ": poll: " + std::strerror(errno));
            }
            if (!m_stop_seen && m_stop && m_stop()) {
                m_stop_seen = true;
                deadline = std::min(deadline, steady_clock::now() + k_stop_grace);
            }
        }
    }
    // The next reply on the wire (what is still queued is sent first), as redisGetReply reads
    // it but with bounded, interruptible waits.
    ReplyPtr read_next() {
        flush();
        void* raw = nullptr;
        if (redisGetReplyFromReader(m_ctx.get(), &raw) != REDIS_OK) {
            lost();
        }
        auto deadline = std::chrono::steady_clock::now() + k_reply_timeout;
        while (raw == nullptr) {
            wait_ready(POLLIN, deadline);
            if (redisBufferRead(m_ctx.get()) != REDIS_OK ||
                redisGetReplyFromReader(m_ctx.get(), &raw) != REDIS_OK) {
                lost();
            }
        }
        ReplyPtr r(static_cast<redisReply*>(raw));
        if (r->type == REDIS_REPLY_ERROR) {
            const auto t = text_of(r.get());
            for (const std::string_view code :
                 {"LOADING", "BUSY", "MASTERDOWN", "NOAUTH", "TRYAGAIN", "CLUSTERDOWN"}) {
                if (t.starts_with(code)) {
                    throw UnavailableError(m_where + ": " + std::string(t));
                }
            }
        }
        return r;
    }

    SigpipeBlock m_sigpipe; // first: outlives the context
    std::function<bool()> m_stop;
    bool m_stop_seen = false;
    ContextPtr m_ctx;
    std::string m_where;
    std::vector<const char*> m_argv;
    std::vector<std::size_t> m_lens;
    std::uint64_t m_sent = 0;     // commands appended
    std::uint64_t m_base = 0;     // sequence number of m_stash.front()
    std::deque<ReplyPtr> m_stash; // replies read, in order; claimed ones are null
};

// A batch script, loaded once (SCRIPT LOAD) and then called by its SHA1 (EVALSHA): the body is
// not sent and hashed again for every batch. Without SCRIPT permission the body is sent (EVAL).
class Script {
public:
    Script(Connection& c, std::string_view body) : m_body(body) {
        auto r = c.call({"SCRIPT", "LOAD", body});
        if (r->type == REDIS_REPLY_STRING) {
            m_sha.assign(r->str, r->len);
        }
    }
    std::string_view body() const { return m_body; }
    const std::string& sha() const { return m_sha; }

private:
    std::string_view m_body;
    std::string m_sha; // empty: use EVAL
};

// The server's clock (TIME): the datastore's now, as postgres uses now().
TimePoint server_now(Connection& c);

} // namespace retentiond::redis_detail
