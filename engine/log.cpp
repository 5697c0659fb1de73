#include "engine/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace qdet {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::warning)};
std::mutex g_sink_mutex;
LogSink g_sink;
std::string g_program = "qdet";

const char *level_name(LogLevel level) {
    switch (level) {
        case LogLevel::error: return "error";
        case LogLevel::warning: return "warning";
        case LogLevel::info: return "info";
        case LogLevel::debug: return "debug";
    }
    return "log";
}

}  // namespace

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }

void set_log_program(const std::string &program) {
    std::lock_guard<std::mutex> lock(g_sink_mutex);
    g_program = program;
}

LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

void set_log_sink(LogSink sink) {
    std::lock_guard<std::mutex> lock(g_sink_mutex);
    g_sink = std::move(sink);
}

void log_message(LogLevel level, const std::string &message) {
    std::lock_guard<std::mutex> lock(g_sink_mutex);
    if (g_sink) {
        g_sink(level, message);
        return;
    }
    std::fprintf(stderr, "%s: %s: %s\n", g_program.c_str(), level_name(level), message.c_str());
}

}  // namespace qdet
