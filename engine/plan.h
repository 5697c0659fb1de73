// An execution plan: the oneDNN primitives and hand-written kernels of one
// forward pass at one input size, created once and run for every image of
// that size. Activations live in a few reusable buffers ("slots") assigned
// while the plan is built; a slot is reused once the tensor in it is dead.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/aligned_buffer.h"
#include "engine/dnnl_utils.h"
#include "engine/tensor.h"
#include "kernels/feature_view.h"

namespace qdet {

enum class Stage { preprocess, backbone, rpn, roi_heads, postprocess };
constexpr int kStageCount = 5;
const char *stage_name(Stage stage);

// Milliseconds spent in each stage of one image.
struct StageTimes {
    std::array<double, kStageCount> ms{};
    double &operator[](Stage stage) { return ms[static_cast<int>(stage)]; }
    double operator[](Stage stage) const { return ms[static_cast<int>(stage)]; }
    double total() const;
};

// An activation tensor of a plan (batch 1).
struct FeatureMap {
    std::string name;  // the producing layer's torchvision module name
    int channels = 0;
    int height = 0;
    int width = 0;
    DType dtype = DType::f32;
    Layout layout = Layout::nchw;
    // Quantized types: the real value of channel c is scales[c] * q.
    // Empty for f32.
    std::vector<float> scales;
    // Set when every value is >= 0 (a ReLU output), in every precision;
    // INT8 stores such tensors as u8, the others as s8.
    bool nonnegative = false;
    dnnl::memory memory;  // its data handle is set when the plan is finalized
    int slot = -1;

    dnnl::memory::desc desc() const { return memory.get_desc(); }
    void *data() const { return memory.get_data_handle(); }

    template <typename T>
    FeatureView<T> view() const;
};

// Receives named activations while a plan runs (calibration, debugging).
using ActivationObserver = std::function<void(const FeatureMap &)>;

class Plan;

// The activation buffers of a detector's plans. Only one plan runs at a
// time, so plans for different input sizes share the buffers: slot i of
// every plan is buffer i, as large as the largest plan needs. When a new
// plan needs more, the buffers grow and every plan is rebound.
class ActivationArena {
public:
    ActivationArena() = default;
    ActivationArena(const ActivationArena &) = delete;
    ActivationArena &operator=(const ActivationArena &) = delete;

    // Grows the buffers to at least these sizes and binds `plan` to them.
    void attach(Plan *plan, const std::vector<size_t> &slot_bytes, size_t scratchpad_bytes);
    void detach(Plan *plan);
    size_t bytes() const;

private:
    std::vector<AlignedBuffer> slots_;
    AlignedBuffer scratchpad_;
    std::vector<Plan *> plans_;
};

class Plan {
public:
    Plan() = default;
    ~Plan();
    Plan(const Plan &) = delete;
    Plan &operator=(const Plan &) = delete;

    // Executes the steps in order, adding each step's time to its stage.
    void run(dnnl::stream &stream, StageTimes *times, const ActivationObserver *observer = nullptr);

    // Bytes of activation buffers this plan needs (shared with other plans
    // of the same arena).
    size_t activation_bytes() const;
    size_t step_count() const { return steps_.size(); }

    // Per-step timing, summed over runs while enabled (for --profile).
    struct StepProfile {
        std::string label;
        Stage stage;
        double total_ms = 0;
        int runs = 0;
    };
    void set_profiling(bool enabled) { profiling_ = enabled; }
    std::vector<StepProfile> profile() const;

private:
    friend class PlanBuilder;
    friend class ActivationArena;
    // Points every tensor and scratchpad at the arena's buffers.
    void bind(const std::vector<AlignedBuffer> &slots, const AlignedBuffer &scratchpad);

    struct Step {
        Stage stage;
        std::string label;
        dnnl::primitive primitive;  // empty for kernels
        std::unordered_map<int, dnnl::memory> args;
        std::function<void()> kernel;
        std::vector<FeatureMap> observed;  // tensors complete after this step
    };
    std::vector<Step> steps_;
    std::vector<double> step_ms_;
    int profiled_runs_ = 0;
    bool profiling_ = false;
    std::vector<std::pair<dnnl::memory, int>> bindings_;  // tensor memory -> slot
    std::vector<dnnl::memory> scratchpad_users_;
    std::vector<size_t> slot_bytes_;
    size_t scratchpad_bytes_ = 0;
    ActivationArena *arena_ = nullptr;
    std::unique_ptr<ActivationArena> own_arena_;  // when built without a shared arena
};

class PlanBuilder {
public:
    // Without `arena`, the plan gets buffers of its own.
    PlanBuilder(const dnnl::engine &engine, Plan *plan, ActivationArena *arena = nullptr)
        : engine_(engine), plan_(plan), arena_(arena) {}

    // A new tensor in a free slot (or a new one).
    FeatureMap allocate(const std::string &name, int channels, int height, int width, DType dtype, Layout layout,
                        std::vector<float> scales = {});
    // A new tensor with a descriptor chosen by a primitive.
    FeatureMap allocate(const std::string &name, const dnnl::memory::desc &desc, int channels, int height, int width,
                        DType dtype, Layout layout, std::vector<float> scales = {});
    // Marks the tensor's slot as free for tensors allocated later.
    void release(const FeatureMap &map);

    // Appends a primitive; the shared scratchpad is added to `args` when the
    // primitive uses one (it must be created with scratchpad_mode::user).
    void add_primitive(Stage stage, const std::string &label, const dnnl::primitive &primitive,
                       const dnnl::memory::desc &scratchpad, std::unordered_map<int, dnnl::memory> args);
    void add_kernel(Stage stage, const std::string &label, std::function<void()> kernel);
    // Reports `map` to the run's observer after the last step added so far.
    void observe(const FeatureMap &map);

    // Sizes the arena's buffers for this plan and binds every tensor to them.
    void finalize();

    const dnnl::engine &engine() const { return engine_; }

private:
    struct Slot {
        size_t capacity = 0;
        bool in_use = false;
    };
    int acquire_slot(size_t bytes);

    dnnl::engine engine_;
    Plan *plan_;
    ActivationArena *arena_;
    std::vector<Slot> slots_;
    std::vector<std::pair<dnnl::memory, int>> bindings_;  // memory -> slot
    std::vector<dnnl::memory> scratchpad_users_;
    size_t scratchpad_bytes_ = 0;
};

}  // namespace qdet
