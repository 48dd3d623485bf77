#include "retentiond/notify.hpp"

#include <systemd/sd-daemon.h>

#include <ctime>

namespace retentiond {

void Notifier::send(const std::string& state) {
    // unset_environment = 0: a reload or a later message still needs NOTIFY_SOCKET.
    sd_notify(0, state.c_str());
}

void Notifier::ready() {
    send("READY=1\nSTATUS=idle");
}

void Notifier::reloading() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const auto usec = static_cast<unsigned long long>(ts.tv_sec) * 1000000ULL +
                      static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL;
    send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

void Notifier::stopping() {
    send("STOPPING=1");
}

void Notifier::status(const std::string& text) {
    send("STATUS=" + text);
}

void Notifier::watchdog() {
    send("WATCHDOG=1");
}

std::optional<std::chrono::microseconds> Notifier::watchdog_interval() {
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) {
        return std::nullopt;
    }
    return std::chrono::microseconds{static_cast<std::int64_t>(usec / 2)};
}

} // namespace retentiond
