import Foundation

/// Activation fused into a normalisation's output pass.
package enum FusedActivation: Sendable { case none, silu }

/// Group normalisation over a `[C, H, W]` map (PyTorch `GroupNorm`, batch 1): each group of
/// `C / groups` channels is one contiguous block, normalised with its own mean and biased
/// variance, then scaled per channel. Optionally fused with SiLU.
package struct GroupNorm: @unchecked Sendable {
    package let groups: Int
    package let eps: Float
    /// `[C]` scale and shift.
    package let weight: Tensor
    package let bias: Tensor

    package init(groups: Int, weight: Tensor, bias: Tensor, eps: Float = 1e-6) {
        precondition(weight.count % groups == 0, "groupnorm: \(weight.count) channels not divisible by \(groups) groups")
        self.groups = groups; self.eps = eps; self.weight = weight; self.bias = bias
    }

    /// Normalises `x` into a new workspace tensor of the same shape.
    package func callAsFunction(_ x: Tensor, activation: FusedActivation = .none, _ ctx: ComputeContext) -> Tensor {
        ctx.timed("groupnorm \(x.shape.map(String.init).joined(separator: "×"))" + (activation == .silu ? " +silu" : "")) {
            normalize(x, activation: activation, ctx)
        }
    }

    private func normalize(_ x: Tensor, activation: FusedActivation, _ ctx: ComputeContext) -> Tensor {
        let c = x.shape[0]
        precondition(c == weight.count, "groupnorm: input \(x.shape) has \(c) channels, weights \(weight.count)")
        let plane = x.count / c
        let y = ctx.workspace.tensor(x.shape)
        let cpg = c / groups
        let xd = x.data, yd = y.data, k = ctx.kernels, silu = activation == .silu
        ctx.parallelFor(groups) { g in
            let (scale, shift) = groupAffine(g, xd, plane: plane, k)
            for cc in 0..<cpg {
                let ch = g * cpg + cc
                k.affine(xd + ch * plane, yd + ch * plane, plane, scale[cc], shift[cc], silu)
            }
        }
        return y
    }

    /// The statistics of `x` as a per-channel map `act(x · scale[c] + shift[c])` equal to this
    /// normalisation (and `activation`), without writing the normalised map: a convolution
    /// that takes it (``Conv2D/callAsFunction(_:input:upsample2x:residual:_:)``) applies it to
    /// its input as it reads it. One pass over `x`; `scale` and `shift` live in the workspace.
    package func affine(_ x: Tensor, activation: FusedActivation = .none, _ ctx: ComputeContext) -> ChannelAffine {
        ctx.timed("groupnorm statistics \(x.shape.map(String.init).joined(separator: "×"))") { statistics(x, activation: activation, ctx) }
    }

    private func statistics(_ x: Tensor, activation: FusedActivation, _ ctx: ComputeContext) -> ChannelAffine {
        let c = x.shape[0]
        precondition(c == weight.count, "groupnorm: input \(x.shape) has \(c) channels, weights \(weight.count)")
        let plane = x.count / c
        let cpg = c / groups
        let scale = ctx.workspace.allocate(c), shift = ctx.workspace.allocate(c)
        let xd = x.data, k = ctx.kernels
        ctx.parallelFor(groups, minChunk: max(1, 16_384 / max(1, cpg * plane))) { g in
            let (a, b) = groupAffine(g, xd, plane: plane, k)
            for cc in 0..<cpg { scale[g * cpg + cc] = a[cc]; shift[g * cpg + cc] = b[cc] }
        }
        return ChannelAffine(scale: scale, shift: shift, activation: activation, channels: c)
    }

    /// Scale and shift of each channel of group `g` (moments of the group's contiguous block).
    @inline(__always)
    private func groupAffine(_ g: Int, _ xd: UnsafeMutablePointer<Float>, plane: Int, _ k: KernelSet) -> (scale: [Float], shift: [Float]) {
        let cpg = weight.count / groups
        let (mean, variance) = k.moments(xd + g * cpg * plane, cpg * plane)
        let rstd = 1 / (variance + Double(eps)).squareRoot()
        var a = [Float](repeating: 0, count: cpg), b = [Float](repeating: 0, count: cpg)
        for cc in 0..<cpg {
            let ch = g * cpg + cc
            a[cc] = Float(rstd) * weight.data[ch]
            b[cc] = bias.data[ch] - Float(mean) * a[cc]
        }
        return (a, b)
    }
}

/// A per-channel affine map and activation, `act(x · scale[c] + shift[c])`, that a
/// convolution applies to its input as it reads it (a GroupNorm + SiLU fused into the next
/// convolution; see ``GroupNorm/affine(_:activation:_:)``).
package struct ChannelAffine: @unchecked Sendable {
    /// `[C]` in the workspace.
    package let scale: UnsafeMutablePointer<Float>
    package let shift: UnsafeMutablePointer<Float>
    package let activation: FusedActivation
    package let channels: Int

    /// `act(x · scale + shift)` of a whole `[C, ...]` map into a new workspace tensor.
    package func apply(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        precondition(x.shape[0] == channels, "affine: input \(x.shape), expected \(channels) channels")
        let plane = x.count / channels
        let y = ctx.workspace.tensor(x.shape)
        let xd = x.data, yd = y.data, k = ctx.kernels, silu = activation == .silu
        let scale = self.scale, shift = self.shift
        ctx.parallelFor(channels, minChunk: max(1, 16_384 / max(1, plane))) { ch in
            k.affine(xd + ch * plane, yd + ch * plane, plane, scale[ch], shift[ch], silu)
        }
        return y
    }
}

/// Layer normalisation over the last dimension of tokens `[N, D]` (PyTorch `LayerNorm`).
package struct LayerNorm: @unchecked Sendable {
    package let eps: Float
    /// `[D]` scale and shift.
    package let weight: Tensor
    package let bias: Tensor

    package init(weight: Tensor, bias: Tensor, eps: Float = 1e-5) {
        self.weight = weight; self.bias = bias; self.eps = eps
    }

    /// Normalises each token of `x` into a new workspace tensor.
    package func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
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
