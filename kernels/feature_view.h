// A batch-1 feature map in a channel-last or channel-blocked layout, the two
// layouts qdet's kernels read and write:
//   nhwc:       block == padded_channels == channels; element (c, y, x) at
//               (y * width + x) * channels + c
//   nChw16c:    block == 16, padded_channels a multiple of 16; element
//               (c, y, x) at ((c / 16) * height * width + y * width + x) * 16 + c % 16
// In both, a run of `block` channels at one position is contiguous.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qdet {

template <typename T>
struct FeatureView {
    T *data = nullptr;
    int channels = 0;
    int height = 0;
    int width = 0;
    int block = 0;  // channels per contiguous run
    int padded_channels = 0;

    size_t offset(int c, int y, int x) const {
        return ((static_cast<size_t>(c / block) * height + y) * width + x) * block + c % block;
    }
    // Start of the run of channel block `b` at (y, x).
    T *run(int b, int y, int x) const {
        return data + ((static_cast<size_t>(b) * height + y) * width + x) * block;
    }
    int blocks() const { return padded_channels / block; }
    // Channels of block `b` that are real, not padding.
    int block_channels(int b) const {
        int rest = channels - b * block;
        return rest < block ? rest : block;
    }
};

template <typename T>
FeatureView<T> nhwc_view(T *data, int channels, int height, int width) {
    return {data, channels, height, width, channels, channels};
}

template <typename T>
FeatureView<T> blocked16_view(T *data, int channels, int height, int width) {
    return {data, channels, height, width, 16, (channels + 15) / 16 * 16};
}

}  // namespace qdet
