#include "engine/dnnl_utils.h"

#include <sstream>

#include "engine/error.h"

namespace qdet {

const char *layout_name(Layout layout) {
    switch (layout) {
        case Layout::nchw: return "nchw";
        case Layout::nhwc: return "nhwc";
        case Layout::blocked16: return "nChw16c";
    }
    return "?";
}

dnnl::memory::format_tag format_tag(Layout layout) {
    using tag = dnnl::memory::format_tag;
    switch (layout) {
        case Layout::nchw: return tag::nchw;
        case Layout::nhwc: return tag::nhwc;
        case Layout::blocked16: return tag::nChw16c;
    }
    return tag::undef;
}

dnnl::memory::data_type dnnl_type(DType dtype) {
    using dt = dnnl::memory::data_type;
    switch (dtype) {
        case DType::f32: return dt::f32;
        case DType::s8: return dt::s8;
        case DType::u8: return dt::u8;
        case DType::s32: return dt::s32;
        case DType::i64: break;
    }
    fail(ErrorKind::internal, std::string("data type ") + dtype_name(dtype) + " has no oneDNN equivalent");
}

std::string describe(const dnnl::memory::desc &desc) {
    std::ostringstream out;
    switch (desc.data_type()) {
        case dnnl::memory::data_type::f32: out << "f32"; break;
        case dnnl::memory::data_type::s8: out << "s8"; break;
        case dnnl::memory::data_type::u8: out << "u8"; break;
        case dnnl::memory::data_type::s32: out << "s32"; break;
        default: out << "dt" << static_cast<int>(desc.data_type()); break;
    }
    const auto dims = desc.dims();
    out << ' ';
    for (size_t i = 0; i < dims.size(); ++i) out << (i ? "x" : "") << dims[i];
    return out.str();
}

void throw_dnnl_error(const std::string &what, const dnnl::error &e) {
    fail(ErrorKind::internal, what + ": oneDNN failed with status " + std::to_string(static_cast<int>(e.status)) +
                                  ": " + e.what());
}

}  // namespace qdet
