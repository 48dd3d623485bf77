#pragma once

#include <iosfwd>
#include <string>

namespace retentiond {

// `retentiond run`: loads the config, opens the audit log, runs every rule on its schedule until
// SIGTERM/SIGINT, reloads on SIGHUP. Returns the process exit code (errors.hpp): 0 after a clean
// stop, 78 for an invalid config, 74 when the audit log cannot be written.
int run_daemon(const std::string& config_path, std::ostream& out, std::ostream& err);

} // namespace retentiond
