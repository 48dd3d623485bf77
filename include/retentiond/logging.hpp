#pragma once

namespace retentiond {

// spdlog to stderr. Under systemd (JOURNAL_STREAM set) lines carry no timestamp (journald adds
// one) and start with a syslog priority prefix ("<6>") so journald files them at the right level.
void setup_logging();

} // namespace retentiond
