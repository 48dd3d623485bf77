#pragma once

#include <iosfwd>

namespace retentiond {

// The whole command line. Returns the process exit code (errors.hpp).
int run_cli(int argc, char** argv, std::ostream& out, std::ostream& err);

} // namespace retentiond
