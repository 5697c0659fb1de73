// Leveled logging to a replaceable sink. Quiet by default: only warnings and
// errors are shown unless a tool raises the level with --verbose.
#pragma once

#include <functional>
#include <sstream>
#include <string>

namespace qdet {

enum class LogLevel { error = 0, warning = 1, info = 2, debug = 3 };

using LogSink = std::function<void(LogLevel, const std::string &)>;

void set_log_level(LogLevel level);
// Sets the program name that starts each line on stderr ("qdet" by default).
void set_log_program(const std::string &program);
LogLevel log_level();
// Replaces the sink (stderr by default); pass nullptr to restore stderr.
void set_log_sink(LogSink sink);
void log_message(LogLevel level, const std::string &message);

inline bool log_enabled(LogLevel level) {
    return static_cast<int>(level) <= static_cast<int>(log_level());
}

}  // namespace qdet

// The stream expression is only evaluated when the level is enabled.
#define QDET_LOG(level, expr)                                        \
    do {                                                             \
        if (::qdet::log_enabled(level)) {                            \
            std::ostringstream qdet_log_stream_;                     \
            qdet_log_stream_ << expr;                                \
            ::qdet::log_message(level, qdet_log_stream_.str());      \
        }                                                            \
    } while (0)

#define QDET_LOG_INFO(expr) QDET_LOG(::qdet::LogLevel::info, expr)
#define QDET_LOG_DEBUG(expr) QDET_LOG(::qdet::LogLevel::debug, expr)
#define QDET_LOG_WARNING(expr) QDET_LOG(::qdet::LogLevel::warning, expr)
