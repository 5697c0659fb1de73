#include "engine/progress.h"

#include <cstdio>
#include <unistd.h>

namespace qdet {

Progress::Progress(std::string label, int total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled && total > 0),
      terminal_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

void Progress::update(int done, const std::string &item) {
    if (!enabled_) return;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double left = done > 0 ? elapsed / done * (total_ - done) : 0.0;
    if (terminal_) {
        std::fprintf(stderr, "\r%s: %d/%d %s, %.0f s elapsed, about %.0f s left\033[K", label_.c_str(), done,
                     total_, item.c_str(), elapsed, left);
        std::fflush(stderr);
        return;
    }
    const int decile = done * 10 / total_;
    if (decile > last_decile_ || done == total_) {
        last_decile_ = decile;
        std::fprintf(stderr, "%s: %d/%d (%d%%), %.0f s elapsed, about %.0f s left\n", label_.c_str(), done, total_,
                     done * 100 / total_, elapsed, left);
    }
}

void Progress::finish() {
    if (!enabled_ || finished_) return;
    finished_ = true;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (terminal_) std::fprintf(stderr, "\r%s: done in %.1f s\033[K\n", label_.c_str(), elapsed);
}

}  // namespace qdet
