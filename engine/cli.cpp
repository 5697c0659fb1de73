#include "engine/cli.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <sstream>

#include "engine/error.h"
#include "engine/log.h"

namespace qdet {

CommandLine::CommandLine(std::string program, std::string summary, std::string usage)
    : program_(std::move(program)), summary_(std::move(summary)), usage_(std::move(usage)) {
    flag("help", "show this help and exit");
}

void CommandLine::option(const std::string &name, const std::string &value_name, const std::string &help,
                         const std::string &default_value) {
    if (!options_.count(name)) order_.push_back(name);
    options_[name] = {value_name, help, default_value};
}

bool CommandLine::parse(int argc, char **argv, bool allow_positional) {
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-h") {
            values_["help"] = "1";
            continue;
        }
        if (arg.rfind("--", 0) != 0 || arg == "--") {
            if (!allow_positional) {
                fail(ErrorKind::usage, "unexpected argument '" + arg + "' (see --help)");
            }
            positional_.push_back(arg);
            continue;
        }
        std::string name = arg.substr(2);
        std::string value;
        bool has_inline_value = false;
        auto eq = name.find('=');
        if (eq != std::string::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
            has_inline_value = true;
        }
        auto it = options_.find(name);
        if (it == options_.end()) fail(ErrorKind::usage, "unknown option --" + name + " (see --help)");
        if (it->second.value_name.empty()) {
            if (has_inline_value) fail(ErrorKind::usage, "option --" + name + " takes no value");
            values_[name] = "1";
            continue;
        }
        if (!has_inline_value) {
            if (i + 1 >= argc) fail(ErrorKind::usage, "option --" + name + " needs a value " + it->second.value_name);
            value = argv[++i];
        }
        values_[name] = value;
    }
    if (has("help")) {
        std::fputs(help().c_str(), stdout);
        return false;
    }
    return true;
}

bool CommandLine::has(const std::string &name) const { return values_.count(name) != 0; }

std::string CommandLine::get(const std::string &name) const {
    auto it = values_.find(name);
    if (it != values_.end()) return it->second;
    auto option = options_.find(name);
    return option == options_.end() ? "" : option->second.default_value;
}

std::string CommandLine::require(const std::string &name) const {
    std::string value = get(name);
    if (value.empty()) fail(ErrorKind::usage, "option --" + name + " is required (see --help)");
    return value;
}

int CommandLine::get_int(const std::string &name, int min_value, int max_value) const {
    const std::string text = get(name);
    char *end = nullptr;
    errno = 0;
    long value = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno != 0 || value < min_value || value > max_value) {
        fail(ErrorKind::usage, "option --" + name + " must be an integer from " + std::to_string(min_value) +
                                   " to " + std::to_string(max_value) + ", got '" + text + "'");
    }
    return static_cast<int>(value);
}

double CommandLine::get_double(const std::string &name, double min_value, double max_value) const {
    const std::string text = get(name);
    char *end = nullptr;
    errno = 0;
    double value = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || errno != 0 || !(value >= min_value && value <= max_value)) {
        std::ostringstream range;
        range << min_value << " to " << max_value;
        fail(ErrorKind::usage, "option --" + name + " must be a number from " + range.str() + ", got '" + text + "'");
    }
    return value;
}

std::vector<std::string> CommandLine::get_list(const std::string &name) const {
    const std::string text = get(name);
    std::vector<std::string> items;
    if (text.empty()) return items;
    size_t start = 0;
    while (true) {
        const size_t comma = text.find(',', start);
        std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (item.empty()) fail(ErrorKind::usage, "option --" + name + " has an empty item in '" + text + "'");
        items.push_back(std::move(item));
        if (comma == std::string::npos) return items;
        start = comma + 1;
    }
}

std::string CommandLine::help() const {
    std::ostringstream out;
    out << "usage: " << program_ << " " << usage_ << "\n\n" << summary_ << "\n\noptions:\n";
    for (const std::string &name : order_) {
        const Option &o = options_.at(name);
        std::string left = "  --" + name + (o.value_name.empty() ? "" : " " + o.value_name);
        out << left;
        if (left.size() < 28) {
            out << std::string(28 - left.size(), ' ');
        } else {
            out << "\n" << std::string(28, ' ');
        }
        out << o.help;
        if (!o.default_value.empty()) out << " (default: " << o.default_value << ")";
        out << "\n";
    }
    return out.str();
}

int run_tool(const std::string &program, const std::function<int()> &body) {
    set_log_program(program);
    try {
        return body();
    } catch (const Error &e) {
        std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
        return e.exit_code();
    } catch (const std::bad_alloc &) {
        std::fprintf(stderr, "%s: error: out of memory\n", program.c_str());
        return static_cast<int>(ErrorKind::internal);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: internal error: %s\n", program.c_str(), e.what());
        return static_cast<int>(ErrorKind::internal);
    }
}

}  // namespace qdet
