#include "engine/plan.h"

#include <algorithm>
#include <chrono>

#include "engine/error.h"

namespace qdet {

const char *stage_name(Stage stage) {
    switch (stage) {
        case Stage::preprocess: return "preprocess";
        case Stage::backbone: return "backbone+fpn";
        case Stage::rpn: return "rpn";
        case Stage::roi_heads: return "roi_heads";
        case Stage::postprocess: return "postprocess";
    }
    return "?";
}

double StageTimes::total() const {
    double sum = 0;
    for (double v : ms) sum += v;
    return sum;
}

template <typename T>
FeatureView<T> FeatureMap::view() const {
    T *p = static_cast<T *>(memory.get_data_handle());
    switch (layout) {
        case Layout::nhwc: return nhwc_view(p, channels, height, width);
        case Layout::blocked16: return blocked16_view(p, channels, height, width);
        case Layout::nchw: break;
    }
    fail(ErrorKind::internal, "tensor '" + name + "' is planar; kernels read nhwc or nChw16c");
}

template FeatureView<float> FeatureMap::view<float>() const;
template FeatureView<const float> FeatureMap::view<const float>() const;
template FeatureView<int8_t> FeatureMap::view<int8_t>() const;
template FeatureView<const int8_t> FeatureMap::view<const int8_t>() const;
template FeatureView<uint8_t> FeatureMap::view<uint8_t>() const;
template FeatureView<const uint8_t> FeatureMap::view<const uint8_t>() const;

void Plan::run(dnnl::stream &stream, StageTimes *times, const ActivationObserver *observer) {
    using clock = std::chrono::steady_clock;
    auto start = clock::now();
    if (profiling_) {
        step_ms_.resize(steps_.size(), 0.0);
        ++profiled_runs_;
    }
    for (size_t i = 0; i < steps_.size(); ++i) {
        Step &step = steps_[i];
        const auto step_start = profiling_ ? clock::now() : clock::time_point();
        if (step.kernel) {
            step.kernel();
        } else {
            step.primitive.execute(stream, step.args);
        }
        if (profiling_) {
            stream.wait();
            step_ms_[i] += std::chrono::duration<double, std::milli>(clock::now() - step_start).count();
        }
        if (times != nullptr) {
            // Primitives run synchronously on the CPU engine; waiting keeps
            // the per-stage split honest should that change.
            stream.wait();
            auto now = clock::now();
            (*times)[step.stage] += std::chrono::duration<double, std::milli>(now - start).count();
            start = now;
        }
        if (observer != nullptr && *observer) {
            stream.wait();
            for (const FeatureMap &map : step.observed) (*observer)(map);
        }
    }
    stream.wait();
}

std::vector<Plan::StepProfile> Plan::profile() const {
    std::vector<StepProfile> result;
    for (size_t i = 0; i < step_ms_.size(); ++i) {
        result.push_back({steps_[i].label, steps_[i].stage, step_ms_[i], profiled_runs_});
    }
    return result;
}

size_t Plan::activation_bytes() const {
    size_t total = scratchpad_bytes_;
    for (size_t bytes : slot_bytes_) total += bytes;
    return total;
}

Plan::~Plan() {
    if (arena_ != nullptr) arena_->detach(this);
}

void Plan::bind(const std::vector<AlignedBuffer> &slots, const AlignedBuffer &scratchpad) {
    for (auto &[memory, slot] : bindings_) memory.set_data_handle(const_cast<uint8_t *>(slots[slot].data()));
    for (dnnl::memory &memory : scratchpad_users_) {
        memory.set_data_handle(const_cast<uint8_t *>(scratchpad.data()));
    }
}

void ActivationArena::attach(Plan *plan, const std::vector<size_t> &slot_bytes, size_t scratchpad_bytes) {
    bool grown = false;
    if (slots_.size() < slot_bytes.size()) slots_.resize(slot_bytes.size());
    for (size_t i = 0; i < slot_bytes.size(); ++i) {
        if (slots_[i].size() < slot_bytes[i]) {
            slots_[i].resize(slot_bytes[i]);
            grown = true;
        }
    }
    if (scratchpad_.size() < scratchpad_bytes) {
        scratchpad_.resize(scratchpad_bytes);
        grown = true;
    }
    plans_.push_back(plan);
    plan->arena_ = this;
    if (grown) {
        for (Plan *p : plans_) p->bind(slots_, scratchpad_);
    } else {
        plan->bind(slots_, scratchpad_);
    }
}

void ActivationArena::detach(Plan *plan) {
    plans_.erase(std::remove(plans_.begin(), plans_.end(), plan), plans_.end());
}

size_t ActivationArena::bytes() const {
    size_t total = scratchpad_.size();
    for (const AlignedBuffer &slot : slots_) total += slot.size();
    return total;
}

FeatureMap PlanBuilder::allocate(const std::string &name, int channels, int height, int width, DType dtype,
                                 Layout layout, std::vector<float> scales) {
    dnnl::memory::desc desc({1, channels, height, width}, dnnl_type(dtype), format_tag(layout));
    return allocate(name, desc, channels, height, width, dtype, layout, std::move(scales));
}

FeatureMap PlanBuilder::allocate(const std::string &name, const dnnl::memory::desc &desc, int channels, int height,
                                 int width, DType dtype, Layout layout, std::vector<float> scales) {
    if (dtype != DType::f32 && static_cast<int>(scales.size()) != channels) {
        fail(ErrorKind::internal, "plan: quantized tensor '" + name + "' needs one scale per channel");
    }
    FeatureMap map;
    map.name = name;
    map.channels = channels;
    map.height = height;
    map.width = width;
    map.dtype = dtype;
    map.layout = layout;
    map.scales = std::move(scales);
    map.memory = dnnl::memory(desc, engine_, DNNL_MEMORY_NONE);
    map.slot = acquire_slot(desc.get_size());
    bindings_.emplace_back(map.memory, map.slot);
    return map;
}

int PlanBuilder::acquire_slot(size_t bytes) {
    // Best fit among free slots; else grow the largest free slot (binding
    // happens in finalize(), so growing is free); else a new slot.
    int best = -1;
    int largest = -1;
    for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
        const Slot &slot = slots_[i];
        if (slot.in_use) continue;
        if (slot.capacity >= bytes && (best < 0 || slot.capacity < slots_[best].capacity)) best = i;
        if (largest < 0 || slot.capacity > slots_[largest].capacity) largest = i;
    }
    int chosen = best >= 0 ? best : largest;
    if (chosen < 0) {
        slots_.push_back({});
        chosen = static_cast<int>(slots_.size()) - 1;
    }
    slots_[chosen].capacity = std::max(slots_[chosen].capacity, bytes);
    slots_[chosen].in_use = true;
    return chosen;
}

void PlanBuilder::release(const FeatureMap &map) {
    if (map.slot < 0 || map.slot >= static_cast<int>(slots_.size()) || !slots_[map.slot].in_use) {
        fail(ErrorKind::internal, "plan: tensor '" + map.name + "' released twice or never allocated");
    }
    slots_[map.slot].in_use = false;
}

void PlanBuilder::add_primitive(Stage stage, const std::string &label, const dnnl::primitive &primitive,
                                const dnnl::memory::desc &scratchpad, std::unordered_map<int, dnnl::memory> args) {
    Plan::Step step;
    step.stage = stage;
    step.label = label;
    step.primitive = primitive;
    if (scratchpad.get_size() > 0) {
        dnnl::memory memory(scratchpad, engine_, DNNL_MEMORY_NONE);
        scratchpad_users_.push_back(memory);
        scratchpad_bytes_ = std::max(scratchpad_bytes_, scratchpad.get_size());
        args[DNNL_ARG_SCRATCHPAD] = memory;
    }
    step.args = std::move(args);
    plan_->steps_.push_back(std::move(step));
}

void PlanBuilder::add_kernel(Stage stage, const std::string &label, std::function<void()> kernel) {
    Plan::Step step;
    step.stage = stage;
    step.label = label;
    step.kernel = std::move(kernel);
    plan_->steps_.push_back(std::move(step));
}

void PlanBuilder::observe(const FeatureMap &map) {
    if (plan_->steps_.empty()) fail(ErrorKind::internal, "plan: observe() before any step");
    plan_->steps_.back().observed.push_back(map);
}

void PlanBuilder::finalize() {
    plan_->bindings_ = bindings_;
    plan_->scratchpad_users_ = scratchpad_users_;
    plan_->slot_bytes_.clear();
    for (const Slot &slot : slots_) plan_->slot_bytes_.push_back(slot.capacity);
    plan_->scratchpad_bytes_ = scratchpad_bytes_;
    ActivationArena *arena = arena_;
    if (arena == nullptr) {
        plan_->own_arena_ = std::make_unique<ActivationArena>();
        arena = plan_->own_arena_.get();
    }
    arena->attach(plan_, plan_->slot_bytes_, scratchpad_bytes_);
}

}  // namespace qdet
