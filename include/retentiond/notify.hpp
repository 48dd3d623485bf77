#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace retentiond {

// sd_notify(3) for Type=notify. Every call is a no-op when NOTIFY_SOCKET is unset.
class Notifier {
public:
    void ready();
    void reloading(); // RELOADING=1 with MONOTONIC_USEC, as systemd >= 253 expects
    void stopping();
    void status(const std::string& text);
    void watchdog();
    // Half of WatchdogSec when the watchdog is enabled for this process.
    static std::optional<std::chrono::microseconds> watchdog_interval();

private:
    void send(const std::string& state);
};

} // namespace retentiond
