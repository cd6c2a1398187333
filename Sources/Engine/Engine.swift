/// The inference engine: float32 tensors and the operations of the SwapTalk-style model, heavy
/// work on OpenBLAS sgemm. No media, no network.
///
/// - ``Tensor``: shape + pointer, owning or a view into a ``Workspace``. Feature maps are
///   `[C, H, W]` (batch 1), so a map is a `[C, H·W]` matrix that feeds sgemm without copies;
///   token sequences are `[N, D]`.
/// - ``Workspace``: per-frame bump arena; after the first frame a frame allocates nothing, so
///   memory does not grow with video length.
/// - ``ComputeContext``: thread count (a worker's `--threads`), workspace, FLOP counter; splits
///   sgemm over its threads with OpenBLAS single-threaded underneath.
/// - Operations: ``Conv2D`` (1×1 direct sgemm, Winograd F(4×4,3×3) for 3×3 stride 1, im2col +
///   sgemm otherwise), ``Linear``, ``GroupNorm`` (fused SiLU), ``LayerNorm``, ``Activation``
///   (SiLU, GELU, softmax), ``Attention`` / ``MultiHeadAttention`` (self and cross, any number
///   of heads), ``Shape`` (residual add, concat/split, transpose, nearest upsampling),
///   ``VectorQuantizer`` (`‖x‖² − 2x·c + ‖c‖²` on sgemm).
/// - ``KernelSet``: the vector loops (activations, softmax, GroupNorm, Winograd transforms) come
///   from `EngineKernels` or, on AVX2 CPUs, from `EngineKernelsAVX2` (the same source compiled
///   with `-target-cpu haswell`); identical results, chosen at run time.
/// - ``LayerProfile``: wall time per operation and shape (`dubfarm model bench --layers`).
/// - ``Benchmark``: sgemm peak and peak RSS; ``SeededRandom``: the deterministic generator.
package enum EngineOverview {}
