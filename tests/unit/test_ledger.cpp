// The erasure ledger read back (ledger.hpp): one request from several events (the first gives the
// dates, the last the status, the counts add up), rotated files first, the open request of a
// subject, overdue decided against a given time, and a missing log read as an empty ledger.
#include "retentiond/audit.hpp"
#include "retentiond/audit_store.hpp"
#include "retentiond/ledger.hpp"
#include "retentiond/timeutil.hpp"

#include "support/process.hpp"

#include <gtest/gtest.h>

#include <filesystem>

namespace retentiond {
namespace {

TimePoint at(const char* text) {
    return *parse_timestamp(text, "", zone_or_utc(std::string_view("UTC")));
}

ErasureRequest request(const std::string& id, const std::string& subject, const char* received,
                       const std::string& status, std::int64_t erased, std::int64_t deferred) {
    ErasureRequest r;
    r.id = id;
    r.subject = subject;
    r.kind = "email";
    r.received = at(received);
    r.deadline = add(r.received, parse_duration("1 month"), zone_or_utc(std::string_view("UTC")));
    r.status = status;
    r.erased = erased;
    r.rules = {{"accounts", deferred > 0 ? "deferred" : "erased", erased, deferred, ""}};
    return r;
}

TEST(Ledger, ARequestIsItsEventsFirstDatesLastStatusCountsAddedUp) {
    test::TempDir dir;
    const auto path = dir.file("audit.jsonl");
    {
        AuditLog log(path, Secret("k"), "run-1");
        log.event(std::string(k_erasure_event),
                  erasure_event_fields(request("R1", "d1", "2026-01-10", "deferred", 3, 1)));
        log.event("refusal", {{"rule", "x"}});
    }
    std::filesystem::rename(path, path + ".1"); // rotated: read first
    {
        AuditLog log(path, Secret("k"), "run-2");
        log.event(std::string(k_erasure_event),
                  erasure_event_fields(request("R2", "d2", "2026-03-01", "done", 2, 0)));
        // A rerun of R1 with other dates: the first event's stay.
        log.event(std::string(k_erasure_event),
                  erasure_event_fields(request("R1", "d1", "2026-02-20", "done", 1, 0)));
    }
    const auto ledger = read_ledger(*file_audit_lines(path, true));
    ASSERT_EQ(ledger.size(), 2U);
    EXPECT_EQ(ledger[0].id, "R1");
    EXPECT_EQ(ledger[0].received, at("2026-01-10"));
    EXPECT_EQ(ledger[0].deadline, at("2026-02-10"));
    EXPECT_EQ(ledger[0].status, "done");
    EXPECT_EQ(ledger[0].erased, 4);
    EXPECT_EQ(ledger[0].deferred(), 0);
    EXPECT_FALSE(ledger[0].done_ts.empty());
    EXPECT_EQ(ledger[1].id, "R2");
    EXPECT_FALSE(open_request_for(ledger, "d1").has_value());
}

// The daemon's gauges read the ledger every few minutes: after the first read, only the lines
// added since are read (from the end); a rotation is followed, and a chain replaced by another
// one is read whole again. What the cache holds is always what read_ledger reads.
TEST(Ledger, TheCacheReadsOnlyTheLinesAddedSinceItsLastRead) {
    test::TempDir dir;
    const auto path = dir.file("audit.jsonl");
    const auto event = [&](const std::string& run, const ErasureRequest& r) {
        AuditLog log(path, Secret("k"), run);
        log.event(std::string(k_erasure_event), erasure_event_fields(r));
        log.event("refusal", {{"rule", "x"}});
    };
    const auto same = [&](const std::vector<ErasureRequest>& got) {
        const auto want = read_ledger(*file_audit_lines(path, true));
        ASSERT_EQ(got.size(), want.size());
        for (std::size_t i = 0; i < want.size(); ++i) {
            EXPECT_EQ(got[i].id, want[i].id);
            EXPECT_EQ(got[i].status, want[i].status);
            EXPECT_EQ(got[i].erased, want[i].erased);
            EXPECT_EQ(got[i].last_ts, want[i].last_ts);
        }
    };
    LedgerCache cache;
    EXPECT_TRUE(cache.refresh(*file_audit_lines(path, true)).empty()); // no log yet
    event("run-1", request("R1", "d1", "2026-01-10", "deferred", 3, 1));
    same(cache.refresh(*file_audit_lines(path, true)));
    EXPECT_EQ(cache.whole_reads(), 1);

    event("run-2", request("R1", "d1", "2026-01-10", "done", 1, 0)); // 2 lines
    const auto& after = cache.refresh(*file_audit_lines(path, true));
    same(after);
    ASSERT_EQ(after.size(), 1U);
    EXPECT_EQ(after[0].erased, 4); // each event once
    EXPECT_EQ(cache.lines_read(), 2U);
    EXPECT_EQ(cache.whole_reads(), 1);
    same(cache.refresh(*file_audit_lines(path, true)));
    EXPECT_EQ(cache.lines_read(), 0U); // nothing new

    std::filesystem::rename(path, path + ".1"); // rotated: the chain goes on in a new file
    event("run-3", request("R2", "d2", "2026-03-01", "deferred", 0, 2));
    same(cache.refresh(*file_audit_lines(path, true)));
    EXPECT_EQ(cache.lines_read(), 2U);
    EXPECT_EQ(cache.whole_reads(), 1);

    // Another chain in its place (the lines' seq start over): read whole again.
    std::filesystem::remove(path);
    std::filesystem::remove(path + ".1");
    event("run-4", request("R9", "d9", "2026-04-01", "done", 7, 0));
    event("run-5", request("R8", "d8", "2026-04-02", "done", 1, 0));
    const auto& other = cache.refresh(*file_audit_lines(path, true));
    same(other);
    ASSERT_EQ(other.size(), 2U);
    EXPECT_EQ(other[0].id, "R9");
    EXPECT_EQ(cache.whole_reads(), 2);
}

TEST(Ledger, OpenRequestsTurnOverdueAfterTheirDeadline) {
    test::TempDir dir;
    const auto path = dir.file("audit.jsonl");
    {
        AuditLog log(path, Secret("k"), "run-1");
        log.event(std::string(k_erasure_event),
                  erasure_event_fields(request("R3", "d3", "2026-01-10", "deferred", 0, 2)));
    }
    const auto ledger = read_ledger(*file_audit_lines(path, true));
    ASSERT_EQ(ledger.size(), 1U);
    EXPECT_TRUE(ledger[0].open());
    EXPECT_EQ(ledger[0].deferred(), 2);
    EXPECT_FALSE(ledger[0].overdue(at("2026-02-10")));
    EXPECT_TRUE(ledger[0].overdue(at("2026-02-10T00:00:01Z")));
    ASSERT_TRUE(open_request_for(ledger, "d3").has_value());
    EXPECT_EQ(open_request_for(ledger, "d3")->id, "R3");
    // No log at all (no run yet) is an empty ledger, not an error: `erase --status` before the
    // first run lists no request.
    EXPECT_TRUE(read_ledger(*file_audit_lines(dir.file("absent.jsonl"), true)).empty());
}

} // namespace
} // namespace retentiond
