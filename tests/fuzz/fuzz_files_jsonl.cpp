// The files engine's JSONL and CSV paths end to end on arbitrary content: a dry run and a purge
// either process the file or leave it byte-identical; never crash.
#include "engines/files/files_kind.hpp"
#include "retentiond/config.hpp"
#include "retentiond/timeutil.hpp"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void run(const std::string& dir, retentiond::FilesRule::Format format, const std::string& name,
         std::string_view input) {
    const auto file = std::filesystem::path(dir) / name;
    {
        std::ofstream out(file, std::ios::binary | std::ios::trunc);
        out.write(input.data(), static_cast<std::streamsize>(input.size()));
    }
    retentiond::Config config;
    retentiond::Datastore store;
    store.name = "fz";
    store.kind = &retentiond::files_kind();
    store.spec = retentiond::spec_ptr(retentiond::FilesStore(dir));
    retentiond::Rule rule;
    rule.name = "fz";
    rule.datastore = "fz";
    rule.kind = &retentiond::files_kind();
    rule.retain = retentiond::parse_duration("1 year");
    rule.limits.max_fraction = 1.0;
    retentiond::FilesRule spec;
    spec.files = "*";
    spec.format = format;
    spec.clock.kind = retentiond::FilesClock::Kind::field;
    spec.clock.field = format == retentiond::FilesRule::Format::csv ? "at" : "meta.at";
    spec.hold = retentiond::FilesHold{"hold", "yes"};
    rule.spec = retentiond::spec_ptr(spec);
    const retentiond::Secret key("fuzz");
    retentiond::RunContext ctx;
    ctx.run_id = "fuzz";
    ctx.tz = retentiond::find_zone("Europe/Paris");
    ctx.audit_key = &key;
    auto engine = retentiond::make_files_engine(store, config);
    try {
        (void)engine->dry_run(rule, ctx);
        const auto result = engine->purge(rule, ctx);
        if (result.status != retentiond::RunResult::Status::ok && std::filesystem::exists(file) &&
            slurp(file) != input) {
            std::abort(); // a failed run must leave the file as it was
        }
    } catch (const std::exception&) {
        if (std::filesystem::exists(file) && slurp(file) != input) {
            std::abort();
        }
    }
    std::filesystem::remove(file);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string dir = [] {
        char tmpl[] = "/tmp/retentiond-fuzz-files-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) {
            std::abort();
        }
        return std::string(tmpl);
    }();
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    run(dir, retentiond::FilesRule::Format::jsonl, "a.jsonl", input);
    run(dir, retentiond::FilesRule::Format::csv, "a.csv", input);
    return 0;
}
