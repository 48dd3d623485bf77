// What CI can check about the package without building it: the man pages render without
// warnings and document every verb and exit code, the shell scripts parse, the bash completion
// completes, the Scalingo worker starts a real verb and maps its environment, and the package's
// Build-Depends are what scripts/install-deps.sh installs. A missing tool is a failure, not a
// skip: the check would otherwise silently stop running.
#include "support/pg_cluster.hpp"
#include "support/process.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <sys/wait.h>

namespace retentiond::test {
namespace {

using Output = ShellOutput;

const std::string k_src = RETENTIOND_SOURCE_DIR;
const std::string k_man8 = k_src + "/docs/man/retentiond.8";
const std::string k_man5 = k_src + "/docs/man/retentiond.yaml.5";
const std::string k_completion = k_src + "/packaging/debian/retentiond.bash-completion";
const std::string k_scalingo = k_src + "/packaging/scalingo/";

void require_tool(const std::string& tool, const std::string& package) {
    ASSERT_EQ(shell("command -v " + tool).status, 0)
        << tool << " is missing: install the Debian package " << package;
}

// The verbs listed under "Commands:" in `retentiond --help`.
std::vector<std::string> cli_verbs() {
    const auto help = run_retentiond({"--help"});
    std::vector<std::string> verbs;
    std::istringstream in(help.out);
    std::string line;
    bool in_commands = false;
    const std::regex verb_line(R"(^  ([a-z][a-z-]*)\b.*)");
    while (std::getline(in, line)) {
        if (line == "Commands:") {
            in_commands = true;
        } else if (line.empty()) {
            in_commands = false;
        } else if (std::smatch m; in_commands && std::regex_match(line, m, verb_line)) {
            verbs.push_back(m[1]);
        }
    }
    return verbs;
}

// The codes listed under "Exit codes" in `retentiond --help`.
std::vector<std::string> cli_exit_codes() {
    const auto help = run_retentiond({"--help"});
    std::vector<std::string> codes;
    const std::regex code_line(R"(^  ([0-9]+)  )");
    std::istringstream in(help.out);
    std::string line;
    while (std::getline(in, line)) {
        if (std::smatch m; std::regex_search(line, m, code_line)) {
            codes.push_back(m[1]);
        }
    }
    return codes;
}

TEST(ManPages, RenderWithoutWarnings) {
    require_tool("groff", "groff-base");
    require_tool("man", "man-db");
    for (const auto& page : {k_man8, k_man5}) {
        const auto groff = shell("LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z " + page);
        EXPECT_EQ(groff.status, 0) << page;
        EXPECT_EQ(groff.text, "") << page;
        const auto man = shell("LC_ALL=C.UTF-8 man --warnings -l -Tutf8 " + page + " >/dev/null");
        EXPECT_EQ(man.status, 0) << page;
        EXPECT_EQ(man.text, "") << page;
    }
}

TEST(ManPages, WarningsAreCaught) {
    // The check above can fail: an unknown request is reported.
    require_tool("groff", "groff-base");
    TempDir dir;
    const auto page = dir.write("bad.8", ".TH BAD 8\n.SH NAME\nbad\n.XYZZY oops\n");
    const auto groff = shell("LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z " + page);
    EXPECT_NE(groff.text, "");
}

TEST(ManPages, Section8DocumentsEveryVerbAndExitCode) {
    require_tool("man", "man-db");
    // Justified lines may hold runs of spaces.
    const auto text = std::regex_replace(shell("LC_ALL=C.UTF-8 MANWIDTH=200 man -l " + k_man8).text,
                                         std::regex(R"( +)"), " ");
    const auto verbs = cli_verbs();
    ASSERT_GE(verbs.size(), 6U) << "could not read the verbs from retentiond --help";
    for (const auto& verb : verbs) {
        EXPECT_NE(text.find("retentiond [--config file] " + verb), std::string::npos)
            << "verb " << verb << " missing from the SYNOPSIS of retentiond(8)";
    }
    const auto codes = cli_exit_codes();
    ASSERT_GE(codes.size(), 8U) << "could not read the exit codes from retentiond --help";
    const auto source = read_file(k_man8);
    for (const auto& code : codes) {
        EXPECT_NE(source.find("\n.B " + code + "\n"), std::string::npos)
            << "exit code " << code << " missing from EXIT STATUS in retentiond(8)";
    }
}

TEST(ShellScripts, Parse) {
    require_tool("bash", "bash");
    const std::vector<std::string> bash_scripts = {k_completion, k_src + "/packaging/build-deb.sh",
                                                   k_scalingo + "start",
                                                   k_scalingo + "make-aptfile.sh"};
    for (const auto& script : bash_scripts) {
        const auto out = shell("bash -n " + script);
        EXPECT_EQ(out.status, 0) << script << ": " << out.text;
    }
    for (const auto& name : {"postinst", "postrm", "notify"}) {
        const auto script = k_src + "/packaging/debian/" + name;
        const auto out = shell("sh -n " + script);
        EXPECT_EQ(out.status, 0) << script << ": " << out.text;
    }
}

// build-deb.sh on a machine without debhelper: it installs its own build dependencies with
// apt-get (here a recording stand-in in PATH, so the test changes nothing on the machine), then
// a second run finds them and installs nothing.
TEST(BuildDeb, InstallsItsOwnBuildDependenciesOnce) {
    TempDir dir;
    const std::string bin = dir.path() + "/bin";
    const std::string log = dir.file("apt.log");
    const std::string installed = dir.file("installed");
    // dpkg-checkbuilddeps fails as on a fresh machine until "apt-get build-dep" ran.
    dir.write("bin/dpkg-checkbuilddeps",
              "#!/bin/sh\n[ -e " + installed +
                  " ] && exit 0\necho 'dpkg-checkbuilddeps: error: Unmet build dependencies: "
                  "debhelper-compat (= 13)' >&2\nexit 1\n");
    dir.write("bin/dpkg-query", "#!/bin/sh\n[ -e " + installed +
                                    " ] && echo 'install ok installed' && exit 0\nexit 1\n");
    dir.write("bin/apt-get", "#!/bin/sh\necho \"apt-get $*\" >> " + log +
                                 "\ncase \"$*\" in *build-dep*) touch " + installed + ";; esac\n");
    dir.write("bin/sudo", "#!/bin/sh\nexec \"$@\"\n");
    ASSERT_EQ(shell("chmod +x " + bin + "/*").status, 0);
    const std::string run =
        "PATH=" + bin + ":$PATH bash " + k_src + "/packaging/build-deb.sh --deps-only 2>&1";

    const auto first = shell(run);
    ASSERT_EQ(first.status, 0) << first.text;
    EXPECT_NE(first.text.find("installing build dependencies"), std::string::npos) << first.text;
    const auto calls = read_file(log);
    EXPECT_NE(calls.find("apt-get update"), std::string::npos) << calls;
    EXPECT_NE(calls.find("apt-get install -y -qq --no-install-recommends dpkg-dev fakeroot "
                         "lintian"),
              std::string::npos)
        << calls;
    EXPECT_NE(
        calls.find("apt-get build-dep -y -qq --no-install-recommends " + k_src + "/packaging"),
        std::string::npos)
        << calls;

    const auto again = shell(run);
    ASSERT_EQ(again.status, 0) << again.text;
    EXPECT_NE(again.text.find("build dependencies present"), std::string::npos) << again.text;
    EXPECT_EQ(read_file(log), calls) << "a second run must install nothing";
}

std::string complete(const std::string& words) {
    const std::string script =
        "source /usr/share/bash-completion/bash_completion; source " + k_completion +
        "; COMP_WORDS=(" + words +
        "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1));"
        " COMP_LINE=\"${COMP_WORDS[*]}\"; COMP_POINT=${#COMP_LINE}; _retentiond;"
        " printf '%s\\n' \"${COMPREPLY[@]}\"";
    TempDir dir;
    const auto file = dir.write("complete.sh", script);
    return shell("bash " + file).text;
}

TEST(BashCompletion, CompletesVerbsOptionsAndRules) {
    require_tool("bash", "bash");
    ASSERT_EQ(shell("test -f /usr/share/bash-completion/bash_completion").status, 0)
        << "install the Debian package bash-completion";
    EXPECT_EQ(complete("retentiond pu"), "purge\n");
    EXPECT_EQ(complete("retentiond purge --d"), "--dry-run\n");
    EXPECT_EQ(complete("retentiond report --format ''"), "md\nhtml\njson\ncsv\n");
    EXPECT_EQ(complete("retentiond policy-table --format ''"), "md\nhtml\n");
    EXPECT_EQ(complete("retentiond audit ''"), "verify\nprove\n--help\n");
    EXPECT_EQ(
        complete("retentiond --config " + k_src + "/policies/dora.yaml purge --rule dora-acc"),
        "dora-accounts\n");
    // Every verb of the CLI is offered.
    const auto all = complete("retentiond ''");
    for (const auto& verb : cli_verbs()) {
        EXPECT_NE(all.find(verb + "\n"), std::string::npos) << verb;
    }
}

TEST(Notifier, CountsWithoutLoggingPersonalData) {
    // No logger on PATH: the message goes to stderr, where the test can read it.
    const auto out =
        shell("printf '{\"email\":\"jeanne@example.org\"}\\n{\"email\":\"paul@example.org\"}\\n' | "
              "env -i PATH=/nonexistent /bin/sh " +
              k_src + "/packaging/debian/notify");
    EXPECT_EQ(out.status, 0) << out.text;
    EXPECT_NE(out.text.find("2 notice(s) would be sent"), std::string::npos) << out.text;
    EXPECT_EQ(out.text.find("example.org"), std::string::npos) << out.text;
}

TEST(Scalingo, ProcfileRunsARealVerb) {
    const auto procfile = read_file(k_scalingo + "Procfile");
    std::smatch m;
    const std::regex worker(R"(^worker: bin/retentiond-start ([a-z-]+)\s*$)");
    ASSERT_TRUE(std::regex_search(procfile, m, worker)) << procfile;
    const std::string verb = m[1];
    const auto verbs = cli_verbs();
    EXPECT_NE(std::find(verbs.begin(), verbs.end(), verb), verbs.end()) << verb;
    EXPECT_EQ(run_retentiond({verb, "--help"}).exit_code, 0) << verb;
}

Output start_wrapper(const TempDir& app, const std::string& env, const std::string& args) {
    return shell("env -i PATH=/usr/bin:/bin HOME=" + app.path() + " TMPDIR=" + app.path() +
                 " RETENTIOND_BIN=" + RETENTIOND_BINARY + " " + env + " bash " + k_scalingo +
                 "start " + args);
}

TEST(Scalingo, StartWrapperMapsTheEnvironment) {
    TempDir app;
    app.write("retentiond.yaml", read_file(k_scalingo + "retentiond.yaml"));
    // A policy that reads the generic names while Scalingo sets its own, and vice versa.
    app.write("policies.d/app.yaml", R"(version: 1
datastores:
  db: { kind: postgres, dsn: "${DATABASE_URL}" }
  db2: { kind: postgres, dsn: "${SCALINGO_POSTGRESQL_URL}" }
  sessions: { kind: redis, url: "${REDIS_URL}" }
rules: []
)");
    const std::string urls =
        "SCALINGO_POSTGRESQL_URL=postgresql:///app SCALINGO_REDIS_URL=redis://127.0.0.1:6379/0";
    const auto ok =
        start_wrapper(app, urls + " RETENTIOND_AUDIT_KEY=s3cret-key", "check --offline");
    EXPECT_EQ(ok.status, 0) << ok.text;
    EXPECT_NE(ok.text.find("configuration valid: 0 rules, 4 datastores"), std::string::npos)
        << ok.text;
    EXPECT_EQ(ok.text.find("s3cret-key"), std::string::npos);

    const auto no_key = start_wrapper(app, urls, "check --offline");
    EXPECT_EQ(WEXITSTATUS(no_key.status), 78) << no_key.text;
    EXPECT_NE(no_key.text.find("RETENTIOND_AUDIT_KEY is not set"), std::string::npos);

    const auto no_db = start_wrapper(app, "RETENTIOND_AUDIT_KEY=k", "check --offline");
    EXPECT_EQ(WEXITSTATUS(no_db.status), 78) << no_db.text;
}

TEST(Scalingo, TheAuditChainLivesInTheAppDatabaseAndOutlivesTheContainer) {
    const auto dsn = PgCluster::shared().create_database("scalingo_" + std::to_string(::getpid()));
    const std::string env = "RETENTIOND_AUDIT_KEY=k 'DATABASE_URL=" + dsn + "'";
    {
        TempDir app; // a container: its disk goes with it
        app.write("retentiond.yaml", read_file(k_scalingo + "retentiond.yaml"));
        app.write("policies.d/empty.yaml", "version: 1\nrules: []\n");
        const auto out = start_wrapper(app, env, "purge --now");
        EXPECT_EQ(out.status, 0) << out.text;
        EXPECT_NE(out.text.find("audit head: seq=2 "), std::string::npos) << out.text;
    }
    EXPECT_EQ(pg_scalar(dsn, "SELECT count(*) FROM retentiond.audit_log"), "2");
    TempDir next; // a one-off container after a deploy sees the whole chain
    next.write("retentiond.yaml", read_file(k_scalingo + "retentiond.yaml"));
    next.write("policies.d/empty.yaml", "version: 1\nrules: []\n");
    const auto verify = start_wrapper(next, env, "audit verify");
    EXPECT_EQ(verify.status, 0) << verify.text;
    EXPECT_NE(verify.text.find("intact: 2 lines, 1 runs"), std::string::npos) << verify.text;
}

TEST(ShippedConfig, ValidatesWithTheDocumentedCredentialsDirectory) {
    TempDir creds;
    creds.write("audit-key", "a-test-key\n");
    const auto r =
        run_retentiond({"check", "--offline", "--config", k_src + "/policies/retentiond.yaml"},
                       {{"CREDENTIALS_DIRECTORY", creds.path()}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("configuration valid"), std::string::npos) << r.out;
}

std::set<std::string> words_of(const std::string& text) {
    std::set<std::string> words;
    const std::regex word(R"([a-z0-9][a-z0-9.+-]+)");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), word);
         it != std::sregex_iterator(); ++it) {
        words.insert(it->str());
    }
    return words;
}

TEST(DebianPackage, BuildDependsAreInstalledByInstallDeps) {
    const auto control = read_file(k_src + "/packaging/debian/control");
    const auto begin = control.find("Build-Depends:");
    const auto end = control.find("\nStandards-Version:");
    ASSERT_NE(begin, std::string::npos);
    ASSERT_NE(end, std::string::npos);
    const auto deps = control.substr(begin + 14, end - begin - 14);
    const auto installed = words_of(read_file(k_src + "/scripts/install-deps.sh"));
    std::istringstream in(deps);
    std::string dep;
    int count = 0;
    while (std::getline(in, dep, ',')) {
        const auto name = std::regex_replace(dep, std::regex(R"(\s|\(.*\))"), "");
        if (name.empty() || name.rfind("debhelper", 0) == 0 || name.rfind("dh-", 0) == 0) {
            continue; // packaging tools, not build dependencies of the code
        }
        ++count;
        EXPECT_TRUE(installed.count(name) == 1)
            << name << " is a Build-Depends but scripts/install-deps.sh does not install it";
    }
    EXPECT_GE(count, 10);
}

TEST(DebianPackage, InstallListsExistingFiles) {
    const auto install = read_file(k_src + "/packaging/debian/install");
    std::istringstream in(install);
    std::string line;
    while (std::getline(in, line)) {
        const auto source = line.substr(0, line.find(' '));
        if (source.rfind("debian/", 0) == 0) {
            EXPECT_EQ(shell("test -e " + k_src + "/packaging/" + source).status, 0) << source;
        } else {
            EXPECT_EQ(shell("ls " + k_src + "/" + source).status, 0) << source;
        }
    }
    for (const auto& page : {k_man8, k_man5}) {
        EXPECT_EQ(shell("test -f " + page).status, 0) << page;
    }
}

} // namespace
} // namespace retentiond::test
