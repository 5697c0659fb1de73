// File helpers with the project's error policy: every failure names the file.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/aligned_buffer.h"

namespace qdet {

// Reads a whole file into a 64-byte aligned buffer.
AlignedBuffer read_file(const std::string &path);

// Writes through `write` into a temporary file beside `path`, flushes it to
// disk and renames it over `path`, so readers see the old file or the whole
// new one. On any failure the temporary file is removed and `path` is left as
// it was. `write` receives the function that appends bytes to the file.
using ByteSink = std::function<void(const void *data, size_t size)>;
void write_file_atomically(const std::string &path, const std::function<void(const ByteSink &)> &write);

// Checks, before any long work, that an output file can be created at
// `path`: the path is not empty and not a folder, and its folder exists and is
// writable. It also rejects a path that is one of the run's `inputs` (the same
// file by device and inode), which the output would overwrite. `option` names
// the command-line option in the error.
void check_output_file(const std::string &path, const std::string &option,
                       const std::vector<std::string> &inputs = {});

// True when `path` exists and is a regular file.
bool file_exists_regular(const std::string &path);

// Creates `path` and its missing parents (like mkdir -p).
void make_directories(const std::string &path);

// Convenience form for text.
void write_text_file_atomically(const std::string &path, const std::string &text);

}  // namespace qdet
