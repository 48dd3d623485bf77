// The YAML policy loader on arbitrary bytes: it may reject them (ConfigError), never crash.
#include "retentiond/config.hpp"
#include "retentiond/registry.hpp"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    char path[] = "/tmp/retentiond-fuzz-config-XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) {
        std::abort();
    }
    if (write(fd, data, size) != static_cast<ssize_t>(size)) {
        std::abort();
    }
    close(fd);
    const retentiond::EnvLookup env = [](const std::string& name) -> std::optional<std::string> {
        if (name == "DATABASE_URL") {
            return "host=/nonexistent dbname=x";
        }
        return std::nullopt;
    };
    try {
        retentiond::load_config(path, env);
    } catch (const retentiond::ConfigError&) {
    }
    unlink(path);
    return 0;
}
