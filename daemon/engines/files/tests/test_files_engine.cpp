// The files engine on real files: byte-exact rewrites, atomic replacement, failure safety.
#include "contract/contract.hpp"

#include "csv.hpp"
#include "files_kind.hpp"
#include "retentiond/config.hpp"
#include "retentiond/registry.hpp"
#include "retentiond/timeutil.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace retentiond {
namespace {

namespace fs = std::filesystem;
using test::RecordingJournal;
using ::testing::HasSubstr;

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void spit(const fs::path& p, std::string_view data) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << data;
}

std::string fixture(const std::string& name) {
    return slurp(fs::path(RETENTIOND_SOURCE_DIR) / "tests/fixtures/files" / name);
}

void set_mtime(const fs::path& p, std::chrono::seconds ago) {
    const auto t = std::chrono::system_clock::now() - ago;
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch());
    const timespec times[2] = {{secs.count(), 0}, {secs.count(), 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
}

struct stat stat_of(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st;
}

// The raw bytes of the records whose first field is not in drop, in order.
std::string without(std::string_view csv_text, const std::set<std::string>& drop) {
    csv::Reader reader(csv::string_reader(csv_text));
    csv::Record rec;
    std::string out;
    bool header = true;
    while (reader.next(rec)) {
        if (header || rec.blank() || drop.count(rec.value(0)) == 0) {
            out += rec.raw();
        }
        header = false;
    }
    return out;
}

class FilesEngine : public ::testing::Test {
protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "retentiond-files-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        m_dir = tmpl;
        m_root = m_dir / "root";
        fs::create_directories(m_root);
        m_store.name = "exports";
        m_store.kind = &files_kind();
        m_store.spec = spec_ptr(FilesStore(m_root.string()));
        m_config.daemon.timezone = "Europe/Paris";
        m_engine = make_files_engine(m_store, m_config);
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(m_dir, ec);
    }

    static Rule rule(const std::string& glob, FilesRule::Format format, const std::string& retain) {
        Rule r;
        r.name = "forms";
        r.datastore = "exports";
        r.kind = &files_kind();
        r.retain = parse_duration(retain);
        r.limits = Limits{std::nullopt, 1.0};
        FilesRule spec;
        spec.files = glob;
        spec.format = format;
        r.spec = spec_ptr(spec);
        return r;
    }
    static Rule tally_rule(const std::string& retain = "2 years") {
        auto r = rule("**/*.csv", FilesRule::Format::csv, retain);
        auto& spec = edit_spec<FilesRule>(r);
        spec.clock.field = "Submitted at";
        spec.clock.format = "%Y-%m-%d %H:%M:%S";
        spec.hold = FilesHold{"Legal hold", "yes"};
        return r;
    }
    static FilesRule& spec(Rule& r) { return edit_spec<FilesRule>(r); }

    RunContext ctx(BatchJournal* journal) {
        RunContext c;
        c.run_id = "test";
        c.tz = find_zone("Europe/Paris");
        c.audit_key = &m_key;
        c.journal = journal;
        return c;
    }
    RunResult purge(const Rule& r) {
        auto c = ctx(&m_journal);
        return m_engine->purge(r, c);
    }
    DryRun dry(const Rule& r) { return m_engine->dry_run(r, ctx(nullptr)); }

    std::vector<std::string> entries(const fs::path& dir) {
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(dir)) {
            names.push_back(e.path().filename().string());
        }
        std::sort(names.begin(), names.end());
        return names;
    }

    fs::path m_dir;
    fs::path m_root;
    Datastore m_store;
    Config m_config;
    std::unique_ptr<Engine> m_engine;
    RecordingJournal m_journal;
    Secret m_key{"test-audit-key"};
};

const char* const k_tally = "exports/Satisfaction_Submissions_2026-01-05.csv";

TEST_F(FilesEngine, RewriteDropsDueRecordsAndKeepsTheOthersByteForByte) {
    const auto input = fixture("tally_bom_crlf.csv");
    spit(m_root / k_tally, input);
    const auto result = purge(tally_rule());
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    EXPECT_EQ(slurp(m_root / k_tally), without(input, {"mVxA1b", "mVxA5f"}));
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].target, k_tally);
    EXPECT_EQ(m_journal.m_intents[0].keys, (std::vector<std::string>{"mVxA1b", "mVxA5f"}));
    ASSERT_EQ(m_journal.m_outcomes.size(), 1U);
    EXPECT_TRUE(m_journal.m_outcomes[0].committed);
    EXPECT_EQ(entries(m_root / "exports").size(), 1U) << "no temp file left behind";
}

TEST_F(FilesEngine, NothingDueLeavesTheFileUntouched) {
    spit(m_root / k_tally, fixture("tally_bom_crlf.csv"));
    set_mtime(m_root / k_tally, std::chrono::hours(24 * 400));
    const auto before = stat_of(m_root / k_tally);
    const auto result = purge(tally_rule("30 years"));
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 0);
    const auto after = stat_of(m_root / k_tally);
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
    EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
    EXPECT_TRUE(m_journal.m_intents.empty());
}

TEST_F(FilesEngine, RewrittenFileKeepsModeAndOwner) {
    spit(m_root / k_tally, fixture("tally_bom_crlf.csv"));
    ASSERT_EQ(::chmod((m_root / k_tally).c_str(), 0640), 0);
    const bool root = ::geteuid() == 0;
    if (root) {
        ASSERT_EQ(::chown((m_root / k_tally).c_str(), 4321, 4322), 0);
    }
    const auto before = stat_of(m_root / k_tally);
    ASSERT_EQ(purge(tally_rule()).processed, 2);
    const auto after = stat_of(m_root / k_tally);
    EXPECT_NE(after.st_ino, before.st_ino) << "replaced by rename";
    EXPECT_EQ(after.st_mode & 07777, 0640U);
    EXPECT_EQ(after.st_uid, before.st_uid);
    EXPECT_EQ(after.st_gid, before.st_gid);
}

// A stop request (SIGTERM) made while the exports are counted ends the run in that pass: it was
// seen only once every file had been read (the read of a large export set, or of one blocked
// file, delayed it without bound). Nothing is replaced, no temp copy is left.
TEST_F(FilesEngine, AStopRequestedWhileCountingEndsTheRunBeforeTheNextFile) {
    std::map<std::string, std::string> texts;
    for (int f = 0; f < 5; ++f) {
        std::string text = "\"Submission ID\",\"Submitted at\"\n";
        for (int i = 0; i < 100; ++i) {
            text += "f" + std::to_string(f) + "-" + std::to_string(i) + "," +
                    (i % 2 == 0 ? "2020" : "2099") + "-01-01 00:00:00\n";
        }
        texts["f" + std::to_string(f) + ".csv"] = text;
        spit(m_root / ("f" + std::to_string(f) + ".csv"), text);
    }
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    auto c = ctx(&m_journal);
    std::vector<std::string> phases;
    bool stop = false;
    c.on_phase = [&](std::string_view p) {
        phases.emplace_back(p);
        stop = true; // SIGTERM arrives as the counting starts
    };
    c.stop_requested = [&] { return stop; };
    const auto result = m_engine->purge(r, c);
    EXPECT_EQ(result.status, RunResult::Status::stopped) << result.message;
    EXPECT_EQ(result.processed, 0);
    EXPECT_EQ(phases, (std::vector<std::string>{"counting"})) << "went on past the counting";
    EXPECT_TRUE(m_journal.m_intents.empty());
    for (const auto& [name, text] : texts) {
        EXPECT_EQ(slurp(m_root / name), text) << name;
    }
    EXPECT_EQ(entries(m_root).size(), texts.size()) << "no temp copy left";
}

TEST_F(FilesEngine, DiskFullLeavesTheOriginalAndNoTempFile) {
    std::string big = "\"Submission ID\",\"Submitted at\",\"Email\",\"Commentaire\"\n";
    for (int i = 0; i < 4000; ++i) {
        big += "id" + std::to_string(i) + "," + (i % 10 == 0 ? "2020" : "2099") +
               "-01-01 00:00:00,x" + std::to_string(i) + "@example.fr,\"texte, \"\"libre\"\"\n" +
               std::string(40, 'z') + "\"\n";
    }
    spit(m_root / "big.csv", big);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // The child writes with a 64 KiB file size limit: write(2) fails with EFBIG.
        ::signal(SIGXFSZ, SIG_IGN);
        const rlimit lim{64 * 1024, 64 * 1024};
        ::setrlimit(RLIMIT_FSIZE, &lim);
        RecordingJournal journal;
        auto c = ctx(&journal);
        const auto result = m_engine->purge(r, c);
        const bool ok = result.status == RunResult::Status::failed && !result.data_error &&
                        result.message.find("big.csv") != std::string::npos &&
                        result.processed == 0 && journal.m_outcomes.size() == 1 &&
                        !journal.m_outcomes[0].committed;
        ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the run must fail naming the file, journaling no commit";
    EXPECT_EQ(slurp(m_root / "big.csv"), big);
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"big.csv"}));
}

// The same with an output of several blocks: the write that fails is the writer thread's, its
// error reaches the pass, the staged temp is dropped and the second read fails the same way.
TEST_F(FilesEngine, DiskFullOnTheWriterThreadLeavesTheOriginalAndNoTempFile) {
    std::string big = "\"Submission ID\",\"Submitted at\",\"Commentaire\"\n";
    for (int i = 0; big.size() < (std::size_t{8} << 20); ++i) {
        big += "id" + std::to_string(i) + "," + (i % 10 == 0 ? "2020" : "2099") +
               "-01-01 00:00:00,\"" + std::string(200, 'z') + "\"\n";
    }
    spit(m_root / "big.csv", big);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::signal(SIGXFSZ, SIG_IGN);
        const rlimit lim{3 << 20, 3 << 20}; // past the first block, before the end
        ::setrlimit(RLIMIT_FSIZE, &lim);
        RecordingJournal journal;
        auto c = ctx(&journal);
        const auto result = m_engine->purge(r, c);
        const bool ok = result.status == RunResult::Status::failed && !result.data_error &&
                        result.message.find("big.csv") != std::string::npos &&
                        result.processed == 0 && result.counters.count("files.two_pass") == 1 &&
                        std::none_of(journal.m_outcomes.begin(), journal.m_outcomes.end(),
                                     [](const auto& o) { return o.committed; });
        ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the run must fail naming the file, journaling no commit";
    EXPECT_EQ(slurp(m_root / "big.csv"), big);
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"big.csv"}));
}

TEST_F(FilesEngine, UnparseableRecordsLeaveTheFileUnchangedAndNameTheLine) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"unterminated.csv", "unterminated.csv:3: unterminated quoted field"},
        {"wrong_field_count.csv", "wrong_field_count.csv:3: 4 fields, the header has 3"},
        {"bad_timestamp.csv",
         "bad_timestamp.csv:3: unparseable timestamp in column \"Submitted at\""},
    };
    for (const auto& [name, expected] : cases) {
        spit(m_root / name, fixture(name));
    }
    const std::string good = "\"Submission ID\",\"Submitted at\",\"Email\"\ng1,2020-01-01 00:00:00,"
                             "g@example.fr\ng2,2099-01-01 00:00:00,h@example.fr\n";
    spit(m_root / "good.csv", good);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";

    const auto d = dry(r);
    EXPECT_EQ(d.counters.at("files"), 4);
    EXPECT_EQ(d.counters.at("files.unparseable"), 3);
    EXPECT_EQ(d.unparseable, 3);
    EXPECT_EQ(d.due, 1);

    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_TRUE(result.data_error);
    EXPECT_EQ(result.processed, 1) << "the good file is still processed";
    for (const auto& [name, expected] : cases) {
        EXPECT_EQ(slurp(m_root / name), fixture(name)) << name;
        EXPECT_NE(result.message.find(expected), std::string::npos) << result.message;
        EXPECT_TRUE(std::find(d.notes.begin(), d.notes.end(), expected) != d.notes.end())
            << expected;
    }
    EXPECT_EQ(result.message.find("example.fr"), std::string::npos) << "never content";
    EXPECT_EQ(slurp(m_root / "good.csv"), without(good, {"g1"}));
}

TEST_F(FilesEngine, SymlinksAreNotFollowedOutOfTheRoot) {
    const auto outside = m_dir / "outside";
    const std::string data = "\"Submission ID\",\"Submitted at\"\no1,2020-01-01 00:00:00\n";
    spit(outside / "secret.csv", data);
    fs::create_symlink(outside / "secret.csv", m_root / "link.csv");
    fs::create_directory_symlink(outside, m_root / "linkdir");
    // Dangling and relative, out of the root: described as such, not as "not followed".
    fs::create_symlink("../outside/gone.csv", m_root / "dangling.csv");
    fs::create_symlink("kept.csv", m_root / "inner.csv");
    auto r = rule("**/*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    const auto d = dry(r);
    EXPECT_EQ(d.in_scope, 0);
    for (const auto* expected : {"link.csv: symbolic link out of the datastore root, skipped",
                                 "dangling.csv: symbolic link out of the datastore root, skipped",
                                 "inner.csv: symbolic link not followed, skipped"}) {
        EXPECT_TRUE(std::find(d.notes.begin(), d.notes.end(), expected) != d.notes.end())
            << expected << " not in the notes: " << ::testing::PrintToString(d.notes);
    }
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::ok);
    EXPECT_EQ(result.processed, 0);
    EXPECT_EQ(slurp(outside / "secret.csv"), data);
    EXPECT_TRUE(fs::is_symlink(m_root / "link.csv"));
}

TEST_F(FilesEngine, GlobDoubleStarSpansDirectories) {
    const std::string data = "\"Submission ID\",\"Submitted at\"\nz,2020-01-01 00:00:00\n";
    for (const auto* p : {"top.csv", "a/one.csv", "a/b/c/deep.csv", "a/skip.txt", ".hidden.csv"}) {
        spit(m_root / p, data);
    }
    auto r = rule("**/*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    EXPECT_EQ(dry(r).counters.at("files"), 3);
    spec(r).files = "a/*.csv";
    EXPECT_EQ(dry(r).counters.at("files"), 1);
    spec(r).files = "a/**/deep.csv";
    EXPECT_EQ(dry(r).counters.at("files"), 1);
}

TEST_F(FilesEngine, SemicolonExportWithLineBreaks) {
    const auto input = fixture("semicolon.csv");
    spit(m_root / "s.csv", input);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    EXPECT_EQ(purge(r).processed, 2);
    EXPECT_EQ(slurp(m_root / "s.csv"), without(input, {"a1", "a3"}));
}

TEST_F(FilesEngine, AnonymizeRewritesOnlyTheListedFieldsOnce) {
    const auto input = fixture("tally_bom_crlf.csv");
    spit(m_root / k_tally, input);
    auto r = tally_rule();
    r.action = Action::anonymize;
    Strategy email;
    email.kind = Strategy::Kind::email_domain;
    Strategy null;
    null.kind = Strategy::Kind::null_value;
    r.anonymize = {{"Email", email, {}}, {"Prénom", null, {}}};
    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].action, "anonymize");

    const auto output = slurp(m_root / k_tally);
    csv::Reader before(csv::string_reader(input));
    csv::Reader after(csv::string_reader(output));
    csv::Record a;
    csv::Record b;
    while (before.next(a)) {
        ASSERT_TRUE(after.next(b));
        const auto key = a.blank() ? std::string() : a.value(0);
        if (key != "mVxA1b" && key != "mVxA5f") {
            EXPECT_EQ(a.raw(), b.raw()) << "untouched record " << key;
            continue;
        }
        ASSERT_EQ(a.size(), b.size());
        for (std::size_t i = 0; i < a.size(); ++i) {
            if (i == 3) {
                EXPECT_EQ(b.value(i), "");
            } else if (i == 4) {
                EXPECT_EQ(b.value(i).substr(0, 5), "anon-");
                EXPECT_EQ(b.value(i).substr(b.value(i).find('@')),
                          a.value(i).substr(a.value(i).find('@')));
            } else {
                EXPECT_EQ(a.raw_field(i), b.raw_field(i)) << "field " << i << " of " << key;
            }
        }
        EXPECT_EQ(a.line_ending(), b.line_ending());
    }
    EXPECT_FALSE(after.next(b));

    // Idempotent: the second run finds the records anonymized and does not rewrite the file.
    const auto st = stat_of(m_root / k_tally);
    const auto again = purge(r);
    EXPECT_EQ(again.processed, 0);
    EXPECT_EQ(stat_of(m_root / k_tally).st_ino, st.st_ino);
    EXPECT_EQ(m_engine->records_present(r, k_tally, {"mVxA1b"}), Presence::absent);
}

TEST_F(FilesEngine, AFileWithNoRecordLeftIsDeleted) {
    spit(m_root / "old.csv", "\"Submission ID\",\"Submitted at\"\r\nx1,2020-01-01 00:00:00\r\n"
                             "\r\nx2,2019-01-01 00:00:00");
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    const auto result = purge(r);
    EXPECT_EQ(result.processed, 2);
    EXPECT_EQ(result.counters.at("files.deleted"), 1);
    EXPECT_FALSE(fs::exists(m_root / "old.csv"));
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].keys, (std::vector<std::string>{"x1", "x2"}));
    EXPECT_EQ(m_engine->records_present(r, "old.csv", {"x1"}), Presence::absent);
}

// A journal that appends to the file while the rewrite is in flight (its intent is written
// before the rename), like an export tool writing at the wrong moment: on every intent, or only
// on the first `times` ones.
class MeddlingJournal : public RecordingJournal {
public:
    explicit MeddlingJournal(fs::path p, int times = -1) : m_path(std::move(p)), m_times(times) {}
    std::string intent(const BatchIntent& batch) override {
        if (m_times != 0) {
            --m_times;
            std::ofstream(m_path, std::ios::binary | std::ios::app) << "late,2099-01-01 00:00:00\n";
        }
        return RecordingJournal::intent(batch);
    }
    fs::path m_path;
    int m_times;
};

// Issue 23, item 4: a file that changes during every rewrite was skipped and the run said ok
// ("0 of 1 due"). It is now read and replaced again a bounded number of times (4 in all), then
// the rule fails with the count of the due records left: never ok while they remain.
TEST_F(FilesEngine, AFileThatChangesDuringEveryRewriteFailsTheRule) {
    const std::string data = "\"Submission ID\",\"Submitted at\"\nx1,2020-01-01 00:00:00\n"
                             "x2,2099-01-01 00:00:00\n";
    spit(m_root / "live.csv", data);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    MeddlingJournal journal(m_root / "live.csv");
    auto c = ctx(&journal);
    const auto result = m_engine->purge(r, c);
    EXPECT_EQ(result.status, RunResult::Status::failed) << result.message;
    EXPECT_FALSE(result.data_error);
    EXPECT_EQ(result.processed, 0);
    EXPECT_EQ(result.due, 1);
    EXPECT_EQ(result.counters.at("files.changed_during_rewrite"), 4);
    EXPECT_EQ(result.counters.at("verification.remaining"), 1);
    EXPECT_THAT(result.message,
                HasSubstr("live.csv: changed during each of 4 attempts to rewrite it, 1 due "
                          "record(s) remain"));
    std::string late;
    for (int i = 0; i < 4; ++i) {
        late += "late,2099-01-01 00:00:00\n";
    }
    EXPECT_EQ(slurp(m_root / "live.csv"), data + late) << "nothing dropped, every append kept";
    ASSERT_EQ(journal.m_outcomes.size(), 4U);
    for (const auto& o : journal.m_outcomes) {
        EXPECT_FALSE(o.committed);
    }
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"live.csv"}));
}

// A file that changed once is read again in the same run and its due record goes (it was left
// to the next run, the run saying ok).
TEST_F(FilesEngine, AFileChangedOnceIsReadAgainInTheSameRun) {
    const std::string data = "\"Submission ID\",\"Submitted at\"\nx1,2020-01-01 00:00:00\n"
                             "x2,2099-01-01 00:00:00\n";
    spit(m_root / "live.csv", data);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    MeddlingJournal journal(m_root / "live.csv", 1);
    auto c = ctx(&journal);
    const auto result = m_engine->purge(r, c);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(result.counters.at("files.changed_during_rewrite"), 1);
    EXPECT_EQ(result.counters.count("verification.remaining"), 0U);
    EXPECT_EQ(slurp(m_root / "live.csv"), "\"Submission ID\",\"Submitted at\"\n"
                                          "x2,2099-01-01 00:00:00\nlate,2099-01-01 00:00:00\n");
    ASSERT_EQ(journal.m_outcomes.size(), 2U);
    EXPECT_FALSE(journal.m_outcomes[0].committed);
    EXPECT_TRUE(journal.m_outcomes[1].committed);
}

TEST_F(FilesEngine, LargeExportWithDueRecordsAcrossBlockBoundaries) {
    std::string data = "\"Submission ID\",\"Submitted at\",\"Commentaire\"\r\n";
    std::set<std::string> due;
    std::vector<std::string> due_order;
    std::uint32_t seed = 12345;
    auto rnd = [&seed](std::uint32_t n) {
        seed = seed * 1664525U + 1013904223U;
        return (seed >> 8) % n;
    };
    auto add = [&](bool is_due, const std::string& comment) {
        const auto id = "s" + std::to_string(due_order.size() + data.size());
        data += id + (is_due ? ",2020-03-01 10:00:00," : ",2099-01-01 09:30:00,") + comment +
                (rnd(3) == 0 ? "\n" : "\r\n");
        if (is_due) {
            due.insert(id);
            due_order.push_back(id);
        }
    };
    auto comment = [&]() -> std::string {
        switch (rnd(4)) {
        case 0:
            return "court";
        case 1:
            return "\"avec, virgule et \"\"guillemets\"\"\"";
        case 2:
            return "\"sur\r\ndeux\nlignes\"";
        default:
            return std::string(rnd(400), 'x');
        }
    };
    while (data.size() < (std::size_t{5} << 20)) { // a kept run longer than 4 MiB
        add(false, comment());
    }
    add(true, "\"" + std::string(std::size_t{3} << 20, 'y') + "\n\"\"fin\"\"\""); // spans blocks
    while (data.size() < (std::size_t{12} << 20)) { // a mix, a due record every few records
        add(rnd(5) < 2, comment());
        if (rnd(50) == 0) {
            data += "\r\n";
        }
    }
    add(true, "dernier"); // the last record is due
    spit(m_root / "big.csv", data);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    r.batch_size = 1000000;
    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, static_cast<std::int64_t>(due.size()));
    EXPECT_EQ(slurp(m_root / "big.csv"), without(data, due));
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].keys, due_order);
}

// Between a file's pass and its rename (the journal's intents come in between), a writer edits
// a due record in place, keeping the size and putting the mtime back: the ctime still moves, so
// the staged copy is not renamed over the edit and nothing is dropped.
class RedatingJournal : public RecordingJournal {
public:
    RedatingJournal(fs::path p, std::size_t offset) : m_path(std::move(p)), m_offset(offset) {}
    std::string intent(const BatchIntent& batch) override {
        if (!m_done) {
            m_done = true;
            struct stat st {};
            EXPECT_EQ(::stat(m_path.c_str(), &st), 0);
            std::fstream f(m_path, std::ios::binary | std::ios::in | std::ios::out);
            f.seekp(static_cast<std::streamoff>(m_offset));
            f << "2099";
            f.close();
            const timespec times[2] = {st.st_atim, st.st_mtim};
            EXPECT_EQ(::utimensat(AT_FDCWD, m_path.c_str(), times, 0), 0);
        }
        return RecordingJournal::intent(batch);
    }
    fs::path m_path;
    std::size_t m_offset;
    bool m_done = false;
};

TEST_F(FilesEngine, ADueRecordIsDecidedAgainBeforeItIsDropped) {
    std::string data = "\"Submission ID\",\"Submitted at\"\nfirst,2020-01-01 00:00:00\n";
    for (int i = 0; data.size() < (std::size_t{9} << 20); ++i) { // past the reader's read-ahead
        data += "k" + std::to_string(i) + ",2099-01-01 00:00:00\n";
    }
    const auto offset = data.size() + 5;
    data += "late,2020-01-01 00:00:00\n";
    spit(m_root / "live.csv", data);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    r.batch_size = 1;
    RedatingJournal journal(m_root / "live.csv", offset);
    auto c = ctx(&journal);
    const auto result = m_engine->purge(r, c);
    // The edit fails the first rename; the file, read again in the same run, loses only the
    // record still due ("first"), never the redated one.
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(result.counters.at("files.changed_during_rewrite"), 1);
    auto expected = data;
    expected.replace(offset, 4, "2099");
    const std::string first = "first,2020-01-01 00:00:00\n";
    expected.erase(expected.find(first), first.size());
    EXPECT_TRUE(slurp(m_root / "live.csv") == expected) << "no record dropped";
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"live.csv"}));
}

TEST_F(FilesEngine, JsonLinesWithDottedPaths) {
    const auto input = fixture("submissions.jsonl");
    spit(m_root / "subs.jsonl", input);
    auto r = rule("*.jsonl", FilesRule::Format::jsonl, "2 years");
    spec(r).clock.field = "meta.submitted";
    spec(r).hold = FilesHold{"meta.hold", "true"};
    const auto d = dry(r);
    EXPECT_EQ(d.in_scope, 5);
    EXPECT_EQ(d.due, 2);
    EXPECT_EQ(d.held, 1);
    EXPECT_EQ(d.no_clock, 1);

    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2);
    // s1 and s5 (epoch seconds, last line without a line ending) go; the rest is kept verbatim.
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < input.size()) {
        const auto nl = input.find('\n', start);
        const auto end = nl == std::string::npos ? input.size() : nl + 1;
        lines.push_back(input.substr(start, end - start));
        start = end;
    }
    ASSERT_EQ(lines.size(), 6U);
    EXPECT_EQ(slurp(m_root / "subs.jsonl"), lines[1] + lines[2] + lines[3] + lines[4]);
    EXPECT_EQ(m_journal.m_intents.at(0).keys, (std::vector<std::string>{"s1", "s5"}));
}

TEST_F(FilesEngine, JsonLinesAnonymizeByDottedPath) {
    const auto input = fixture("submissions.jsonl");
    spit(m_root / "subs.jsonl", input);
    auto r = rule("*.jsonl", FilesRule::Format::jsonl, "2 years");
    spec(r).clock.field = "meta.submitted";
    r.action = Action::anonymize;
    Strategy email;
    email.kind = Strategy::Kind::email_domain;
    Strategy ip;
    ip.kind = Strategy::Kind::truncate_ip;
    r.anonymize = {{"user.email", email, {}}, {"user.ip", ip, {}}};
    EXPECT_EQ(purge(r).processed, 3); // s1, s3 (no hold in this rule), s5
    std::istringstream out(slurp(m_root / "subs.jsonl"));
    std::string line;
    std::map<std::string, nlohmann::json> docs;
    while (std::getline(out, line)) {
        if (line.find('{') != std::string::npos) {
            auto j = nlohmann::json::parse(line);
            docs[j["id"].get<std::string>()] = j;
        }
    }
    EXPECT_EQ(docs["s1"]["user"]["ip"], "192.0.2.0");
    EXPECT_EQ(docs["s1"]["user"]["email"].get<std::string>().substr(0, 5), "anon-");
    EXPECT_EQ(docs["s5"]["user"]["ip"], "198.51.100.0");
    EXPECT_EQ(docs["s2"]["user"]["email"], "b@example.fr");
    EXPECT_NE(slurp(m_root / "subs.jsonl")
                  .find("{\"user\": {\"email\": \"b@example.fr\", \"ip\": \"2001:db8:1:2::5\"}"),
              std::string::npos)
        << "untouched lines keep their bytes";
    EXPECT_EQ(purge(r).processed, 0) << "idempotent";
}

TEST_F(FilesEngine, InvalidJsonLineLeavesTheFileUnchanged) {
    spit(m_root / "bad.jsonl", fixture("invalid.jsonl"));
    auto r = rule("*.jsonl", FilesRule::Format::jsonl, "2 years");
    spec(r).clock.field = "t";
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_NE(result.message.find("bad.jsonl:2: invalid JSON"), std::string::npos)
        << result.message;
    EXPECT_EQ(slurp(m_root / "bad.jsonl"), fixture("invalid.jsonl"));
}

TEST_F(FilesEngine, WholeFilesByModificationTime) {
    spit(m_root / "logs/old.log", "x");
    spit(m_root / "logs/new.log", "y");
    set_mtime(m_root / "logs/old.log", std::chrono::hours(24 * 800));
    auto r = rule("logs/*.log", FilesRule::Format::whole, "2 years");
    spec(r).clock.kind = FilesClock::Kind::mtime;
    const auto d = dry(r);
    EXPECT_EQ(d.in_scope, 2);
    EXPECT_EQ(d.due, 1);
    const auto result = purge(r);
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(entries(m_root / "logs"), (std::vector<std::string>{"new.log"}));
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_EQ(m_journal.m_intents[0].keys, (std::vector<std::string>{"logs/old.log"}));
    EXPECT_EQ(
        m_engine->records_present(r, m_journal.m_intents[0].target, m_journal.m_intents[0].keys),
        Presence::absent);
}

TEST_F(FilesEngine, WholeTallyExportsByTheDateInTheirName) {
    for (const auto* name : {"Satisfaction_Submissions_2020-05-01.csv",
                             "Satisfaction_Submissions_2099-05-01.csv", "README.csv"}) {
        spit(m_root / name, "a\n");
    }
    auto r = rule("*.csv", FilesRule::Format::whole, "2 years");
    spec(r).clock.kind = FilesClock::Kind::filename;
    spec(r).clock.filename = "_Submissions_(\\d{4}-\\d{2}-\\d{2})\\.csv$";
    spec(r).clock.format = "%Y-%m-%d";
    const auto d = dry(r);
    EXPECT_EQ(d.due, 1);
    EXPECT_EQ(d.no_clock, 1);
    EXPECT_EQ(purge(r).processed, 1);
    EXPECT_EQ(entries(m_root),
              (std::vector<std::string>{"README.csv", "Satisfaction_Submissions_2099-05-01.csv"}));
}

TEST_F(FilesEngine, PhpSessionDirectoryWithTheExamplePolicy) {
    const auto config =
        load_config(std::string(RETENTIOND_SOURCE_DIR) + "/policies/examples/php-sessions.yaml",
                    [](const std::string&) { return std::nullopt; });
    const Rule* r = config.find_rule("php-sessions");
    ASSERT_NE(r, nullptr);
    spit(m_root / "sess_0a1b2c", "user|s:5:\"alice\";");
    spit(m_root / "sess_9f8e7d", "user|s:3:\"bob\";");
    spit(m_root / "php_errors.log", "x");
    set_mtime(m_root / "sess_0a1b2c", std::chrono::hours(30));
    set_mtime(m_root / "sess_9f8e7d", std::chrono::minutes(10));
    set_mtime(m_root / "php_errors.log", std::chrono::hours(24 * 90));
    const auto result = purge(*r);
    EXPECT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"php_errors.log", "sess_9f8e7d"}));
}

// --- the single pass and its staged temps ----------------------------------------------------

std::string tally_csv(const std::string& prefix, int kept, int due) {
    std::string data = "\"Submission ID\",\"Submitted at\",\"Commentaire\"\r\n";
    for (int i = 0; i < kept + due; ++i) {
        const bool is_due = i % 2 == 1 && i / 2 < due;
        data += prefix + std::to_string(i) +
                (is_due ? ",2020-01-01 00:00:00," : ",2099-01-01 00:00:00,") +
                (i % 3 == 0 ? "\"ligne\nsuivante, \"\"citée\"\"\"" : "court") + "\r\n";
    }
    return data;
}

std::set<std::string> due_ids(const std::string& prefix, int kept, int due) {
    std::set<std::string> ids;
    for (int i = 0; i < kept + due; ++i) {
        if (i % 2 == 1 && i / 2 < due) {
            ids.insert(prefix + std::to_string(i));
        }
    }
    return ids;
}

// Every file's pass is done (and its temp staged) before the limits are checked: the first file
// alone is within max_rows, the second one tips the run over. Nothing is replaced, no temp stays.
TEST_F(FilesEngine, ARefusalByLimitsDropsTheStagedTempsAndChangesNothing) {
    const auto a = tally_csv("a", 10, 3);
    const auto b = tally_csv("b", 10, 3);
    spit(m_root / "a.csv", a);
    spit(m_root / "b.csv", b);
    const auto ino_a = stat_of(m_root / "a.csv").st_ino;
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    r.limits.max_rows = 5;
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::refused) << result.message;
    EXPECT_EQ(result.due, 6);
    EXPECT_EQ(result.processed, 0);
    EXPECT_EQ(slurp(m_root / "a.csv"), a);
    EXPECT_EQ(slurp(m_root / "b.csv"), b);
    EXPECT_EQ(stat_of(m_root / "a.csv").st_ino, ino_a) << "not replaced, even by itself";
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"a.csv", "b.csv"})) << "no temp";
    EXPECT_TRUE(m_journal.m_intents.empty());

    r.limits.max_rows = 6; // the same run within the limit replaces both
    const auto ok = purge(r);
    EXPECT_EQ(ok.status, RunResult::Status::ok) << ok.message;
    EXPECT_EQ(ok.processed, 6);
    EXPECT_EQ(ok.counters.count("files.two_pass"), 0U) << "both went the single-pass way";
    EXPECT_EQ(slurp(m_root / "a.csv"), without(a, due_ids("a", 10, 3)));
    EXPECT_EQ(slurp(m_root / "b.csv"), without(b, due_ids("b", 10, 3)));
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"a.csv", "b.csv"}));
}

// The second file's temp is already being written (due records come first) when its last
// record turns out not to parse: that file is left byte for byte, its temp removed, and the
// first file (staged before) is still replaced, as with any unparseable file.
TEST_F(FilesEngine, AnUnparseableRecordInTheSecondFileDropsItsStagedTemp) {
    const auto a = tally_csv("a", 6, 2);
    const auto b = tally_csv("b", 6, 2) + "b99,2020-01-01 00:00:00,\"jamais fermé\r\n";
    spit(m_root / "a.csv", a);
    spit(m_root / "b.csv", b);
    const auto ino_b = stat_of(m_root / "b.csv").st_ino;
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    const auto result = purge(r);
    EXPECT_EQ(result.status, RunResult::Status::failed);
    EXPECT_TRUE(result.data_error);
    EXPECT_NE(result.message.find("b.csv:13: unterminated quoted field"), std::string::npos)
        << result.message;
    EXPECT_EQ(slurp(m_root / "b.csv"), b);
    EXPECT_EQ(stat_of(m_root / "b.csv").st_ino, ino_b);
    EXPECT_EQ(slurp(m_root / "a.csv"), without(a, due_ids("a", 6, 2)));
    EXPECT_EQ(result.processed, 2);
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"a.csv", "b.csv"})) << "no temp";
    ASSERT_EQ(m_journal.m_intents.size(), 1U) << "no intent for the unparseable file";
    EXPECT_EQ(m_journal.m_intents[0].target, "a.csv");
}

// More files than the run may hold staged temps for: the others are counted in the same pass and
// rewritten afterwards by the two-pass path, one at a time, with the same result.
TEST_F(FilesEngine, FilesPastTheStagingBudgetAreRewrittenByASecondRead) {
    constexpr int k_files = 20;
    std::vector<std::string> inputs;
    for (int f = 0; f < k_files; ++f) {
        inputs.push_back(tally_csv("f" + std::to_string(f) + "-", 5, 2));
        spit(m_root / ("f" + std::to_string(100 + f) + ".csv"), inputs.back());
    }
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 2 * k_files);
    EXPECT_EQ(result.counters.at("files.rewritten"), k_files);
    EXPECT_GT(result.counters.at("files.two_pass"), 0);
    EXPECT_LT(result.counters.at("files.two_pass"), k_files);
    std::vector<std::string> names;
    for (int f = 0; f < k_files; ++f) {
        const auto name = "f" + std::to_string(100 + f) + ".csv";
        names.push_back(name);
        EXPECT_EQ(slurp(m_root / name),
                  without(inputs[f], due_ids("f" + std::to_string(f) + "-", 5, 2)))
            << name;
    }
    EXPECT_EQ(entries(m_root), names) << "no temp";
    ASSERT_EQ(m_journal.m_intents.size(), static_cast<std::size_t>(k_files));
    for (int f = 0; f < k_files; ++f) {
        EXPECT_EQ(m_journal.m_intents[f].target, names[f]) << "replaced in file order";
    }
}

// Due keys are held in memory between the pass and the intents, within a budget (4 MiB): past
// it, they are spilled to a file and read back in order, so the file still goes the single-pass
// way and every key reaches the journal. (Before, the file was read a second time.) Long keys
// (written past the spill buffer) and short ones (through it) alternate.
TEST_F(FilesEngine, DueKeysPastTheirBudgetAreSpilledAndStaySinglePass) {
    std::string data = "\"Submission ID\",\"Submitted at\"\n";
    std::vector<std::string> due;
    std::set<std::string> due_set;
    for (int i = 0; i < 40; ++i) {
        const auto id =
            std::string((std::size_t{1} << 20) + 37 * i, static_cast<char>('a' + i % 26)) +
            std::to_string(i);
        data += id + (i % 4 != 3 ? ",2020-01-01 00:00:00\n" : ",2099-01-01 00:00:00\n");
        if (i % 4 != 3) {
            due.push_back(id);
            due_set.insert(id);
        }
        for (int k = 0; k < 1000; ++k) {
            const auto small = "s" + std::to_string(i) + "-" + std::to_string(k);
            data += small + (k % 3 != 0 ? ",2020-01-01 00:00:00\n" : ",2099-01-01 00:00:00\n");
            if (k % 3 != 0) {
                due.push_back(small);
                due_set.insert(small);
            }
        }
    }
    spit(m_root / "keys.csv", data);
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    r.batch_size = 100000;
    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, static_cast<std::int64_t>(due.size()));
    EXPECT_EQ(result.counters.count("files.two_pass"), 0U) << "keys spilled, not read again";
    EXPECT_EQ(slurp(m_root / "keys.csv"), without(data, due_set));
    ASSERT_EQ(m_journal.m_intents.size(), 1U);
    EXPECT_TRUE(m_journal.m_intents[0].keys == due) << "every key, in file order";
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"keys.csv"}));
}

// The temp is created at the first due record; the kept bytes before it are copied as they are
// (a BOM, CRLF, a quoted line break), and a file with nothing due never gets a temp.
TEST_F(FilesEngine, TheKeptPrefixBeforeTheFirstDueRecordIsCopiedByteForByte) {
    std::string data = "\xEF\xBB\xBF\"Submission ID\";\"Submitted at\";\"Note\"\r\n";
    for (int i = 0; data.size() < (std::size_t{3} << 20); ++i) {
        data += "k" + std::to_string(i) + ";2099-01-01 00:00:00;\"a;\r\nb\"\r\n";
    }
    data += "\r\nlate;2020-01-01 00:00:00;x\r\nafter;2099-01-01 00:00:00;y";
    spit(m_root / "late.csv", data);
    spit(m_root / "none.csv", "\"Submission ID\",\"Submitted at\"\nn1,2099-01-01 00:00:00\n");
    const auto none_before = stat_of(m_root / "none.csv");
    auto r = rule("*.csv", FilesRule::Format::csv, "2 years");
    spec(r).clock.field = "Submitted at";
    const auto result = purge(r);
    ASSERT_EQ(result.status, RunResult::Status::ok) << result.message;
    EXPECT_EQ(result.processed, 1);
    EXPECT_EQ(slurp(m_root / "late.csv"), without(data, {"late"}));
    const auto none_after = stat_of(m_root / "none.csv");
    EXPECT_EQ(none_after.st_ino, none_before.st_ino);
    EXPECT_EQ(none_after.st_ctim.tv_nsec, none_before.st_ctim.tv_nsec);
    EXPECT_EQ(entries(m_root), (std::vector<std::string>{"late.csv", "none.csv"}));
}

} // namespace
} // namespace retentiond
