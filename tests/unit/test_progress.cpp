#include "retentiond/progress.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace retentiond {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;

TEST(Progress, NumbersAreGroupedForReading) {
    EXPECT_EQ(group_digits(0), "0");
    EXPECT_EQ(group_digits(999), "999");
    EXPECT_EQ(group_digits(1000), "1,000");
    EXPECT_EQ(group_digits(1502436), "1,502,436");
    EXPECT_EQ(group_digits(-12345), "-12,345");
}

TEST(Progress, BarShowsTheFraction) {
    EXPECT_EQ(progress_bar(0.0, 10), "[----------]");
    EXPECT_EQ(progress_bar(0.5, 10), "[#####-----]");
    EXPECT_EQ(progress_bar(1.0, 10), "[##########]");
    EXPECT_EQ(progress_bar(1.7, 4), "[####]"); // clamped
}

TEST(Progress, TerminalLogAndStatusLines) {
    // The purge the report came from: 335752 of 1502436 after 2 s.
    const ProgressState s{"big", "batches", 335752, 1502436, 2000ms};
    EXPECT_EQ(progress_tty_line(s),
              "big  [####----------------] 22.3%  335,752/1,502,436  167,876/s  ETA 7s  batches");
    EXPECT_EQ(progress_log_line(s), "rule big: batches, 335,752/1,502,436 due records done "
                                    "(22.3%), 167,876/s, ETA 7s");
    EXPECT_EQ(progress_status(s), "purging big (batches): 335,752/1,502,436 (22.3%)");
    // Before the count: the phase alone.
    EXPECT_EQ(progress_tty_line({"big", "counting", 0, 0, 0ms}), "big  counting...");
    EXPECT_EQ(progress_status({"big", "counting", 0, 0, 0ms}), "purging big (counting)");
    // Long runs: minutes and hours.
    EXPECT_THAT(progress_log_line({"big", "batches", 1000, 1'000'000, 10s}),
                ::testing::EndsWith("ETA 2h46m"));
    EXPECT_THAT(progress_log_line({"big", "batches", 100'000, 1'000'000, 10s}),
                ::testing::EndsWith("ETA 1m30s"));
}

TEST(ProgressReporter, LogsEveryIntervalAndRedrawsTheTerminalAtMostTenTimesASecond) {
    std::chrono::steady_clock::time_point now{};
    std::vector<std::string> tty;
    std::vector<std::string> log;
    std::vector<std::string> status;
    ProgressReporter p({[&](const std::string& l) { tty.push_back(l); },
                        [&](const std::string& l) { log.push_back(l); },
                        [&](const std::string& l) { status.push_back(l); }},
                       10s, [&] { return now; });
    p.phase("big", "counting");
    p.phase("big", "batches");
    for (int i = 1; i <= 300; ++i) { // a batch every 100 ms for 30 s
        now += 100ms;
        p.progress("big", i * 1000, 300'000);
    }
    // A log line at 10 s, 20 s and 30 s, none before.
    EXPECT_THAT(log, ElementsAre("rule big: batches, 100,000/300,000 due records done (33.3%), "
                                 "10,000/s, ETA 20s",
                                 "rule big: batches, 200,000/300,000 due records done (66.7%), "
                                 "10,000/s, ETA 10s",
                                 "rule big: batches, 300,000/300,000 due records done (100.0%), "
                                 "10,000/s"));
    EXPECT_EQ(tty.size(), 302u); // two phases + every batch (100 ms apart)
    EXPECT_EQ(tty[0], "big  counting...");
    // STATUS= at most once a second (plus phase changes and the end).
    EXPECT_LE(status.size(), 2u + 30u + 1u);
    EXPECT_EQ(status.back(), "purging big (batches): 300,000/300,000 (100.0%)");

    // A new rule starts its own clock: a short one logs nothing.
    log.clear();
    p.phase("small", "batches");
    now += 500ms;
    p.progress("small", 10, 10);
    EXPECT_TRUE(log.empty());
    EXPECT_EQ(tty.back(), "small  [####################] 100.0%  10/10  20/s  batches");
}

} // namespace
} // namespace retentiond
