#include "retentiond/logging.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>

namespace retentiond {
namespace {

// sd-daemon(3) priority prefixes, by spdlog level.
class JournalFormatter : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        static constexpr const char* k_prefix[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
        const auto level = static_cast<std::size_t>(msg.level);
        const std::string prefix = level < 7 ? k_prefix[level] : "<6>";
        dest.append(prefix.data(), prefix.data() + prefix.size());
        dest.append(msg.payload.begin(), msg.payload.end());
        dest.push_back('\n');
    }
    std::unique_ptr<spdlog::formatter> clone() const override {
        return std::make_unique<JournalFormatter>();
    }
};

} // namespace

void setup_logging() {
    auto logger = spdlog::get("retentiond");
    if (!logger) {
        logger = spdlog::stderr_logger_mt("retentiond");
    }
    if (std::getenv("JOURNAL_STREAM") != nullptr) {
        logger->set_formatter(std::make_unique<JournalFormatter>());
    } else {
        logger->set_pattern("%Y-%m-%dT%H:%M:%S%z %l: %v");
    }
    if (const char* level = std::getenv("RETENTIOND_LOG_LEVEL")) {
        logger->set_level(spdlog::level::from_str(level));
    }
    spdlog::set_default_logger(logger);
}

} // namespace retentiond
