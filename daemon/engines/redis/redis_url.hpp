#pragma once

#include "retentiond/config.hpp"

#include <string>
#include <string_view>

namespace retentiond {

// Where and how to reach a Redis datastore (Datastore::url), parsed from one of:
//   redis://[[user]:password@]host[:port][/db]     (port 6379, db 0 by default; [::1] for IPv6)
//   unix:///path/to/redis.sock[?db=N]               (also ?password=...&user=...)
//   /path/to/redis.sock                             (a bare socket path, db 0)
// user and password may be percent-encoded. rediss:// (TLS) is not supported.
struct RedisUrl {
    std::string host; // empty for a Unix socket
    int port = 6379;
    std::string socket_path; // non-empty for a Unix socket
    std::string user;        // empty = the default user
    Secret password;         // empty = no AUTH
    int db = 0;

    // "127.0.0.1:6379/0" or "/run/redis.sock/0": for messages; never shows the password.
    std::string describe() const;
};

// Throws ParseError with a message that never contains the password.
RedisUrl parse_redis_url(std::string_view url);

} // namespace retentiond
