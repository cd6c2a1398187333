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
        ctx.parallelFor(groups) { g in
            let base = xd + g * n
            var s = 0.0
            for i in 0..<n { s += Double(base[i]) }
            let mean = s / Double(n)
            var v = 0.0
            for i in 0..<n { let d = Double(base[i]) - mean; v += d * d }
            let rstd = 1 / (v / Double(n) + Double(eps)).squareRoot()
            for cc in 0..<cpg {
                let ch = g * cpg + cc
                let a = Float(rstd) * wd[ch]
                let b = bd[ch] - Float(mean) * a
                let src = base + cc * plane, dst = yd + ch * plane
                switch activation {
                case .none:
                    for i in 0..<plane { dst[i] = src[i] * a + b }
                case .silu:
                    for i in 0..<plane { let t = src[i] * a + b; dst[i] = t / (1 + expf(-t)) }
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
        ctx.parallelFor(n, minChunk: 16) { r in
            let src = xd + r * d, dst = yd + r * d
            var s = 0.0
            for i in 0..<d { s += Double(src[i]) }
            let mean = s / Double(d)
            var v = 0.0
            for i in 0..<d { let t = Double(src[i]) - mean; v += t * t }
            let rstd = Float(1 / (v / Double(d) + eps).squareRoot())
            let m = Float(mean)
            for i in 0..<d { dst[i] = (src[i] - m) * rstd * wd[i] + bd[i] }
        }
        return y
    }
}
