import Foundation

/// Element-wise activations and softmax, in place.
package enum Activation {
    /// `x · sigmoid(x)`.
    package static func silu(_ x: Tensor, _ ctx: ComputeContext) {
        let k = ctx.kernels
        chunked(x, ctx) { p, n in k.silu(p, n) }
    }

    /// GELU, `0.5 x (1 + erf(x / √2))` (PyTorch's default, erf to 1.5e-7).
    package static func gelu(_ x: Tensor, _ ctx: ComputeContext) {
        let k = ctx.kernels
        chunked(x, ctx) { p, n in k.gelu(p, n) }
    }

    private static func chunked(_ x: Tensor, _ ctx: ComputeContext, _ body: (UnsafeMutablePointer<Float>, Int) -> Void) {
        let n = x.count, d = x.data
        let parts = n >= 16384 ? ctx.threads : 1
        ctx.parallelFor(parts) { k in
            let lo = (n * k / parts) & ~7, hi = k == parts - 1 ? n : (n * (k + 1) / parts) & ~7
            body(d + lo, hi - lo)
        }
    }

    /// Softmax over each row of a `rows × cols` matrix, rows split over the context's threads.
    package static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int, _ ctx: ComputeContext) {
        let k = ctx.kernels
        ctx.parallelFor(rows, minChunk: 32) { r in k.softmaxRow(p + r * cols, cols) }
    }

    /// Softmax over each row of a `rows × cols` matrix on the calling thread.
    package static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int, kernels: KernelSet = .active) {
        for r in 0..<rows { kernels.softmaxRow(p + r * cols, cols) }
    }

    /// Softmax over the last dimension of `x`.
    package static func softmax(_ x: Tensor, _ ctx: ComputeContext) {
        let cols = x.shape.last ?? 1
        softmaxRows(x.data, rows: x.count / cols, cols: cols, ctx)
    }
}
