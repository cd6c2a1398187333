import Foundation

/// Element-wise activations and softmax, in place.
public enum Activation {
    /// `x · sigmoid(x)`.
    public static func silu(_ x: Tensor, _ ctx: ComputeContext) {
        chunked(x, ctx) { p, n in FastMath.map(p, n) { FastMath.silu($0) } }
    }

    /// GELU, `0.5 x (1 + erf(x / √2))` (PyTorch's default, erf to 1.5e-7).
    public static func gelu(_ x: Tensor, _ ctx: ComputeContext) {
        chunked(x, ctx) { p, n in FastMath.map(p, n) { 0.5 * $0 * (1 + FastMath.erf($0 * 0.707_106_781_186_547_52)) } }
    }

    private static func chunked(_ x: Tensor, _ ctx: ComputeContext, _ body: (UnsafeMutablePointer<Float>, Int) -> Void) {
        let n = x.count, d = x.data
        let parts = n >= 16384 ? ctx.threads : 1
        ctx.parallelFor(parts) { k in
            let lo = (n * k / parts) & ~7, hi = k == parts - 1 ? n : (n * (k + 1) / parts) & ~7
            body(d + lo, hi - lo)
        }
    }

    /// Softmax over each row of a `rows × cols` matrix.
    public static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int, _ ctx: ComputeContext) {
        ctx.parallelFor(rows, minChunk: 32) { r in
            let row = p + r * cols
            var m = -Float.infinity
            for i in 0..<cols { m = max(m, row[i]) }
            let mv = FastMath.V8(repeating: m)
            FastMath.map(row, cols) { FastMath.exp($0 - mv) }
            var s: Float = 0
            for i in 0..<cols { s += row[i] }
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
