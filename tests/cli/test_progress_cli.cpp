// Progress of `purge --now` through the real binary: on a pseudo-terminal (script(1)), in the
// log when stderr is not a terminal, and as sd_notify STATUS= lines.
#include "support/process.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace retentiond::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Three exports of 1200 due records each (and one kept record): 3,600 due, one progress call
// per file.
struct Site {
    TempDir dir;
    std::string config;
    Site() {
        for (int f = 1; f <= 3; ++f) {
            std::string csv = "\"Submission ID\",\"Submitted at\"\n";
            for (int i = 0; i < 1200; ++i) {
                csv += "s" + std::to_string(f) + "-" + std::to_string(i) + ",2020-03-01 10:00:00\n";
            }
            csv += "keep,2099-01-01 10:00:00\n";
            dir.write("exports/Form_Submissions_" + std::to_string(f) + ".csv", csv);
        }
        dir.write("audit-key", "demo-key-0123456789\n");
        config =
            dir.write("retentiond.yaml",
                      "version: 1\ndaemon:\n  audit_log: " + dir.file("audit.jsonl") +
                          "\n  audit_key: ${file:" + dir.file("audit-key") +
                          "}\n  metrics: \"off\"\n"
                          "datastores:\n  exports: { kind: files, root: " +
                          dir.file("exports") +
                          " }\n"
                          "rules:\n  - name: forms\n    datastore: exports\n"
                          "    category: Formulaires\n    files: \"*_Submissions_*.csv\"\n"
                          "    format: csv\n"
                          "    clock: { field: \"Submitted at\", format: \"%Y-%m-%d %H:%M:%S\" }\n"
                          "    retain: 2 years\n    action: delete\n"
                          "    limits: { max_fraction: 1 }\n");
    }
};

TEST(ProgressCli, OnATerminalABarWithPercentGroupedNumbersAndPhase) {
    Site site;
    // script(1) gives the binary a pseudo-terminal for stdin, stdout and stderr.
    const auto r = shell("script -qec '" + std::string(RETENTIOND_BINARY) + " --config " +
                         site.config + " purge --now' /dev/null");
    ASSERT_EQ(r.status, 0) << r.text;
    EXPECT_THAT(r.text, HasSubstr("\r\033[Kforms  counting..."));
    EXPECT_THAT(r.text, HasSubstr("\r\033[Kforms  batches..."));
    // (Lines closer than 100 ms apart are not all drawn: the last one always is.)
    EXPECT_THAT(r.text, HasSubstr("forms  [####################] 100.0%  3,600/3,600  "));
    EXPECT_THAT(r.text, HasSubstr("/s  batches\r\033[K")); // the phase, then cleared
    EXPECT_THAT(r.text, HasSubstr("forms"));               // then the summary table
    // The old form is gone.
    EXPECT_THAT(r.text, Not(HasSubstr("forms: 1200/3600")));
}

TEST(ProgressCli, OffATerminalProgressLinesGoToTheLog) {
    Site site;
    // Every progress call logs with a zero interval (the default is 10 s).
    const auto r = run_retentiond({"--config", site.config, "purge", "--now"},
                                  {{"RETENTIOND_PROGRESS_EVERY", "0"}});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.err, HasSubstr("rule forms: batches, 1,200/3,600 due records done (33.3%)"));
    EXPECT_THAT(r.err, HasSubstr("rule forms: batches, 3,600/3,600 due records done (100.0%)"));
    EXPECT_THAT(r.err, Not(HasSubstr("\033[K"))); // no terminal control codes in a log

    // With the default interval a short purge logs no progress line.
    Site quiet;
    const auto q = run_retentiond({"--config", quiet.config, "purge", "--now"});
    ASSERT_EQ(q.exit_code, 0) << q.err;
    EXPECT_THAT(q.err, Not(HasSubstr("due records done")));

    const auto bad = run_retentiond({"--config", quiet.config, "purge", "--now"},
                                    {{"RETENTIOND_PROGRESS_EVERY", "soon"}});
    EXPECT_EQ(bad.exit_code, 64);
}

TEST(ProgressCli, StatusLinesCarryDoneAndDue) {
    Site site;
    const std::string path = site.dir.file("notify.sock");
    const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    ASSERT_LT(path.size(), sizeof(addr.sun_path));
    std::copy(path.begin(), path.end(), addr.sun_path);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const auto r =
        run_retentiond({"--config", site.config, "purge", "--now"}, {{"NOTIFY_SOCKET", path}});
    std::vector<std::string> messages;
    char buf[4096];
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0;) {
        messages.emplace_back(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(messages, ::testing::Contains("STATUS=purging forms (counting)"));
    EXPECT_THAT(messages,
                ::testing::Contains("STATUS=purging forms (batches): 3,600/3,600 (100.0%)"));
}

} // namespace
} // namespace retentiond::test
