#include "engine/file_util.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "engine/error.h"

namespace qdet {
namespace {

std::string errno_text() { return std::strerror(errno); }

std::string directory_of(const std::string &path) {
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

}  // namespace

AlignedBuffer read_file(const std::string &path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(ErrorKind::input, path + ": cannot open: " + errno_text());
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
        std::string reason = errno_text();
        ::close(fd);
        fail(ErrorKind::input, path + ": cannot read file size: " + reason);
    }
    if (S_ISDIR(info.st_mode)) {
        ::close(fd);
        fail(ErrorKind::input, path + ": is a directory, expected a file");
    }
    AlignedBuffer buffer(static_cast<size_t>(info.st_size));
    size_t done = 0;
    while (done < buffer.size()) {
        ssize_t n = ::read(fd, buffer.data() + done, buffer.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::string reason = n < 0 ? errno_text() : "file shrank while reading";
            ::close(fd);
            fail(ErrorKind::input, path + ": read failed: " + reason);
        }
        done += static_cast<size_t>(n);
    }
    ::close(fd);
    return buffer;
}

void write_file_atomically(const std::string &path, const std::function<void(const ByteSink &)> &write) {
    std::string pattern = directory_of(path) + "/.qdet-tmp-XXXXXX";
    std::vector<char> temp_path(pattern.begin(), pattern.end());
    temp_path.push_back('\0');
    int fd = ::mkstemp(temp_path.data());
    if (fd < 0) fail(ErrorKind::input, path + ": cannot create a temporary file beside it: " + errno_text());

    auto abandon = [&](const std::string &message) {
        ::close(fd);
        ::unlink(temp_path.data());
        fail(ErrorKind::input, path + ": " + message);
    };

    ByteSink sink = [&](const void *data, size_t size) {
        const auto *p = static_cast<const uint8_t *>(data);
        while (size > 0) {
            ssize_t n = ::write(fd, p, size);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) abandon("write failed: " + errno_text());
            p += n;
            size -= static_cast<size_t>(n);
        }
    };

    try {
        write(sink);
    } catch (...) {
        ::close(fd);
        ::unlink(temp_path.data());
        throw;
    }
    // mkstemp creates the file with mode 0600; give it the usual 0644 minus umask.
    mode_t mask = ::umask(0);
    ::umask(mask);
    if (::fchmod(fd, 0644 & ~mask) != 0) abandon("cannot set permissions: " + errno_text());
    if (::fsync(fd) != 0) abandon("flush to disk failed: " + errno_text());
    if (::close(fd) != 0) {
        ::unlink(temp_path.data());
        fail(ErrorKind::input, path + ": close failed: " + errno_text());
    }
    if (::rename(temp_path.data(), path.c_str()) != 0) {
        std::string reason = errno_text();
        ::unlink(temp_path.data());
        fail(ErrorKind::input, path + ": cannot rename the temporary file into place: " + reason);
    }
}

bool file_exists_regular(const std::string &path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

void check_output_file(const std::string &path, const std::string &option,
                       const std::vector<std::string> &inputs) {
    if (path.empty()) fail(ErrorKind::usage, "option --" + option + " needs a file name, got an empty one");
    struct stat output {};
    const bool exists = ::stat(path.c_str(), &output) == 0;
    if (exists && S_ISDIR(output.st_mode)) {
        fail(ErrorKind::input, path + ": is a folder, expected a file name for --" + option);
    }
    // A new file cannot be one of the inputs.
    for (const std::string &input : inputs) {
        struct stat info {};
        if (exists && ::stat(input.c_str(), &info) == 0 && info.st_dev == output.st_dev &&
            info.st_ino == output.st_ino) {
            fail(ErrorKind::usage, "option --" + option + " " + path + " is the input file " + input +
                                       ", which the output would overwrite; choose another output path");
        }
    }

    const std::string folder = directory_of(path);
    struct stat info {};
    if (::stat(folder.c_str(), &info) != 0) {
        fail(ErrorKind::input, path + ": cannot write --" + option + ": folder " + folder + " " +
                                   (errno == ENOENT ? std::string("does not exist") : errno_text()));
    }
    if (!S_ISDIR(info.st_mode)) fail(ErrorKind::input, path + ": cannot write --" + option + ": " + folder + " is not a folder");
    if (::access(folder.c_str(), W_OK | X_OK) != 0) {
        fail(ErrorKind::input, path + ": cannot write --" + option + " into folder " + folder + ": " + errno_text());
    }
}

void make_directories(const std::string &path) {
    if (path.empty()) return;
    size_t position = 0;
    while (position != std::string::npos) {
        position = path.find('/', position + 1);
        const std::string prefix = path.substr(0, position);
        if (prefix.empty()) continue;
        if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
            fail(ErrorKind::input, prefix + ": cannot create folder: " + errno_text());
        }
    }
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
        fail(ErrorKind::input, path + ": is not a folder");
    }
}

void write_text_file_atomically(const std::string &path, const std::string &text) {
    write_file_atomically(path, [&](const ByteSink &sink) { sink(text.data(), text.size()); });
}

}  // namespace qdet
