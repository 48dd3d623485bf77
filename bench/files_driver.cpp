// Runs one files rule (Tally export, "Submitted at", 2 years, delete) over a directory, the way
// the daemon would, and prints what it did. Used by bench/files_bench.sh.
//   files_driver ROOT [GLOB]
#include "engines/files/files_kind.hpp"
#include "retentiond/timeutil.hpp"

#include <cstdio>

int main(int argc, char** argv) {
    using namespace retentiond;
    if (argc < 2) {
        std::fprintf(stderr, "usage: files_driver ROOT [GLOB]\n");
        return 64;
    }
    Datastore store;
    store.name = "bench";
    store.kind = &files_kind();
    store.spec = spec_ptr(FilesStore(argv[1]));
    Config config;
    config.daemon.timezone = "UTC";
    Rule rule;
    rule.name = "cqlp-satisfaction-forms";
    rule.datastore = "bench";
    rule.kind = &files_kind();
    rule.retain = parse_duration("2 years");
    rule.limits = Limits{std::nullopt, 1.0};
    FilesRule spec;
    spec.files = argc > 2 ? argv[2] : "**/*_Submissions_*.csv";
    spec.clock.field = "Submitted at";
    spec.clock.format = "%Y-%m-%d %H:%M:%S";
    rule.spec = spec_ptr(spec);
    const Secret key("bench-key");
    RunContext ctx;
    ctx.run_id = "bench";
    ctx.tz = find_zone("UTC");
    ctx.audit_key = &key;
    auto engine = make_files_engine(store, config);
    const auto r = engine->purge(rule, ctx);
    std::printf("status=%d processed=%lld due=%lld batches=%lld %s\n", static_cast<int>(r.status),
                static_cast<long long>(r.processed), static_cast<long long>(r.due),
                static_cast<long long>(r.batches), r.message.c_str());
    return r.status == RunResult::Status::ok ? 0 : 1;
}
