#pragma once

// The CLI's one option parser: flags and options with one value (`--name VALUE` or
// `--name=VALUE`), in any order. Private to cli/.

#include <optional>
#include <string>
#include <vector>

namespace retentiond {

class OptionParser {
public:
    // `verb` prefixes the messages ("report: --format needs a value"); empty for most verbs.
    explicit OptionParser(std::vector<std::string> args, std::string verb = "");

    // Whether `name` is given; removes it.
    bool flag(const std::string& name);
    // Every value of a repeatable option, in order. UsageError: "NAME needs a value".
    std::vector<std::string> values(const std::string& name);
    // The value of an option given at most once. UsageError: "NAME given more than once".
    std::optional<std::string> value(const std::string& name);
    // The last value of an option that may be repeated (the last one wins).
    std::optional<std::string> last_value(const std::string& name);
    // UsageError on the first argument no option took: "unexpected argument \"ARG\"".
    void finish() const;

private:
    [[noreturn]] void usage(const std::string& message) const;

    std::vector<std::string> m_args;
    std::string m_prefix;
};

} // namespace retentiond
