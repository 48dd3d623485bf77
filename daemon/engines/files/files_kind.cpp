// Kind files: its keys, its readers and its engine.
#include "files_kind.hpp"

namespace retentiond {

namespace {

class FilesKind final : public Kind {
public:
    std::string_view name() const override { return "files"; }
    const Keys& datastore_keys() const override {
        static const Keys keys = {"root"};
        return keys;
    }
    const Keys& rule_keys() const override {
        static const Keys keys = {"files", "format", "delimiter", "key_field"};
        return keys;
    }
    std::shared_ptr<const DatastoreSpec> read_datastore(ConfigReader& in,
                                                        const ConfigMap& section) const override {
        return read_files_datastore(in, section);
    }
    std::shared_ptr<const RuleSpec> read_rule(ConfigReader& in, const ConfigMap& section,
                                              const Rule& rule) const override {
        return read_files_rule(in, section, rule);
    }
    std::unique_ptr<Engine> make_engine(const Datastore& store,
                                        const Config& config) const override {
        return make_files_engine(store, config);
    }
    CoverageScan scan_coverage(const Datastore& store,
                               const std::vector<const Rule*>& rules) const override {
        return scan_files_coverage(store, rules);
    }
};

} // namespace

const Kind& files_kind() {
    static const FilesKind kind;
    return kind;
}

} // namespace retentiond
