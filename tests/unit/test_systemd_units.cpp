// The shipped units: systemd-analyze verify is clean and the sandbox scores <= 1.5.
#include "support/process.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>
#include <regex>
#include <string>

namespace retentiond::test {
namespace {

using Output = ShellOutput;

const std::string k_units = std::string(RETENTIOND_SOURCE_DIR) + "/systemd/";

// The units name /usr/sbin/retentiond; point them at the built binary so verify can check it.
std::string localized_unit(const TempDir& dir, const std::string& name) {
    auto text = read_file(k_units + name);
    const std::string installed = "/usr/sbin/retentiond";
    for (auto pos = text.find(installed); pos != std::string::npos;
         pos = text.find(installed, pos)) {
        text.replace(pos, installed.size(), RETENTIOND_BINARY);
        pos += std::string(RETENTIOND_BINARY).size();
    }
    return dir.write(name, text);
}

TEST(SystemdUnits, VerifyIsClean) {
    ASSERT_EQ(shell("command -v systemd-analyze").status, 0) << "systemd-analyze missing";
    TempDir dir;
    const auto service = localized_unit(dir, "retentiond.service");
    const auto purge = localized_unit(dir, "retentiond-purge.service");
    const auto timer = localized_unit(dir, "retentiond-purge.timer");
    const auto resume = localized_unit(dir, "retentiond-erase-resume.service");
    const auto resume_timer = localized_unit(dir, "retentiond-erase-resume.timer");
    const auto out = shell("systemd-analyze verify --man=no " + service + " " + purge + " " +
                           timer + " " + resume + " " + resume_timer);
    EXPECT_EQ(out.status, 0) << out.text;
    EXPECT_EQ(out.text, "") << out.text;
}

double exposure(const std::string& unit) {
    const auto out = shell("systemd-analyze security --offline=true --no-pager " + unit);
    const std::regex level(R"(Overall exposure level for \S+: ([0-9.]+))");
    std::smatch m;
    if (!std::regex_search(out.text, m, level)) {
        ADD_FAILURE() << "no exposure level in: " << out.text;
        return 99;
    }
    return std::stod(m[1]);
}

TEST(SystemdUnits, SandboxExposureAtMostOnePointFive) {
    ASSERT_EQ(shell("command -v systemd-analyze").status, 0) << "systemd-analyze missing";
    EXPECT_LE(exposure(k_units + "retentiond.service"), 1.5);
    EXPECT_LE(exposure(k_units + "retentiond-purge.service"), 1.5);
    EXPECT_LE(exposure(k_units + "retentiond-erase-resume.service"), 1.5);
}

TEST(SystemdUnits, BadConfigIsNotRestarted) {
    const auto text = read_file(k_units + "retentiond.service");
    EXPECT_NE(text.find("RestartPreventExitStatus=78"), std::string::npos);
    EXPECT_NE(text.find("Type=notify"), std::string::npos);
    EXPECT_NE(text.find("WatchdogSec="), std::string::npos);
    EXPECT_NE(text.find("ExecReload=/bin/kill -HUP $MAINPID"), std::string::npos);
}

} // namespace
} // namespace retentiond::test
