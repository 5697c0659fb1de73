// Progress of a long run over many items, on stderr: one updating line on a
// terminal, otherwise a line every tenth of the run.
#pragma once

#include <chrono>
#include <string>

namespace qdet {

class Progress {
public:
    // Disabled progress prints nothing.
    Progress(std::string label, int total, bool enabled);
    ~Progress();

    // Reports that `done` items are complete, the last one named `item`.
    void update(int done, const std::string &item);
    // Ends the updating line with a summary.
    void finish();

private:
    std::string label_;
    int total_;
    bool enabled_;
    bool terminal_;
    bool finished_ = false;
    int last_decile_ = 0;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace qdet
