import BLAS

/// A fully connected layer with PyTorch `Linear` semantics: weight `[out, in]`, bias `[out]`.
package struct Linear: @unchecked Sendable {
    /// `[out, in]`.
    package let weight: Tensor
    /// `[out]` or nil.
    package let bias: Tensor?
    package var inFeatures: Int { weight.shape[1] }
    package var outFeatures: Int { weight.shape[0] }

    /// A layer from its weight (`[out, in]`, or `[out, in, 1, 1]` of a 1×1 convolution) and bias.
    package init(weight: Tensor, bias: Tensor?) {
        precondition(weight.shape.count == 2 || (weight.shape.count == 4 && weight.shape[2] == 1 && weight.shape[3] == 1),
                     "linear weight must be [out, in], got \(weight.shape)")
        self.weight = weight.shape.count == 2 ? weight : weight.reshaped([weight.shape[0], weight.shape[1]])
        self.bias = bias
    }

    /// `x · Wᵀ + b` for tokens `x` of shape `[N, in]`, giving `[N, out]`.
    package func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        ctx.timed("linear \(x.count / inFeatures)×\(inFeatures)→\(outFeatures)") { compute(x, ctx) }
    }

    private func compute(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        let n = x.count / inFeatures
        precondition(x.shape.last == inFeatures, "linear: input \(x.shape), expected [N, \(inFeatures)]")
        let y = ctx.workspace.tensor([n, outFeatures])
        let o = outFeatures
        if let b = bias {
            for r in 0..<n { (y.data + r * o).update(from: b.data, count: o) }
        }
        ctx.flops += 2 * Double(n * inFeatures * o)
        ctx.gemm(transB: true, m: n, n: o, k: inFeatures, a: x.data, lda: inFeatures,
                   b: weight.data, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: y.data, ldc: o)
        return y
    }
}
