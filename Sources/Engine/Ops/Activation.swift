import Foundation

/// Element-wise activations and softmax, in place.
public enum Activation {
    /// `x · sigmoid(x)`.
    public static func silu(_ x: Tensor, _ ctx: ComputeContext) {
        let d = x.data
        ctx.parallelFor(x.count, minChunk: 4096) { i in let t = d[i]; d[i] = t / (1 + expf(-t)) }
    }

    /// Exact GELU, `0.5 x (1 + erf(x / √2))` (PyTorch's default).
    public static func gelu(_ x: Tensor, _ ctx: ComputeContext) {
        let d = x.data
        ctx.parallelFor(x.count, minChunk: 4096) { i in
            let t = d[i]
            d[i] = 0.5 * t * (1 + erff(t * 0.70710678118654752))
        }
    }

    /// Softmax over each row of a `rows × cols` matrix.
    public static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int, _ ctx: ComputeContext) {
        ctx.parallelFor(rows, minChunk: 8) { r in
            let row = p + r * cols
            var m = -Float.infinity
            for i in 0..<cols { m = max(m, row[i]) }
            var s: Float = 0
            for i in 0..<cols { let e = expf(row[i] - m); row[i] = e; s += e }
            let inv = 1 / s
            for i in 0..<cols { row[i] *= inv }
        }
    }

    /// Softmax over the last dimension of `x`.
    public static func softmax(_ x: Tensor, _ ctx: ComputeContext) {
        let cols = x.shape.last ?? 1
        softmaxRows(x.data, rows: x.count / cols, cols: cols, ctx)
    }
}
