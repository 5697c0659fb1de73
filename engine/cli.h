// A small command-line parser shared by qdet's tools: long options with a
// value ("--threads 2" or "--threads=2") or without (flags), generated help
// text, and usage errors that name the option.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace qdet {

class CommandLine {
public:
    // `usage` follows the program name on the help's usage line.
    CommandLine(std::string program, std::string summary, std::string usage = "[options]");

    // Registers an option; `value_name` empty makes it a flag.
    void option(const std::string &name, const std::string &value_name, const std::string &help,
                const std::string &default_value = "");
    void flag(const std::string &name, const std::string &help) { option(name, "", help); }

    // Parses argv. Returns false when --help or -h was given (help is printed).
    // Throws Error(usage) on unknown options, missing values and stray
    // positional arguments (unless allow_positional).
    bool parse(int argc, char **argv, bool allow_positional = false);

    bool has(const std::string &name) const;
    std::string get(const std::string &name) const;  // value or default
    // The value, or a usage error naming the option when it was not given
    // and has no default.
    std::string require(const std::string &name) const;
    int get_int(const std::string &name, int min_value, int max_value) const;
    double get_double(const std::string &name, double min_value, double max_value) const;
    // The comma-separated items of the value ("a,b,c"); an empty value gives
    // none, and an empty item ("a,,b") is a usage error naming the option.
    std::vector<std::string> get_list(const std::string &name) const;
    const std::vector<std::string> &positional() const { return positional_; }

    std::string help() const;

private:
    struct Option {
        std::string value_name;
        std::string help;
        std::string default_value;
    };
    std::string program_;
    std::string summary_;
    std::string usage_;
    std::vector<std::string> order_;
    std::map<std::string, Option> options_;
    std::map<std::string, std::string> values_;
    std::vector<std::string> positional_;
};

// Runs a tool's body, mapping qdet::Error to its exit code and printing
// "<program>: error: <message>" on stderr; other exceptions exit with the
// internal-error code.
int run_tool(const std::string &program, const std::function<int()> &body);

}  // namespace qdet
