// Owned, 64-byte aligned, uninitialised byte buffer (one cache line, and the
// alignment AVX-512 loads and oneDNN prefer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace qdet {

constexpr size_t kAlignment = 64;

inline size_t align_up(size_t value, size_t alignment = kAlignment) {
    return (value + alignment - 1) / alignment * alignment;
}

class AlignedBuffer {
public:
    AlignedBuffer() = default;
    explicit AlignedBuffer(size_t size) { resize(size); }

    // Discards the contents.
    void resize(size_t size) {
        data_.reset();
        size_ = 0;
        if (size == 0) return;
        void *p = std::aligned_alloc(kAlignment, align_up(size));
        if (p == nullptr) throw std::bad_alloc();
        data_.reset(static_cast<uint8_t *>(p));
        size_ = size;
    }

    uint8_t *data() { return data_.get(); }
    const uint8_t *data() const { return data_.get(); }
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

    template <typename T>
    T *as() { return reinterpret_cast<T *>(data_.get()); }
    template <typename T>
    const T *as() const { return reinterpret_cast<const T *>(data_.get()); }

private:
    struct FreeDeleter {
        void operator()(uint8_t *p) const { std::free(p); }
    };
    std::unique_ptr<uint8_t[], FreeDeleter> data_;
    size_t size_ = 0;
};

}  // namespace qdet
