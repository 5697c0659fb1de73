// Small bridges between qdet's types and oneDNN's.
#pragma once

#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/tensor.h"

namespace qdet {

// Activation layouts used in plans (see kernels/feature_view.h).
enum class Layout { nchw, nhwc, blocked16 };

const char *layout_name(Layout layout);
dnnl::memory::format_tag format_tag(Layout layout);
dnnl::memory::data_type dnnl_type(DType dtype);

// "s8 nhwc 1x16x320x320" style description of a memory descriptor.
std::string describe(const dnnl::memory::desc &desc);

// The CPU engine and stream shared by every plan of a process.
struct DnnlContext {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
};

[[noreturn]] void throw_dnnl_error(const std::string &what, const dnnl::error &e);

// Creates a primitive descriptor, turning oneDNN's failure into an Error
// that names the layer and the shapes it was asked for.
template <typename PrimitiveDesc, typename... Args>
PrimitiveDesc make_primitive_desc(const std::string &what, Args &&...args) {
    try {
        return PrimitiveDesc(std::forward<Args>(args)...);
    } catch (const dnnl::error &e) {
        throw_dnnl_error(what, e);
    }
}

}  // namespace qdet
