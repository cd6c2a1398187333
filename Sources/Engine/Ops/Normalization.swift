import Foundation

/// Activation fused into a normalisation's output pass.
public enum FusedActivation: Sendable { case none, silu }

/// Group normalisation over a `[C, H, W]` map (PyTorch `GroupNorm`, batch 1): each group of
/// `C / groups` channels is one contiguous block, normalised with its own mean and biased
/// variance, then scaled per channel. Optionally fused with SiLU.
public struct GroupNorm: @unchecked Sendable {
    public let groups: Int
    public let eps: Float
    /// `[C]` scale and shift.
    public let weight: Tensor
    public let bias: Tensor

    public init(groups: Int, weight: Tensor, bias: Tensor, eps: Float = 1e-6) {
        precondition(weight.count % groups == 0, "groupnorm: \(weight.count) channels not divisible by \(groups) groups")
        self.groups = groups; self.eps = eps; self.weight = weight; self.bias = bias
    }

    /// Normalises `x` into a new workspace tensor of the same shape.
    public func callAsFunction(_ x: Tensor, activation: FusedActivation = .none, _ ctx: ComputeContext) -> Tensor {
        let c = x.shape[0]
        precondition(c == weight.count, "groupnorm: input \(x.shape) has \(c) channels, weights \(weight.count)")
        let plane = x.count / c
        let y = ctx.workspace.tensor(x.shape)
        let cpg = c / groups, n = cpg * plane
        let xd = x.data, yd = y.data, wd = weight.data, bd = bias.data, eps = self.eps
        typealias V8 = SIMD8<Float>
        @inline(__always) func ld(_ q: UnsafeMutablePointer<Float>) -> V8 { UnsafeRawPointer(q).loadUnaligned(as: V8.self) }
        @inline(__always) func st(_ q: UnsafeMutablePointer<Float>, _ v: V8) { UnsafeMutableRawPointer(q).storeBytes(of: v, as: V8.self) }
        ctx.parallelFor(groups) { g in
            let base = xd + g * n
            // one pass for both moments, shifted by the group's first value so that
            // E[(x-k)²] - E[x-k]² does not cancel; float lanes are flushed to doubles every
            // 1024 values
            let k = base[0], kv = V8(repeating: k)
            let nv = n & ~7
            var s = 0.0, ss = 0.0, i = 0
            while i < nv {
                let end = min(nv, i + 1024)
                var a1 = V8(), a2 = V8()
                while i < end { let d = ld(base + i) - kv; a1 += d; a2 += d * d; i += 8 }
                s += Double(a1.sum()); ss += Double(a2.sum())
            }
            while i < n { let d = Double(base[i] - k); s += d; ss += d * d; i += 1 }
            let ms = s / Double(n)
            let mean = Double(k) + ms
            let rstd = 1 / (max(0, ss / Double(n) - ms * ms) + Double(eps)).squareRoot()
            for cc in 0..<cpg {
                let ch = g * cpg + cc
                let a = Float(rstd) * wd[ch]
                let b = bd[ch] - Float(mean) * a
                let av = V8(repeating: a), bv = V8(repeating: b)
                let src = base + cc * plane, dst = yd + ch * plane
                let pv = plane & ~7
                var j = 0
                switch activation {
                case .none:
                    while j < pv { st(dst + j, ld(src + j) * av + bv); j += 8 }
                    while j < plane { dst[j] = src[j] * a + b; j += 1 }
                case .silu:
                    while j < pv { st(dst + j, FastMath.silu(ld(src + j) * av + bv)); j += 8 }
                    while j < plane { dst[j] = FastMath.silu(src[j] * a + b); j += 1 }
                }
            }
        }
        return y
    }
}

/// Layer normalisation over the last dimension of tokens `[N, D]` (PyTorch `LayerNorm`).
public struct LayerNorm: @unchecked Sendable {
    public let eps: Float
    /// `[D]` scale and shift.
    public let weight: Tensor
    public let bias: Tensor

    public init(weight: Tensor, bias: Tensor, eps: Float = 1e-5) {
        self.weight = weight; self.bias = bias; self.eps = eps
    }

    /// Normalises each token of `x` into a new workspace tensor.
    public func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        let d = weight.count
        precondition(x.shape.last == d, "layernorm: input \(x.shape), expected last dim \(d)")
        let n = x.count / d
        let y = ctx.workspace.tensor(x.shape)
        let xd = x.data, yd = y.data, wd = weight.data, bd = bias.data, eps = Double(self.eps)
        typealias V8 = SIMD8<Float>
        @inline(__always) func ld(_ q: UnsafeMutablePointer<Float>) -> V8 { UnsafeRawPointer(q).loadUnaligned(as: V8.self) }
        @inline(__always) func st(_ q: UnsafeMutablePointer<Float>, _ v: V8) { UnsafeMutableRawPointer(q).storeBytes(of: v, as: V8.self) }
        let dv = d & ~7
        // rows are short (one token): run small inputs on the calling thread
        let body: (Int) -> Void = { r in
            let src = xd + r * d, dst = yd + r * d
            var acc = V8(), i = 0
            while i < dv { acc += ld(src + i); i += 8 }
            var s = 0.0
            for l in 0..<8 { s += Double(acc[l]) }
            while i < d { s += Double(src[i]); i += 1 }
            let mean = s / Double(d)
            let mv = V8(repeating: Float(mean))
            var acc2 = V8()
            i = 0
            while i < dv { let t = ld(src + i) - mv; acc2 += t * t; i += 8 }
            var v = 0.0
            for l in 0..<8 { v += Double(acc2[l]) }
            while i < d { let t = Double(src[i]) - mean; v += t * t; i += 1 }
            let rstd = Float(1 / (v / Double(d) + eps).squareRoot())
            let rv = V8(repeating: rstd)
            i = 0
            while i < dv { st(dst + i, (ld(src + i) - mv) * rv * ld(wd + i) + ld(bd + i)); i += 8 }
            let m = Float(mean)
            while i < d { dst[i] = (src[i] - m) * rstd * wd[i] + bd[i]; i += 1 }
        }
        if x.count < 65_536 {
            for r in 0..<n { body(r) }
        } else {
            ctx.parallelFor(n, minChunk: 64, body)
        }
        return y
    }
}
