// The files contract backend: one Tally-shaped CSV export in a temp directory.
#include "contract/contract.hpp"

#include "engines/files/csv.hpp"
#include "engines/files/files_kind.hpp"
#include "retentiond/timeutil.hpp"

#include <date/tz.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace retentiond::test {
namespace {

namespace fs = std::filesystem;

const char* const k_file = "Satisfaction CQLP_Submissions_2026-01-05.csv";

class FilesBackend : public ContractBackend {
public:
    FilesBackend() {
        std::string tmpl =
            (fs::temp_directory_path() / "retentiond-files-contract-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        m_dir = tmpl;
        m_store.name = "exports";
        m_store.kind = &files_kind();
        m_store.spec = spec_ptr(FilesStore(m_dir.string()));
        m_config.daemon.timezone = "Europe/Paris";
        m_engine = make_files_engine(m_store, m_config);
    }
    ~FilesBackend() override {
        std::error_code ec;
        fs::remove_all(m_dir, ec);
    }

    SubjectField subject_field() const override { return {"Email", false, {}}; }
    std::string subject_of(const std::string& key) const override {
        return "elodie." + key + "@example.fr";
    }

    void seed(const std::vector<ContractRecord>& records) override {
        const auto* paris = find_zone("Europe/Paris");
        const auto now = now_utc();
        // Hostile on purpose: quoted commas, doubled quotes, line breaks, accents, CRLF.
        std::string out = "\"Submission ID\",\"Respondent ID\",\"Submitted at\",\"Nom\",\"Email\","
                          "\"Commentaire\",\"Legal hold\"\r\n";
        int n = 0;
        for (const auto& r : records) {
            std::string when;
            if (r.age) {
                const auto t = std::chrono::floor<std::chrono::seconds>(now - *r.age);
                when = date::format("%Y-%m-%d %H:%M:%S", date::make_zoned(paris, t));
            }
            out += r.key + ",resp-" + std::to_string(n) + "," + when + ",\"Dupont, Élodie\"," +
                   "elodie." + r.key + "@example.fr,\"Très bien, \"\"merci\"\"\nà bientôt\"," +
                   (r.held ? "yes" : "") + "\r\n";
            ++n;
        }
        std::ofstream(m_dir / k_file, std::ios::binary) << out;
    }

    Rule make_rule(const RuleOptions& o) override {
        Rule r;
        r.name = "cqlp-satisfaction-forms";
        r.datastore = m_store.name;
        r.kind = &files_kind();
        r.retain = o.retain;
        r.action = o.action;
        r.batch_size = o.batch_size;
        r.limits = o.limits;
        r.clock_null_due = o.clock_null_due;
        r.anonymize = {{"Email", Strategy{Strategy::Kind::email_domain, {}, 0, {}, {}}, {}},
                       {"Nom", Strategy{Strategy::Kind::null_value, {}, 0, {}, {}}, {}}};
        FilesRule spec;
        spec.files = "**/*_Submissions_*.csv";
        spec.format = FilesRule::Format::csv;
        spec.clock.kind = FilesClock::Kind::field;
        spec.clock.field = "Submitted at";
        spec.clock.format = "%Y-%m-%d %H:%M:%S";
        if (o.with_hold) {
            spec.hold = FilesHold{"Legal hold", "yes"};
        }
        spec.key_field = "Submission ID";
        r.spec = spec_ptr(spec);
        return r;
    }

    Engine& engine() override { return *m_engine; }

    std::set<std::string> remaining_keys() override {
        std::set<std::string> keys;
        for (const auto& [k, raw] : fingerprints()) {
            keys.insert(k);
        }
        return keys;
    }

    std::set<std::string> anonymized_keys() override {
        std::set<std::string> keys;
        each_record([&](const csv::Record& rec) {
            if (rec.value(4).rfind("anon-", 0) == 0 && rec.value(3).empty()) {
                keys.insert(rec.value(0));
            }
        });
        return keys;
    }

    bool supports_anonymize() const override { return true; }

    std::map<std::string, std::string> fingerprints() override {
        std::map<std::string, std::string> out;
        each_record([&](const csv::Record& rec) { out[rec.value(0)] = std::string(rec.raw()); });
        return out;
    }

private:
    template <typename F> void each_record(F&& f) {
        const auto path = m_dir / k_file;
        if (!fs::exists(path)) {
            return; // a file with no record left is deleted
        }
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            throw std::runtime_error("cannot open the contract CSV");
        }
        try {
            csv::Reader reader(csv::fd_reader(fd));
            csv::Record rec;
            bool header = true;
            while (reader.next(rec)) {
                if (!header && !rec.blank()) {
                    f(rec);
                }
                header = false;
            }
        } catch (...) {
            ::close(fd);
            throw;
        }
        ::close(fd);
    }

public:
    std::unique_ptr<Engine> unreachable_engine() override {
        Datastore gone = m_store;
        gone.spec = spec_ptr(FilesStore((m_dir / "unmounted").string()));
        return make_files_engine(gone, m_config);
    }

    std::optional<MissingTarget> missing_target(const RuleOptions& options) override {
        Datastore gone = m_store;
        gone.spec = spec_ptr(FilesStore((m_dir / "unmounted").string()));
        return MissingTarget{make_files_engine(gone, m_config), make_rule(options), "unmounted"};
    }

private:
    fs::path m_dir;
    Datastore m_store;
    Config m_config;
    std::unique_ptr<Engine> m_engine;
};

} // namespace

std::unique_ptr<ContractBackend> make_files_backend() {
    return std::make_unique<FilesBackend>();
}

} // namespace retentiond::test
