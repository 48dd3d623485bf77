// The coverage of every datastore: each kind's scan, then the acknowledgements. Shared by
// `retentiond coverage`, `check`'s summary line and the DPO report.
#include "retentiond/errors.hpp"
#include "retentiond/kind.hpp"
#include "retentiond/report.hpp"

#include <spdlog/spdlog.h>

namespace retentiond {

namespace {

StoreCoverage scan_store(const Config& config, const Datastore& store) {
    StoreCoverage out;
    out.datastore = store.name;
    std::vector<const Rule*> rules;
    for (const auto& rule : config.rules) {
        if (rule.datastore == store.name) {
            rules.push_back(&rule);
        }
    }
    try {
        out.scan = store.kind->scan_coverage(store, rules);
    } catch (const UnavailableError& e) {
        out.unavailable = true;
        out.error = e.what();
    } catch (const std::exception& e) {
        // The message names a table or a statement, never a value (the scans keep none).
        out.error = e.what();
    }
    if (!out.error.empty()) {
        spdlog::warn("coverage: datastore {}: {}", store.name, out.error);
    }
    return out;
}

} // namespace

CoverageReport collect_coverage(const Config& config, const std::optional<std::string>& datastore) {
    if (datastore && config.datastores.count(*datastore) == 0) {
        throw UsageError("coverage: unknown datastore \"" + *datastore + "\"");
    }
    CoverageReport report;
    for (const auto& [name, store] : config.datastores) {
        if (datastore && name != *datastore) {
            continue;
        }
        report.stores.push_back(scan_store(config, store));
    }
    report.stale = apply_acknowledgements(report.stores, config.coverage_ignores, !datastore);
    return report;
}

} // namespace retentiond
