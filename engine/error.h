// Error policy: code inside qdet throws qdet::Error; each tool's main() catches
// it, prints the message and exits with the code of its kind. The codes are
// documented in the README.
#pragma once

#include <stdexcept>
#include <string>

namespace qdet {

enum class ErrorKind {
    usage = 2,        // bad command line: unknown flag, missing value, bad number
    input = 3,        // bad input data: missing, unreadable or malformed file
    unsupported = 4,  // valid input that qdet does not handle (shape, variant, CPU)
    internal = 5,     // a bug or a failed library call (oneDNN, allocation)
};

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string &message)
        : std::runtime_error(message), kind_(kind) {}

    ErrorKind kind() const { return kind_; }
    int exit_code() const { return static_cast<int>(kind_); }

private:
    ErrorKind kind_;
};

[[noreturn]] inline void fail(ErrorKind kind, const std::string &message) {
    throw Error(kind, message);
}

// Input validation that stays in release builds, unlike assert().
inline void check_input(bool condition, const std::string &message) {
    if (!condition) throw Error(ErrorKind::input, message);
}

}  // namespace qdet
