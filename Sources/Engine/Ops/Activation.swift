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

    /// Softmax over each row of a `rows × cols` matrix, rows split over the context's threads.
    public static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int, _ ctx: ComputeContext) {
        ctx.parallelFor(rows, minChunk: 32) { r in softmaxRow(p + r * cols, cols) }
    }

    /// Softmax over each row of a `rows × cols` matrix on the calling thread.
    public static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows { softmaxRow(p + r * cols, cols) }
    }

    @inline(__always)
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ cols: Int) {
        typealias V8 = FastMath.V8
        let cv = cols & ~7
        var mv = V8(repeating: -Float.infinity)
        var i = 0
        while i < cv {
            let x = UnsafeRawPointer(row + i).loadUnaligned(as: V8.self)
            mv.replace(with: x, where: x .> mv)
            i += 8
        }
        var m = mv.max()
        while i < cols { m = max(m, row[i]); i += 1 }
        let mb = V8(repeating: m)
        var acc = V8()
        i = 0
        while i < cv {
            let e = FastMath.exp(UnsafeRawPointer(row + i).loadUnaligned(as: V8.self) - mb)
            UnsafeMutableRawPointer(row + i).storeBytes(of: e, as: V8.self)
            acc += e
            i += 8
        }
        if i < cols { FastMath.map(row + i, cols - i) { FastMath.exp($0 - mb) } }
        var s = acc.sum()
        while i < cols { s += row[i]; i += 1 }
        let inv = V8(repeating: 1 / s)
        i = 0
        while i < cv {
            UnsafeMutableRawPointer(row + i).storeBytes(of: UnsafeRawPointer(row + i).loadUnaligned(as: V8.self) * inv, as: V8.self)
            i += 8
        }
        while i < cols { row[i] *= inv[0]; i += 1 }
    }

    /// Softmax over the last dimension of `x`.
    public static func softmax(_ x: Tensor, _ ctx: ComputeContext) {
        let cols = x.shape.last ?? 1
        softmaxRows(x.data, rows: x.count / cols, cols: cols, ctx)
    }
}
