#include "retentiond/audit.hpp"
#include "retentiond/crypto.hpp"

#include "support/process.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <thread>

namespace retentiond {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

const Secret k_key{"test-audit-key-7c1e2f"};

TimePoint cutoff_2025() {
    return TimePoint(std::chrono::sys_days(std::chrono::year{2025} / 1 / 31));
}

BatchIntent make_batch(std::string rule, std::vector<std::string> keys) {
    BatchIntent b;
    b.rule = std::move(rule);
    b.datastore = "dora";
    b.target = "accounts_user";
    b.action = "delete";
    b.cutoff = cutoff_2025();
    b.keys = std::move(keys);
    return b;
}

Config make_config() {
    Config c;
    c.main_file = "/etc/retentiond/retentiond.yaml";
    c.files = {c.main_file};
    c.sha256 = std::string(64, 'a');
    Rule r;
    r.name = "accounts";
    c.rules.push_back(r);
    return c;
}

std::string slurp(const std::string& path) {
    return test::read_file(path);
}

void spit(const std::string& path, const std::string& content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
}

std::vector<std::string> read_lines(const std::string& path) {
    std::vector<std::string> lines;
    std::string text = slurp(path);
    std::size_t start = 0;
    while (start < text.size()) {
        auto nl = text.find('\n', start);
        if (nl == std::string::npos) {
            lines.push_back(text.substr(start));
            break;
        }
        lines.push_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    return lines;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
    std::string text;
    for (const auto& l : lines) {
        text += l + "\n";
    }
    spit(path, text);
}

// Seven lines: run_start, intent, committed outcome, refusal, intent, rolled-back outcome,
// run_end.
void write_standard_log(const std::string& path) {
    AuditLog log(path, k_key, "run-1");
    log.run_start(make_config(), "purge");
    const auto b1 = log.intent(make_batch("accounts", {"alice@example.org", "bob@example.org"}));
    log.outcome(b1, true, 2);
    log.event("refusal", {{"rule", "accounts"}, {"due", 120}, {"max_rows", 100}});
    const auto b2 = log.intent(make_batch("accounts", {"carol@example.org"}));
    log.outcome(b2, false, 0);
    log.run_end("ok", json::array({{{"rule", "accounts"}, {"processed", 2}}}));
}

void replace_once(std::string& s, const std::string& from, const std::string& to) {
    const auto at = s.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    s.replace(at, from.size(), to);
}

// --- the chain ------------------------------------------------------------------------------

TEST(AuditLog, ChainVerifiesAndCounts) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    const auto r = verify_audit_log(path);
    EXPECT_TRUE(r.ok) << r.bad_line << ": " << r.reason;
    EXPECT_EQ(r.lines, 7u);
    EXPECT_EQ(r.runs, 1u);
    EXPECT_EQ(r.records, 2u);
    EXPECT_EQ(r.note, "");
}

TEST(AuditLog, LineFormat) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    const auto lines = read_lines(path);
    ASSERT_EQ(lines.size(), 7u);
    std::string prev(64, '0');
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto j = json::parse(lines[i]);
        EXPECT_EQ(j.at("v"), 1);
        EXPECT_EQ(j.at("seq"), i + 1);
        EXPECT_EQ(j.at("run"), "run-1");
        EXPECT_EQ(j.at("prev"), prev);
        EXPECT_EQ(j.at("ts").get<std::string>().size(), 27u); // 2026-08-14T11:22:05.000000Z
        prev = sha256_hex(lines[i]);
    }
    const auto start = json::parse(lines[0]);
    EXPECT_EQ(start.at("type"), "run_start");
    EXPECT_EQ(start.at("config_sha256"), std::string(64, 'a'));
    EXPECT_EQ(start.at("mode"), "purge");
    EXPECT_EQ(start.at("rules"), json::array({"accounts"}));
    EXPECT_TRUE(start.contains("version"));

    const auto intent = json::parse(lines[1]);
    EXPECT_EQ(intent.at("type"), "intent");
    EXPECT_EQ(intent.at("batch"), "run-1-1");
    EXPECT_EQ(intent.at("rule"), "accounts");
    EXPECT_EQ(intent.at("datastore"), "dora");
    EXPECT_EQ(intent.at("target"), "accounts_user");
    EXPECT_EQ(intent.at("action"), "delete");
    EXPECT_EQ(intent.at("cutoff"), "2025-01-31T00:00:00.000000Z");
    EXPECT_EQ(intent.at("count"), 2);
    EXPECT_EQ(intent.at("digests"),
              json::array({hmac_sha256_hex(k_key.reveal(), "accounts\nalice@example.org"),
                           hmac_sha256_hex(k_key.reveal(), "accounts\nbob@example.org")}));

    const auto outcome = json::parse(lines[2]);
    EXPECT_EQ(outcome.at("type"), "outcome");
    EXPECT_EQ(outcome.at("batch"), "run-1-1");
    EXPECT_EQ(outcome.at("committed"), true);
    EXPECT_EQ(outcome.at("count"), 2);
    EXPECT_TRUE(lines[2].ends_with(R"("type":"outcome","v":1})"));

    const auto refusal = json::parse(lines[3]);
    EXPECT_EQ(refusal.at("type"), "refusal");
    EXPECT_EQ(refusal.at("max_rows"), 100);

    const auto end = json::parse(lines[6]);
    EXPECT_EQ(end.at("type"), "run_end");
    EXPECT_EQ(end.at("status"), "ok");
    EXPECT_EQ(end.at("summary").at(0).at("processed"), 2);
}

TEST(AuditLog, ReopenContinuesTheChain) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    {
        AuditLog log(path, k_key, "run-2");
        EXPECT_EQ(log.last_seq(), 7u);
        EXPECT_EQ(log.last_hash(), sha256_hex(read_lines(path).back()));
        log.run_start(make_config(), "daemon");
        EXPECT_EQ(log.last_seq(), 8u);
    }
    const auto r = verify_audit_log(path);
    EXPECT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.lines, 8u);
    EXPECT_EQ(r.runs, 2u);
}

TEST(AuditLog, NewRunIdIsTimestampPlusRandom) {
    const auto a = new_run_id();
    const auto b = new_run_id();
    EXPECT_NE(a, b);
    ASSERT_EQ(a.size(), 25u) << a; // 20260814T112205Z-1a2b3c4d
    EXPECT_EQ(a[8], 'T');
    EXPECT_EQ(a[15], 'Z');
    EXPECT_EQ(a[16], '-');
}

TEST(AuditLog, RecordDigestIsHmacOfRuleAndKey) {
    EXPECT_EQ(record_digest(k_key, "accounts", "42"),
              hmac_sha256_hex(k_key.reveal(), "accounts\n42"));
    EXPECT_NE(record_digest(k_key, "accounts", "42"), record_digest(k_key, "sessions", "42"));
    EXPECT_NE(record_digest(k_key, "accounts", "42"),
              record_digest(Secret("other"), "accounts", "42"));
}

// A digester (keys digested as an engine reads them) gives the digests intent() would give for
// the same keys, in the same layout.
TEST(AuditLog, TheDigesterWritesTheDigestsIntentWouldWrite) {
    TempDir dir;
    const std::vector<std::string> keys = {"42", "", "tab\there", "\xc3\xa9t\xc3\xa9",
                                           "[\"a\",\"b\"]"};
    const auto from_keys = dir.file("keys.jsonl");
    const auto from_digester = dir.file("digester.jsonl");
    {
        AuditLog log(from_keys, k_key, "run-1");
        log.intent(make_batch("accounts", keys));
    }
    {
        AuditLog log(from_digester, k_key, "run-1");
        auto batch = make_batch("accounts", {});
        const auto digest = log.digester("accounts");
        ASSERT_TRUE(digest);
        batch.digests.emplace();
        for (const auto& key : keys) {
            digest(key, *batch.digests);
        }
        log.intent(batch);
    }
    const auto a = json::parse(read_lines(from_keys).at(0));
    const auto b = json::parse(read_lines(from_digester).at(0));
    ASSERT_EQ(a["digests"].size(), keys.size());
    EXPECT_EQ(a["digests"], b["digests"]);
    EXPECT_EQ(b["count"], keys.size());
    EXPECT_EQ(a["digests"][2], record_digest(k_key, "accounts", "tab\there"));
    EXPECT_TRUE(verify_audit_log(from_digester).ok);
}

// Readers of the other fields parse a line without its digests; a line that is not JSON stays
// discarded, and a digests array in any other layout is parsed as it is.
TEST(AuditLog, ParseAuditLineLeavesTheDigestsOut) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    const auto line = read_lines(path).at(1); // the first intent, two digests
    const auto full = json::parse(line);
    ASSERT_EQ(full["digests"].size(), 2U);
    auto parsed = parse_audit_line(line);
    EXPECT_TRUE(parsed["digests"].empty());
    parsed["digests"] = full["digests"];
    EXPECT_EQ(parsed, full);
    EXPECT_TRUE(parse_audit_line(line.substr(0, line.size() - 1)).is_discarded());
    const std::string odd = R"({"type":"intent","digests":["not hex"],"count":1})";
    EXPECT_EQ(parse_audit_line(odd)["digests"].size(), 1U);
}

// --- tampering ------------------------------------------------------------------------------

VerifyResult verify_after(const std::function<void(std::vector<std::string>&)>& edit) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    auto lines = read_lines(path);
    edit(lines);
    write_lines(path, lines);
    return verify_audit_log(path);
}

TEST(AuditVerify, EditedMiddleLine) {
    const auto r =
        verify_after([](auto& lines) { replace_once(lines[3], "\"due\":120", "\"due\":920"); });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 4u);
    EXPECT_NE(r.reason.find("altered"), std::string::npos) << r.reason;
}

TEST(AuditVerify, EditedPrevOfAMiddleLine) {
    const auto r = verify_after([](auto& lines) {
        auto& l = lines[3];
        const auto at = l.find("\"prev\":\"") + 8;
        l[at] = l[at] == '0' ? '1' : '0';
    });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 4u) << r.reason;
}

TEST(AuditVerify, EditedLineBeforeTheLast) {
    const auto r =
        verify_after([](auto& lines) { replace_once(lines[5], "\"count\":0", "\"count\":5"); });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 6u) << r.reason;
}

TEST(AuditVerify, EditedFirstLine) {
    const auto r =
        verify_after([](auto& lines) { replace_once(lines[0], "\"purge\"", "\"daemon\""); });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 1u) << r.reason;
}

TEST(AuditVerify, DeletedLine) {
    const auto r = verify_after([](auto& lines) { lines.erase(lines.begin() + 3); });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 4u);
    EXPECT_NE(r.reason.find("seq 5, expected 4"), std::string::npos) << r.reason;
}

TEST(AuditVerify, SwappedPair) {
    const auto r = verify_after([](auto& lines) { std::swap(lines[2], lines[3]); });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 3u);
    EXPECT_NE(r.reason.find("seq 4, expected 3"), std::string::npos) << r.reason;
}

TEST(AuditVerify, TruncatedLastLine) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    auto text = slurp(path);
    text.resize(text.size() - 40);
    spit(path, text);
    const auto r = verify_audit_log(path);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 7u);
    EXPECT_NE(r.reason.find("incomplete"), std::string::npos) << r.reason;
}

TEST(AuditVerify, LastNewlineRemoved) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    auto text = slurp(path);
    text.pop_back();
    spit(path, text);
    const auto r = verify_audit_log(path);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 7u) << r.reason;
}

TEST(AuditVerify, InvalidJson) {
    const auto r =
        verify_after([](auto& lines) { lines[3] = lines[3].substr(0, lines[3].size() / 2); });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 4u);
    EXPECT_NE(r.reason.find("not valid JSON"), std::string::npos) << r.reason;
}

TEST(AuditVerify, NotAnObject) {
    const auto r = verify_after([](auto& lines) { lines[3] = "[1,2,3]"; });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 4u);
    EXPECT_NE(r.reason.find("not a JSON object"), std::string::npos) << r.reason;
}

TEST(AuditVerify, MissingField) {
    const auto r = verify_after([](auto& lines) {
        auto j = json::parse(lines[3]);
        j.erase("ts");
        lines[3] = j.dump();
    });
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 4u);
    EXPECT_NE(r.reason.find("\"ts\""), std::string::npos) << r.reason;
}

TEST(AuditVerify, EmptyFileIsIntact) {
    TempDir dir;
    const auto path = dir.write("audit.jsonl", "");
    const auto r = verify_audit_log(path);
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.lines, 0u);
}

TEST(AuditVerify, MissingFileThrows) {
    TempDir dir;
    EXPECT_THROW(verify_audit_log(dir.file("nope.jsonl")), std::runtime_error);
}

// --- rotation -------------------------------------------------------------------------------

TEST(AuditRotation, NewFileChainsToRotatedOne) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    fs::rename(path, path + ".1");
    {
        AuditLog log(path, k_key, "run-2");
        log.run_start(make_config(), "purge");
        log.run_end("ok", json::array());
    }
    const auto old_lines = read_lines(path + ".1");
    const auto first = json::parse(read_lines(path).front());
    EXPECT_EQ(first.at("seq"), 1);
    EXPECT_EQ(first.at("prev"), sha256_hex(old_lines.back()));

    auto r = verify_audit_log(path);
    EXPECT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.lines, 2u);
    EXPECT_NE(r.note.find("audit.jsonl.1"), std::string::npos) << r.note;
    EXPECT_TRUE(verify_audit_log(path + ".1").ok);

    // The rotated file's last line altered: the link breaks.
    auto edited = old_lines;
    replace_once(edited.back(), "\"ok\"", "\"no\"");
    write_lines(path + ".1", edited);
    r = verify_audit_log(path);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 1u);

    // The rotated file gone (archived elsewhere): accepted, with a note.
    fs::remove(path + ".1");
    r = verify_audit_log(path);
    EXPECT_TRUE(r.ok) << r.reason;
    EXPECT_NE(r.note.find("not present"), std::string::npos) << r.note;
}

TEST(AuditRotation, EmptyFileCreatedByLogrotateChainsToo) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    fs::rename(path, path + ".1");
    spit(path, "");
    {
        AuditLog log(path, k_key, "run-2");
        log.run_start(make_config(), "purge");
    }
    EXPECT_EQ(json::parse(read_lines(path).front()).at("prev"),
              sha256_hex(read_lines(path + ".1").back()));
    EXPECT_TRUE(verify_audit_log(path).ok);
}

TEST(AuditRotation, RotatedWhileOpen) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    AuditLog log(path, k_key, "run-1");
    log.run_start(make_config(), "daemon");
    log.event("recovery", {{"resolved", 0}});
    fs::rename(path, path + ".1"); // logrotate "create" mode, daemon still running
    log.run_end("ok", json::array());
    ASSERT_EQ(read_lines(path + ".1").size(), 2u);
    ASSERT_EQ(read_lines(path).size(), 1u);
    EXPECT_EQ(json::parse(read_lines(path).front()).at("seq"), 1);
    EXPECT_TRUE(verify_audit_log(path + ".1").ok);
    const auto r = verify_audit_log(path);
    EXPECT_TRUE(r.ok) << r.reason;
    EXPECT_NE(r.note.find("last line of"), std::string::npos) << r.note;
}

TEST(AuditRotation, CopyTruncateWhileOpen) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    AuditLog log(path, k_key, "run-1");
    log.run_start(make_config(), "daemon");
    log.event("recovery", {{"resolved", 0}});
    fs::copy_file(path, path + ".1");
    fs::resize_file(path, 0); // logrotate "copytruncate" mode
    log.run_end("ok", json::array());
    ASSERT_EQ(read_lines(path).size(), 1u);
    EXPECT_EQ(json::parse(read_lines(path).front()).at("seq"), 1);
    EXPECT_TRUE(verify_audit_log(path).ok);
}

TEST(AuditRotation, ProveReadsRotatedFiles) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    std::string b2;
    {
        AuditLog log(path, k_key, "run-1");
        const auto b1 = log.intent(make_batch("accounts", {"alice@example.org"}));
        log.outcome(b1, true, 1);
        b2 = log.intent(make_batch("accounts", {"bob@example.org"}));
        fs::rename(path, path + ".1"); // rotated between bob's intent and outcome
        log.outcome(b2, true, 1);
    }
    fs::rename(path + ".1", path + ".2");
    fs::rename(path, path + ".1");
    {
        AuditLog log(path, k_key, "run-2");
        const auto b3 = log.intent(make_batch("accounts", {"carol@example.org"}));
        log.outcome(b3, true, 1);
    }
    EXPECT_EQ(prove(path, k_key, "accounts", "alice@example.org").size(), 1u);
    const auto bob = prove(path, k_key, "accounts", "bob@example.org");
    ASSERT_EQ(bob.size(), 1u);
    EXPECT_EQ(bob[0].batch, b2);
    EXPECT_EQ(prove(path, k_key, "accounts", "carol@example.org").size(), 1u);
    EXPECT_TRUE(verify_audit_log(path).ok);
    const auto r1 = verify_audit_log(path + ".1"); // its first line chains to path.2
    EXPECT_TRUE(r1.ok) << r1.reason;
    EXPECT_NE(r1.note.find("audit.jsonl.2"), std::string::npos) << r1.note;
}

// The daemon's workers (one per datastore) append to one AuditLog from several threads.
TEST(AuditThreads, ConcurrentWritersKeepOneLinearVerifiableChain) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    constexpr int k_threads = 4;
    constexpr int k_batches = 40;
    {
        AuditLog log(path, k_key, "run-1");
        log.run_start(make_config(), "daemon");
        std::vector<std::thread> threads;
        for (int t = 0; t < k_threads; ++t) {
            threads.emplace_back([&log, t] {
                for (int i = 0; i < k_batches; ++i) {
                    const auto key = "t" + std::to_string(t) + "-" + std::to_string(i);
                    const auto id = log.intent(make_batch("accounts", {key}));
                    // Another worker's pending scan must never take this in-flight batch.
                    EXPECT_TRUE(log.pending().empty());
                    log.outcome(id, true, 1);
                    log.event("rule_end", {{"rule", "accounts"}, {"ok", true}});
                }
            });
        }
        for (auto& th : threads) {
            th.join();
        }
        EXPECT_EQ(log.last_seq(), 1u + 3u * k_threads * k_batches);
    }
    const auto result = verify_audit_log(path);
    EXPECT_TRUE(result.ok) << result.reason << " at line " << result.bad_line;
    EXPECT_EQ(result.lines, 1u + 3u * k_threads * k_batches);
    EXPECT_EQ(result.records, static_cast<std::uint64_t>(k_threads * k_batches));
    // Batch ids are unique: every key is proven by exactly one batch.
    std::set<std::string> batches;
    for (int t = 0; t < k_threads; ++t) {
        for (int i = 0; i < k_batches; i += 13) {
            const auto key = "t" + std::to_string(t) + "-" + std::to_string(i);
            const auto proof = prove(path, k_key, "accounts", key);
            ASSERT_EQ(proof.size(), 1u) << key;
            EXPECT_TRUE(batches.insert(proof[0].batch).second);
        }
    }
    EXPECT_FALSE(fs::exists(path + ".pending") && !fs::is_empty(path + ".pending"));
}

// --- crash consistency ----------------------------------------------------------------------

TEST(AuditCrash, IntentWithoutOutcomeIsPendingWithItsKeys) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    std::string batch_id;
    {
        AuditLog crashed(path, k_key, "run-1");
        crashed.run_start(make_config(), "purge");
        batch_id = crashed.intent(make_batch("accounts", {"alice@example.org", "bob@example.org"}));
        EXPECT_TRUE(crashed.pending().empty()); // its own batch in flight is not a leftover
        EXPECT_TRUE(fs::exists(crashed.pending_dir() + "/" + batch_id + ".json"));
    } // destroyed without outcome: the process died between intent and commit
    EXPECT_EQ(fs::status(path + ".pending").permissions() & fs::perms::all, fs::perms::owner_all);

    AuditLog log(path, k_key, "run-2");
    log.run_start(make_config(), "purge");
    const auto pending = log.pending();
    ASSERT_EQ(pending.size(), 1u);
    const auto& p = pending.front();
    EXPECT_EQ(p.batch_id, batch_id);
    EXPECT_EQ(p.batch.rule, "accounts");
    EXPECT_EQ(p.batch.datastore, "dora");
    EXPECT_EQ(p.batch.target, "accounts_user");
    EXPECT_EQ(p.batch.action, "delete");
    EXPECT_EQ(p.batch.cutoff, cutoff_2025());
    EXPECT_EQ(p.batch.keys, (std::vector<std::string>{"alice@example.org", "bob@example.org"}));

    log.resolve(p, true, "records gone: committed");
    EXPECT_TRUE(log.pending().empty());
    EXPECT_FALSE(fs::exists(log.pending_dir() + "/" + batch_id + ".json"));

    const auto last = json::parse(read_lines(path).back());
    EXPECT_EQ(last.at("type"), "outcome");
    EXPECT_EQ(last.at("batch"), batch_id);
    EXPECT_EQ(last.at("committed"), true);
    EXPECT_EQ(last.at("count"), 2);
    EXPECT_EQ(last.at("recovered"), "records gone: committed");
    EXPECT_EQ(last.at("run"), "run-2");

    const auto r = verify_audit_log(path);
    EXPECT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.records, 2u);
    const auto proof = prove(path, k_key, "accounts", "alice@example.org");
    ASSERT_EQ(proof.size(), 1u);
    EXPECT_EQ(proof[0].run_id, "run-1");
    EXPECT_EQ(proof[0].recovered, "records gone: committed");
}

TEST(AuditCrash, OwnBatchesWithoutOutcomeAreAbandonedPerDatastore) {
    // A run that lost its datastore mid-batch leaves intents without outcomes in this process:
    // pending() skips them (they carry this run id), abandoned() hands them to the daemon's worker.
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    AuditLog log(path, k_key, "run-1");
    log.run_start(make_config(), "purge");
    auto other = make_batch("sessions", {"sess:1"});
    other.datastore = "cache";
    const auto settled = log.intent(make_batch("accounts", {"carol@example.org"}));
    const auto lost = log.intent(make_batch("accounts", {"alice@example.org", "bob@example.org"}));
    const auto elsewhere = log.intent(other);
    log.outcome(settled, true, 1);

    EXPECT_TRUE(log.pending().empty());
    const auto abandoned = log.abandoned("dora");
    ASSERT_EQ(abandoned.size(), 1u);
    EXPECT_EQ(abandoned[0].batch_id, lost);
    EXPECT_EQ(abandoned[0].batch.rule, "accounts");
    EXPECT_EQ(abandoned[0].batch.target, "accounts_user");
    EXPECT_EQ(abandoned[0].batch.keys,
              (std::vector<std::string>{"alice@example.org", "bob@example.org"}));
    ASSERT_EQ(log.abandoned("cache").size(), 1u);
    EXPECT_EQ(log.abandoned("cache")[0].batch_id, elsewhere);

    log.resolve(abandoned[0], false, "records still present: rolled back");
    EXPECT_TRUE(log.abandoned("dora").empty());
    EXPECT_FALSE(fs::exists(log.pending_dir() + "/" + lost + ".json"));
    EXPECT_EQ(log.abandoned("cache").size(), 1u);
    const auto last = json::parse(read_lines(path).back());
    EXPECT_EQ(last.at("batch"), lost);
    EXPECT_EQ(last.at("committed"), false);
    EXPECT_EQ(last.at("recovered"), "records still present: rolled back");
    EXPECT_TRUE(verify_audit_log(path).ok);
}

TEST(AuditCrash, RolledBackResolutionProvesNothing) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    {
        AuditLog crashed(path, k_key, "run-1");
        crashed.intent(make_batch("accounts", {"alice@example.org"}));
    }
    AuditLog log(path, k_key, "run-2");
    const auto pending = log.pending();
    ASSERT_EQ(pending.size(), 1u);
    log.resolve(pending[0], false, "records still present: rolled back");
    EXPECT_EQ(json::parse(read_lines(path).back()).at("count"), 0);
    EXPECT_TRUE(prove(path, k_key, "accounts", "alice@example.org").empty());
    EXPECT_EQ(verify_audit_log(path).records, 0u);
}

TEST(AuditCrash, PendingIntentFoundInRotatedFile) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    {
        AuditLog crashed(path, k_key, "run-1");
        crashed.intent(make_batch("accounts", {"alice@example.org"}));
        crashed.event("progress", {{"done", 0}});
    }
    fs::rename(path, path + ".1"); // logrotate ran before the restart
    AuditLog log(path, k_key, "run-2");
    const auto pending = log.pending();
    ASSERT_EQ(pending.size(), 1u);
    EXPECT_EQ(pending[0].batch_id, "run-1-1");
    log.resolve(pending[0], true, "records gone: committed");
    EXPECT_EQ(prove(path, k_key, "accounts", "alice@example.org").size(), 1u);
}

TEST(AuditCrash, LeftoversThatNeedNoResolution) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    std::string saved;
    std::string batch_id;
    {
        AuditLog log(path, k_key, "run-1");
        batch_id = log.intent(make_batch("accounts", {"alice@example.org"}));
        saved = slurp(log.pending_dir() + "/" + batch_id + ".json");
        log.outcome(batch_id, true, 1);
        // The outcome line is not fsynced by itself: the raw keys stay until a sync covers it.
        EXPECT_TRUE(fs::exists(log.pending_dir() + "/" + batch_id + ".json"));
        log.sync();
        EXPECT_FALSE(fs::exists(log.pending_dir() + "/" + batch_id + ".json"));
    }
    const std::string dir_path = path + ".pending";
    // Crash after the outcome line, before the file's removal.
    spit(dir_path + "/" + batch_id + ".json", saved);
    // Crash after the pending file, before the intent line: a batch the log never heard of.
    auto orphan = json::parse(saved);
    orphan["batch"] = "run-0-7";
    spit(dir_path + "/run-0-7.json", orphan.dump());
    // Crash while writing the pending file.
    spit(dir_path + "/run-0-8.json.tmp", "{\"batch\":\"run-0-8\",\"ke");

    AuditLog log(path, k_key, "run-2");
    EXPECT_TRUE(log.pending().empty());
    EXPECT_TRUE(fs::is_empty(dir_path));
    EXPECT_TRUE(verify_audit_log(path).ok);
}

// Keys are written to the pending file by hand when plain ASCII, through the JSON library when
// they need escaping: both kinds come back exactly.
TEST(AuditCrash, KeysNeedingEscapesSurviveExactly) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    const std::vector<std::string> keys = {
        "plain-1", "quo\"te", "back\\slash", "tab\there", "caf\xc3\xa9", "[\"7\",\"x\"]", ""};
    {
        AuditLog crashed(path, k_key, "run-1");
        crashed.intent(make_batch("accounts", keys));
    }
    AuditLog log(path, k_key, "run-2");
    const auto pending = log.pending();
    ASSERT_EQ(pending.size(), 1u);
    EXPECT_EQ(pending[0].batch.keys, keys);
}

TEST(AuditCrash, NonUtf8KeysSurviveExactly) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    const std::string odd_key = std::string("sess:\xff\xfe", 7) + "x";
    {
        AuditLog crashed(path, k_key, "run-1");
        auto b = make_batch("sessions", {odd_key});
        b.target = "sess:*";
        crashed.intent(b);
    }
    AuditLog log(path, k_key, "run-2");
    const auto pending = log.pending();
    ASSERT_EQ(pending.size(), 1u);
    EXPECT_EQ(pending[0].batch.keys, std::vector<std::string>{odd_key});
    EXPECT_EQ(pending[0].batch.target, "sess:*");
}

TEST(AuditCrash, TornTailIsRepairedAndRecorded) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    {
        AuditLog log(path, k_key, "run-1");
        log.run_start(make_config(), "purge");
        log.event("recovery", {{"resolved", 0}});
    }
    const std::string torn = R"({"action":"delete","batch":"run-1-1","co)";
    spit(path, slurp(path) + torn);
    auto r = verify_audit_log(path);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.bad_line, 3u);

    { AuditLog log(path, k_key, "run-2"); }
    const auto lines = read_lines(path);
    ASSERT_EQ(lines.size(), 3u);
    const auto repaired = json::parse(lines[2]);
    EXPECT_EQ(repaired.at("type"), "torn_tail_repaired");
    EXPECT_EQ(repaired.at("seq"), 3);
    EXPECT_EQ(repaired.at("bytes_dropped"), torn.size());
    EXPECT_EQ(repaired.at("dropped_sha256"), sha256_hex(torn));
    EXPECT_EQ(repaired.at("prev"), sha256_hex(lines[1]));
    r = verify_audit_log(path);
    EXPECT_TRUE(r.ok) << r.reason;
}

TEST(AuditCrash, TornFirstLine) {
    TempDir dir;
    const auto path = dir.write("audit.jsonl", R"({"type":"run_st)");
    {
        AuditLog log(path, k_key, "run-1");
        EXPECT_EQ(log.last_seq(), 1u);
    }
    const auto lines = read_lines(path);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(json::parse(lines[0]).at("prev"), std::string(64, '0'));
    EXPECT_TRUE(verify_audit_log(path).ok);
}

// --- failures -------------------------------------------------------------------------------

TEST(AuditLog, UnwritableLogThrowsNamingThePath) {
    TempDir dir;
    const auto path = dir.file("missing-dir/audit.jsonl");
    try {
        AuditLog log(path, k_key, "run-1");
        FAIL() << "no exception";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
    }
}

TEST(AuditLog, SecondWriterIsRefused) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    AuditLog first(path, k_key, "run-1");
    EXPECT_THROW(AuditLog(path, k_key, "run-2"), std::runtime_error);
}

TEST(AuditLog, EmptyKeyIsRefused) {
    TempDir dir;
    EXPECT_THROW(AuditLog(dir.file("audit.jsonl"), Secret(), "run-1"), std::runtime_error);
}

TEST(AuditLog, ReservedEventTypesAreRefused) {
    TempDir dir;
    AuditLog log(dir.file("audit.jsonl"), k_key, "run-1");
    EXPECT_THROW(log.event("outcome", json::object()), std::invalid_argument);
    EXPECT_THROW(log.event("intent", json::object()), std::invalid_argument);
}

// --- personal data --------------------------------------------------------------------------

TEST(AuditPrivacy, KeysNeverReachTheLog) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    const std::vector<std::string> keys = {"alice@example.org", "bob.martin@example.com",
                                           "+33612345678", "FR7630006000011234567890189"};
    {
        AuditLog log(path, k_key, "run-1");
        log.run_start(make_config(), "purge");
        const auto b = log.intent(make_batch("accounts", keys));
        log.outcome(b, true, static_cast<std::int64_t>(keys.size()));
        const auto b2 = log.intent(make_batch("accounts", {"carol@example.org"}));
        log.outcome(b2, false, 0);
        log.run_end("ok", json::array());
    }
    const auto text = slurp(path);
    for (const auto& k : keys) {
        EXPECT_EQ(text.find(k), std::string::npos) << k;
    }
    EXPECT_EQ(text.find("carol"), std::string::npos);
    EXPECT_EQ(text.find("example"), std::string::npos);
    EXPECT_EQ(text.find(k_key.reveal()), std::string::npos);
    EXPECT_TRUE(fs::is_empty(path + ".pending")); // the raw keys are gone once resolved
}

// --- prove ----------------------------------------------------------------------------------

TEST(AuditProve, FindsCommittedIgnoresRolledBackAndUnknown) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    write_standard_log(path);
    const auto alice = prove(path, k_key, "accounts", "alice@example.org");
    ASSERT_EQ(alice.size(), 1u);
    EXPECT_EQ(alice[0].run_id, "run-1");
    EXPECT_EQ(alice[0].action, "delete");
    EXPECT_EQ(alice[0].cutoff, "2025-01-31T00:00:00.000000Z");
    EXPECT_EQ(alice[0].target, "accounts_user");
    EXPECT_EQ(alice[0].batch, "run-1-1");
    EXPECT_EQ(alice[0].time, json::parse(read_lines(path)[1]).at("ts"));
    EXPECT_EQ(alice[0].committed_at, json::parse(read_lines(path)[2]).at("ts"));
    EXPECT_EQ(alice[0].recovered, "");

    EXPECT_TRUE(prove(path, k_key, "accounts", "carol@example.org").empty()); // rolled back
    EXPECT_TRUE(prove(path, k_key, "accounts", "dave@example.org").empty());  // never seen
    EXPECT_TRUE(prove(path, k_key, "sessions", "alice@example.org").empty()); // other rule
    EXPECT_TRUE(prove(path, Secret("wrong key"), "accounts", "alice@example.org").empty());
}

TEST(AuditProve, KeysLeftAloneByACommittedBatchAreNotProven) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    {
        AuditLog log(path, k_key, "run-1");
        const auto b = log.intent(make_batch("sessions", {"session:1", "session:2", "session:3"}));
        // session:2 was touched after it was read: the batch kept it.
        log.outcome_except(b, 2, {"session:2"});
    }
    EXPECT_EQ(prove(path, k_key, "sessions", "session:1").size(), 1u);
    EXPECT_TRUE(prove(path, k_key, "sessions", "session:2").empty());
    EXPECT_EQ(prove(path, k_key, "sessions", "session:3").size(), 1u);
    const auto log = slurp(path);
    EXPECT_EQ(log.find("session:2"), std::string::npos) << "unapplied keys are digested too";
    const auto verified = verify_audit_log(path);
    EXPECT_TRUE(verified.ok) << verified.reason;
    EXPECT_EQ(verified.records, 2u);
}

TEST(AuditProve, IntentWithoutOutcomeIsNotAProof) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    {
        AuditLog log(path, k_key, "run-1");
        log.intent(make_batch("accounts", {"alice@example.org"}));
    }
    EXPECT_TRUE(prove(path, k_key, "accounts", "alice@example.org").empty());
}

TEST(AuditProve, LinesLongerThanTheReadBuffer) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    std::vector<std::string> keys;
    for (int i = 0; i < 20000; ++i) { // a 1.3 MB intent line: more than one 1 MiB read
        keys.push_back("user-" + std::to_string(i));
    }
    {
        AuditLog log(path, k_key, "run-1");
        const auto id = log.intent(make_batch("accounts", keys));
        log.outcome(id, true, 20000);
        log.intent(make_batch("accounts", keys)); // last line, crashed: read backwards on open
    }
    AuditLog log(path, k_key, "run-2");
    EXPECT_EQ(log.last_seq(), 3u);
    const auto pending = log.pending();
    ASSERT_EQ(pending.size(), 1u);
    EXPECT_EQ(pending[0].batch.keys.size(), 20000u);
    log.resolve(pending[0], false, "records still present: rolled back");
    const auto r = verify_audit_log(path);
    EXPECT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.records, 20000u);
    EXPECT_EQ(prove(path, k_key, "accounts", "user-19999").size(), 1u);
}

TEST(AuditProve, LargeLogStreamsFast) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    constexpr int k_batches = 150;
    constexpr int k_batch_size = 5000; // ~335 kB per intent line: ~50 MB in all
    const auto t0 = std::chrono::steady_clock::now();
    {
        AuditLog log(path, k_key, "run-big");
        log.run_start(make_config(), "purge");
        std::vector<std::string> keys(k_batch_size);
        for (int b = 0; b < k_batches; ++b) {
            for (int i = 0; i < k_batch_size; ++i) {
                keys[static_cast<std::size_t>(i)] = "user-" + std::to_string(b * k_batch_size + i);
            }
            const auto id = log.intent(make_batch("accounts", keys));
            log.outcome(id, true, k_batch_size);
            if (b % 10 == 0) {
                log.event("progress", {{"rule", "accounts"}, {"done", b * k_batch_size}});
            }
        }
        log.run_end("ok", json::array());
    }
    const auto t1 = std::chrono::steady_clock::now();
    const auto size = fs::file_size(path);
    EXPECT_GT(size, 45u * 1000 * 1000);

    const auto found = prove(path, k_key, "accounts", "user-374999"); // batch 75, the last key
    const auto t2 = std::chrono::steady_clock::now();
    const auto missing = prove(path, k_key, "accounts", "user-99999999");
    const auto t3 = std::chrono::steady_clock::now();
    const auto verified = verify_audit_log(path);
    const auto t4 = std::chrono::steady_clock::now();

    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].batch, "run-big-75");
    EXPECT_TRUE(missing.empty());
    EXPECT_TRUE(verified.ok) << verified.reason;
    EXPECT_EQ(verified.records, static_cast<std::uint64_t>(k_batches) * k_batch_size);

    auto ms = [](auto d) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    std::cout << "[ bench    ] " << size / 1000000 << " MB log: written in " << ms(t1 - t0)
              << " ms, prove (found) " << ms(t2 - t1) << " ms, prove (never seen) " << ms(t3 - t2)
              << " ms, verify " << ms(t4 - t3) << " ms\n";
}

TEST(AuditCrash, LazyOutcomeSettledByTheNextSyncedLine) {
    TempDir dir;
    const auto path = dir.file("audit.jsonl");
    AuditLog log(path, k_key, "run-1");
    const auto b1 = log.intent(make_batch("accounts", {"alice@example.org"}));
    log.outcome(b1, true, 1);
    const auto b1_file = log.pending_dir() + "/" + b1 + ".json";
    EXPECT_TRUE(fs::exists(b1_file));
    // The next intent's fsync makes b1's outcome durable: its keys go, b2's stay in flight.
    const auto b2 = log.intent(make_batch("accounts", {"bob@example.org"}));
    EXPECT_FALSE(fs::exists(b1_file));
    EXPECT_TRUE(fs::exists(log.pending_dir() + "/" + b2 + ".json"));
    log.outcome(b2, false, 0);
    log.event("rule_end", json{{"rule", "accounts"}});
    EXPECT_TRUE(fs::is_empty(log.pending_dir()));
    EXPECT_TRUE(verify_audit_log(path).ok);
}

} // namespace
} // namespace retentiond
