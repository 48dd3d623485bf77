// The loader's files and sections: the main file and its includes, the top level, daemon,
// datastores (each read by its kind) and the rules' list; then the checks that need every file.
#include "loader.hpp"

#include "retentiond/crypto.hpp"
#include "retentiond/timeutil.hpp"

#include <glob.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

namespace retentiond::config_detail {

namespace {

namespace fs = std::filesystem;

const Keys k_main_keys = {"version", "daemon", "include", "datastores", "rules", "coverage"};
const Keys k_daemon_keys = {
    "audit_log",    "audit_store",      "audit_schema",         "audit_key",      "metrics",
    "timezone",     "max_clock_skew",   "store_down_unhealthy", "splay",          "retry_backoff",
    "coordination", "erasure_deadline", "erasure_resume",       "erasure_reapply"};

bool has_glob_magic(std::string_view s) {
    return s.find_first_of("*?[") != std::string_view::npos;
}

bool valid_datastore_name(std::string_view name) {
    if (name.empty()) {
        return false;
    }
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '-' && c != '_'))) {
            return false;
        }
    }
    return true;
}

struct GlobResult {
    glob_t g{};
    int rc = 0;
    explicit GlobResult(const std::string& pattern) {
        rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    }
    ~GlobResult() { ::globfree(&g); }
    GlobResult(const GlobResult&) = delete;
    GlobResult& operator=(const GlobResult&) = delete;
};

Diagnostics sorted(Diagnostics list) {
    std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
        return std::tie(a.first, a.second.pos.line, a.second.pos.column) <
               std::tie(b.first, b.second.pos.line, b.second.pos.column);
    });
    return list;
}

} // namespace

// --- files ---------------------------------------------------------------------------------

bool Loader::add_file(const std::string& display, bool main) {
    std::ifstream in(display, std::ios::binary);
    if (!in) {
        return false;
    }
    std::stringstream bytes;
    bytes << in.rdbuf();
    SourceFile file;
    file.display = display;
    file.bytes = bytes.str();
    file.main = main;
    m_files.push_back(std::move(file));
    read_file(m_files.size() - 1);
    return true;
}

void Loader::read_file(std::size_t index) {
    SourceFile& file = m_files[index];
    m_file = index;
    try {
        file.root = wrap(YAML::Load(file.bytes));
        file.parsed = true;
    } catch (const YAML::Exception& e) {
        SourcePos p{file.display, 0, 0};
        if (e.mark.line >= 0) {
            p.line = e.mark.line + 1;
            p.column = e.mark.column + 1;
        }
        m_errors.emplace_back(index, Diagnostic{p, "", "invalid YAML: " + e.msg});
    }
}

void Loader::read_top(std::size_t index, Includes& includes) {
    m_file = index;
    const SourceFile& file = m_files[index];
    if (!file.parsed) {
        return;
    }
    auto f = map(file.root, "top level");
    if (!f) {
        return;
    }
    check_keys(*f, k_main_keys);
    if (const auto* v = f->get("version")) {
        if (auto n = integer(*v, "version"); n && *n != 1) {
            error(*v, "version: unsupported version " + std::to_string(*n) +
                          " (this retentiond reads version 1)");
        }
    } else {
        error(file.root, "missing key \"version\" (write \"version: 1\")");
    }
    if (const auto* e = f->find("daemon")) {
        if (file.main) {
            read_daemon(e->value);
        } else {
            error(e->key, "\"daemon\" is only allowed in the main file");
        }
    }
    if (const auto* e = f->find("include")) {
        if (!file.main) {
            error(e->key, "\"include\" is only allowed in the main file");
        } else if (e->value.is_scalar()) {
            if (auto s = string(e->value, "include")) {
                includes.emplace_back(*s, e->value);
            }
        } else if (!e->value.is_sequence()) {
            type_error(e->value, "include", "a list of globs");
        } else {
            for (const auto& item : e->value.items()) {
                if (auto s = string(item, "include")) {
                    includes.emplace_back(*s, item);
                }
            }
        }
    }
}

// Included files, in the order of the globs, each glob's matches sorted.
void Loader::read_includes(const Includes& includes, const std::string& path) {
    std::set<std::string> seen;
    std::error_code ec;
    seen.insert(fs::weakly_canonical(path, ec).string());
    for (const auto& [pattern, where] : includes) {
        const fs::path full =
            fs::path(pattern).is_absolute() ? fs::path(pattern) : m_main_dir / pattern;
        const GlobResult g(full.string());
        m_file = 0;
        if (g.rc == GLOB_NOMATCH) {
            if (has_glob_magic(pattern)) {
                warn(where, "include: " + in_quotes(pattern) + " matches no file");
            } else {
                error(where, "include: cannot read " + in_quotes(pattern));
            }
            continue;
        }
        if (g.rc != 0) {
            error(where, "include: cannot expand " + in_quotes(pattern));
            continue;
        }
        for (std::size_t i = 0; i < g.g.gl_pathc; ++i) {
            const std::string match = g.g.gl_pathv[i];
            if (!seen.insert(fs::weakly_canonical(match, ec).string()).second) {
                continue;
            }
            if (!add_file(match, false)) {
                m_file = 0;
                error(where, "include: cannot read " + in_quotes(match));
                continue;
            }
            Includes ignored;
            read_top(m_files.size() - 1, ignored);
        }
    }
}

// The section `name` ("datastores", "rules", "coverage") of every file, in file order.
void Loader::read_sections(std::string_view name) {
    for (std::size_t i = 0; i < m_files.size(); ++i) {
        m_file = i;
        const YAML::Node& root = yaml(m_files[i].root);
        if (!m_files[i].parsed || !root.IsMap()) {
            continue;
        }
        for (auto it = root.begin(); it != root.end(); ++it) {
            if (it->first.IsScalar() && it->first.Scalar() == name) {
                if (name == "datastores") {
                    read_datastores(wrap(it->second));
                } else if (name == "coverage") {
                    read_coverage(wrap(it->second));
                } else {
                    read_rules(wrap(it->second));
                }
                break; // a duplicate key was already reported
            }
        }
    }
}

namespace {

// "coordination needs a postgres datastore": the kinds say whether they coordinate runs
// (Kind::coordinates_runs), so no kind is named here.
std::string coordination_kinds(const std::vector<const Kind*>& kinds) {
    Keys coordinating;
    for (const Kind* kind : kinds) {
        if (kind->coordinates_runs()) {
            coordinating.push_back(kind->name());
        }
    }
    if (coordinating.empty()) {
        return "no kind of datastore coordinates runs";
    }
    return "coordination needs a " + join_names(coordinating) + " datastore";
}

} // namespace

// Only once the datastores of every file are known.
void Loader::check_coordination() {
    if (!m_coordination) {
        return;
    }
    m_file = 0;
    const auto& name = m_config.daemon.coordination;
    const auto it = m_config.datastores.find(name);
    if (it == m_config.datastores.end()) {
        Keys names;
        for (const auto& [n, ds] : m_config.datastores) {
            names.push_back(n);
        }
        error(*m_coordination,
              "coordination: unknown datastore " + in_quotes(name) + hint(name, names));
    } else if (it->second.kind != nullptr && !it->second.kind->coordinates_runs()) {
        error(*m_coordination, "coordination: datastore " + in_quotes(name) + " is " +
                                   std::string(it->second.kind->name()) + "; " +
                                   coordination_kinds(m_kinds));
    }
}

// Only once the datastores of every file are known.
void Loader::check_audit_store() {
    if (!m_audit_store) {
        return;
    }
    m_file = 0;
    const auto& name = m_config.daemon.audit_store;
    const auto it = m_config.datastores.find(name);
    if (it == m_config.datastores.end()) {
        Keys names;
        for (const auto& [n, ds] : m_config.datastores) {
            names.push_back(n);
        }
        error(*m_audit_store,
              "audit_store: unknown datastore " + in_quotes(name) + hint(name, names));
        return;
    }
    if (it->second.kind != nullptr && !it->second.kind->holds_audit()) {
        Keys holding;
        for (const Kind* kind : m_kinds) {
            if (kind->holds_audit()) {
                holding.push_back(kind->name());
            }
        }
        error(*m_audit_store, "audit_store: datastore " + in_quotes(name) + " is " +
                                  std::string(it->second.kind->name()) +
                                  "; the audit chain needs a " + join_names(holding) +
                                  " datastore");
    }
}

Config Loader::load(const std::string& path) {
    m_config.main_file = path;
    m_main_dir = fs::path(path).parent_path();
    if (!add_file(path, true)) {
        throw ConfigError(
            {Diagnostic{SourcePos{path, 0, 0}, "", "cannot read the configuration file"}});
    }
    Includes includes;
    read_top(0, includes);
    read_includes(includes, path);
    // Datastores of every file first: a rule may use a datastore declared in another file.
    read_sections("datastores");
    read_sections("rules");
    read_sections("coverage");
    check_coordination();
    check_audit_store();

    std::string all_bytes;
    for (const auto& file : m_files) {
        m_config.files.push_back(file.display);
        all_bytes += file.bytes;
    }
    m_config.sha256 = sha256_hex(all_bytes);

    if (!m_errors.empty()) {
        std::vector<Diagnostic> diagnostics;
        for (auto& [index, d] : sorted(std::move(m_errors))) {
            diagnostics.push_back(std::move(d));
        }
        throw ConfigError(std::move(diagnostics));
    }
    for (auto& [index, d] : sorted(std::move(m_warnings))) {
        m_config.warnings.push_back(std::move(d));
    }
    return std::move(m_config);
}

// --- sections ------------------------------------------------------------------------------

void Loader::read_daemon(const ConfigNode& node) {
    auto f = map(node, "daemon");
    if (!f) {
        return;
    }
    check_keys(*f, k_daemon_keys);
    DaemonSettings& d = m_config.daemon;
    if (const auto* v = f->get("audit_log")) {
        d.audit_log = string(*v, "audit_log").value_or(d.audit_log);
    }
    if (const auto* v = f->get("audit_key")) {
        if (auto s = string(*v, "audit_key")) {
            if (s->empty()) {
                error(*v, "audit_key: the key is empty");
            }
            d.audit_key = Secret(*s);
        }
    }
    if (const auto* v = f->get("metrics")) {
        if (auto s = string(*v, "metrics")) {
            const auto colon = s->rfind(':');
            const bool port_ok = colon != std::string::npos && colon + 1 < s->size() &&
                                 std::all_of(s->begin() + static_cast<long>(colon) + 1, s->end(),
                                             [](char c) { return c >= '0' && c <= '9'; });
            if (*s != "off" && !port_ok) {
                error(*v, "metrics: expected HOST:PORT or \"off\", got " + in_quotes(v->scalar()));
            } else {
                d.metrics = *s;
            }
        }
    }
    if (const auto* v = f->get("timezone")) {
        if (auto s = string(*v, "timezone")) {
            try {
                find_zone(*s);
                d.timezone = *s;
            } catch (const ParseError& e) {
                error(*v, "timezone: unknown time zone " + in_quotes(v->scalar()));
            }
        }
    }
    fixed_duration(*f, "max_clock_skew", d.max_clock_skew);
    fixed_duration(*f, "store_down_unhealthy", d.store_down_unhealthy);
    fixed_duration(*f, "splay", d.splay);
    fixed_duration(*f, "erasure_resume", d.erasure_resume);
    fixed_duration(*f, "erasure_reapply", d.erasure_reapply);
    if (const auto* v = f->get("erasure_deadline")) {
        if (auto e = duration(*v, "erasure_deadline"); e && !e->is_zero() && !e->session) {
            d.erasure_deadline = *e;
        } else if (e) {
            error(*v,
                  "erasure_deadline: expected a positive duration, got " + in_quotes(v->scalar()));
        }
    }
    if (const auto* v = f->get("retry_backoff")) {
        if (auto b = map(*v, "retry_backoff")) {
            check_keys(*b, {"initial", "max"});
            fixed_duration(*b, "initial", d.retry_backoff_initial);
            fixed_duration(*b, "max", d.retry_backoff_max);
            // A zero delay would retry a down store in a tight loop.
            if (const auto* i = b->get("initial");
                i && d.retry_backoff_initial < std::chrono::seconds{1}) {
                error(*i, "retry_backoff.initial: must be at least 1 second");
            }
            if (const auto* m = b->get("max"); m && d.retry_backoff_max < d.retry_backoff_initial) {
                error(*m, "retry_backoff.max: must not be shorter than retry_backoff.initial");
            }
            if (b->get("max") == nullptr) {
                d.retry_backoff_max = std::max(d.retry_backoff_max, d.retry_backoff_initial);
            }
        }
    }
    if (const auto* v = f->get("coordination")) {
        if (auto s = string(*v, "coordination")) {
            d.coordination = *s;
            m_coordination = *v;
        }
    }
    read_audit_store(*f);
}

// Extension: the audit chain in a postgres datastore instead of a file.
void Loader::read_audit_store(const ConfigMap& f) {
    DaemonSettings& d = m_config.daemon;
    if (const auto* v = f.get("audit_store")) {
        if (auto s = string(*v, "audit_store")) {
            d.audit_store = *s;
            m_audit_store = *v;
            if (f.get("audit_log") != nullptr) {
                error(*v, "audit_store: the audit chain is kept either in a datastore "
                          "(audit_store) or in a file (audit_log), not both; remove one");
            }
        }
    }
    if (const auto* v = f.get("audit_schema")) {
        if (auto s = string(*v, "audit_schema")) {
            const bool ident =
                !s->empty() && s->size() <= 63 &&
                (std::islower(static_cast<unsigned char>((*s)[0])) != 0 || (*s)[0] == '_') &&
                std::all_of(s->begin(), s->end(), [](char c) {
                    return std::islower(static_cast<unsigned char>(c)) != 0 ||
                           std::isdigit(static_cast<unsigned char>(c)) != 0 || c == '_';
                });
            if (!ident) {
                error(*v, "audit_schema: " + in_quotes(*s) +
                              " is not a plain schema name (lower-case letters, digits and _, "
                              "at most 63)");
            } else if (f.get("audit_store") == nullptr) {
                error(*v, "audit_schema: only meaningful with audit_store");
            }
            d.audit_schema = *s;
        }
    }
}

void Loader::read_datastores(const ConfigNode& node) {
    auto f = map(node, "datastores");
    if (!f) {
        return;
    }
    for (const auto& e : f->entries) {
        read_datastore(e.key, e.value);
    }
}

const Kind* Loader::read_datastore_kind(const ConfigMap& f, const ConfigNode& node) {
    const auto* kind_node = f.get("kind");
    if (!kind_node) {
        error(node, "missing key \"kind\" (" + join_names(m_kind_names) + ")");
        return nullptr;
    }
    const auto name = choice(*kind_node, "kind", m_kind_names);
    for (const Kind* kind : m_kinds) {
        if (name && kind->name() == *name) {
            return kind;
        }
    }
    return nullptr;
}

void Loader::read_datastore(const ConfigNode& name_node, const ConfigNode& node) {
    const std::string name = name_node.scalar();
    if (!valid_datastore_name(name)) {
        error(name_node, "invalid datastore name " + in_quotes(name) +
                             " (lower-case letters, digits, '-' and '_')");
    }
    if (auto it = m_config.datastores.find(name); it != m_config.datastores.end()) {
        const SourcePos& first = it->second.pos;
        error(name_node, "duplicate datastore " + in_quotes(name) + " (first defined at " +
                             first.file + ":" + std::to_string(first.line) + ")");
        return;
    }
    m_datastore = name;
    Datastore ds;
    ds.name = name;
    ds.pos = pos(name_node);
    const auto f = map(node, "");
    ds.kind = f ? read_datastore_kind(*f, node) : nullptr;
    if (ds.kind != nullptr) {
        // Keys of another kind get a message that says so, rather than "unknown key".
        const Keys& own = ds.kind->datastore_keys();
        for (const auto& e : f->entries) {
            if (e.name == "kind" || contains(own, e.name)) {
                continue;
            }
            if (contains(m_datastore_keys, e.name)) {
                error(e.key, "key " + in_quotes(e.name) + " is not valid for a " +
                                 std::string(ds.kind->name()) + " datastore (use " +
                                 in_quotes(own.front()) + ")");
            } else {
                error(e.key, "unknown key " + in_quotes(e.name) + hint(e.name, m_datastore_keys));
            }
        }
        ds.spec = ds.kind->read_datastore(*this, *f);
    } else {
        if (f) {
            check_keys(*f, m_datastore_keys);
        }
        // Known by name, so its rules do not also get "unknown datastore".
        m_kindless_datastores.insert(name);
    }
    m_config.datastores.emplace(name, std::move(ds));
    m_datastore.clear();
}

void Loader::read_rules(const ConfigNode& node) {
    if (!node.is_sequence()) {
        type_error(node, "rules", "a list");
        return;
    }
    for (const auto& item : node.items()) {
        read_rule(item);
        m_rule.clear();
    }
}

} // namespace retentiond::config_detail
